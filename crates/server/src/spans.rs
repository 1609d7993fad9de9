//! The spans a session's streams are traced with.
//!
//! Every session runs in a `session` span (ids: `session`, `client`, `peer`) and every visitor
//! stream in a `stream` span (`stream`, `visitor`, `session`, `tunnel`). Stream spans are at
//! `debug`, so with the usual `info` log filter they cost nothing unless traces are exported;
//! they link to their session's span (`follows_from`) rather than nest in it, because a stream
//! can start before its session is known (a visitor waiting out a lease) and outlive it.

use std::net::SocketAddr;
use std::sync::Mutex;
use tracing::Span;
use tracing::field::{Empty, display};

/// A session's span, kept where streams can link to it for as long as the session lasts.
/// Session handles outlive their session (a lease keeps one); the span must not, or its end
/// would be when the last handle goes, so [`SessionSpan::release`] lets go of it.
#[derive(Debug)]
pub(crate) struct SessionSpan(Mutex<Span>);

impl SessionSpan {
    /// Holds `span` until [`SessionSpan::release`].
    pub(crate) fn new(span: Span) -> Self {
        Self(Mutex::new(span))
    }

    /// Links `stream` to the session's span; nothing when no layer wants `stream` (traces
    /// off) or the session has ended.
    pub(crate) fn link(&self, stream: &Span) {
        if stream.is_disabled() {
            return;
        }
        let session = self
            .0
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| Span::none());
        stream.follows_from(&session);
    }

    /// Lets go of the span at the session's end, so it closes with the session.
    pub(crate) fn release(&self) {
        let released = self
            .0
            .lock()
            .map(|mut s| std::mem::replace(&mut *s, Span::none()));
        drop(released);
    }
}

/// The span of a visitor's stream whose session is not known yet: [`adopt`] fills it in.
pub(crate) fn stream(stream: u64, visitor: SocketAddr) -> Span {
    tracing::debug_span!("stream", stream, visitor = %visitor, session = Empty, tunnel = Empty)
}

/// Records which session and tunnel (the client's tunnel id) carry `span`'s stream, and links
/// it to the session's span.
pub(crate) fn adopt(span: &Span, session: &crate::registry::SessionHandle, tunnel: u32) {
    if span.is_disabled() {
        return;
    }
    span.record("session", display(format_args!("{:016x}", session.id)));
    span.record("tunnel", tunnel);
    session.span.link(span);
}

/// The span of a stream that starts with its session known (the HTTP edge's).
pub(crate) fn session_stream(
    stream_id: u64,
    visitor: SocketAddr,
    session: &crate::registry::SessionHandle,
    tunnel: u32,
) -> Span {
    let span = stream(stream_id, visitor);
    adopt(&span, session, tunnel);
    span
}
