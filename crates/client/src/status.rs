//! The client's view of itself: the session's state and every tunnel's progress and counters.
//!
//! A [`Status`] is a cheap handle (clones share one state) that the running client keeps up to
//! date and anyone may read with [`Status::snapshot`]: the CLI serves it on a local socket
//! ([`api`]), an embedder may show it its own way. The state sits behind one
//! `std::sync::Mutex` that is held only to copy or set a few fields, never across `.await`.
//!
//! Tunnels are keyed by name, not by position, so tunnels can be added and removed while the
//! client runs ([`Status::add_tunnel`], [`Status::remove_tunnel`]). Each tunnel's stream and
//! byte counters are atomics of their own: a stream takes them once when it starts (one short
//! lock) and touches only them afterwards. Bytes are added when a stream ends, from the counts
//! the relay returns, so nothing is counted per byte on the relay's fast path; a long transfer
//! shows up in `bytes_in`/`bytes_out` once it finishes.

pub mod api;

use crate::config::TunnelConfig;
use burrow_proto::msg::TunnelKind;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A shared, always current view of a running client. Clones share one state.
#[derive(Debug, Clone, Default)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
}

/// The mutable state behind [`Status`].
#[derive(Debug, Default)]
struct Inner {
    server: String,
    state: State,
    last_error: Option<String>,
    session: Option<u64>,
    carrier: Option<&'static str>,
    connected_since: Option<SystemTime>,
    reconnects: u64,
    rtt: Option<Duration>,
    /// In the order they were added (the config's order, then what reloads added).
    tunnels: Vec<Tunnel>,
}

/// One tunnel's state.
#[derive(Debug)]
struct Tunnel {
    name: String,
    kind: Kind,
    local: String,
    state: TunnelState,
    public: Option<String>,
    urls: Vec<String>,
    refused: Option<String>,
    counters: Arc<Counters>,
}

/// A tunnel's stream and byte counters, shared with its running streams.
#[derive(Debug, Default)]
struct Counters {
    active: AtomicU64,
    total: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// Where the client's session stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Dialling the server for the first time.
    #[default]
    Connecting,
    /// A session is up.
    Connected,
    /// The carrier was lost (or a reconnect failed); trying again with backoff.
    Reconnecting,
}

/// What a tunnel publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A public TCP port.
    Tcp,
    /// A public UDP port.
    Udp,
    /// A name on the server's HTTP edge.
    Http,
    /// Events from a local UDP port to a sink on the server's side.
    Sink,
}

impl From<&TunnelKind> for Kind {
    fn from(kind: &TunnelKind) -> Self {
        match kind {
            TunnelKind::Tcp => Kind::Tcp,
            TunnelKind::Udp(_) => Kind::Udp,
            TunnelKind::Http(_) => Kind::Http,
            TunnelKind::UdpToSink => Kind::Sink,
        }
    }
}

/// Where a tunnel stands in the current session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelState {
    /// Asked for (or waiting for a session to ask in); not granted yet.
    #[default]
    Pending,
    /// Granted: visitors reach it.
    Ready,
    /// The server refused it; `refused` says why.
    Refused,
}

/// A copy of the client's state at one moment: what `GET /status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The server's control address, `host:port`.
    pub server: String,
    /// Where the session stands.
    pub state: State,
    /// Why the last session or connection attempt failed, if one did.
    pub last_error: Option<String>,
    /// The current (or last) session's id, as the logs and the server's admin API write it.
    pub session: Option<String>,
    /// The carrier the current (or last) session runs over: `tcp`, `mux`, ...
    #[serde(default)]
    pub carrier: Option<String>,
    /// When the current session was established, in seconds since the Unix epoch.
    pub connected_since_unix: Option<u64>,
    /// Sessions established after the first one.
    pub reconnects: u64,
    /// The last heartbeat's round trip, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Every tunnel, in the config's order (tunnels added by a reload come last).
    pub tunnels: Vec<TunnelSnapshot>,
}

/// One tunnel in a [`Snapshot`]: an element of what `GET /tunnels` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSnapshot {
    /// The tunnel's name.
    pub name: String,
    /// What it publishes.
    pub kind: Kind,
    /// Its target on the client's side (for a sink tunnel, the address it listens on).
    pub local: String,
    /// Where it stands in the current session.
    pub state: TunnelState,
    /// The public `host:port` last granted (TCP and UDP), kept while a reconnect asks again.
    pub public: Option<String>,
    /// The URLs last granted (HTTP).
    pub urls: Vec<String>,
    /// Why the server refused it, while it is refused.
    pub refused: Option<String>,
    /// Streams open now (for UDP, datagram connections).
    pub streams_active: u64,
    /// Streams opened since the client started.
    pub streams_total: u64,
    /// Bytes from visitors to the target, of TCP and HTTP streams that ended.
    pub bytes_in: u64,
    /// Bytes from the target back to visitors, of TCP and HTTP streams that ended.
    pub bytes_out: u64,
}

impl Status {
    /// An empty status; [`crate::run`] fills it in from its configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let since = inner
            .connected_since
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        Snapshot {
            server: inner.server.clone(),
            state: inner.state,
            last_error: inner.last_error.clone(),
            session: inner.session.map(|s| format!("{s:016x}")),
            carrier: inner.carrier.map(str::to_owned),
            connected_since_unix: since.map(|d| d.as_secs()),
            reconnects: inner.reconnects,
            rtt_ms: inner.rtt.map(|d| d.as_secs_f64() * 1e3),
            tunnels: inner.tunnels.iter().map(Tunnel::snapshot).collect(),
        }
    }

    /// Starts reporting on `tunnel` (pending), or resets it if one of that name exists.
    pub fn add_tunnel(&self, tunnel: &TunnelConfig) {
        let entry = Tunnel {
            name: tunnel.name.clone(),
            kind: Kind::from(&tunnel.kind),
            local: tunnel.local.clone(),
            state: TunnelState::Pending,
            public: None,
            urls: Vec::new(),
            refused: None,
            counters: Arc::default(),
        };
        let mut inner = self.lock();
        match inner.tunnels.iter_mut().find(|t| t.name == tunnel.name) {
            Some(existing) => *existing = entry,
            None => inner.tunnels.push(entry),
        }
    }

    /// The tunnel called `tunnel.name` now forwards to `tunnel.local`; its state and counters
    /// stay.
    pub(crate) fn retarget(&self, tunnel: &TunnelConfig) {
        self.with_tunnel(&tunnel.name, |t| t.local = tunnel.local.clone());
    }

    /// Stops reporting on the tunnel called `name`; streams still running are not counted.
    pub fn remove_tunnel(&self, name: &str) {
        self.lock().tunnels.retain(|t| t.name != name);
    }

    /// Resets the state for a client of `server` that publishes `tunnels`.
    pub(crate) fn start(&self, server: &str, tunnels: &[TunnelConfig]) {
        *self.lock() = Inner {
            server: server.to_owned(),
            ..Inner::default()
        };
        tunnels.iter().for_each(|t| self.add_tunnel(t));
    }

    /// A session was established over `carrier`.
    pub(crate) fn connected(&self, session: u64, carrier: &'static str) {
        let mut inner = self.lock();
        if inner.session.is_some() {
            inner.reconnects += 1;
        }
        inner.state = State::Connected;
        inner.session = Some(session);
        inner.carrier = Some(carrier);
        inner.connected_since = Some(SystemTime::now());
        inner.rtt = None;
        for tunnel in &mut inner.tunnels {
            tunnel.state = TunnelState::Pending;
            tunnel.refused = None;
        }
    }

    /// The session or a connection attempt failed with `why`; the client tries again.
    pub(crate) fn failed(&self, why: &str) {
        let mut inner = self.lock();
        if inner.session.is_some() {
            inner.state = State::Reconnecting;
        }
        inner.last_error = Some(why.to_owned());
        inner.connected_since = None;
        inner.rtt = None;
        for tunnel in &mut inner.tunnels {
            tunnel.state = TunnelState::Pending;
        }
    }

    /// A heartbeat came back after `rtt`.
    pub(crate) fn rtt(&self, rtt: Duration) {
        self.lock().rtt = Some(rtt);
    }

    /// The tunnel `name` was granted, at `public` (TCP, UDP) or `urls` (HTTP).
    pub(crate) fn ready(&self, name: &str, public: Option<String>, urls: Vec<String>) {
        self.with_tunnel(name, |t| {
            t.state = TunnelState::Ready;
            t.refused = None;
            t.public = public;
            t.urls = urls;
        });
    }

    /// The server refused the tunnel `name`.
    pub(crate) fn refused(&self, name: &str, reason: String) {
        self.with_tunnel(name, |t| {
            t.state = TunnelState::Refused;
            t.refused = Some(reason);
        });
    }

    /// Counts a stream of the tunnel `name` as open until the returned guard is dropped.
    pub(crate) fn stream(&self, name: &str) -> Option<StreamGuard> {
        let counters = self.with_tunnel(name, |t| t.counters.clone())?;
        counters.active.fetch_add(1, Ordering::Relaxed);
        counters.total.fetch_add(1, Ordering::Relaxed);
        Some(StreamGuard { counters })
    }

    fn with_tunnel<T>(&self, name: &str, f: impl FnOnce(&mut Tunnel) -> T) -> Option<T> {
        self.lock()
            .tunnels
            .iter_mut()
            .find(|t| t.name == name)
            .map(f)
    }

    /// The state; a panic elsewhere while it was held leaves it readable.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tunnel {
    fn snapshot(&self) -> TunnelSnapshot {
        let c = &self.counters;
        TunnelSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            local: self.local.clone(),
            state: self.state,
            public: self.public.clone(),
            urls: self.urls.clone(),
            refused: self.refused.clone(),
            streams_active: c.active.load(Ordering::Relaxed),
            streams_total: c.total.load(Ordering::Relaxed),
            bytes_in: c.bytes_in.load(Ordering::Relaxed),
            bytes_out: c.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// One open stream of a tunnel; dropping it closes the stream in the counts.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    counters: Arc<Counters>,
}

impl StreamGuard {
    /// Adds a finished stream's bytes: `to_target` from the visitor, `to_visitor` back.
    pub(crate) fn bytes(&self, to_target: u64, to_visitor: u64) {
        let c = &self.counters;
        c.bytes_in.fetch_add(to_target, Ordering::Relaxed);
        c.bytes_out.fetch_add(to_visitor, Ordering::Relaxed);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
