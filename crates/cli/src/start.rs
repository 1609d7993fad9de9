//! Starting a checked plan: load the TLS identity or trust, bind, print the readiness lines,
//! and hand over to the server or client library.
//!
//! The lines printed here are burrow's stdout contract (`fingerprint ...`, `listening on ...`,
//! `tunnel ... ready at ...`): scripts wait for them, so each is flushed at once.

use crate::client_config::ClientPlan;
use crate::reload;
use crate::server_config::{ServerArgs, ServerPlan, TlsSource};
use crate::signals::Hangups;
use crate::status_socket;
use anyhow::Context;
use burrow_client::Event;
use burrow_net::tls::{self, ServerIdentity};
use std::io::Write;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Runs a server until `shutdown` is cancelled, reloading its configuration on SIGHUP and
/// when its config file changes.
pub(crate) async fn server(
    args: ServerArgs,
    plan: ServerPlan,
    shutdown: CancellationToken,
    hangups: Hangups,
) -> anyhow::Result<()> {
    let fixed = reload::Fixed::of(&plan);
    let triggers = reload::Triggers::new(hangups, args.config.as_deref());
    let ServerPlan {
        listen,
        tls,
        mut config,
        edge,
        admin,
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
    let listener =
        burrow_net::listen(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {listen}"))?;
    if let Some(fingerprint) = &fingerprint {
        say(&format!("fingerprint {fingerprint}"));
    }
    say(&format!("listening on {local}"));
    let http = bind_extra("http edge", edge.http)?;
    let https = bind_extra("https edge", edge.https)?;
    let admin = bind_extra("admin", admin)?;
    let listeners = burrow_server::Listeners {
        control: listener,
        http,
        https,
        admin,
    };
    let server = burrow_server::Server::new(config, listeners, shutdown.clone());
    let reloads = reload::serve(args, fixed, server.reloader(), triggers, shutdown);
    tokio::spawn(reloads);
    server.run().await
}

/// Binds one of the optional listeners (the HTTP edge's, the admin API's) and prints where it
/// listens, as `<what> listening on <addr>`.
fn bind_extra(
    what: &str,
    addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = burrow_net::listen(addr)
        .with_context(|| format!("cannot listen for the {what} on {addr}"))?;
    let local = listener
        .local_addr()
        .with_context(|| format!("cannot read the address bound for {addr}"))?;
    say(&format!("{what} listening on {local}"));
    Ok(Some(listener))
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

/// Runs a client until `shutdown` is cancelled or a fatal error.
pub(crate) async fn client(plan: ClientPlan, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ClientPlan {
        trust,
        mut config,
        status_socket,
        ..
    } = plan;
    match &trust {
        Some(trust) => {
            let tls = tls::client_config(trust, &config.server)
                .context("cannot set up TLS to the server")?;
            config.transport = burrow_client::Transport::Tls(tls);
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
    let result = burrow_client::run(config, shutdown, on_event).await;
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

/// Prints one line of the stdout contract and flushes it. A closed stdout must not stop a
/// running server or client, so a failed write is only logged.
pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        warn!("cannot write to stdout: {e}");
    }
}
