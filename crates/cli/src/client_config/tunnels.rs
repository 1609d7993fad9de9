//! `[[tunnels]]`: one service each, TCP or UDP, as written in a client file or built from the
//! flags of `burrow tcp` / `burrow udp`, and their conversion into [`TunnelConfig`]s.
//!
//! TCP and UDP ports are separate namespaces on the server, so two tunnels may ask for the same
//! `remote_port` when one is TCP and the other UDP. The UDP keys (`idle_timeout`, `max_flows`,
//! `one_way`) mean nothing to a TCP tunnel; giving them there is reported, since it is most
//! likely a forgotten `protocol = "udp"`.

use crate::diag::{Diagnostic, Item, Problems};
use crate::fields;
use burrow_client::TunnelConfig;
use burrow_client::config::{TunnelKind, UdpOptions};
use burrow_proto::msg::Protocol;
use serde::Deserialize;
use std::collections::HashSet;

/// Default local host a tunnel forwards to.
const DEFAULT_LOCAL_HOST: &str = "127.0.0.1";
/// Why `remote_port = 0` is refused: zero reads like "any port" but is not how to ask for that.
const REMOTE_PORT_ZERO: &str =
    "remote_port 0 is not a port; leave remote_port out to let the server choose";
/// Most flows one UDP tunnel may ask for (each costs the client a socket).
pub(crate) const MAX_FLOWS: u32 = 1 << 20;

/// One `[[tunnels]]` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTunnel {
    pub(crate) name: Option<Item<String>>,
    pub(crate) local_port: Item<i64>,
    pub(crate) local_host: Option<Item<String>>,
    pub(crate) remote_port: Option<Item<i64>>,
    /// `tcp` (the default) or `udp`.
    pub(crate) protocol: Option<Item<String>>,
    /// UDP only: how long a flow may be silent before it is forgotten.
    pub(crate) idle_timeout: Option<Item<String>>,
    /// UDP only: most flows at once.
    pub(crate) max_flows: Option<Item<i64>>,
    /// UDP only: events, no replies read back.
    pub(crate) one_way: Option<Item<bool>>,
}

impl RawTunnel {
    /// A TCP tunnel to `local_port` with nothing else said.
    pub(crate) fn new(local_port: Item<i64>) -> Self {
        Self {
            name: None,
            local_port,
            local_host: None,
            remote_port: None,
            protocol: None,
            idle_timeout: None,
            max_flows: None,
            one_way: None,
        }
    }
}

/// Converts `[[tunnels]]`, reporting bad values and duplicate names or remote ports.
pub(crate) fn tunnels(raw: &[RawTunnel], p: &mut Problems) -> Vec<TunnelConfig> {
    if raw.is_empty() {
        p.whole("no [[tunnels]]: add at least one");
    }
    let mut seen = Seen::default();
    raw.iter().filter_map(|t| tunnel(t, &mut seen, p)).collect()
}

/// Names and remote ports already taken by earlier tunnels.
#[derive(Default)]
struct Seen {
    names: HashSet<String>,
    remote_ports: HashSet<(Protocol, u16)>,
}

/// Converts one `[[tunnels]]` entry.
fn tunnel(t: &RawTunnel, seen: &mut Seen, p: &mut Problems) -> Option<TunnelConfig> {
    let protocol = match &t.protocol {
        Some(item) => p.parse(Some(item), fields::protocol),
        None => Some(Protocol::Tcp),
    };
    let kind = kind(t, protocol, p);
    // A bad protocol was reported; count the tunnel as TCP for the checks below.
    let protocol = protocol.unwrap_or(Protocol::Tcp);
    let local_port = p.parse(Some(&t.local_port), fields::port_number);
    let host = p.parse(t.local_host.as_ref(), fields::host);
    let host = host.unwrap_or_else(|| DEFAULT_LOCAL_HOST.to_owned());
    let name = name(t, protocol, seen, p);
    let remote_port = t.remote_port.as_ref().and_then(|item| {
        if item.value == 0 {
            p.push(item.problem(REMOTE_PORT_ZERO));
            return None;
        }
        let port = p.parse(Some(item), fields::port_number)?;
        if !seen.remote_ports.insert((protocol, port)) {
            let message = format!("remote port {port}/{protocol} is asked for by two tunnels");
            p.push(item.problem(message));
        }
        Some(port)
    });
    let local = format!("{host}:{}", local_port?);
    Some(TunnelConfig {
        name: name?,
        local,
        remote_port,
        kind: kind?,
    })
}

/// The tunnel's name, `<protocol>-<local_port>` when not given; each name only once per file.
fn name(t: &RawTunnel, protocol: Protocol, seen: &mut Seen, p: &mut Problems) -> Option<String> {
    let name = match &t.name {
        Some(item) if item.value.is_empty() => {
            p.push(item.problem("a tunnel name cannot be empty"));
            None
        }
        Some(item) => p.parse(Some(item), fields::name),
        None => Some(format!("{protocol}-{}", t.local_port.value)),
    };
    if let Some(n) = name.as_ref().filter(|n| !seen.names.insert((*n).clone())) {
        let origin = t.name.as_ref().map_or(&t.local_port.origin, |i| &i.origin);
        let message = format!("tunnel `{n}` is listed twice (give each tunnel its own `name`)");
        p.push(Diagnostic {
            origin: origin.clone(),
            message,
        });
    }
    name
}

/// What the tunnel carries. The UDP keys are checked whatever the protocol, so a bad value is
/// reported even next to a bad `protocol`; on a TCP tunnel their presence is the problem.
fn kind(t: &RawTunnel, protocol: Option<Protocol>, p: &mut Problems) -> Option<TunnelKind> {
    let options = udp_options(t, p);
    match protocol? {
        Protocol::Udp => Some(TunnelKind::Udp(options)),
        Protocol::Tcp => {
            let udp_only = [
                ("idle_timeout", t.idle_timeout.as_ref().map(|i| &i.origin)),
                ("max_flows", t.max_flows.as_ref().map(|i| &i.origin)),
                ("one_way", t.one_way.as_ref().map(|i| &i.origin)),
            ];
            for (key, origin) in udp_only {
                if let Some(origin) = origin {
                    let message = format!(
                        "`{key}` applies only to UDP tunnels; add protocol = \"udp\" or remove it"
                    );
                    p.push(Diagnostic {
                        origin: origin.clone(),
                        message,
                    });
                }
            }
            Some(TunnelKind::Tcp)
        }
    }
}

/// The flow options of a UDP tunnel, burrow's defaults where a key is left out (or bad, which
/// is reported).
fn udp_options(t: &RawTunnel, p: &mut Problems) -> UdpOptions {
    let mut options = UdpOptions::default();
    if let Some(seconds) = p.parse(t.idle_timeout.as_ref(), fields::idle_timeout) {
        options.idle_timeout_s = seconds;
    }
    let max_flows = fields::count_in(1, MAX_FLOWS as usize);
    if let Some(n) = p.parse(t.max_flows.as_ref(), max_flows) {
        // Within 1..=MAX_FLOWS, so it fits.
        options.max_flows = u32::try_from(n).unwrap_or(MAX_FLOWS);
    }
    if let Some(one_way) = &t.one_way {
        options.one_way = one_way.value;
    }
    options
}

#[cfg(test)]
mod tests;
