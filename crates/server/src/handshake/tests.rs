//! Handshake tests over an in-memory pipe, with a hand-written client side.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use burrow_proto::Preface;
use burrow_proto::msg::Welcome;
use tokio::io::{AsyncWriteExt, DuplexStream, duplex};

struct Keys;

/// The server side's outcome and its end of the pipe.
type ServerSide = tokio::task::JoinHandle<(Result<Verdict, Failure>, DuplexStream)>;

impl Authority for Keys {
    fn token_for(&self, name: &str) -> Option<Secret> {
        (name == "alice").then(|| Secret::new("alice-token"))
    }
    fn data_key(&self, session: u64) -> Option<auth::DataKey> {
        (session == 7).then(|| auth::DataKey::new(&Secret::new("session-seven")))
    }
}

/// Runs the server side on one end of a pipe; returns the client end and the server's verdict.
fn start() -> (DuplexStream, ServerSide) {
    let (client, mut server) = duplex(4096);
    let task = tokio::spawn(async move {
        let verdict = accept(&mut server, &Keys, Links::Allowed).await;
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
        Ok(Verdict::Data { session: 7 })
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
    let side = tokio::spawn(async move { accept(&mut server, &Keys, Links::Refused).await });
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
    let side = tokio::spawn(async move { accept(&mut server, &Keys, Links::Required).await });
    write_preface(&mut client).await.unwrap();
    assert!(matches!(side.await.unwrap(), Err(Failure::Malformed(_))));
    // Nothing was sent back: no preface, no challenge.
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut client, &mut rest)
        .await
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}
