//! Dialing the server: TCP (directly or through a proxy), TLS (unless plain), then the burrow
//! handshake, under one deadline.

use crate::config::{ClientConfig, Transport};
use burrow_net::{
    Carrier, FrameIo, read_frame, read_preface, tls, tune_carrier, write_frame, write_preface,
};
use burrow_proto::auth::{self, Secret};
use burrow_proto::msg::{Challenge, HandshakeError, Hello, Welcome};
use burrow_proto::preface::version_advice;
use burrow_proto::{PrefaceError, VERSION};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// Retrying will not help: authentication, version, trust.
    #[error("{0}")]
    Fatal(String),
    /// The server could not be reached or the connection broke; try again later.
    #[error("{0}")]
    Retry(String),
    /// The proxy wants credentials, or refused the ones given: fatal on the first connection,
    /// as a wrong token is, and retried on later ones (a proxy's login backend may be down).
    #[error("{0}")]
    ProxyAuth(String),
}

/// An established control stream.
pub(crate) struct Established {
    pub carrier: Carrier,
    pub session: u64,
    pub secret: Secret,
}

/// Opens a control stream and authenticates.
pub(crate) async fn control(config: &ClientConfig) -> Result<Established, ConnectError> {
    timeout(config.connect_timeout, async {
        let (mut carrier, challenge) = open(config).await?;
        let nonce = auth::nonce();
        let proof = auth::control_proof(&config.token, &config.name, &challenge, &nonce);
        let hello = Hello::Control {
            name: config.name.clone(),
            nonce,
            proof,
        };
        let session = exchange(&mut carrier, &hello).await?;
        let secret = auth::session_secret(&config.token, &challenge, &nonce);
        Ok(Established {
            carrier,
            session,
            secret,
        })
    })
    .await
    .unwrap_or_else(|_| {
        Err(ConnectError::Retry(format!(
            "no answer from {} within {:?}",
            config.server, config.connect_timeout
        )))
    })
}

/// Opens a data connection for `session`.
pub(crate) async fn data(
    config: &ClientConfig,
    session: u64,
    secret: &Secret,
) -> Result<Carrier, ConnectError> {
    timeout(config.connect_timeout, async {
        let (mut carrier, challenge) = open(config).await?;
        let proof = auth::data_proof(secret, session, &challenge);
        exchange(&mut carrier, &Hello::Data { session, proof }).await?;
        Ok(carrier)
    })
    .await
    .unwrap_or_else(|_| Err(ConnectError::Retry("data connection timed out".into())))
}

/// TCP (through the proxy, if any), TLS, prefaces and the challenge.
async fn open(config: &ClientConfig) -> Result<(Carrier, [u8; 32]), ConnectError> {
    let tcp = match &config.proxy {
        Some(proxy) => crate::proxy::dial(proxy, &config.server).await?,
        None => TcpStream::connect(&config.server)
            .await
            .map_err(|e| ConnectError::Retry(format!("cannot reach {}: {e}", config.server)))?,
    };
    let _ = tune_carrier(&tcp);
    let mut carrier = match &config.transport {
        Transport::Plain => Carrier::Plain(tcp),
        Transport::Tls(tls_config) => {
            Carrier::ClientTls(Box::new(tls_handshake(config, tls_config, tcp).await?))
        }
    };
    write_preface(&mut carrier)
        .await
        .map_err(|e| retry_io("sending the preface", e))?;
    let theirs = read_preface(&mut carrier).await.map_err(|e| match e {
        FrameIo::Preface(PrefaceError::LooksLikeTls) => ConnectError::Fatal(
            "the server speaks TLS; drop --insecure-plain (plain TCP needs it on both sides)"
                .into(),
        ),
        FrameIo::Preface(p) => {
            ConnectError::Fatal(format!("{} is not a burrow server: {p}", config.server))
        }
        FrameIo::Io(e) if closed_at_once(&e) && matches!(config.transport, Transport::Plain) => {
            ConnectError::Retry(closed_at_once_message(&config.server, false))
        }
        other => ConnectError::Retry(format!(
            "the server closed the connection during the handshake ({other}); if it runs with \
             --insecure-plain, the client needs it too"
        )),
    })?;
    if theirs.version != VERSION {
        return Err(ConnectError::Fatal(version_advice(
            VERSION,
            theirs.version,
            false,
        )));
    }
    let challenge: Challenge = read_frame(&mut carrier)
        .await
        .map_err(|e| retry_io("reading the challenge", e))?;
    Ok((carrier, challenge.nonce))
}

async fn tls_handshake(
    config: &ClientConfig,
    tls_config: &std::sync::Arc<crate::config::TlsClientConfig>,
    tcp: TcpStream,
) -> Result<tls::tokio_rustls::client::TlsStream<TcpStream>, ConnectError> {
    let host = host_of(&config.server);
    let name = tls::server_name(host)
        .map_err(|e| ConnectError::Fatal(format!("server name `{host}`: {e}")))?;
    let connector = tls::tokio_rustls::TlsConnector::from(tls_config.clone());
    connector.connect(name, tcp).await.map_err(|e| {
        if tls::is_trust_error(&e) {
            let why = tls::trust_error_message(&e).unwrap_or_else(|| e.to_string());
            ConnectError::Fatal(format!("the server's certificate is not trusted: {why}"))
        } else if closed_at_once(&e) {
            ConnectError::Retry(closed_at_once_message(&config.server, true))
        } else {
            ConnectError::Retry(format!(
                "TLS handshake with {} failed: {e} (if the server runs with --insecure-plain, the client needs it too)",
                config.server
            ))
        }
    })
}

/// Sends the hello and reads the welcome.
async fn exchange(carrier: &mut Carrier, hello: &Hello) -> Result<u64, ConnectError> {
    write_frame(carrier, hello)
        .await
        .map_err(|e| retry_io("sending the hello", e))?;
    match read_frame::<_, Welcome>(carrier)
        .await
        .map_err(|e| retry_io("reading the welcome", e))?
    {
        Welcome::Ok { session, .. } => Ok(session),
        Welcome::Err(e @ HandshakeError::AuthFailed) => Err(ConnectError::Fatal(e.to_string())),
        Welcome::Err(e) => Err(ConnectError::Retry(e.to_string())),
    }
}

/// Explains a server that closed the connection before answering: it bans addresses that failed
/// too many handshakes and drops connections beyond its cap on handshakes in progress; a plain
/// server also hangs up on a TLS client.
fn closed_at_once_message(server: &str, tls: bool) -> String {
    let (what, plain) = if tls {
        (
            "TLS handshake",
            ", or when it runs with --insecure-plain, which the client then needs too",
        )
    } else {
        ("handshake", "")
    };
    format!(
        "{server} closed the connection before the {what} (is this address banned after failed \
         logins? a server also does this when too many handshakes are in progress{plain})"
    )
}

/// True when the server hung up without a word: end of file, or a reset because it closed
/// with our first bytes unread.
fn closed_at_once(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

fn retry_io(what: &str, e: impl std::fmt::Display) -> ConnectError {
    ConnectError::Retry(format!("connection lost while {what}: {e}"))
}

/// The host part of `host:port` (IPv6 brackets removed).
pub(crate) fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_handles_names_and_ipv6() {
        assert_eq!(super::host_of("example.net:7777"), "example.net");
        assert_eq!(super::host_of("[::1]:7777"), "::1");
        assert_eq!(super::host_of("10.0.0.1:1"), "10.0.0.1");
    }
}
