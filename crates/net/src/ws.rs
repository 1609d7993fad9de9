//! The WebSocket carrier's transport: one WebSocket connection as a plain byte stream.
//!
//! A WebSocket carrier lets burrow sit behind an HTTP reverse proxy, an ingress or a CDN, or share
//! port 443 with a web server: the client opens a WebSocket to a URL such as
//! `wss://example.net/burrow`, and the session then runs on the bytes inside it, exactly as on
//! a TCP carrier (with burrow's own TLS inside unless the carrier is plain).
//!
//! [`connect`] (client) and [`accept`] (server) both yield a [`WsIo`], an `AsyncRead +
//! AsyncWrite` over binary messages. Either side may close: a close frame, or the end of the TCP
//! connection, reads as end-of-stream. A WebSocket has no half-close, so [`WsIo`]'s shutdown
//! closes the whole connection; whatever runs over it (a multiplexer) must close only when done.
//!
//! Division of work with the callers: the client dials the TCP connection itself (directly or
//! through an HTTP/SOCKS proxy) and passes it in; the server passes each accepted connection in
//! and bounds the handshake with its own deadline. For `wss://` the client runs TLS over the TCP
//! connection with the rustls configuration it is given ([`webpki_client_config`] builds one that
//! trusts the Mozilla roots and, optionally, a CA file).
//!
//! Tungstenite frames the messages; the server reads and answers the HTTP upgrade itself, so any
//! request for another path, or one that is not a WebSocket upgrade, gets a plain HTTP error
//! response rather than a dropped connection, and the request head has a hard size limit.

mod client;
mod io;
mod server;
#[cfg(test)]
mod tests;

pub use client::{connect, webpki_client_config};
pub use io::WsIo;
pub use server::{Upgraded, accept, upgrade};

use std::io as stdio;

/// Largest message, and largest frame, burrow accepts from the peer. What [`WsIo`] sends is far
/// smaller: written bytes are coalesced into messages of at most [`SEND_MESSAGE`] bytes.
pub const MAX_MESSAGE: usize = 1 << 20;

/// Largest binary message [`WsIo`] sends.
pub const SEND_MESSAGE: usize = 64 << 10;

/// Largest HTTP request head (request line and headers) the server reads. (The client reads at
/// most 64 KiB of the server's answer, tungstenite's own limit.)
pub const MAX_HEAD: usize = 16 << 10;

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid WebSocket URL {url}: {why}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The client's TLS configuration could not be built or used.
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The server's certificate is not trusted (`wss://` only).
    #[error("cannot trust the WebSocket server {host}: {why}")]
    Trust {
        /// The host name the certificate was checked against.
        host: String,
        /// Why it is not trusted.
        why: String,
    },
    /// The TLS handshake failed for another reason than trust (`wss://` only).
    #[error("TLS handshake with the WebSocket server failed: {0}")]
    Tls(#[source] stdio::Error),
    /// The server (or a proxy in front of it) answered the upgrade with another status than
    /// 101 Switching Protocols.
    #[error("the server answered {status} {reason} at {path}: {}", status_hint(*status))]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The status's reason phrase, as the server sent it or the standard one.
        reason: String,
        /// The path (and query) that was asked for.
        path: String,
    },
    /// The server's answer is not a WebSocket handshake (not HTTP, or a 101 without the
    /// WebSocket headers).
    #[error("the server at {path} did not answer as a WebSocket server: {why}")]
    NotWebSocket {
        /// The path (and query) that was asked for.
        path: String,
        /// What was wrong with the answer.
        why: String,
    },
    /// A visitor asked the server for another path than the configured one (answered 404).
    #[error("refused a request for {requested}: the WebSocket carrier's path is {expected}")]
    WrongPath {
        /// The path the request asked for.
        requested: String,
        /// The configured path.
        expected: String,
    },
    /// The request at the configured path is not a usable WebSocket upgrade (answered with a
    /// 4xx status).
    #[error("refused a request for {path}: {why}")]
    BadRequest {
        /// The path the request asked for, if the request line could be read.
        path: String,
        /// What was wrong with the request.
        why: String,
    },
    /// The server's caller turned the request down (answered 403 Forbidden).
    #[error("refused a WebSocket upgrade: {0}")]
    Forbidden(String),
    /// The connection failed or closed during the handshake.
    #[error("WebSocket handshake: {0}")]
    Io(#[from] stdio::Error),
}

/// What a client's user should check for an unexpected HTTP status.
fn status_hint(status: u16) -> &'static str {
    match status {
        404 => "is the path right?",
        301 | 302 | 307 | 308 => "the URL redirects elsewhere; use the final URL",
        400 | 426 => {
            "the upgrade did not reach the server intact; does a proxy in between pass WebSocket \
             upgrades (Upgrade and Connection headers)?"
        }
        403 => {
            "access was refused, by a proxy in front of the server or by the burrow server (it \
             refuses an address banned after failed logins)"
        }
        401 | 407 => "access was refused, by the server or a proxy in front of it",
        502..=504 => "a proxy in front of the burrow server could not reach it",
        _ => "expected 101 Switching Protocols from a burrow WebSocket endpoint",
    }
}

/// The tungstenite settings both sides use: bounded reads, writes passed on at once (the
/// coalescing happens in [`WsIo`], one message per flush or per [`SEND_MESSAGE`] bytes).
fn config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
        .read_buffer_size(SEND_MESSAGE)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * SEND_MESSAGE)
}
