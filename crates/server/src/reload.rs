//! Hot reload: what differs between the running configuration and a new one, as a pure
//! [`diff`], and a [`Reloader`] that applies it to a running server.
//!
//! The running configuration is one `Arc<ServerConfig>` that tasks read when they need a value,
//! so most settings take effect simply by swapping it. Settings that were built into sockets or
//! semaphores at start-up (the public port range, the bind address, caps on connections in
//! flight, the HTTP edge's domains) cannot change that way: the diff reports them as needing a
//! restart, and [`next_config`] carries their running values over, so nothing is half-applied.
//! The TLS identity and the edge's certificate are never compared here: the caller knows the
//! files they came from, and reports those itself with [`Change::NeedsRestart`].

use crate::Shared;
use crate::config::{Auth, Identity, ServerConfig, UdpSink};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::{info, warn};

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A `[[clients]]` identity was added; it may log in at once.
    IdentityAdded(String),
    /// An identity was removed: its sessions are closed and its ports and names released.
    IdentityRemoved(String),
    /// An identity's token changed: new logins need the new one; live sessions keep running.
    TokenChanged(String),
    /// An identity's ports or hostnames changed: they apply to claims made from now on.
    AllowanceChanged(String),
    /// The shared token changed: new logins need the new one; live sessions keep running.
    SharedTokenChanged,
    /// Shared-token mode and named identities were swapped; names that no longer have a token
    /// lose their sessions.
    AuthModeChanged,
    /// A UDP sink was added.
    SinkAdded(String),
    /// A UDP sink was removed; its deliveries stop.
    SinkRemoved(String),
    /// A UDP sink's address changed; its deliveries move to the new one.
    SinkChanged(String),
    /// A timer or limit that applies from now on (to new sessions, claims and visitors).
    Setting(&'static str),
    /// A setting that cannot change while the server runs; the running value stays.
    NeedsRestart(&'static str),
}

impl Change {
    /// True for a change the running server did not apply.
    pub fn needs_restart(&self) -> bool {
        matches!(self, Change::NeedsRestart(_))
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::IdentityAdded(n) => write!(f, "identity `{n}` added"),
            Change::IdentityRemoved(n) => {
                write!(f, "identity `{n}` removed: sessions closed, ports released")
            }
            Change::TokenChanged(n) => write!(
                f,
                "identity `{n}`: new token for new logins; live sessions keep running"
            ),
            Change::AllowanceChanged(n) => write!(
                f,
                "identity `{n}`: ports or hostnames changed; applies to new claims"
            ),
            Change::SharedTokenChanged => write!(
                f,
                "shared token changed for new logins; live sessions keep running"
            ),
            Change::AuthModeChanged => write!(f, "switched between shared token and [[clients]]"),
            Change::SinkAdded(n) => write!(f, "UDP sink `{n}` added"),
            Change::SinkRemoved(n) => write!(f, "UDP sink `{n}` removed"),
            Change::SinkChanged(n) => write!(f, "UDP sink `{n}` now delivers elsewhere"),
            Change::Setting(s) => write!(f, "`{s}` changed; applies from now on"),
            Change::NeedsRestart(s) => write!(f, "`{s}` changed; needs a restart to apply"),
        }
    }
}

/// Everything that differs from `old` to `new`, in a stable order: identities, sinks,
/// settings, then what needs a restart.
pub fn diff(old: &ServerConfig, new: &ServerConfig) -> Vec<Change> {
    let mut changes = auth_changes(&old.auth, &new.auth);
    changes.extend(sink_changes(&old.udp_sinks, &new.udp_sinks));
    let (o, n) = (old, new);
    let live = [
        ("lease_grace", o.lease_grace != n.lease_grace),
        (
            "heartbeat_interval",
            o.heartbeat_interval != n.heartbeat_interval,
        ),
        ("dead_after", o.dead_after != n.dead_after),
        (
            "handshake_timeout",
            o.handshake_timeout != n.handshake_timeout,
        ),
        ("pool_wait", o.pool_wait != n.pool_wait),
        ("max_sessions", o.max_sessions != n.max_sessions),
        (
            "max_tunnels_per_session",
            o.max_tunnels_per_session != n.max_tunnels_per_session,
        ),
        ("max_idle_data", o.max_idle_data != n.max_idle_data),
        ("max_udp_flows", o.max_udp_flows != n.max_udp_flows),
        (
            "max_udp_flows_per_session",
            o.max_udp_flows_per_session != n.max_udp_flows_per_session,
        ),
        ("shutdown_grace", o.shutdown_grace != n.shutdown_grace),
        (
            "http_header_timeout",
            o.http.header_timeout != n.http.header_timeout,
        ),
        (
            "http_response_timeout",
            o.http.response_timeout != n.http.response_timeout,
        ),
        (
            "http_max_header_bytes",
            o.http.max_header_bytes != n.http.max_header_bytes,
        ),
        ("admin_token", !same_secret(&o.admin_token, &n.admin_token)),
        (
            "max_session_lifetime",
            o.max_session_lifetime != n.max_session_lifetime,
        ),
        ("ban_after", o.bans.after != n.bans.after),
        ("ban_window", o.bans.window != n.bans.window),
        ("ban_for", o.bans.duration != n.bans.duration),
        ("ban_exempt", o.bans.exempt != n.bans.exempt),
        ("ws_path", o.ws_path != n.ws_path),
        (
            "ws_trusted_proxies",
            o.ws_trusted_proxies != n.ws_trusted_proxies,
        ),
    ];
    let restart = [
        ("ports", o.ports != n.ports),
        ("public_bind", o.public_bind != n.public_bind),
        (
            "max_unauthenticated",
            o.max_unauthenticated != n.max_unauthenticated,
        ),
        ("domains", o.http.domains != n.http.domains),
        (
            "http_max_connections",
            o.http.max_connections != n.http.max_connections,
        ),
    ];
    changes.extend(
        live.iter()
            .filter(|(_, d)| *d)
            .map(|(s, _)| Change::Setting(s)),
    );
    changes.extend(
        restart
            .iter()
            .filter(|(_, d)| *d)
            .map(|(s, _)| Change::NeedsRestart(s)),
    );
    changes
}

/// The configuration to run after a reload: `new`, except for what needs a restart (and the
/// TLS settings), which keep their running values.
pub fn next_config(running: &ServerConfig, new: ServerConfig) -> ServerConfig {
    let mut next = new;
    next.ports = running.ports.clone();
    next.public_bind = running.public_bind;
    next.transport = running.transport.clone();
    next.max_unauthenticated = running.max_unauthenticated;
    next.http.domains = running.http.domains.clone();
    next.http.max_connections = running.http.max_connections;
    next.http.terminate = running.http.terminate.clone();
    next
}

fn auth_changes(old: &Auth, new: &Auth) -> Vec<Change> {
    match (old, new) {
        (Auth::SharedToken(a), Auth::SharedToken(b)) if a.expose() == b.expose() => Vec::new(),
        (Auth::SharedToken(_), Auth::SharedToken(_)) => vec![Change::SharedTokenChanged],
        (Auth::Identities(a), Auth::Identities(b)) => identity_changes(a, b),
        _ => vec![Change::AuthModeChanged],
    }
}

fn identity_changes(old: &[Identity], new: &[Identity]) -> Vec<Change> {
    let by_name = |ids: &[Identity]| -> BTreeMap<String, Identity> {
        ids.iter().map(|i| (i.name.clone(), i.clone())).collect()
    };
    let (old, new) = (by_name(old), by_name(new));
    let mut changes = Vec::new();
    for (name, was) in &old {
        match new.get(name) {
            None => changes.push(Change::IdentityRemoved(name.clone())),
            Some(now) => {
                if was.token.expose() != now.token.expose() {
                    changes.push(Change::TokenChanged(name.clone()));
                }
                if was.ports != now.ports || was.hostnames != now.hostnames {
                    changes.push(Change::AllowanceChanged(name.clone()));
                }
            }
        }
    }
    let added = new.keys().filter(|n| !old.contains_key(*n));
    changes.extend(added.map(|n| Change::IdentityAdded(n.clone())));
    changes
}

fn sink_changes(old: &[UdpSink], new: &[UdpSink]) -> Vec<Change> {
    let mut changes = Vec::new();
    for was in old {
        match new.iter().find(|s| s.name == was.name) {
            None => changes.push(Change::SinkRemoved(was.name.clone())),
            Some(now) if now.deliver_to != was.deliver_to => {
                changes.push(Change::SinkChanged(was.name.clone()));
            }
            Some(_) => {}
        }
    }
    let added = new.iter().filter(|s| !old.iter().any(|o| o.name == s.name));
    changes.extend(added.map(|s| Change::SinkAdded(s.name.clone())));
    changes
}

fn same_secret(
    a: &Option<burrow_proto::auth::Secret>,
    b: &Option<burrow_proto::auth::Secret>,
) -> bool {
    a.as_ref().map(|s| s.expose()) == b.as_ref().map(|s| s.expose())
}

/// Applies new configurations to a running server. Cheap to clone; obtained from
/// [`crate::Server::reloader`].
#[derive(Debug, Clone)]
pub struct Reloader {
    pub(crate) shared: Arc<Shared>,
}

impl Reloader {
    /// Swaps in `new` (minus what needs a restart), closes the sessions and releases the ports
    /// and names of identities that no longer exist, logs one line per change, and returns the
    /// changes. Never waits: sessions end on their own tasks.
    pub fn reload(&self, new: ServerConfig) -> Vec<Change> {
        let running = self.shared.config();
        let changes = diff(&running, &new);
        let next = Arc::new(next_config(&running, new));
        self.shared.config.send_replace(next.clone());
        self.shared.bans().set_policy(next.bans.clone());
        let revoked = self.shared.registry.reconfigure(&next);
        for change in &changes {
            if change.needs_restart() {
                warn!("config reload: {change}");
            } else {
                info!("config reload: {change}");
            }
        }
        for session in &revoked.sessions {
            session
                .kicked
                .store(crate::registry::REVOKED, Ordering::Relaxed);
            session.closed.cancel();
            info!(client = %session.identity, session = %format_args!("{:016x}", session.id), "session closed: identity revoked");
        }
        for (protocol, port) in &revoked.ports {
            info!(%protocol, port, "port released: its identity was revoked");
        }
        for name in &revoked.names {
            info!(%name, "HTTP name released: its identity was revoked");
        }
        changes
    }
}

#[cfg(test)]
mod tests;
