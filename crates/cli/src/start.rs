//! Starting a checked plan: load the TLS identity or trust, bind, print the readiness lines,
//! and hand over to the server or client library.
//!
//! The lines printed here are burrow's stdout contract (`fingerprint ...`, `listening on ...`,
//! `tunnel ... ready at ...`): scripts wait for them, so each is flushed at once. systemd hears
//! `READY=1` right after them.

use crate::client_config::{ClientArgs, ClientPlan};
use crate::reload;
use crate::server_config::{ServerArgs, ServerPlan, TlsSource};
use crate::signals::Hangups;
use crate::status_socket;
use crate::systemd::{self, Role};
use anyhow::Context;
use burrow_client::Event;
use burrow_net::tls::{self, ServerIdentity};
use std::io::Write;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Runs a server until `shutdown` is cancelled, on the sockets systemd `passed` where it passed
/// them and on freshly bound ones elsewhere, reloading its configuration on SIGHUP and when its
/// config file changes.
pub(crate) async fn server(
    args: ServerArgs,
    plan: ServerPlan,
    passed: systemd::Passed,
    shutdown: CancellationToken,
    hangups: Hangups,
) -> anyhow::Result<()> {
    let fixed = reload::Fixed::of(&plan);
    let triggers = reload::Triggers::new(hangups, args.config.as_deref());
    let ServerPlan {
        listen,
        listen_given,
        tls,
        mut config,
        edge,
        admin,
        quic,
        ws,
        ..
    } = plan;
    if let Some((cert, key)) = &edge.tls {
        let identity = ServerIdentity::from_pem_files(cert, key)
            .with_context(|| format!("cannot load the edge's certificate {}", cert.display()))?;
        let mut tls = (*identity.config()).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.http.terminate = Some(std::sync::Arc::new(tls));
    }
    let fingerprint = match &tls {
        Some(source) => {
            let identity = load_identity(source)?;
            config.transport = burrow_server::Transport::Tls(identity.config());
            Some(identity.fingerprint().to_owned())
        }
        None => {
            warn!(
                "TLS is off (insecure_plain): traffic is unencrypted and clients cannot tell this server from another"
            );
            None
        }
    };
    let configured = Configured {
        control: (listen, listen_given),
        http: edge.http,
        https: edge.https,
        admin,
        quic,
        ws,
    };
    let listeners = open_listeners(&configured, passed, config.admin_token.is_some())?;
    announce(fingerprint.as_deref(), &listeners)?;
    // A reload may not leave an admin API off loopback without a token, wherever its socket
    // came from.
    let admin_public = (listeners.admin.as_ref())
        .and_then(|l| l.local_addr().ok())
        .is_some_and(|a| !a.ip().is_loopback());
    let server = burrow_server::Server::new(config, listeners, shutdown.clone());
    let started = reload::Started {
        fixed,
        admin_public,
    };
    let reloads = reload::serve(args, started, server.reloader(), triggers, shutdown);
    tokio::spawn(reloads);
    systemd::notify_ready();
    server.run().await
}

/// The listener addresses a server plan asks for.
struct Configured {
    /// The control address, and whether it was configured (else it is the default).
    control: (SocketAddr, bool),
    /// The HTTP edge's plain listener.
    http: Option<SocketAddr>,
    /// The HTTP edge's TLS listener.
    https: Option<SocketAddr>,
    /// The admin API's listener.
    admin: Option<SocketAddr>,
    /// The QUIC carrier's UDP socket.
    quic: Option<SocketAddr>,
    /// The WebSocket carrier's listener.
    ws: Option<SocketAddr>,
}

/// Opens the server's listeners: each from the socket systemd passed for it, else bound to its
/// configured address. An admin listener off loopback needs a token, wherever it came from.
fn open_listeners(
    configured: &Configured,
    mut passed: systemd::Passed,
    admin_token: bool,
) -> anyhow::Result<burrow_server::Listeners> {
    let (listen, given) = configured.control;
    let control = match passed.take(Role::Control) {
        Some(socket) => systemd::adopt("control", socket, given.then_some(listen))?,
        None => burrow_net::listen(listen).with_context(|| format!("cannot listen on {listen}"))?,
    };
    let http = open_extra("http edge", configured.http, passed.take(Role::Http))?;
    let https = open_extra("https edge", configured.https, passed.take(Role::Https))?;
    let admin = open_extra("admin", configured.admin, passed.take(Role::Admin))?;
    let ws = open_extra("WebSocket carrier", configured.ws, None)?;
    if let Some(admin) = &admin {
        let addr = local_addr(admin)?;
        if !addr.ip().is_loopback() && !admin_token {
            anyhow::bail!(
                "the admin API on {addr} is off loopback and needs a token (admin_token, admin_token_file or --admin-token-file)"
            );
        }
    }
    let quic = match configured.quic {
        Some(addr) => Some(
            std::net::UdpSocket::bind(addr)
                .with_context(|| format!("cannot listen for QUIC on udp {addr}"))?,
        ),
        None => None,
    };
    Ok(burrow_server::Listeners {
        control,
        http,
        https,
        admin,
        quic,
        ws,
    })
}

/// Prints the server's readiness lines, with the addresses actually bound.
fn announce(fingerprint: Option<&str>, listeners: &burrow_server::Listeners) -> anyhow::Result<()> {
    if let Some(fingerprint) = fingerprint {
        say(&format!("fingerprint {fingerprint}"));
    }
    say(&format!("listening on {}", local_addr(&listeners.control)?));
    let extras = [
        ("http edge", &listeners.http),
        ("https edge", &listeners.https),
        ("admin", &listeners.admin),
        ("ws", &listeners.ws),
    ];
    for (what, listener) in extras {
        if let Some(listener) = listener {
            say(&format!("{what} listening on {}", local_addr(listener)?));
        }
    }
    if let Some(socket) = &listeners.quic {
        let addr = socket
            .local_addr()
            .context("cannot read the address the QUIC socket is bound to")?;
        say(&format!("quic listening on {addr}"));
    }
    Ok(())
}

/// One of the optional listeners (the HTTP edge's, the admin API's): the socket systemd passed
/// for it, else a fresh one bound to its configured address, else none.
fn open_extra(
    what: &str,
    addr: Option<SocketAddr>,
    passed: Option<std::net::TcpListener>,
) -> anyhow::Result<Option<TcpListener>> {
    if let Some(socket) = passed {
        return systemd::adopt(what, socket, addr).map(Some);
    }
    let Some(addr) = addr else { return Ok(None) };
    let listener = burrow_net::listen(addr)
        .with_context(|| format!("cannot listen for the {what} on {addr}"))?;
    Ok(Some(listener))
}

/// The address a listener is bound to, for the readiness lines.
fn local_addr(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    listener
        .local_addr()
        .context("cannot read the address a listener is bound to")
}

/// Loads the operator's certificate or the generated identity (generating it the first time).
fn load_identity(source: &TlsSource) -> anyhow::Result<ServerIdentity> {
    match source {
        TlsSource::Files { cert, key } => ServerIdentity::from_pem_files(cert, key)
            .with_context(|| format!("cannot load TLS certificate {}", cert.display())),
        TlsSource::StateDir(dir) => ServerIdentity::load_or_generate(dir).with_context(|| {
            format!(
                "cannot load or create the TLS identity in {}",
                dir.display()
            )
        }),
    }
}

/// Runs a client until `shutdown` is cancelled or a fatal error; with the `args` of
/// `burrow client` and SIGHUP, it reloads its config file on SIGHUP and when the file changes.
pub(crate) async fn client(
    plan: ClientPlan,
    shutdown: CancellationToken,
    reloads: Option<(ClientArgs, Hangups)>,
) -> anyhow::Result<()> {
    let fixed = reload::client::Fixed::of(&plan);
    let ClientPlan {
        trust,
        mut config,
        status_socket,
        ws_ca,
        ..
    } = plan;
    let wss = |c: &burrow_client::CarrierKind| matches!(c, burrow_client::CarrierKind::Ws(url) if url.scheme() == "wss");
    if config.carriers.iter().any(wss) {
        let tls = burrow_net::ws::webpki_client_config(ws_ca.as_deref())
            .context("cannot set up TLS for the wss:// carrier")?;
        config.ws_tls = Some(tls);
    }
    match &trust {
        Some(trust) => {
            let tls = tls::client_config(trust, &config.server)
                .context("cannot set up TLS to the server")?;
            config.transport = burrow_client::Transport::Tls(tls);
            if config.carriers.contains(&burrow_client::CarrierKind::Quic) {
                let quic = burrow_net::quic::client_tls(trust, &config.server)
                    .context("cannot set up TLS to the server")?;
                config.quic_tls = Some(quic);
            }
        }
        None => warn!(
            "TLS is off (insecure_plain): traffic is unencrypted and the server is not verified"
        ),
    }
    let socket = status_socket::bind(&status_socket).await?;
    let api_stop = CancellationToken::new();
    let api = socket.map(|(listener, file)| {
        let serve =
            burrow_client::status::api::serve(config.status.clone(), listener, api_stop.clone());
        (tokio::spawn(serve), file)
    });
    info!(server = %config.server, tunnels = config.tunnels.len(), "client starting");
    if let Some(proxy) = &config.proxy {
        info!(%proxy, "reaching the server through a proxy");
    }
    let first = std::sync::Arc::new(systemd::FirstReady::new(
        config.tunnels.iter().map(|t| t.name.clone()),
    ));
    let started = reload::client::Started {
        fixed,
        transport: config.transport.clone(),
        first: first.clone(),
    };
    let client = burrow_client::Client::new(config, move |event| {
        let name = tunnel_name(&event).to_owned();
        on_event(event);
        first.published(&name);
    });
    if let Some((args, hangups)) = reloads {
        let triggers = reload::Triggers::new(hangups, Some(&args.config));
        let reloads =
            reload::client::serve(args, started, client.reloader(), triggers, shutdown.clone());
        tokio::spawn(reloads);
    }
    let result = client.run(shutdown).await;
    // The status stays readable until the client has stopped, then its socket file goes.
    api_stop.cancel();
    if let Some((task, file)) = api {
        let _ = task.await;
        drop(file);
    }
    result?;
    Ok(())
}

/// Prints what the user should see of the client's progress.
fn on_event(event: Event) {
    match event {
        Event::TunnelReady {
            name,
            public,
            local,
        } => {
            say(&format!("tunnel {name} ready at {public} -> {local}"));
        }
        Event::HttpReady {
            name,
            urls,
            local,
            client,
        } => {
            say(&format!(
                "tunnel {name} ready at {} -> {local} (client {client})",
                urls.join(" ")
            ));
        }
        Event::SinkReady {
            name,
            local,
            server,
        } => {
            say(&format!(
                "tunnel {name} ready: {local} -> sink {name} on {server}"
            ));
        }
    }
}

/// The tunnel an event is about.
fn tunnel_name(event: &Event) -> &str {
    match event {
        Event::TunnelReady { name, .. }
        | Event::HttpReady { name, .. }
        | Event::SinkReady { name, .. } => name,
    }
}

/// Prints one line of the stdout contract and flushes it. A closed stdout must not stop a
/// running server or client, so a failed write is only logged.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        warn!("cannot write to stdout: {e}");
    }
}
