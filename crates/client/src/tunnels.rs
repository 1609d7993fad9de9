//! The tunnels a running client publishes, which a reload may change at any time.
//!
//! Each tunnel gets an id once, when it is added, and keeps it until it is removed; ids are
//! never reused within the process, so an answer or a stream that names a removed tunnel can
//! never reach the tunnel that came after it. The table sits behind one `std::sync::Mutex`
//! held only to copy or set a few fields, never across `.await`. Whoever changes it wakes the
//! live session ([`Tunnels::changed`]), which then publishes and withdraws tunnels to match.

use crate::config::TunnelConfig;
use crate::reload::Change;
use burrow_proto::msg::TunnelKind;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The running tunnels, by id.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    table: Mutex<Table>,
    /// Woken after every change; a change while no session waits is kept for the next wait.
    pub(crate) changed: Notify,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u32,
    entries: BTreeMap<u32, Entry>,
}

/// One tunnel as the client runs it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// What the configuration says; replaced (not edited) when only the client's side changes.
    pub(crate) config: Arc<TunnelConfig>,
    /// Public port last granted (TCP, UDP), asked for again after a reconnect.
    pub(crate) granted: Option<u16>,
    /// Name last granted on the HTTP edge, asked for again likewise.
    pub(crate) named: Option<String>,
    /// Cancelled when the tunnel is removed or its target changes: its datagram connections
    /// close (the server opens new ones, toward the new target).
    pub(crate) closed: CancellationToken,
    /// In the configuration the client started with: refused on the first session, it is fatal.
    pub(crate) initial: bool,
    /// A to-sink tunnel's listener, bound as soon as the server accepts the tunnel, so events
    /// heard before its first event connection wait in the socket's buffer instead of being
    /// lost; kept across event connections, closed with the tunnel.
    pub(crate) sink: Arc<std::sync::OnceLock<Arc<burrow_net::udp_batch::BatchSocket>>>,
}

impl Tunnels {
    /// The tunnels the client starts with, with ids 0, 1, ... in their order.
    pub(crate) fn new(configs: Vec<TunnelConfig>) -> Self {
        let tunnels = Self::default();
        {
            let mut table = tunnels.lock();
            for config in configs {
                table.add(config, None, None, true);
            }
        }
        tunnels
    }

    /// The tunnel `id`, if it still runs.
    pub(crate) fn get(&self, id: u32) -> Option<Entry> {
        self.lock().entries.get(&id).cloned()
    }

    /// Every running tunnel, in the order they were added.
    pub(crate) fn all(&self) -> Vec<(u32, Entry)> {
        let table = self.lock();
        table
            .entries
            .iter()
            .map(|(&id, e)| (id, e.clone()))
            .collect()
    }

    /// The running tunnels' configurations, as a reload compares them.
    pub(crate) fn configs(&self) -> Vec<TunnelConfig> {
        let table = self.lock();
        table
            .entries
            .values()
            .map(|e| (*e.config).clone())
            .collect()
    }

    /// Remembers the public port granted to `id`.
    pub(crate) fn granted(&self, id: u32, port: u16) {
        if let Some(entry) = self.lock().entries.get_mut(&id) {
            entry.granted = Some(port);
        }
    }

    /// Remembers the HTTP name granted to `id`.
    pub(crate) fn named(&self, id: u32, name: String) {
        if let Some(entry) = self.lock().entries.get_mut(&id) {
            entry.named = Some(name);
        }
    }

    /// Applies the tunnel changes of a reload to `new` (the reloaded tunnels), then wakes the
    /// session. A changed tunnel is removed and added again under a new id, asking for the
    /// port or name it held when its configuration leaves the choice to the server.
    pub(crate) fn apply(&self, changes: &[Change], new: &[TunnelConfig]) {
        let find = |name: &str| new.iter().find(|t| t.name == name).cloned();
        {
            let mut table = self.lock();
            for change in changes {
                match change {
                    Change::TunnelAdded(name) => {
                        if let Some(config) = find(name) {
                            table.add(config, None, None, false);
                        }
                    }
                    Change::TunnelRemoved(name) => {
                        table.remove(name);
                    }
                    Change::TunnelChanged(name) => {
                        let old = table.remove(name);
                        if let Some(config) = find(name) {
                            let (port, named) =
                                old.map(|o| carried(&o, &config)).unwrap_or_default();
                            table.add(config, port, named, false);
                        }
                    }
                    Change::TunnelRetargeted(name) => {
                        if let Some(config) = find(name) {
                            table.retarget(config);
                        }
                    }
                    Change::NeedsRestart(_) => {}
                }
            }
        }
        self.changed.notify_one();
    }

    /// The table; a panic elsewhere while it was held leaves it usable.
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Table {
    fn add(
        &mut self,
        config: TunnelConfig,
        granted: Option<u16>,
        named: Option<String>,
        initial: bool,
    ) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let entry = Entry {
            config: Arc::new(config),
            granted,
            named,
            closed: CancellationToken::new(),
            initial,
            sink: Arc::default(),
        };
        self.entries.insert(id, entry);
    }

    /// Removes the tunnel called `name` and closes its datagram connections.
    fn remove(&mut self, name: &str) -> Option<Entry> {
        let id = self.id_of(name)?;
        let entry = self.entries.remove(&id)?;
        entry.closed.cancel();
        Some(entry)
    }

    /// Gives the tunnel called `config.name` its new client-side settings, keeping its id.
    fn retarget(&mut self, config: TunnelConfig) {
        let Some(id) = self.id_of(&config.name) else {
            return;
        };
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.closed.cancel();
            entry.closed = CancellationToken::new();
            entry.config = Arc::new(config);
        }
    }

    fn id_of(&self, name: &str) -> Option<u32> {
        let mut found = self.entries.iter().filter(|(_, e)| e.config.name == name);
        found.next().map(|(&id, _)| id)
    }
}

/// The port and name a changed tunnel asks for again: what it held, where its new
/// configuration lets the server choose and the port stays in the same namespace.
fn carried(old: &Entry, new: &TunnelConfig) -> (Option<u16>, Option<String>) {
    match &new.kind {
        TunnelKind::Http(options) if options.subdomain.is_none() => (None, old.named.clone()),
        TunnelKind::Http(_) | TunnelKind::UdpToSink => (None, None),
        kind if new.remote_port.is_none() && kind.protocol() == old.config.kind.protocol() => {
            (old.granted, None)
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(name: &str, local: &str, remote_port: Option<u16>) -> TunnelConfig {
        TunnelConfig {
            remote_port,
            ..TunnelConfig::tcp(name, local)
        }
    }

    fn ids(tunnels: &Tunnels) -> Vec<(u32, String)> {
        let all = tunnels.all().into_iter();
        all.map(|(id, e)| (id, e.config.name.clone())).collect()
    }

    #[test]
    fn reloads_keep_ids_of_what_stays_and_never_reuse_one() {
        let tunnels = Tunnels::new(vec![
            tunnel("web", "127.0.0.1:80", None),
            tunnel("ssh", "127.0.0.1:22", Some(2222)),
        ]);
        tunnels.granted(0, 20_000);
        tunnels.granted(1, 2222);
        let web_closed = tunnels.get(0).map(|e| e.closed).unwrap_or_default();
        let ssh_closed = tunnels.get(1).map(|e| e.closed).unwrap_or_default();
        let new = vec![
            tunnel("web", "127.0.0.1:81", Some(9000)),
            tunnel("ssh", "127.0.0.1:23", Some(2222)),
            tunnel("db", "127.0.0.1:5432", None),
        ];
        tunnels.apply(
            &[
                Change::TunnelChanged("web".into()),
                Change::TunnelRetargeted("ssh".into()),
                Change::TunnelAdded("db".into()),
            ],
            &new,
        );
        assert_eq!(
            ids(&tunnels),
            vec![(1, "ssh".into()), (2, "web".into()), (3, "db".into())]
        );
        assert!(
            web_closed.is_cancelled(),
            "the replaced tunnel's connections stay open"
        );
        let ssh = tunnels.get(1).unwrap_or_else(|| panic!("ssh lost its id"));
        assert_eq!(
            (ssh.config.local.as_str(), ssh.granted),
            ("127.0.0.1:23", Some(2222))
        );
        assert!(
            ssh.initial,
            "a retargeted tunnel is still the one configured at start"
        );
        assert!(
            ssh_closed.is_cancelled(),
            "datagrams still go to the old target"
        );
        assert!(!ssh.closed.is_cancelled());
        // A changed tunnel that now names its port asks for that one, not the one it held.
        assert_eq!(tunnels.get(2).and_then(|e| e.granted), None);

        tunnels.apply(&[Change::TunnelRemoved("db".into())], &[]);
        tunnels.apply(&[Change::TunnelAdded("db".into())], &new);
        assert_eq!(ids(&tunnels).last(), Some(&(4, "db".into())));
        assert_eq!(tunnels.get(3).map(|e| e.config.name.clone()), None);
    }

    #[test]
    fn a_changed_tunnel_asks_for_the_port_it_held_when_free_to_choose() {
        let tunnels = Tunnels::new(vec![tunnel("web", "127.0.0.1:80", None)]);
        tunnels.granted(0, 20_000);
        let udp = |options| TunnelConfig {
            kind: TunnelKind::Udp(options),
            ..tunnel("web", "127.0.0.1:80", None)
        };
        let proxied = TunnelConfig {
            proxy_protocol: Some(crate::ProxyProtocol::V1),
            ..tunnel("web", "127.0.0.1:80", None)
        };
        // Same namespace (TCP): the port carries over; another one (UDP): it does not.
        tunnels.apply(&[Change::TunnelChanged("web".into())], &[proxied]);
        assert_eq!(tunnels.get(1).and_then(|e| e.granted), Some(20_000));
        tunnels.apply(
            &[Change::TunnelChanged("web".into())],
            &[udp(Default::default())],
        );
        assert_eq!(tunnels.get(2).and_then(|e| e.granted), None);
        assert!(tunnels.get(2).is_some_and(|e| !e.initial));
    }
}
