//! Connecting with session resumption and 0-RTT, on both sides.
//!
//! A client that has talked to a server before holds a TLS session ticket for it (the
//! [`ClientTls`] keeps one session store for all its connections). Its next connection resumes
//! that session and may send 0-RTT data: application bytes in its very first flight, before the
//! handshake is done. [`dial`] says which case it is. 0-RTT data can be replayed by whoever
//! recorded it, so the caller must put in it only bytes whose replay gains nothing: burrow sends
//! its client preface there and nothing else (the hello waits for the server's fresh challenge).
//!
//! The server may refuse the early data and still accept the connection (it lost or never had
//! the session: a restart, an evicted ticket, a ticket used already). Then, as quinn has it,
//! every stream opened before the handshake finished is gone: writing on it fails with
//! `ZeroRttRejected`, and stream ids start again from the first. The caller opens its stream
//! again and sends what it sent early once more; [`Handshake::finish`] tells it to.
//!
//! The server ([`accept_early`]) takes streams at once, so it answers a client's early preface
//! with its own preface and challenge in its first flight (0.5-RTT data).

use super::{ClientTls, QuicClientConfig, Refusal, failure, transport_config};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// What [`dial`] got: a finished handshake, or a resumed one that takes 0-RTT data now.
#[derive(Debug)]
pub enum Dialed {
    /// No resumable session: a full handshake, already complete; nothing went early.
    Done(quinn::Connection),
    /// A resumed session: the connection takes streams and 0-RTT data at once, and the
    /// [`Handshake`] finishes in the background.
    Early(quinn::Connection, Handshake),
}

/// A client handshake still running on a resumed session.
pub struct Handshake {
    accepted: quinn::ZeroRttAccepted,
    connection: quinn::Connection,
    refusal: Refusal,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("connection", &self.connection.stable_id())
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// Waits for the handshake to complete. `Ok(true)`: the server took the 0-RTT data and
    /// the streams opened so far carry on. `Ok(false)`: the server refused it; those streams
    /// are gone, open them again and re-send what was sent early. An error is the connection's
    /// failure, as [`super::connect`] reports it. Bounded by the idle timeout.
    pub async fn finish(self) -> io::Result<bool> {
        let accepted = self.accepted.await;
        match self.connection.close_reason() {
            Some(e) => Err(failure(&self.refusal, e)),
            None => Ok(accepted),
        }
    }
}

/// Connects to a server and, when the client holds a session for it, returns at once so that
/// 0-RTT data can go in the first flight; otherwise completes the handshake first.
///
/// `server_name` is the host the certificate is checked against and the key of the session
/// store. Errors are those of [`super::connect`].
pub async fn dial(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    server_name: &str,
    tls: &ClientTls,
) -> io::Result<Dialed> {
    let crypto = QuicClientConfig::try_from(tls.config.clone()).map_err(io::Error::other)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_config());
    let connecting = endpoint
        .connect_with(client, server, server_name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    match connecting.into_0rtt() {
        Ok((connection, accepted)) => {
            let handshake = Handshake {
                accepted,
                connection: connection.clone(),
                refusal: tls.refusal.clone(),
            };
            Ok(Dialed::Early(connection, handshake))
        }
        Err(connecting) => match connecting.await {
            Ok(connection) => Ok(Dialed::Done(connection)),
            Err(e) => Err(failure(&tls.refusal, e)),
        },
    }
}

/// A server handshake that may still be running while the connection already serves streams.
pub struct ServerHandshake {
    /// `None` when the handshake was complete before the connection was handed out.
    done: Option<quinn::ZeroRttAccepted>,
    connection: quinn::Connection,
}

impl std::fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("connection", &self.connection.stable_id())
            .field("running", &self.done.is_some())
            .finish()
    }
}

impl ServerHandshake {
    /// Waits for the handshake to complete; an error when it failed (the connection is closed
    /// then, and its streams fail with it). Bounded by the idle timeout.
    pub async fn finish(self) -> Result<(), quinn::ConnectionError> {
        if let Some(done) = self.done {
            // On a server the value says nothing; whether the connection failed does.
            done.await;
        }
        match self.connection.close_reason() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

/// Accepts a connection attempt and hands out the connection before its handshake completes,
/// so streams a resumed client opened in 0-RTT are served at once and answered in 0.5-RTT
/// data. The [`ServerHandshake`] must be awaited (under a deadline) to learn whether the
/// handshake succeeded; until it has, nothing from the client is authenticated by TLS, and
/// burrow does not rely on it: every stream proves itself with the challenge–response.
pub async fn accept_early(
    incoming: quinn::Incoming,
) -> Result<(quinn::Connection, ServerHandshake), quinn::ConnectionError> {
    let connecting = incoming.accept()?;
    let (connection, done) = match connecting.into_0rtt() {
        Ok((connection, done)) => (connection, Some(done)),
        // quinn always allows 0.5-RTT on a server; finish the handshake if that ever changes.
        Err(connecting) => (connecting.await?, None),
    };
    let handshake = ServerHandshake {
        done,
        connection: connection.clone(),
    };
    Ok((connection, handshake))
}
