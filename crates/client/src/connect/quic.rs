//! The control stream over QUIC, with 0-RTT when the client has talked to the server before.
//!
//! The client keeps one TLS session store for the server ([`ClientConfig::quic_tls`], built
//! once), so a reconnect resumes the session and its first flight may carry 0-RTT data. Only
//! the client preface goes there: replaying it makes the server send a fresh challenge and
//! nothing else, and the hello, whose proof answers that challenge, waits for the handshake to
//! finish. The server answers the preface in its own first flight, so a reconnect costs two
//! round trips instead of three. When the server refuses the early data (it restarted, or
//! forgot the session), the stream opened early is gone: the client opens another and sends
//! its preface again.
//!
//! A fresh UDP socket for every attempt: the session store lives in the TLS configuration, not
//! the endpoint, and a new socket gets a new NAT mapping after an outage that broke the old one.

use super::{
    ConnectError, Greeted, Link, control_preface, greet, host_of, read_challenge, retry_io,
};
use crate::config::ClientConfig;
use crate::server_streams::Inbound;
use burrow_net::quic::{self, Dialed, QuicLink, QuicStream};
use burrow_net::{Carrier, tls, write_preface_with};

/// Connects over QUIC and greets the server on the control stream.
pub(super) async fn control(config: &ClientConfig) -> Result<Greeted, ConnectError> {
    let (link, early) = match dial(config).await? {
        Dialed::Done(connection) => (QuicLink::new(connection), None),
        Dialed::Early(connection, handshake) => (QuicLink::new(connection), Some(handshake)),
    };
    let mut zero_rtt = false;
    let mut stream = None;
    if let Some(handshake) = early {
        // Nothing but the preface before the handshake is done (see the module documentation).
        let mut early = open(&link).await?;
        let sent = write_preface_with(&mut early, control_preface()).await;
        let accepted = handshake.finish().await.map_err(|e| failed(config, e))?;
        zero_rtt = accepted && sent.is_ok();
        if !zero_rtt {
            // The stream went with the refused early data: greet on a new one.
            tracing::debug!("the server refused the 0-RTT preface; sending it again");
        }
        stream = Some(early).filter(|_| zero_rtt);
    }
    let super::Challenged {
        carrier,
        challenge,
        server_caps,
    } = match stream {
        Some(stream) => read_challenge(config, Carrier::Quic(Box::new(stream))).await?,
        None => {
            let stream = Carrier::Quic(Box::new(open(&link).await?));
            greet(config, stream, control_preface()).await?
        }
    };
    Ok(Greeted {
        inbound: Some(Inbound::Quic(link.clone())),
        link: Link::Quic(link),
        carrier,
        challenge,
        server_caps,
        zero_rtt: Some(zero_rtt),
    })
}

/// A stream on the link.
async fn open(link: &QuicLink) -> Result<QuicStream, ConnectError> {
    link.open()
        .await
        .map_err(|e| retry_io("opening the control stream", e))
}

/// A QUIC connection to the server, checked with the same trust as TLS over TCP; returned
/// before its handshake is done when the session is resumed.
async fn dial(config: &ClientConfig) -> Result<Dialed, ConnectError> {
    let tls = config.quic_tls.as_ref().ok_or_else(|| {
        ConnectError::Unusable(
            "the QUIC carrier is always encrypted: it cannot run with insecure_plain".into(),
        )
    })?;
    let addr = tokio::net::lookup_host(&config.server)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ConnectError::Retry(format!("cannot resolve {}", config.server)))?;
    let bind = match addr {
        std::net::SocketAddr::V4(_) => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        std::net::SocketAddr::V6(_) => std::net::SocketAddr::from(([0u16; 8], 0)),
    };
    let endpoint = quic::client_endpoint(bind)
        .map_err(|e| ConnectError::Retry(format!("cannot open a UDP socket for QUIC: {e}")))?;
    quic::dial(&endpoint, addr, host_of(&config.server), tls)
        .await
        .map_err(|e| failed(config, e))
}

/// A failed QUIC connection: fatal when the server's certificate was refused.
fn failed(config: &ClientConfig, e: std::io::Error) -> ConnectError {
    if tls::is_trust_error(&e) {
        let why = tls::trust_error_message(&e).unwrap_or_else(|| e.to_string());
        ConnectError::Fatal(format!("the server's certificate is not trusted: {why}"))
    } else {
        ConnectError::Retry(format!("QUIC connection to {} failed: {e}", config.server))
    }
}
