#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client and a server end of one link over an in-memory pipe.
fn link() -> (Opener, mpsc::Receiver<MuxStream>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (client(a), server(b).1)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn streams_carry_bytes_both_ways_with_half_close() {
    let (opener, mut inbound) = link();
    let mut ours = opener.open().await.unwrap();
    // yamux announces a stream with its first frame: write before the server can see it.
    let up = pattern(1, 3 * 1024 * 1024 + 17);
    let down = pattern(2, 2 * 1024 * 1024 + 5);
    let writer = {
        let up = up.clone();
        tokio::spawn(async move {
            ours.write_all(&up).await.unwrap();
            ours.shutdown().await.unwrap();
            let mut back = Vec::new();
            ours.read_to_end(&mut back).await.unwrap();
            back
        })
    };
    let mut theirs = inbound.recv().await.unwrap();
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, up, "upload arrives whole, then the end");
    // The client half-closed; the server can still answer.
    theirs.write_all(&down).await.unwrap();
    theirs.shutdown().await.unwrap();
    assert_eq!(writer.await.unwrap(), down);
}

#[tokio::test]
async fn many_streams_stay_apart() {
    let (opener, mut inbound) = link();
    let server = tokio::spawn(async move {
        let mut echoes = Vec::new();
        while let Some(mut s) = inbound.recv().await {
            echoes.push(tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut s);
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            }));
        }
        for e in echoes {
            e.await.unwrap();
        }
    });
    let mut clients = Vec::new();
    for i in 0..200u32 {
        let opener = opener.clone();
        clients.push(tokio::spawn(async move {
            let data = pattern(i as u8, 10_000 + i as usize * 37);
            let mut s = opener.open().await.unwrap();
            let (mut r, mut w) = tokio::io::split(&mut s);
            let send = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let recv = r.read_to_end(&mut back);
            let ((), read) = tokio::join!(send, recv);
            read.unwrap();
            assert_eq!(back, data, "stream {i} got its own bytes back");
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    drop(opener);
    // Every opener and stream is gone on the client: the link closes and the server sees it.
    server.await.unwrap();
}

#[tokio::test]
async fn a_stalled_stream_does_not_block_another() {
    let (opener, mut inbound) = link();
    let mut stalled = opener.open().await.unwrap();
    // Far more than a stream's window: the writer must wait for a reader that never comes.
    let flood = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        loop {
            if stalled.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let _stalled_far_end = inbound.recv().await.unwrap();
    let mut other = opener.open().await.unwrap();
    other.write_all(b"ping").await.unwrap();
    other.flush().await.unwrap();
    let mut far = inbound.recv().await.unwrap();
    let mut got = [0u8; 4];
    far.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    flood.abort();
}

#[tokio::test]
async fn dropping_the_server_side_fails_the_client() {
    let (opener, inbound) = link();
    drop(inbound);
    opener.closed().await;
    assert!(opener.is_closed());
    let err = opener.open().await.expect_err("the link is gone");
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn streams_outlive_their_openers() {
    let (opener, mut inbound) = link();
    let mut ours = opener.open().await.unwrap();
    drop(opener);
    ours.write_all(b"still here").await.unwrap();
    ours.shutdown().await.unwrap();
    let mut theirs = inbound.recv().await.unwrap();
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"still here");
    drop(ours);
    drop(theirs);
    // The last stream went with the last opener: the client closes the link.
    assert!(inbound.recv().await.is_none());
}

#[tokio::test]
async fn a_server_that_lets_go_closes_an_idle_link() {
    let (opener, inbound) = link();
    let _stream = opener.open().await.unwrap();
    drop(inbound);
    // Nothing else happens on the link; the client still learns it is gone.
    opener.closed().await;
}

/// A client that accepts the server's streams, and the server's end, over an in-memory pipe.
fn two_way_link() -> (
    (Opener, mpsc::Receiver<MuxStream>),
    (Opener, mpsc::Receiver<MuxStream>),
) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (client_accepting(a), server(b))
}

#[tokio::test]
async fn the_server_opens_streams_toward_an_accepting_client() {
    let ((_client, mut from_server), (server, _from_client)) = two_way_link();
    let mut ours = server.open().await.unwrap();
    ours.write_all(b"a visitor for you").await.unwrap();
    ours.shutdown().await.unwrap();
    let mut theirs = from_server.recv().await.unwrap();
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"a visitor for you");
    // Half-closed by the server; the client still answers on it.
    theirs.write_all(b"hello back").await.unwrap();
    theirs.shutdown().await.unwrap();
    let mut back = Vec::new();
    ours.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"hello back");
}

#[tokio::test]
async fn a_client_that_accepts_nothing_resets_the_servers_streams() {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let _client = client(a);
    let (server, _inbound) = server(b);
    let mut ours = server.open().await.unwrap();
    ours.write_all(b"anyone?").await.unwrap();
    ours.flush().await.unwrap();
    let mut buf = [0u8; 1];
    // The refusal arrives as a reset (an error) or as the end of the stream, never as data.
    let read = ours.read(&mut buf).await;
    assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
}

/// Opens a stream from the server and sends a byte, which is what makes yamux announce it.
async fn open_and_announce(server: &Opener) -> io::Result<MuxStream> {
    let mut stream = server.open().await?;
    stream.write_all(b"x").await?;
    stream.flush().await?;
    Ok(stream)
}

#[tokio::test]
async fn the_server_opens_no_more_than_its_share() {
    let ((_client, mut from_server), (server, _from_client)) = two_way_link();
    // The client acknowledges each stream at once, as burrow's client does.
    let accepted = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < SERVER_OPENED_STREAMS + 1 {
            let mut stream = from_server.recv().await.unwrap();
            stream.acknowledge().await.unwrap();
            held.push(stream);
        }
        held.len()
    });
    let mut held = Vec::new();
    for _ in 0..SERVER_OPENED_STREAMS {
        held.push(open_and_announce(&server).await.unwrap());
    }
    let refused = server.open().await.expect_err("past the server's share");
    assert!(refused.to_string().contains("streams"), "{refused}");
    // A stream the server let go of makes room for the next.
    held.pop();
    held.push(open_and_announce(&server).await.unwrap());
    assert_eq!(accepted.await.unwrap(), SERVER_OPENED_STREAMS + 1);
}

#[tokio::test]
async fn unacknowledged_streams_hold_up_the_opener_and_acknowledged_ones_do_not() {
    let ((_client, mut from_server), (server, _from_client)) = two_way_link();
    let mut held = Vec::new();
    // yamux lets an opener hold 256 streams the peer has not answered on.
    for _ in 0..256 {
        held.push(open_and_announce(&server).await.unwrap());
    }
    let opener = server.clone();
    let next = tokio::spawn(async move { open_and_announce(&opener).await });
    // One thread: after this many turns the driver has seen the request, and would have
    // answered it but for the backlog.
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert!(!next.is_finished(), "a 257th unanswered stream opened");
    // Acknowledged without a byte of data, they no longer count.
    let mut theirs = Vec::new();
    for _ in 0..256 {
        let mut stream = from_server.recv().await.unwrap();
        stream.acknowledge().await.unwrap();
        theirs.push(stream);
    }
    let mut next = next.await.unwrap().unwrap();
    let mut first = theirs.swap_remove(0);
    let mut buf = [0u8; 1];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"x");
    next.shutdown().await.unwrap();
}
