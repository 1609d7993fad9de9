//! Server and client libraries wired together in one process over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use burrow_client::config::{TunnelKind, UdpOptions};
use burrow_client::{ClientConfig, Event, TunnelConfig};
use burrow_proto::auth::Secret;
use burrow_server::{Auth, PortSet, ServerConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// An echo target on loopback.
async fn echo_target() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A free port to use as a one-port public range.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    shutdown: CancellationToken,
    events: mpsc::Receiver<Event>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    client: tokio::task::JoinHandle<Result<(), burrow_client::ClientError>>,
}

/// A server on loopback with a one-port public range and shared token `t`; returns its control
/// address and task.
async fn start_server(
    transport: burrow_server::Transport,
    sinks: Vec<burrow_server::config::UdpSink>,
    shutdown: &CancellationToken,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let port = free_port();
    let mut config = ServerConfig::new(Auth::SharedToken(Secret::new("t")), transport);
    config.ports = PortSet::range(port, port);
    config.public_bind = [127, 0, 0, 1].into();
    config.udp_sinks = sinks;
    let control = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = control.local_addr().unwrap();
    (
        addr,
        tokio::spawn(burrow_server::run(config, control, shutdown.clone())),
    )
}

/// The configuration of a client of `server` with one tunnel.
fn client_config(
    server: std::net::SocketAddr,
    transport: burrow_client::Transport,
    tunnel: TunnelConfig,
) -> ClientConfig {
    let mut config =
        ClientConfig::new(server.to_string(), "me".into(), Secret::new("t"), transport);
    config.tunnels.push(tunnel);
    config
}

async fn start(
    server_transport: burrow_server::Transport,
    client_transport: burrow_client::Transport,
    tunnel_kind: TunnelKind,
) -> Running {
    let shutdown = CancellationToken::new();
    let (addr, server) = start_server(server_transport, Vec::new(), &shutdown).await;
    let target = match tunnel_kind {
        TunnelKind::Tcp | TunnelKind::Http(_) => echo_target().await,
        TunnelKind::Udp(_) | TunnelKind::UdpToSink => udp_echo_target().await,
    };
    let tunnel = TunnelConfig {
        name: "echo".into(),
        local: target.to_string(),
        remote_port: None,
        kind: tunnel_kind,
        proxy_protocol: None,
        health_check: None,
    };
    let config = client_config(addr, client_transport, tunnel);
    let (tx, events) = mpsc::channel(16);
    let client = tokio::spawn(burrow_client::run(config, shutdown.clone(), move |e| {
        let _ = tx.try_send(e);
    }));
    Running {
        shutdown,
        events,
        server,
        client,
    }
}

async fn echo_through(running: &mut Running) {
    let Event::TunnelReady { public, .. } = running.events.recv().await.unwrap() else {
        panic!("not a tunnel")
    };
    let port: u16 = public.rsplit_once(':').unwrap().1.parse().unwrap();
    for round in 0..3 {
        let mut visitor = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let msg = format!("hello {round}");
        visitor.write_all(msg.as_bytes()).await.unwrap();
        visitor.shutdown().await.unwrap();
        let mut back = String::new();
        visitor.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
}

async fn stop(running: Running) {
    running.shutdown.cancel();
    running.client.await.unwrap().unwrap();
    running.server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_plain_carrier() {
    let mut r = start(
        burrow_server::Transport::Plain,
        burrow_client::Transport::Plain,
        TunnelKind::Tcp,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(20), echo_through(&mut r))
        .await
        .unwrap();
    stop(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_tls_carrier_with_a_pinned_fingerprint() {
    let dir = std::env::temp_dir().join(format!("burrow-inproc-{}", std::process::id()));
    let identity = burrow_net::tls::ServerIdentity::load_or_generate(&dir).unwrap();
    let trust = burrow_net::tls::Trust::Fingerprint(identity.fingerprint().to_owned());
    let client_tls = burrow_net::tls::client_config(&trust, "127.0.0.1:1").unwrap();
    let mut r = start(
        burrow_server::Transport::Tls(identity.config()),
        burrow_client::Transport::Tls(client_tls),
        TunnelKind::Tcp,
    )
    .await;
    tokio::time::timeout(Duration::from_secs(20), echo_through(&mut r))
        .await
        .unwrap();
    stop(r).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A UDP echo target on loopback: every datagram goes back to its sender, unchanged.
async fn udp_echo_target() -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_of_every_size_come_back_whole() {
    let mut r = start(
        burrow_server::Transport::Plain,
        burrow_client::Transport::Plain,
        TunnelKind::Udp(UdpOptions::default()),
    )
    .await;
    let Event::TunnelReady { public, .. } = r.events.recv().await.unwrap() else {
        panic!("not a tunnel")
    };
    let port: u16 = public.rsplit_once(':').unwrap().1.parse().unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        let visitor = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        visitor.connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        for len in [0usize, 1, 1400, 9000, 65_507] {
            let sent: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            // UDP may lose a datagram even on loopback while the tunnel's data connection comes
            // up; resend until the echo arrives.
            let n = loop {
                visitor.send(&sent).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(1), visitor.recv(&mut buf)).await {
                    Ok(n) => break n.unwrap(),
                    Err(_) => continue,
                }
            };
            assert_eq!(n, len, "a {len}-byte datagram came back as {n} bytes");
            assert!(
                buf[..n] == sent[..],
                "a {len}-byte datagram changed on the way"
            );
        }
        // Distinct visitors are distinct flows, each answered on its own socket.
        let mut visitors = Vec::new();
        for i in 0..50u8 {
            let v = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            v.connect(("127.0.0.1", port)).await.unwrap();
            v.send(&[i; 3]).await.unwrap();
            visitors.push(v);
        }
        for (i, v) in visitors.iter().enumerate() {
            let n = tokio::time::timeout(Duration::from_secs(5), v.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], &[i as u8; 3]);
        }
    })
    .await
    .unwrap();
    stop(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_heard_by_the_client_reach_the_servers_sink() {
    let shutdown = CancellationToken::new();
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sinks = vec![burrow_server::config::UdpSink {
        name: "events".into(),
        deliver_to: sink.local_addr().unwrap(),
    }];
    let (addr, server) = start_server(burrow_server::Transport::Plain, sinks, &shutdown).await;
    // The client listens on a local UDP port for events.
    let local = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tunnel = TunnelConfig {
        name: "events".into(),
        local: local.to_string(),
        remote_port: None,
        kind: TunnelKind::UdpToSink,
        proxy_protocol: None,
        health_check: None,
    };
    let config = client_config(addr, burrow_client::Transport::Plain, tunnel);
    let (tx, mut events) = mpsc::channel(16);
    let client = tokio::spawn(burrow_client::run(config, shutdown.clone(), move |e| {
        let _ = tx.try_send(e);
    }));
    let ready = events.recv().await.unwrap();
    assert!(
        matches!(ready, Event::SinkReady { ref name, .. } if name == "events"),
        "{ready:?}"
    );
    tokio::time::timeout(Duration::from_secs(20), async {
        let device = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 65_536];
        for i in 0..20u8 {
            // The client's listener may not be bound yet when the first events are sent: UDP
            // events are fire-and-forget, so send each until one arrives.
            let got = loop {
                device.send_to(&[i; 100], local).await.unwrap();
                if let Ok(got) =
                    tokio::time::timeout(Duration::from_millis(500), sink.recv_from(&mut buf)).await
                {
                    break got.unwrap().0;
                }
            };
            assert_eq!(&buf[..got], &[i; 100]);
        }
    })
    .await
    .unwrap();
    shutdown.cancel();
    client.await.unwrap().unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_sink_is_refused_on_the_first_connection() {
    let shutdown = CancellationToken::new();
    let (addr, server) = start_server(burrow_server::Transport::Plain, Vec::new(), &shutdown).await;
    let tunnel = TunnelConfig {
        name: "nowhere".into(),
        local: "127.0.0.1:0".into(),
        remote_port: None,
        kind: TunnelKind::UdpToSink,
        proxy_protocol: None,
        health_check: None,
    };
    let config = client_config(addr, burrow_client::Transport::Plain, tunnel);
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        burrow_client::run(config, shutdown.clone(), |_| {}),
    )
    .await
    .unwrap();
    let err = result.unwrap_err().to_string();
    assert!(err.contains("no UDP sink named `nowhere`"), "{err}");
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
