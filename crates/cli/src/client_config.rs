//! `burrow client`, `burrow tcp` and `burrow udp`: their flags, the client TOML file, and the one
//! conversion of any of them into a [`ClientPlan`].
//!
//! The one-liners build the same raw config a file would hold, so every path is checked by the
//! same code and means the same thing; `tcp` and `udp` share their flags ([`PublishArgs`]) and
//! differ only in the tunnel's protocol and each one's own options (TCP's `--proxy-protocol`;
//! UDP's flows, or `--to-sink` for events toward the server). `BURROW_TOKEN` and
//! `BURROW_KNOWN_HOSTS` fill in only what neither the flags nor the file say, and so do the
//! proxy variables (see [`proxy`]).

mod proxy;
mod tunnels;

use crate::diag::{ConfigError, Item, Problems, Source};
use crate::fields::{self, checked};
use crate::status_socket::StatusSocket;
use burrow_client::{CarrierKind, ClientConfig, Transport, TunnelConfig};
use burrow_net::tls::{Trust, default_known_hosts};
use burrow_proto::auth::Secret;
use proxy::EnvProxy;
pub(crate) use proxy::ProxyArgs;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tunnels::{MAX_FLOWS, RawTunnel, TO_SINK};

/// Most pooled data connections a client may ask for.
const MAX_POOL_SIZE: usize = 256;

/// The flags of `burrow tcp`, and all but the flow options of `burrow udp`: publish one local
/// port through a server.
#[derive(Debug, clap::Args)]
pub(crate) struct PublishArgs {
    /// Local port to publish.
    #[arg(value_name = "LOCAL_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    local_port: u16,
    /// Server to dial, HOST[:PORT] (port 7777 when left out; IPv6 in brackets).
    #[arg(long, value_name = "HOST[:PORT]", value_parser = checked(fields::server_addr))]
    to: String,
    /// Host the local port is on; with `udp --to-sink`, the address to listen on (0.0.0.0 hears
    /// LAN broadcasts) [default: 127.0.0.1].
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
    /// Idle data connections kept ready for visitors (0: none; on mux, ws and quic the server
    /// then opens a stream per visitor) [default: 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=256))]
    pool_size: Option<u16>,
    /// Export traces to this OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (else
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT) [default: off].
    #[arg(long, value_name = "URL", value_parser = checked(crate::traces::checked_url))]
    otlp_endpoint: Option<String>,
    /// Carriers to try in order, comma-separated: tcp, mux, quic, ws://HOST[:PORT]/PATH or
    /// wss://... [default: tcp].
    #[arg(long, value_name = "LIST", value_parser = checked(carrier_list))]
    carrier: Option<String>,
    /// Also trust this CA (PEM) for the TLS of a wss:// carrier's web server (else the web's
    /// usual roots only).
    #[arg(long, value_name = "FILE")]
    ws_ca: Option<PathBuf>,
    #[command(flatten)]
    proxy: ProxyArgs,
    #[command(flatten)]
    status: StatusSocketArgs,
}

/// Checks a `--carrier` list.
fn carrier_list(s: &str) -> Result<String, String> {
    carriers(&Carriers::from_flag(s)).map(|_| s.to_owned())
}

/// `carrier` as written: one carrier, or a list tried in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Carriers {
    /// One carrier.
    One(String),
    /// Several, in order of preference.
    List(Vec<String>),
}

impl Carriers {
    /// A comma-separated list from a flag.
    fn from_flag(s: &str) -> Self {
        Carriers::List(s.split(',').map(|c| c.trim().to_owned()).collect())
    }
}

/// The carriers a `carrier` setting names, in order.
fn carriers(setting: &Carriers) -> Result<Vec<CarrierKind>, String> {
    let names = match setting {
        Carriers::One(one) => std::slice::from_ref(one),
        Carriers::List(list) => list.as_slice(),
    };
    if names.is_empty() {
        return Err("name at least one carrier".into());
    }
    let kinds = names
        .iter()
        .map(|n| n.parse::<CarrierKind>())
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(twice) = kinds
        .iter()
        .enumerate()
        .find(|(i, k)| kinds[..*i].contains(k))
    {
        return Err(format!("carrier {} is listed twice", twice.1));
    }
    Ok(kinds)
}

/// Where a client serves its status (`burrow status` reads it).
#[derive(Debug, clap::Args)]
pub(crate) struct StatusSocketArgs {
    /// Serve this client's status on this Unix socket [default: NAME.sock in
    /// $XDG_RUNTIME_DIR/burrow, /run/burrow for root, else ~/.local/state/burrow/status; NAME
    /// is the config file's name, or the tunnel's].
    #[arg(long, value_name = "PATH", conflicts_with = "no_status_socket")]
    status_socket: Option<PathBuf>,
    /// Serve no status socket.
    #[arg(long)]
    no_status_socket: bool,
}

impl StatusSocketArgs {
    /// The setting these flags make, if they make one.
    fn item(&self) -> Option<Item<SocketSetting>> {
        if self.no_status_socket {
            return Some(Item::flag("--no-status-socket", SocketSetting::On(false)));
        }
        let path = self.status_socket.clone();
        path.map(|p| Item::flag("--status-socket", SocketSetting::Path(p)))
    }
}

/// `status_socket` as written: a path (`""` for none), or `true`/`false` for the default or none.
#[derive(Debug, Clone)]
pub(crate) enum SocketSetting {
    /// This path, or none when empty.
    Path(PathBuf),
    /// The default path, or none.
    On(bool),
}

impl<'de> Deserialize<'de> for SocketSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SocketSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a socket path, \"\" or false for none, or true for the default path")
            }
            fn visit_bool<E>(self, v: bool) -> Result<SocketSetting, E> {
                Ok(SocketSetting::On(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<SocketSetting, E> {
                Ok(SocketSetting::Path(PathBuf::from(v)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Arguments of `burrow tcp`: the shared flags and what the target is told about visitors.
#[derive(Debug, clap::Args)]
pub(crate) struct TcpArgs {
    #[command(flatten)]
    publish: PublishArgs,
    /// Send the target a PROXY protocol header (v1 or v2) naming the visitor before its bytes.
    #[arg(long, value_name = "VERSION", value_parser = checked(tunnels::proxy_version))]
    proxy_protocol: Option<String>,
}

/// Arguments of `burrow udp`: the shared flags and how the tunnel treats its flows.
#[derive(Debug, clap::Args)]
pub(crate) struct UdpArgs {
    #[command(flatten)]
    publish: PublishArgs,
    /// Forget a flow after this long without a datagram either way [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::idle_timeout))]
    idle_timeout: Option<String>,
    /// Most flows (visitor addresses) at once; datagrams of further ones are dropped
    /// [default: 16384].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_FLOWS)))]
    max_flows: Option<u32>,
    /// Events only: datagrams go to the target (which may be a broadcast address) and no
    /// replies are read back.
    #[arg(long)]
    one_way: bool,
    /// Events the other way: listen on LOCAL_PORT and deliver every datagram heard to the
    /// server's UDP sink NAME (no public port, nothing comes back).
    #[arg(
        long,
        value_name = "NAME",
        value_parser = checked(fields::sink_name),
        conflicts_with_all = ["remote_port", "one_way", "idle_timeout", "max_flows"]
    )]
    to_sink: Option<String>,
}

/// Arguments of `burrow http`: the shared flags and how the tunnel is reached on the edge.
#[derive(Debug, clap::Args)]
pub(crate) struct HttpArgs {
    #[command(flatten)]
    publish: PublishArgs,
    /// Name to answer at, SUBDOMAIN.<domain> (or /SUBDOMAIN/ without a domain); random when
    /// left out. Clients asking for the same name share its visitors round robin.
    #[arg(long, value_name = "NAME", value_parser = checked(tunnels::http::label))]
    subdomain: Option<String>,
    /// A custom hostname to answer at as well, if the server allows it (repeat for more).
    #[arg(long, value_name = "HOST", value_parser = checked(fields::hostname))]
    hostname: Vec<String>,
    /// A tag: TAG.<subdomain>.<domain> reaches only clients carrying it (repeat for more).
    #[arg(long, value_name = "TAG", value_parser = checked(tunnels::http::label))]
    tag: Vec<String>,
    /// The local service speaks TLS itself: the server's HTTPS listener passes connections
    /// for this name through, still encrypted.
    #[arg(long)]
    tls_passthrough: bool,
    /// Check this often that the local service accepts connections, and take this client out
    /// of the name's group while it does not [default: off].
    #[arg(long, value_name = "DUR", value_parser = checked(tunnels::http::health_check))]
    health_check: Option<String>,
}

/// Arguments of `burrow client`: run the tunnels of a config file.
#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    /// Client config file (TOML).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Exit with an error when the connection is lost instead of reconnecting.
    #[arg(long)]
    exit_on_disconnect: bool,
    /// Export traces to this OTLP/HTTP collector (replaces the file's `otlp_endpoint`).
    #[arg(long, value_name = "URL", value_parser = checked(crate::traces::checked_url))]
    otlp_endpoint: Option<String>,
    /// Carriers to try in order, comma-separated (replaces the file's `carrier`).
    #[arg(long, value_name = "LIST", value_parser = checked(carrier_list))]
    carrier: Option<String>,
    #[command(flatten)]
    proxy: ProxyArgs,
    #[command(flatten)]
    status: StatusSocketArgs,
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
    status_socket: Option<Item<SocketSetting>>,
    otlp_endpoint: Option<Item<String>>,
    proxy: Option<Item<String>>,
    carrier: Option<Item<Carriers>>,
    ws_ca: Option<Item<PathBuf>>,
    /// The proxy the environment names, when neither flags nor file say (see [`proxy`]).
    #[serde(skip)]
    env_proxy: Option<EnvProxy>,
    #[serde(default)]
    tunnels: Vec<RawTunnel>,
}

/// A checked client configuration, ready to build its TLS settings and run.
#[derive(Debug)]
pub(crate) struct ClientPlan {
    /// How to trust the server, or `None` for plain TCP.
    pub(crate) trust: Option<Trust>,
    /// Runtime config; its `transport` is [`Transport::Plain`] until the TLS settings are built.
    pub(crate) config: ClientConfig,
    /// Whether and where to serve the client's status.
    pub(crate) status_socket: StatusSocket,
    /// Where traces are exported, if anywhere.
    pub(crate) otlp: Option<crate::traces::Endpoint>,
    /// An extra CA for the TLS of `wss://` carriers, when one is given.
    pub(crate) ws_ca: Option<PathBuf>,
}

/// Reads and converts the file of `burrow client`.
pub(crate) fn load(args: &ClientArgs) -> anyhow::Result<ClientPlan> {
    let source = Source::read(&args.config)?;
    let (mut raw, problems) = source.parse::<RawClient>()?;
    if args.exit_on_disconnect {
        raw.exit_on_disconnect = Some(true);
    }
    if let Some(item) = args.status.item() {
        raw.status_socket = Some(item);
    }
    if let Some(url) = &args.otlp_endpoint {
        raw.otlp_endpoint = Some(Item::flag("--otlp-endpoint", url.clone()));
    }
    if let Some(item) = args.proxy.item() {
        raw.proxy = Some(item);
    }
    if let Some(list) = &args.carrier {
        raw.carrier = Some(Item::flag("--carrier", Carriers::from_flag(list)));
    }
    raw.apply_env();
    Ok(raw.into_plan(&source, problems)?)
}

/// Converts the flags of `burrow tcp`.
pub(crate) fn from_tcp(args: &TcpArgs) -> Result<ClientPlan, ConfigError> {
    let tunnel = RawTunnel::from(args);
    from_flags(RawClient::one_liner(&args.publish, tunnel))
}

/// Converts the flags of `burrow http`.
pub(crate) fn from_http(args: &HttpArgs) -> Result<ClientPlan, ConfigError> {
    let tunnel = RawTunnel::from(args);
    from_flags(RawClient::one_liner(&args.publish, tunnel))
}

/// Converts the flags of `burrow udp`.
pub(crate) fn from_udp(args: &UdpArgs) -> Result<ClientPlan, ConfigError> {
    let tunnel = RawTunnel::from(args);
    from_flags(RawClient::one_liner(&args.publish, tunnel))
}

/// Converts a config built from flags alone.
fn from_flags(mut raw: RawClient) -> Result<ClientPlan, ConfigError> {
    raw.apply_env();
    raw.into_plan(&Source::default(), Problems::default())
}

/// Converts a client TOML text on its own (what `burrow check` does).
pub(crate) fn check(source: &Source) -> Result<ClientPlan, ConfigError> {
    let (mut raw, problems) = source.parse::<RawClient>()?;
    raw.apply_env();
    raw.into_plan(source, problems)
}

impl From<&PublishArgs> for RawTunnel {
    /// A TCP tunnel with the shared flags alone (the base of every one-liner's tunnel).
    fn from(a: &PublishArgs) -> Self {
        Self {
            local_host: a.local_host.clone().map(|h| Item::flag("--local-host", h)),
            remote_port: a
                .remote_port
                .map(|p| Item::flag("--remote-port", i64::from(p))),
            ..RawTunnel::new(Item::flag("LOCAL_PORT", i64::from(a.local_port)))
        }
    }
}

impl From<&TcpArgs> for RawTunnel {
    /// The TCP tunnel of `burrow tcp`, with its PROXY protocol header if asked for.
    fn from(a: &TcpArgs) -> Self {
        Self {
            proxy_protocol: (a.proxy_protocol.clone()).map(|v| Item::flag("--proxy-protocol", v)),
            ..RawTunnel::from(&a.publish)
        }
    }
}

impl From<&UdpArgs> for RawTunnel {
    /// The UDP tunnel of `burrow udp`: from a public port, or to a sink with `--to-sink`.
    fn from(a: &UdpArgs) -> Self {
        Self {
            protocol: Some(Item::flag("burrow udp", "udp".to_owned())),
            idle_timeout: a
                .idle_timeout
                .clone()
                .map(|d| Item::flag("--idle-timeout", d)),
            max_flows: a.max_flows.map(|n| Item::flag("--max-flows", i64::from(n))),
            one_way: a.one_way.then(|| Item::flag("--one-way", true)),
            // The sink's name is the tunnel's name, as `name` is in a file.
            name: a.to_sink.clone().map(|n| Item::flag("--to-sink", n)),
            direction: (a.to_sink.as_ref()).map(|_| Item::flag("--to-sink", TO_SINK.to_owned())),
            ..RawTunnel::from(&a.publish)
        }
    }
}

impl From<&HttpArgs> for RawTunnel {
    /// The HTTP tunnel of `burrow http`.
    fn from(a: &HttpArgs) -> Self {
        let items = |name, v: &[String]| v.iter().map(|v| Item::flag(name, v.clone())).collect();
        Self {
            protocol: Some(Item::flag("burrow http", tunnels::http::HTTP.to_owned())),
            subdomain: a.subdomain.clone().map(|s| Item::flag("--subdomain", s)),
            hostnames: items("--hostname", &a.hostname),
            tags: items("--tag", &a.tag),
            tls_passthrough: a
                .tls_passthrough
                .then(|| Item::flag("--tls-passthrough", true)),
            health_check: a
                .health_check
                .clone()
                .map(|d| Item::flag("--health-check", d)),
            ..RawTunnel::from(&a.publish)
        }
    }
}

impl RawClient {
    /// The config of a one-liner: the shared flags and its one tunnel.
    fn one_liner(a: &PublishArgs, tunnel: RawTunnel) -> Self {
        let text = |name, v: &Option<String>| v.clone().map(|v| Item::flag(name, v));
        let path = |name, v: &Option<PathBuf>| v.clone().map(|v| Item::flag(name, v));
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
            status_socket: a.status.item(),
            otlp_endpoint: text("--otlp-endpoint", &a.otlp_endpoint),
            proxy: a.proxy.item(),
            carrier: (a.carrier.as_deref())
                .map(|l| Item::flag("--carrier", Carriers::from_flag(l))),
            ws_ca: path("--ws-ca", &a.ws_ca),
            env_proxy: None,
            tunnels: vec![tunnel],
        }
    }

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
        if self.otlp_endpoint.is_none() {
            self.otlp_endpoint = crate::traces::env_endpoint();
        }
        if self.proxy.is_none() {
            self.env_proxy = EnvProxy::from_env();
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
        let proxy = proxy::resolve(
            self.proxy.as_ref(),
            self.env_proxy.as_ref(),
            &server,
            &mut p,
        );
        let mut config = ClientConfig::new(server, name, token, Transport::Plain);
        config.proxy = proxy;
        self.tune(&mut config, &mut p);
        config.tunnels = tunnels::tunnels(&self.tunnels, &mut p);
        let status_socket = self.status_socket(source, &config.tunnels);
        let otlp = crate::traces::endpoint(self.otlp_endpoint.as_ref(), &mut p);
        let ws_ca = self
            .ws_ca
            .as_ref()
            .map(|ca| fields::existing_file(ca, source, &mut p));
        let plan = ClientPlan {
            trust,
            config,
            status_socket,
            otlp,
            ws_ca,
        };
        p.finish(plan, source)
    }

    /// Where to serve the status: off, a path (relative to the file), or the default path named
    /// after the config file or, for a one-liner, its tunnel.
    fn status_socket(&self, source: &Source, tunnels: &[TunnelConfig]) -> StatusSocket {
        match self.status_socket.as_ref().map(|i| (&i.value, i)) {
            Some((SocketSetting::On(false), _)) => StatusSocket::Off,
            Some((SocketSetting::Path(p), _)) if p.as_os_str().is_empty() => StatusSocket::Off,
            Some((SocketSetting::Path(p), item)) => StatusSocket::At(source.path(&Item {
                value: p.clone(),
                origin: item.origin.clone(),
            })),
            Some((SocketSetting::On(true), _)) | None => {
                let stem = source.name.as_deref().map(Path::new);
                let stem = stem.and_then(Path::file_stem).map(|s| s.to_string_lossy());
                let name = stem.map(|s| s.into_owned());
                let name = name.or_else(|| tunnels.first().map(|t| t.name.clone()));
                StatusSocket::Default(name.unwrap_or_else(|| "client".to_owned()))
            }
        }
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
        if let Some(n) = p.parse(self.pool_size.as_ref(), fields::count_in(0, MAX_POOL_SIZE)) {
            c.pool_size = n;
        }
        if let Some(kinds) = p.parse(self.carrier.as_ref(), carriers) {
            let plain = self.insecure_plain.as_ref().is_some_and(|i| i.value);
            if let (true, true, Some(item)) =
                (plain, kinds.contains(&CarrierKind::Quic), &self.carrier)
            {
                p.push(item.problem(
                    "the QUIC carrier is always encrypted: it cannot be used with insecure_plain",
                ));
            }
            c.carriers = kinds;
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

#[cfg(test)]
mod tests;
