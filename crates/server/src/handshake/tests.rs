//! Handshake tests over an in-memory pipe, with a hand-written client side.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use burrow_net::read_preface;
use burrow_proto::msg::Welcome;
use burrow_proto::{PREFACE_LEN, Preface};
use std::sync::Arc;
use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

/// One identity (`alice`) and one live session (7, whose secret is `session-seven`); the early
/// sequence numbers session 7 has taken.
#[derive(Default)]
struct Keys {
    seqs: std::sync::Mutex<auth::SeqWindow>,
    /// Session 7 ends between the lookup of its key and that of its window.
    ends_meanwhile: bool,
}

/// The server side's outcome and its end of the pipe.
type ServerSide = tokio::task::JoinHandle<(Result<Verdict, Failure>, DuplexStream)>;

impl Authority for Keys {
    fn token_for(&self, name: &str) -> Option<Secret> {
        (name == "alice").then(|| Secret::new("alice-token"))
    }
    fn data_key(&self, session: u64) -> Option<auth::DataKey> {
        (session == 7).then(|| auth::DataKey::new(&Secret::new("session-seven")))
    }
    fn take_seq(&self, session: u64, seq: u64) -> Option<bool> {
        (session == 7 && !self.ends_meanwhile).then(|| self.seqs.lock().unwrap().take(seq))
    }
}

/// Runs the server side on one end of a pipe; returns the client end and the server's verdict.
fn start() -> (DuplexStream, ServerSide) {
    start_with(Arc::new(Keys::default()), Links::Allowed)
}

/// [`start`] with an authority shared between connections, and the link rule.
fn start_with(keys: Arc<Keys>, links: Links) -> (DuplexStream, ServerSide) {
    let (client, mut server) = duplex(4096);
    let task = tokio::spawn(async move {
        let verdict = accept(&mut server, &*keys, links).await;
        (verdict, server)
    });
    (client, task)
}

/// Client side up to the challenge.
async fn open(io: &mut DuplexStream) -> [u8; 32] {
    write_preface(io).await.unwrap();
    assert_eq!(read_preface(io).await.unwrap(), Preface::ours());
    read_frame::<_, Challenge>(io).await.unwrap().nonce
}

#[tokio::test]
async fn control_hello_with_the_right_token_is_accepted() {
    let (mut io, server) = start();
    let challenge = open(&mut io).await;
    let nonce = auth::nonce();
    let token = Secret::new("alice-token");
    let proof = auth::control_proof(&token, "alice", &challenge, &nonce);
    write_frame(
        &mut io,
        &Hello::Control {
            name: "alice".into(),
            nonce,
            proof,
        },
    )
    .await
    .unwrap();
    let (verdict, _) = server.await.unwrap();
    match verdict.unwrap() {
        Verdict::Control {
            identity, secret, ..
        } => {
            assert_eq!(identity, "alice");
            assert_eq!(secret, auth::session_secret(&token, &challenge, &nonce));
        }
        other => panic!("unexpected verdict {other:?}"),
    }
}

#[tokio::test]
async fn wrong_token_and_unknown_name_get_the_same_answer() {
    for (name, token) in [("alice", "wrong"), ("mallory", "alice-token")] {
        let (mut io, server) = start();
        let challenge = open(&mut io).await;
        let nonce = auth::nonce();
        let proof = auth::control_proof(&Secret::new(token), name, &challenge, &nonce);
        write_frame(
            &mut io,
            &Hello::Control {
                name: name.into(),
                nonce,
                proof,
            },
        )
        .await
        .unwrap();
        let answer: Welcome = read_frame(&mut io).await.unwrap();
        assert_eq!(answer, Welcome::Err(HandshakeError::AuthFailed), "{name}");
        assert!(matches!(server.await.unwrap().0, Err(Failure::Auth(_))));
    }
}

#[tokio::test]
async fn data_hello_needs_the_session_secret() {
    let (mut io, server) = start();
    let challenge = open(&mut io).await;
    let proof = auth::data_proof(&Secret::new("session-seven"), 7, &challenge);
    write_frame(&mut io, &Hello::Data { session: 7, proof })
        .await
        .unwrap();
    assert!(matches!(
        server.await.unwrap().0,
        Ok(Verdict::Data {
            session: 7,
            early: false
        })
    ));

    // A proof made with the login token instead of the session secret is refused.
    let (mut io, server) = start();
    let challenge = open(&mut io).await;
    let proof = auth::data_proof(&Secret::new("alice-token"), 7, &challenge);
    write_frame(&mut io, &Hello::Data { session: 7, proof })
        .await
        .unwrap();
    assert_eq!(
        read_frame::<_, Welcome>(&mut io).await.unwrap(),
        Welcome::Err(HandshakeError::AuthFailed)
    );
    assert!(server.await.unwrap().0.is_err());

    let (mut io, server) = start();
    let challenge = open(&mut io).await;
    let proof = auth::data_proof(&Secret::new("x"), 8, &challenge);
    write_frame(&mut io, &Hello::Data { session: 8, proof })
        .await
        .unwrap();
    assert_eq!(
        read_frame::<_, Welcome>(&mut io).await.unwrap(),
        Welcome::Err(HandshakeError::UnknownSession)
    );
    assert!(matches!(
        server.await.unwrap().0,
        Err(Failure::UnknownSession(8))
    ));
}

#[tokio::test]
async fn a_newer_client_is_told_the_server_version() {
    let (mut io, server) = start();
    io.write_all(
        &Preface {
            version: VERSION + 1,
            caps: 0,
        }
        .encode(),
    )
    .await
    .unwrap();
    assert_eq!(read_preface(&mut io).await.unwrap().version, VERSION);
    match server.await.unwrap().0 {
        Err(Failure::Version(msg)) => assert!(msg.contains("upgrade the server"), "{msg}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn garbage_and_tls_are_recognised() {
    let (mut io, server) = start();
    io.write_all(&[22, 3, 1, 0, 0x40, 1, 0, 0, 0x3c, 3, 3, 0, 0, 0])
        .await
        .unwrap();
    assert!(matches!(
        server.await.unwrap().0,
        Err(Failure::Foreign(PrefaceError::LooksLikeTls))
    ));

    let (mut io, server) = start();
    open(&mut io).await;
    // A frame header announcing 4 GiB.
    io.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(matches!(
        server.await.unwrap().0,
        Err(Failure::Malformed(_))
    ));
}

#[tokio::test]
async fn a_peer_that_hangs_up_mid_handshake_ends_only_its_connection() {
    let (mut io, server) = start();
    open(&mut io).await;
    drop(io);
    assert!(matches!(server.await.unwrap().0, Err(Failure::Io(_))));
}

#[tokio::test]
async fn a_link_request_is_answered_with_the_preface_alone() {
    let (mut io, server) = start();
    let link = Preface {
        caps: Preface::ours().caps | caps::LINK,
        ..Preface::ours()
    };
    burrow_net::write_preface_with(&mut io, link).await.unwrap();
    let theirs = read_preface(&mut io).await.unwrap();
    assert_ne!(theirs.caps & caps::MUX, 0, "the server says it takes links");
    let (verdict, _server_end) = server.await.unwrap();
    assert!(matches!(verdict.unwrap(), Verdict::Link));
}

#[tokio::test]
async fn a_stream_inside_a_link_cannot_ask_for_another_link() {
    let (mut client, mut server) = duplex(4096);
    let side =
        tokio::spawn(async move { accept(&mut server, &Keys::default(), Links::Refused).await });
    let link = Preface {
        caps: Preface::ours().caps | caps::LINK,
        ..Preface::ours()
    };
    burrow_net::write_preface_with(&mut client, link)
        .await
        .unwrap();
    assert!(matches!(side.await.unwrap(), Err(Failure::Malformed(_))));
}

#[tokio::test]
async fn a_websocket_refuses_anything_but_a_link_before_the_challenge() {
    let (mut client, mut server) = duplex(4096);
    let side =
        tokio::spawn(async move { accept(&mut server, &Keys::default(), Links::Required).await });
    write_preface(&mut client).await.unwrap();
    assert!(matches!(side.await.unwrap(), Err(Failure::Malformed(_))));
    // Nothing was sent back: no preface, no challenge.
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut client, &mut rest)
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// A data connection's first (and only) write before any stream: its preface asking for an
/// early hello, and the hello.
fn early_first_write(session: u64, seq: u64, secret: &str) -> Vec<u8> {
    let preface = Preface {
        caps: Preface::ours().caps | caps::EARLY_HELLO,
        ..Preface::ours()
    };
    let proof = auth::DataKey::new(&Secret::new(secret)).early_proof(session, seq);
    let mut out = preface.encode().to_vec();
    let hello = Hello::EarlyData {
        session,
        seq,
        proof,
    };
    out.extend_from_slice(&encode_frame(&hello).unwrap());
    out
}

/// The verdict on a connection (under the link rule `links`) whose client sends `first` and
/// then waits.
async fn verdict_with(first: &[u8], keys: Arc<Keys>, links: Links) -> Result<Verdict, Failure> {
    let (mut io, server) = start_with(keys, links);
    io.write_all(first).await.unwrap();
    server.await.unwrap().0
}

/// Everything the server sent on the pipe, once its side is dropped.
async fn everything_sent(mut client: DuplexStream, server: DuplexStream) -> Vec<u8> {
    drop(server);
    let mut sent = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut client, &mut sent)
        .await
        .unwrap();
    sent
}

#[tokio::test]
async fn an_early_data_hello_is_taken_with_nothing_sent_back() {
    let keys = Arc::new(Keys::default());
    let (mut io, server) = start_with(keys.clone(), Links::Allowed);
    io.write_all(&early_first_write(7, 1, "session-seven"))
        .await
        .unwrap();
    let (verdict, server_end) = server.await.unwrap();
    assert!(
        matches!(
            verdict,
            Ok(Verdict::Data {
                session: 7,
                early: true
            })
        ),
        "{verdict:?}"
    );
    assert_eq!(everything_sent(io, server_end).await, b"");

    // Inside a link too (a pooled stream of a mux or QUIC link), and in pieces: the preface
    // alone, then the header split, then the rest.
    let (mut io, server) = start_with(keys.clone(), Links::Refused);
    let first = early_first_write(7, 3, "session-seven");
    for piece in [
        &first[..PREFACE_LEN],
        &first[PREFACE_LEN..PREFACE_LEN + 2],
        &first[PREFACE_LEN + 2..],
    ] {
        io.write_all(piece).await.unwrap();
        tokio::task::yield_now().await;
    }
    let (verdict, server_end) = server.await.unwrap();
    assert!(
        matches!(verdict, Ok(Verdict::Data { early: true, .. })),
        "{verdict:?}"
    );
    assert_eq!(everything_sent(io, server_end).await, b"");

    // A number below the highest one taken, not taken yet: arrived out of order.
    let (mut io, server) = start_with(keys, Links::Allowed);
    io.write_all(&early_first_write(7, 2, "session-seven"))
        .await
        .unwrap();
    assert!(matches!(
        server.await.unwrap().0,
        Ok(Verdict::Data { early: true, .. })
    ));
}

#[tokio::test]
async fn an_early_hello_replayed_or_wrongly_proved_is_refused_in_silence() {
    let keys = Arc::new(Keys::default());
    let first = early_first_write(7, 5, "session-seven");
    let (mut io, server) = start_with(keys.clone(), Links::Allowed);
    io.write_all(&first).await.unwrap();
    assert!(server.await.unwrap().0.is_ok());

    // The same bytes again (a recording): refused, and nothing is said.
    let (mut io, server) = start_with(keys.clone(), Links::Allowed);
    io.write_all(&first).await.unwrap();
    let (verdict, server_end) = server.await.unwrap();
    match verdict {
        Err(Failure::Auth(why)) => assert!(why.contains("sequence number 5"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(everything_sent(io, server_end).await, b"");

    // Proved with the login token instead of the session secret.
    let (mut io, server) = start_with(keys.clone(), Links::Allowed);
    io.write_all(&early_first_write(7, 6, "alice-token"))
        .await
        .unwrap();
    let (verdict, server_end) = server.await.unwrap();
    assert!(matches!(verdict, Err(Failure::Auth(_))), "{verdict:?}");
    assert_eq!(everything_sent(io, server_end).await, b"");
    // ... which used up nothing: the client's own connection with that number still gets in.
    let (mut io, server) = start_with(keys.clone(), Links::Allowed);
    io.write_all(&early_first_write(7, 6, "session-seven"))
        .await
        .unwrap();
    assert!(server.await.unwrap().0.is_ok());

    // A session that ends while its early hello is checked: an unknown session, as it would
    // be a moment later, not a failed proof (which counts toward banning the address).
    let ending = Arc::new(Keys {
        ends_meanwhile: true,
        ..Keys::default()
    });
    let first = early_first_write(7, 9, "session-seven");
    let verdict = verdict_with(&first, ending, Links::Allowed).await;
    assert!(
        matches!(verdict, Err(Failure::UnknownSession(7))),
        "{verdict:?}"
    );

    // A session that does not exist.
    let (mut io, server) = start_with(keys, Links::Allowed);
    io.write_all(&early_first_write(8, 1, "x")).await.unwrap();
    let (verdict, server_end) = server.await.unwrap();
    assert!(
        matches!(verdict, Err(Failure::UnknownSession(8))),
        "{verdict:?}"
    );
    assert_eq!(everything_sent(io, server_end).await, b"");
}

#[tokio::test]
async fn early_hellos_out_of_place_and_bytes_ahead_of_their_turn_are_malformed() {
    let early_preface = Preface {
        caps: Preface::ours().caps | caps::EARLY_HELLO,
        ..Preface::ours()
    };
    let control = Hello::Control {
        name: "alice".into(),
        nonce: auth::nonce(),
        proof: auth::nonce(),
    };
    let both = Preface {
        caps: early_preface.caps | caps::LINK,
        ..Preface::ours()
    };
    let cases: [(&str, Vec<u8>, Links); 5] = [
        (
            "bytes after the early hello, before any stream was opened",
            [early_first_write(7, 1, "session-seven"), b"GET /".to_vec()].concat(),
            Links::Allowed,
        ),
        (
            "bytes after an ordinary preface, before the challenge",
            [&Preface::ours().encode()[..], b"hello"].concat(),
            Links::Allowed,
        ),
        (
            "an early preface followed by a control hello",
            [
                &early_preface.encode()[..],
                &encode_frame(&control).unwrap(),
            ]
            .concat(),
            Links::Allowed,
        ),
        (
            "an early hello that also asks to be a link",
            [
                &both.encode()[..],
                &early_first_write(7, 1, "session-seven")[PREFACE_LEN..],
            ]
            .concat(),
            Links::Allowed,
        ),
        (
            "an early hello on a WebSocket, which takes only links",
            early_first_write(7, 1, "session-seven"),
            Links::Required,
        ),
    ];
    for (case, first, links) in cases {
        let verdict = verdict_with(&first, Arc::new(Keys::default()), links).await;
        assert!(
            matches!(verdict, Err(Failure::Malformed(_))),
            "{case}: {verdict:?}"
        );
    }

    // An early hello after a challenge.
    let (mut io, server) = start();
    open(&mut io).await;
    let hello = Hello::EarlyData {
        session: 7,
        seq: 1,
        proof: auth::nonce(),
    };
    write_frame(&mut io, &hello).await.unwrap();
    assert!(matches!(
        server.await.unwrap().0,
        Err(Failure::Malformed(_))
    ));
}
