//! Hot reload: what differs between the running configuration and a new one, as a pure
//! [`diff`], and a [`Reloader`] that applies it to a running client.
//!
//! Tunnels are matched by name. A tunnel whose endpoint changes (protocol, public port, UDP or
//! HTTP options) is closed and published again; one whose client side alone changes (target,
//! PROXY header, health check) keeps its id and endpoint and is retargeted in place, so
//! visitors never find its port closed. Everything else the session was built from (the
//! server, identity, TLS, pool and timers) needs a restart: the running value stays.

use crate::config::{ClientConfig, Transport, TunnelConfig};
use crate::session::Context;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::{info, warn};

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A tunnel was added; it is published at once (or when the next session starts).
    TunnelAdded(String),
    /// A tunnel was removed; it is withdrawn and the server releases its port at once.
    TunnelRemoved(String),
    /// What visitors reach changed; the tunnel is closed and published again.
    TunnelChanged(String),
    /// Only the client's side changed (target, PROXY header, health check); applied in place.
    TunnelRetargeted(String),
    /// A setting that cannot change while the client runs; the running value stays.
    NeedsRestart(&'static str),
}

impl Change {
    /// True for a change the running client did not apply.
    pub fn needs_restart(&self) -> bool {
        matches!(self, Change::NeedsRestart(_))
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::TunnelAdded(n) => write!(f, "tunnel `{n}` added"),
            Change::TunnelRemoved(n) => write!(f, "tunnel `{n}` removed"),
            Change::TunnelChanged(n) => write!(f, "tunnel `{n}` changed: published again"),
            Change::TunnelRetargeted(n) => {
                write!(f, "tunnel `{n}`: new target; its public endpoint stays")
            }
            Change::NeedsRestart(s) => write!(f, "`{s}` changed; needs a restart to apply"),
        }
    }
}

/// Everything that differs from `old` to `new`, in a stable order: removed tunnels, then
/// changed and retargeted ones (by name), added ones (in `new`'s order), then what needs a
/// restart. Tunnel names are unique within a configuration.
pub fn diff(old: &ClientConfig, new: &ClientConfig) -> Vec<Change> {
    let mut changes = tunnel_changes(&old.tunnels, &new.tunnels);
    let (o, n) = (old, new);
    let restart = [
        ("server", o.server != n.server),
        ("name", o.name != n.name),
        ("token", o.token.expose() != n.token.expose()),
        ("insecure_plain", plain(&o.transport) != plain(&n.transport)),
        ("proxy", o.proxy != n.proxy),
        ("pool_size", o.pool_size != n.pool_size),
        (
            "exit_on_disconnect",
            o.exit_on_disconnect != n.exit_on_disconnect,
        ),
        (
            "heartbeat_interval",
            o.heartbeat_interval != n.heartbeat_interval,
        ),
        ("dead_after", o.dead_after != n.dead_after),
        ("connect_timeout", o.connect_timeout != n.connect_timeout),
        ("target_timeout", o.target_timeout != n.target_timeout),
        ("max_backoff", o.max_backoff != n.max_backoff),
    ];
    changes.extend(
        restart
            .iter()
            .filter(|(_, d)| *d)
            .map(|(s, _)| Change::NeedsRestart(s)),
    );
    changes
}

fn plain(transport: &Transport) -> bool {
    matches!(transport, Transport::Plain)
}

fn tunnel_changes(old: &[TunnelConfig], new: &[TunnelConfig]) -> Vec<Change> {
    let by_name = |tunnels: &[TunnelConfig]| -> BTreeMap<String, TunnelConfig> {
        tunnels
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect()
    };
    let (old_by_name, new_by_name) = (by_name(old), by_name(new));
    let mut changes = Vec::new();
    for (name, was) in &old_by_name {
        match new_by_name.get(name) {
            None => changes.push(Change::TunnelRemoved(name.clone())),
            Some(now) if now.kind != was.kind || now.remote_port != was.remote_port => {
                changes.push(Change::TunnelChanged(name.clone()));
            }
            Some(now) if now != was => changes.push(Change::TunnelRetargeted(name.clone())),
            Some(_) => {}
        }
    }
    let added = new.iter().filter(|t| !old_by_name.contains_key(&t.name));
    changes.extend(added.map(|t| Change::TunnelAdded(t.name.clone())));
    changes
}

/// Applies new configurations to a running client. Cheap to clone; obtained from
/// [`crate::Client::reloader`].
#[derive(Clone)]
pub struct Reloader {
    pub(crate) ctx: Arc<Context>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    /// Takes `new`'s tunnels (everything else needs a restart and keeps its running value; its
    /// `status` is ignored, the running one keeps reporting), tells the live session to
    /// publish and withdraw tunnels to match, logs one line per change, and returns the
    /// changes. Never waits: the session sends its requests on its own task, and answers
    /// arrive as [`crate::Event`]s.
    pub fn reload(&self, new: ClientConfig) -> Vec<Change> {
        let ctx = &self.ctx;
        let running = ClientConfig {
            tunnels: ctx.tunnels.configs(),
            ..(*ctx.config).clone()
        };
        let changes = diff(&running, &new);
        // The status first: applying wakes the session, whose answers update the status.
        let status = &ctx.config.status;
        for change in &changes {
            let find = |name: &str| new.tunnels.iter().find(|t| t.name == name);
            match change {
                Change::TunnelAdded(name) | Change::TunnelChanged(name) => {
                    find(name).into_iter().for_each(|t| status.add_tunnel(t));
                }
                Change::TunnelRemoved(name) => status.remove_tunnel(name),
                Change::TunnelRetargeted(name) => {
                    find(name).into_iter().for_each(|t| status.retarget(t));
                }
                Change::NeedsRestart(_) => {}
            }
            if change.needs_restart() {
                warn!("config reload: {change}");
            } else {
                info!("config reload: {change}");
            }
        }
        ctx.tunnels.apply(&changes, &new.tunnels);
        changes
    }
}

#[cfg(test)]
mod tests;
