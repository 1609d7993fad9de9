//! `burrow client` and `burrow tcp`: their flags, the client TOML file, and the one conversion
//! of either into a [`ClientPlan`].
//!
//! The `tcp` one-liner builds the same raw config a file would hold, so both paths are checked
//! by the same code and mean the same thing. `BURROW_TOKEN` and `BURROW_KNOWN_HOSTS` fill in only
//! what neither the flags nor the file say.

use crate::diag::{ConfigError, Diagnostic, Item, Problems, Source};
use crate::fields::{self, checked};
use burrow_client::{ClientConfig, Transport, TunnelConfig};
use burrow_net::tls::{Trust, default_known_hosts};
use burrow_proto::auth::Secret;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::PathBuf;

/// Default local host a tunnel forwards to.
const DEFAULT_LOCAL_HOST: &str = "127.0.0.1";
/// Why `remote_port = 0` is refused: zero reads like "any port" but is not how to ask for that.
const REMOTE_PORT_ZERO: &str =
    "remote_port 0 is not a port; leave remote_port out to let the server choose";
/// Most pooled data connections a client may ask for.
const MAX_POOL_SIZE: usize = 256;

/// Arguments of `burrow tcp`: publish one local port.
#[derive(Debug, clap::Args)]
pub(crate) struct TcpArgs {
    /// Local port to publish.
    #[arg(value_name = "LOCAL_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    local_port: u16,
    /// Server to dial, HOST[:PORT] (port 7777 when left out; IPv6 in brackets).
    #[arg(long, value_name = "HOST[:PORT]", value_parser = checked(fields::server_addr))]
    to: String,
    /// Host the local port is on [default: 127.0.0.1].
    #[arg(long, value_name = "HOST", value_parser = checked(fields::host))]
    local_host: Option<String>,
    /// Public port to ask for (else any the server allows).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    remote_port: Option<u16>,
    /// Identity name (named-client mode); empty in shared-token mode.
    #[arg(long, value_name = "NAME", value_parser = checked(fields::name))]
    name: Option<String>,
    /// Token (else BURROW_TOKEN).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Trust only the server certificate with this fingerprint (sha256:...).
    #[arg(long, value_name = "FP", value_parser = checked(fields::fingerprint), conflicts_with = "ca")]
    server_fingerprint: Option<String>,
    /// Trust server certificates signed by this CA (PEM).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Where first-use fingerprints are remembered (else BURROW_KNOWN_HOSTS).
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// Speak plain TCP instead of TLS (only on a trusted network).
    #[arg(long, conflicts_with_all = ["server_fingerprint", "ca"])]
    insecure_plain: bool,
    /// Exit with an error when the connection is lost instead of reconnecting.
    #[arg(long)]
    exit_on_disconnect: bool,
    /// Idle data connections kept ready for visitors [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pool_size: Option<u16>,
}

/// Arguments of `burrow client`: run the tunnels of a config file.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// Client config file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Exit with an error when the connection is lost instead of reconnecting.
    #[arg(long)]
    exit_on_disconnect: bool,
}

/// The client's TOML file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    server: Item<String>,
    name: Option<Item<String>>,
    token: Option<Item<String>>,
    token_file: Option<Item<PathBuf>>,
    server_fingerprint: Option<Item<String>>,
    ca: Option<Item<PathBuf>>,
    known_hosts: Option<Item<PathBuf>>,
    insecure_plain: Option<Item<bool>>,
    pool_size: Option<Item<i64>>,
    exit_on_disconnect: Option<bool>,
    heartbeat_interval: Option<Item<String>>,
    dead_after: Option<Item<String>>,
    connect_timeout: Option<Item<String>>,
    #[serde(default)]
    tunnels: Vec<RawTunnel>,
}

/// One `[[tunnels]]` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    name: Option<Item<String>>,
    local_port: Item<i64>,
    local_host: Option<Item<String>>,
    remote_port: Option<Item<i64>>,
}

/// A checked client configuration, ready to build its TLS settings and run.
#[derive(Debug)]
pub(crate) struct ClientPlan {
    /// How to trust the server, or `None` for plain TCP.
    pub(crate) trust: Option<Trust>,
    /// Runtime config; its `transport` is [`Transport::Plain`] until the TLS settings are built.
    pub(crate) config: ClientConfig,
}

/// Reads and converts the file of `burrow client`.
pub(crate) fn load(args: &ClientArgs) -> anyhow::Result<ClientPlan> {
    let source = Source::read(&args.config)?;
    let (mut raw, problems) = source.parse::<RawClient>()?;
    if args.exit_on_disconnect {
        raw.exit_on_disconnect = Some(true);
    }
    raw.apply_env();
    Ok(raw.into_plan(&source, problems)?)
}

/// Converts the flags of `burrow tcp`.
pub(crate) fn from_tcp(args: &TcpArgs) -> Result<ClientPlan, ConfigError> {
    let mut raw = RawClient::from(args);
    raw.apply_env();
    raw.into_plan(&Source::default(), Problems::default())
}

/// Converts a client TOML text on its own (what `burrow check` does).
pub(crate) fn check(source: &Source) -> Result<ClientPlan, ConfigError> {
    let (mut raw, problems) = source.parse::<RawClient>()?;
    raw.apply_env();
    raw.into_plan(source, problems)
}

impl From<&TcpArgs> for RawClient {
    fn from(a: &TcpArgs) -> Self {
        let text = |name, v: &Option<String>| v.clone().map(|v| Item::flag(name, v));
        let path = |name, v: &Option<PathBuf>| v.clone().map(|v| Item::flag(name, v));
        let tunnel = RawTunnel {
            name: None,
            local_port: Item::flag("LOCAL_PORT", i64::from(a.local_port)),
            local_host: text("--local-host", &a.local_host),
            remote_port: a
                .remote_port
                .map(|p| Item::flag("--remote-port", i64::from(p))),
        };
        Self {
            server: Item::flag("--to", a.to.clone()),
            name: text("--name", &a.name),
            token: text("--token", &a.token),
            token_file: path("--token-file", &a.token_file),
            server_fingerprint: text("--server-fingerprint", &a.server_fingerprint),
            ca: path("--ca", &a.ca),
            known_hosts: path("--known-hosts", &a.known_hosts),
            insecure_plain: a
                .insecure_plain
                .then(|| Item::flag("--insecure-plain", true)),
            pool_size: a.pool_size.map(|n| Item::flag("--pool-size", i64::from(n))),
            exit_on_disconnect: Some(a.exit_on_disconnect),
            heartbeat_interval: None,
            dead_after: None,
            connect_timeout: None,
            tunnels: vec![tunnel],
        }
    }
}

impl RawClient {
    /// Fills in what only the environment says.
    fn apply_env(&mut self) {
        if self.token.is_none() && self.token_file.is_none() {
            self.token = fields::env_item("BURROW_TOKEN");
        }
        if self.known_hosts.is_none() {
            self.known_hosts = fields::env_item("BURROW_KNOWN_HOSTS").map(|i| Item {
                value: PathBuf::from(i.value),
                origin: i.origin,
            });
        }
    }

    /// The one conversion into runtime types; every problem is reported.
    fn into_plan(self, source: &Source, mut p: Problems) -> Result<ClientPlan, ConfigError> {
        let server = p
            .parse(Some(&self.server), fields::server_addr)
            .unwrap_or_default();
        let name = p
            .parse(self.name.as_ref(), fields::name)
            .unwrap_or_default();
        let token = fields::token(
            self.token.as_ref(),
            self.token_file.as_ref(),
            source,
            &mut p,
        );
        if self.token.is_none() && self.token_file.is_none() {
            p.whole("no token given (`token` or `token_file`, --token or --token-file, or BURROW_TOKEN)");
        }
        let trust = self.trust(source, &mut p);
        // A missing or bad token was reported above, so this placeholder never runs.
        let token = token.unwrap_or_else(|| Secret::new(""));
        let mut config = ClientConfig::new(server, name, token, Transport::Plain);
        self.tune(&mut config, &mut p);
        config.tunnels = tunnels(&self.tunnels, &mut p);
        p.finish(ClientPlan { trust, config }, source)
    }

    /// Timers, pool and reconnect behaviour.
    fn tune(&self, c: &mut ClientConfig, p: &mut Problems) {
        let timers = [
            (&self.heartbeat_interval, &mut c.heartbeat_interval, false),
            (&self.dead_after, &mut c.dead_after, false),
            (&self.connect_timeout, &mut c.connect_timeout, false),
        ];
        fields::durations(p, timers);
        let heartbeat = (&self.heartbeat_interval, c.heartbeat_interval);
        fields::liveness(p, heartbeat, (&self.dead_after, c.dead_after));
        if let Some(n) = p.parse(self.pool_size.as_ref(), fields::count_in(1, MAX_POOL_SIZE)) {
            c.pool_size = n;
        }
        c.exit_on_disconnect = self.exit_on_disconnect.unwrap_or(false);
    }

    /// How the server's certificate is trusted: a pinned fingerprint, a CA, or first use.
    fn trust(&self, source: &Source, p: &mut Problems) -> Option<Trust> {
        if self.insecure_plain.as_ref().is_some_and(|i| i.value) {
            let msg = "has no effect with insecure_plain; remove one of them";
            if let Some(fp) = &self.server_fingerprint {
                p.push(fp.problem(format!("server_fingerprint {msg}")));
            }
            if let Some(ca) = &self.ca {
                p.push(ca.problem(format!("ca {msg}")));
            }
            return None;
        }
        match (&self.server_fingerprint, &self.ca) {
            (Some(_), Some(ca)) => {
                p.push(ca.problem("give `server_fingerprint` or `ca`, not both"));
                None
            }
            (Some(fp), None) => p
                .parse(Some(fp), fields::fingerprint)
                .map(Trust::Fingerprint),
            (None, Some(ca)) => Some(Trust::CaFile(fields::existing_file(ca, source, p))),
            (None, None) => {
                let known_hosts = self.known_hosts.as_ref().map(|k| source.path(k));
                match known_hosts.or_else(default_known_hosts) {
                    Some(known_hosts) => Some(Trust::FirstUse { known_hosts }),
                    None => {
                        p.whole(
                            "cannot find a config directory for known_servers; set `known_hosts`",
                        );
                        None
                    }
                }
            }
        }
    }
}

/// Converts `[[tunnels]]`, reporting bad ports and duplicate names or remote ports.
fn tunnels(raw: &[RawTunnel], p: &mut Problems) -> Vec<TunnelConfig> {
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
    remote_ports: HashSet<u16>,
}

/// Converts one `[[tunnels]]` entry.
fn tunnel(t: &RawTunnel, seen: &mut Seen, p: &mut Problems) -> Option<TunnelConfig> {
    let local_port = p.parse(Some(&t.local_port), fields::port_number);
    let host = p.parse(t.local_host.as_ref(), fields::host);
    let host = host.unwrap_or_else(|| DEFAULT_LOCAL_HOST.to_owned());
    let name = match &t.name {
        Some(item) if item.value.is_empty() => {
            p.push(item.problem("a tunnel name cannot be empty"));
            None
        }
        Some(item) => p.parse(Some(item), fields::name),
        None => Some(format!("tcp-{}", t.local_port.value)),
    };
    if let Some(n) = name.as_ref().filter(|n| !seen.names.insert((*n).clone())) {
        let origin = t.name.as_ref().map_or(&t.local_port.origin, |i| &i.origin);
        let message = format!("tunnel `{n}` is listed twice (give each tunnel its own `name`)");
        p.push(Diagnostic {
            origin: origin.clone(),
            message,
        });
    }
    let remote_port = t.remote_port.as_ref().and_then(|item| {
        if item.value == 0 {
            p.push(item.problem(REMOTE_PORT_ZERO));
            return None;
        }
        let port = p.parse(Some(item), fields::port_number)?;
        if !seen.remote_ports.insert(port) {
            p.push(item.problem(format!("remote port {port} is asked for by two tunnels")));
        }
        Some(port)
    });
    let local = format!("{host}:{}", local_port?);
    Some(TunnelConfig {
        name: name?,
        local,
        remote_port,
        kind: burrow_client::config::TunnelKind::Tcp,
    })
}

#[cfg(test)]
mod tests;
