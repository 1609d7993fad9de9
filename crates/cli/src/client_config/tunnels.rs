//! `[[tunnels]]`: one service each, TCP or UDP, as written in a client file or built from the
//! flags of `burrow tcp` / `burrow udp`, and their conversion into [`TunnelConfig`]s.
//!
//! TCP and UDP ports are separate namespaces on the server, so two tunnels may ask for the same
//! `remote_port` when one is TCP and the other UDP. The UDP keys (`direction`, `idle_timeout`,
//! `max_flows`, `one_way`) mean nothing to a TCP tunnel; giving them there is reported, since it
//! is most likely a forgotten `protocol = "udp"`.
//!
//! A UDP tunnel runs `from-server` (a public port whose datagrams reach the client's target) or,
//! with `direction = "to-sink"`, the other way: the client listens on `local_host:local_port` and
//! delivers every datagram it hears to the server's UDP sink called `name`. Such a tunnel has no
//! public port, no flows and no replies, so the keys about those are reported there too.
//!
//! `proxy_protocol` is the one TCP-only key: a TCP tunnel with it writes a PROXY protocol header
//! (`v1` or `v2`) to its target before the visitor's bytes. A UDP flow has no stream to put a
//! header in front of, so a UDP tunnel that sets it is reported.

use crate::diag::{Diagnostic, Item, Origin, Problems};
use crate::fields;
use burrow_client::config::{TunnelKind, UdpOptions};
use burrow_client::{ProxyProtocol, TunnelConfig};
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
    /// UDP only: `from-server` (the default) or `to-sink`.
    pub(crate) direction: Option<Item<String>>,
    /// TCP only: `v1` or `v2`, the PROXY protocol header to send the target.
    pub(crate) proxy_protocol: Option<Item<String>>,
    /// HTTP only: the name to answer at (`<subdomain>.<domain>`); random when left out.
    pub(crate) subdomain: Option<Item<String>>,
    /// HTTP only: custom hostnames to answer at as well.
    #[serde(default)]
    pub(crate) hostnames: Vec<Item<String>>,
    /// HTTP only: tags (`<tag>.<subdomain>.<domain>` reaches only tunnels carrying the tag).
    #[serde(default)]
    pub(crate) tags: Vec<Item<String>>,
    /// HTTP only: the target speaks TLS; the server routes by SNI and passes it through.
    pub(crate) tls_passthrough: Option<Item<bool>>,
    /// HTTP only: how often to check that the target accepts connections (`off` by default).
    pub(crate) health_check: Option<Item<String>>,
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
            direction: None,
            proxy_protocol: None,
            health_check: None,
            subdomain: None,
            hostnames: Vec::new(),
            tags: Vec::new(),
            tls_passthrough: None,
        }
    }
}

/// `direction` of a tunnel whose events go to a server-side sink.
pub(crate) const TO_SINK: &str = "to-sink";

/// Which way a UDP tunnel's datagrams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From a public port on the server to the client's target (and replies back).
    FromServer,
    /// From the client's local address to a sink the server's operator named.
    ToSink,
}

/// A UDP tunnel's direction, as written.
fn direction(s: &str) -> Result<Direction, String> {
    match s {
        "from-server" => Ok(Direction::FromServer),
        TO_SINK => Ok(Direction::ToSink),
        _ => Err(format!(
            "`{s}` is not a UDP direction (write \"from-server\" or \"{TO_SINK}\")"
        )),
    }
}

/// A PROXY protocol version, as written.
pub(crate) fn proxy_version(s: &str) -> Result<ProxyProtocol, String> {
    match s {
        "v1" => Ok(ProxyProtocol::V1),
        "v2" => Ok(ProxyProtocol::V2),
        _ => Err(format!(
            "`{s}` is not a PROXY protocol version (write \"v1\" or \"v2\")"
        )),
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
    if http::is_http(t) {
        return http::tunnel(t, seen, p);
    }
    http::reject_keys(t, p);
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
    let name = name(t, default_name(t, protocol, kind.as_ref(), p), seen, p);
    // A to-sink tunnel has no public port; `kind` reported a `remote_port` given there.
    let remote_port = match kind {
        Some(TunnelKind::UdpToSink) => None,
        _ => remote_port(t, protocol, seen, p),
    };
    let proxy_protocol = proxy_protocol(t, protocol, p);
    let local = format!("{host}:{}", local_port?);
    Some(TunnelConfig {
        name: name?,
        local,
        remote_port,
        kind: kind?,
        proxy_protocol,
        health_check: None,
    })
}

/// The PROXY protocol header a TCP tunnel sends its target, if any. The value is checked
/// whatever the protocol; on a UDP tunnel the key itself is the problem.
fn proxy_protocol(t: &RawTunnel, protocol: Protocol, p: &mut Problems) -> Option<ProxyProtocol> {
    let item = t.proxy_protocol.as_ref()?;
    let version = p.parse(Some(item), proxy_version)?;
    match protocol {
        Protocol::Tcp => Some(version),
        Protocol::Udp => {
            let message = "`proxy_protocol` applies only to TCP tunnels (a UDP flow has no \
                           stream to put a header in front of); remove it";
            p.push(item.problem(message));
            None
        }
    }
}

/// The public port asked for, if any; each (protocol, port) only once per file.
fn remote_port(
    t: &RawTunnel,
    protocol: Protocol,
    seen: &mut Seen,
    p: &mut Problems,
) -> Option<u16> {
    t.remote_port.as_ref().and_then(|item| {
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
    })
}

/// The name of a tunnel written without one: `<protocol>-<local_port>`, except for a to-sink
/// tunnel, whose name says which sink it feeds and so must be written.
fn default_name(
    t: &RawTunnel,
    protocol: Protocol,
    kind: Option<&TunnelKind>,
    p: &mut Problems,
) -> Option<String> {
    match (kind, &t.direction) {
        (Some(TunnelKind::UdpToSink), Some(direction)) if t.name.is_none() => {
            let message = "a to-sink tunnel needs `name`: the name of a UDP sink on the server";
            p.push(direction.problem(message));
            None
        }
        _ => Some(format!("{protocol}-{}", t.local_port.value)),
    }
}

/// The tunnel's name, `default` when not given; each name only once per file.
fn name(
    t: &RawTunnel,
    default: Option<String>,
    seen: &mut Seen,
    p: &mut Problems,
) -> Option<String> {
    let name = match &t.name {
        Some(item) if item.value.is_empty() => {
            p.push(item.problem("a tunnel name cannot be empty"));
            None
        }
        Some(item) => p.parse(Some(item), fields::name),
        None => default,
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
    let direction = p.parse(t.direction.as_ref(), direction);
    let options = udp_options(t, p);
    let flow_keys = [
        ("idle_timeout", t.idle_timeout.as_ref().map(|i| &i.origin)),
        ("max_flows", t.max_flows.as_ref().map(|i| &i.origin)),
        ("one_way", t.one_way.as_ref().map(|i| &i.origin)),
    ];
    match protocol? {
        Protocol::Udp if direction == Some(Direction::ToSink) => {
            let remote = ("remote_port", t.remote_port.as_ref().map(|i| &i.origin));
            let message = |key| {
                format!(
                    "`{key}` does not apply to a to-sink tunnel (events go to a sink on the \
                     server: no public port, no flows, no replies); remove it"
                )
            };
            report(p, std::iter::once(remote).chain(flow_keys), message);
            Some(TunnelKind::UdpToSink)
        }
        Protocol::Udp => Some(TunnelKind::Udp(options)),
        Protocol::Tcp => {
            let direction = ("direction", t.direction.as_ref().map(|i| &i.origin));
            let message = |key| {
                format!("`{key}` applies only to UDP tunnels; add protocol = \"udp\" or remove it")
            };
            report(p, flow_keys.into_iter().chain([direction]), message);
            Some(TunnelKind::Tcp)
        }
    }
}

/// Reports each key that was given, at the key's value, with `message(key)`.
fn report<'a>(
    p: &mut Problems,
    keys: impl IntoIterator<Item = (&'static str, Option<&'a Origin>)>,
    message: impl Fn(&'static str) -> String,
) {
    for (key, origin) in keys {
        if let Some(origin) = origin {
            p.push(Diagnostic {
                origin: origin.clone(),
                message: message(key),
            });
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

pub(crate) mod http;
#[cfg(test)]
mod tests;
