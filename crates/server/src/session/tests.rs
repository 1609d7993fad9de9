//! Session liveness and leases, driven through an in-memory carrier with paused time.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::config::{Auth, PortSet, ServerConfig, Transport};
use burrow_net::read_frame;
use burrow_proto::msg::{TunnelKind, TunnelRequest, Welcome};
use std::time::Duration;
use tokio::io::{DuplexStream, duplex};
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server with a one-port public range and a session on a pipe; returns the client end.
pub(crate) async fn session_with_tunnel()
-> (Arc<Shared>, DuplexStream, u64, tokio::task::JoinHandle<()>) {
    session_with_config(|_| {}, None).await
}

/// [`session_with_tunnel`], with the server's config changed by `tune` first.
async fn session_with_config(
    tune: impl FnOnce(&mut ServerConfig),
    opener: Option<crate::link::Opener>,
) -> (Arc<Shared>, DuplexStream, u64, tokio::task::JoinHandle<()>) {
    let mut config = ServerConfig::new(Auth::SharedToken(Secret::new("t")), Transport::Plain);
    tune(&mut config);
    let port = free_port();
    config.ports = PortSet::range(port, port);
    config.public_bind = [127, 0, 0, 1].into();
    let shared = Arc::new(Shared::new(
        config,
        CancellationToken::new(),
        Default::default(),
    ));
    let (mut client, server_end) = duplex(64 * 1024);
    let peer: SocketAddr = ([127, 0, 0, 1], 1).into();
    let login = Login {
        identity: "alice".into(),
        secret: Secret::new("s"),
        peer,
        opener,
        reuse: false,
    };
    let task = tokio::spawn(run(shared.clone(), Carrier::Memory(server_end), login));
    let Welcome::Ok { session, .. } = read_frame(&mut client).await.unwrap() else {
        panic!("refused")
    };
    let req = TunnelRequest {
        id: 0,
        name: "t".into(),
        kind: TunnelKind::Tcp,
        remote_port: None,
        target: "127.0.0.1:8080".into(),
    };
    write_frame(&mut client, &ClientMsg::OpenTunnel(req))
        .await
        .unwrap();
    let opened: ServerMsg = read_frame(&mut client).await.unwrap();
    assert_eq!(opened, ServerMsg::TunnelOpened { id: 0, port });
    assert_eq!(
        shared.registry.free_ports(burrow_proto::msg::Protocol::Tcp),
        0
    );
    (shared, client, session, task)
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_declared_dead_and_its_port_leased_until_the_grace_ends() {
    let (shared, mut client, session, task) = session_with_tunnel().await;
    let (dead_after, grace) = (shared.config().dead_after, shared.config().lease_grace);
    let silent_since = Instant::now();
    // Say nothing: the server keeps pinging, then hangs up.
    let mut pings = 0;
    while let Ok(msg) = read_frame::<_, ServerMsg>(&mut client).await {
        assert!(matches!(msg, ServerMsg::Ping { .. }), "unexpected {msg:?}");
        pings += 1;
    }
    let silent_for = silent_since.elapsed();
    assert!(
        silent_for >= dead_after && silent_for < dead_after + Duration::from_secs(1),
        "{silent_for:?}"
    );
    assert!(pings >= 3, "{pings} pings");
    task.await.unwrap();
    assert!(shared.registry.session(session).is_none());
    // The port stays reserved for the whole grace period, then is freed.
    tokio::time::sleep(grace - Duration::from_millis(10)).await;
    assert_eq!(
        shared.registry.free_ports(burrow_proto::msg::Protocol::Tcp),
        0
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        shared.registry.free_ports(burrow_proto::msg::Protocol::Tcp),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_heartbeats_stays_connected() {
    let (shared, mut client, session, _task) = session_with_tunnel().await;
    let until = Instant::now() + Duration::from_secs(120);
    let mut pings = 0;
    while Instant::now() < until {
        match read_frame::<_, ServerMsg>(&mut client).await.unwrap() {
            ServerMsg::Ping { seq } => {
                pings += 1;
                write_frame(&mut client, &ClientMsg::Pong { seq })
                    .await
                    .unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 50, "{pings} pings in 120 s");
    assert!(shared.registry.session(session).is_some());
}

#[tokio::test(start_paused = true)]
async fn goodbye_releases_the_port_at_once() {
    let (shared, mut client, _session, task) = session_with_tunnel().await;
    write_frame(&mut client, &ClientMsg::Goodbye).await.unwrap();
    task.await.unwrap();
    assert_eq!(
        shared.registry.free_ports(burrow_proto::msg::Protocol::Tcp),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_session_past_its_lifetime_is_asked_to_reconnect_once_its_streams_finish() {
    let lifetime = Duration::from_secs(60);
    let (shared, mut client, session, task) =
        session_with_config(|c| c.max_session_lifetime = Some(lifetime), None).await;
    let started = Instant::now();
    let handle = shared.registry.session(session).unwrap();
    // A stream is open when the lifetime ends: the session waits for it.
    handle
        .streams
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let finish_stream = async {
        tokio::time::sleep(lifetime + Duration::from_secs(3)).await;
        handle
            .streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    };
    let farewell = async {
        loop {
            match read_frame::<_, ServerMsg>(&mut client).await.unwrap() {
                ServerMsg::Ping { seq } => write_frame(&mut client, &ClientMsg::Pong { seq })
                    .await
                    .unwrap(),
                other => return other,
            }
        }
    };
    let ((), farewell) = tokio::join!(finish_stream, farewell);
    assert_eq!(farewell, ServerMsg::Reconnect);
    let took = started.elapsed();
    assert!(
        took >= lifetime + Duration::from_secs(3) && took < lifetime + Duration::from_secs(4),
        "{took:?}"
    );
    task.await.unwrap();
    assert!(shared.registry.session(session).is_none());
    // Its port is leased, not released: the client takes it back when it reconnects.
    assert_eq!(
        shared.registry.free_ports(burrow_proto::msg::Protocol::Tcp),
        0
    );
}

/// A visitor takes an idle pooled connection when there is one; else a stream the server opens
/// on the client's link; and when the link cannot open one (here: it is gone), the pool's next
/// connection, after asking the client for more (`Opened::Waited`), as before server-opened
/// streams.
#[tokio::test]
async fn a_visitor_takes_the_pool_then_a_server_stream_then_the_pool_again() {
    use crate::registry::Opened;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = duplex(256 * 1024);
    let (_client_opener, mut from_server) = burrow_net::mux::client_accepting(a);
    let (server_opener, client_streams) = burrow_net::mux::server(b);
    let link_state = server_opener.clone();
    let opener = crate::link::Opener::Mux(server_opener, "mux");
    let (shared, mut client, session, _task) = session_with_config(|_| {}, Some(opener)).await;
    let handle = shared.registry.session(session).unwrap();

    let (_pooled_far_end, pooled) = duplex(1024);
    handle.pool.put(Carrier::Memory(pooled)).unwrap();
    assert_eq!(handle.take_data().await.1, Opened::Pool);

    let (mut carrier, opened) = handle.take_data().await;
    assert_eq!(opened, Opened::Server);
    carrier.write_all(b"for you").await.unwrap();
    carrier.flush().await.unwrap();
    let mut theirs = from_server.recv().await.unwrap();
    let mut got = [0u8; 7];
    theirs.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"for you");

    // The link goes away: opening fails, and the visitor waits for the pool as before.
    drop(client_streams);
    while !link_state.is_closed() {
        tokio::task::yield_now().await;
    }
    let waiting = handle.clone();
    let taken = tokio::spawn(async move { waiting.take_data().await.1 });
    // Heartbeats may come first.
    while !matches!(
        read_frame::<_, ServerMsg>(&mut client).await.unwrap(),
        ServerMsg::WantData { .. }
    ) {}
    let (_far_end, pooled) = duplex(1024);
    handle.pool.put(Carrier::Memory(pooled)).unwrap();
    assert_eq!(taken.await.unwrap(), Opened::Waited);
}

/// Requests for data connections queued at once (a burst of visitors finding the pool empty)
/// leave as one `WantData` for all of them, and what was queued after them still follows.
#[tokio::test]
async fn requests_for_data_connections_queued_together_leave_as_one() {
    let (shared, mut client, session, _task) = session_with_tunnel().await;
    let handle = shared.registry.session(session).unwrap();
    // The session's task runs only when this one yields: all four are queued by then.
    for _ in 0..3 {
        handle
            .control
            .try_send(ServerMsg::WantData { count: 1 })
            .unwrap();
    }
    handle.control.try_send(ServerMsg::Shutdown).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match read_frame::<_, ServerMsg>(&mut client).await.unwrap() {
            ServerMsg::Ping { .. } => {}
            msg => got.push(msg),
        }
    }
    assert_eq!(got, [ServerMsg::WantData { count: 3 }, ServerMsg::Shutdown]);
}

/// A data connection that answered the challenge is welcomed before it joins the pool; one that
/// said hello early hears nothing. For a session that is gone, the first is told so and the
/// second is closed without a word (its client waits for no answer).
#[tokio::test]
async fn only_a_challenged_data_connection_is_answered() {
    use tokio::io::AsyncReadExt;
    let (shared, _client, session, _task) = session_with_tunnel().await;
    let handle = shared.registry.session(session).unwrap();

    let (mut challenged, near) = duplex(1024);
    crate::pool::add(&shared, Carrier::Memory(near), session, false).await;
    let welcome: Welcome = read_frame(&mut challenged).await.unwrap();
    assert!(
        matches!(welcome, Welcome::Ok { session: s, .. } if s == session),
        "{welcome:?}"
    );
    let (mut early, near) = duplex(1024);
    crate::pool::add(&shared, Carrier::Memory(near), session, true).await;
    assert_eq!(handle.pool.len(), 2, "both joined the pool");
    handle.pool.close();
    let mut heard = Vec::new();
    early.read_to_end(&mut heard).await.unwrap();
    assert!(heard.is_empty(), "an early data connection heard {heard:?}");

    let gone = session + 1;
    let (mut challenged, near) = duplex(1024);
    crate::pool::add(&shared, Carrier::Memory(near), gone, false).await;
    let refusal: Welcome = read_frame(&mut challenged).await.unwrap();
    assert_eq!(
        refusal,
        Welcome::Err(burrow_proto::msg::HandshakeError::UnknownSession)
    );
    let (mut early, near) = duplex(1024);
    crate::pool::add(&shared, Carrier::Memory(near), gone, true).await;
    let mut heard = Vec::new();
    early.read_to_end(&mut heard).await.unwrap();
    assert!(heard.is_empty(), "{heard:?}");
    assert_eq!(handle.pool.len(), 0);
}
