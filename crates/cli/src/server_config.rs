//! `burrow server`: its flags, its TOML file, and the one conversion of both into a
//! [`ServerPlan`].
//!
//! Flags are laid over the file's values (flags win), then the merged raw config is converted
//! in one pass that reports every problem with its position. `BURROW_TOKEN` and
//! `BURROW_STATE_DIR` fill in only what neither the flags nor the file say, so an exported
//! variable never overrides a file the operator wrote.

mod admin;
mod bans;
mod edge;
mod sinks;

use crate::diag::{ConfigError, Item, Problems, Source};
use crate::fields::{self, checked};
use burrow_proto::auth::Secret;
use burrow_server::config::DEFAULT_CONTROL_PORT;
use burrow_server::{Auth, Identity, PortSet, ServerConfig, Transport};
use serde::Deserialize;
use sinks::RawUdpSink;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Largest connection or session limit accepted.
const MAX_LIMIT: usize = 1 << 20;

/// Flags of `burrow server`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct ServerArgs {
    /// Server config file (TOML); flags override its values.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Control address clients dial [default: 0.0.0.0:7777].
    #[arg(long, value_name = "ADDR:PORT", value_parser = checked(fields::listen_addr))]
    listen: Option<String>,
    /// Public ports tunnels may get [default: 20000-29999].
    #[arg(long, value_name = "LOW-HIGH[,N,...]", value_parser = checked(fields::ports))]
    ports: Option<String>,
    /// Shared token every client uses (else BURROW_TOKEN).
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the shared token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Where the generated TLS identity is kept [default: $BURROW_STATE_DIR, /var/lib/burrow
    /// as root, else ~/.local/state/burrow].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// PEM certificate chain to serve instead of the generated one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Speak plain TCP instead of TLS (only on a trusted network).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_plain: bool,
    /// Address public ports bind to [default: 0.0.0.0].
    #[arg(long, value_name = "IP", value_parser = checked(fields::ip))]
    public_bind: Option<String>,
    /// How long a lost client's ports stay reserved for it [default: 30s].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::duration))]
    lease_grace: Option<String>,
    /// Heartbeat interval [default: 2s].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::duration))]
    heartbeat_interval: Option<String>,
    /// Silence after which a carrier is declared lost [default: 7s].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::duration))]
    dead_after: Option<String>,
    /// Ask sessions older than this to reconnect once their streams finish, e.g. 2h (for
    /// rolling updates behind one address) [default: no limit].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::duration))]
    max_session_lifetime: Option<String>,
    /// Ban an address (IPv6: its /64) from the control port after this many failed
    /// handshakes within ban_window; 0 turns banning off [default: 10].
    #[arg(long, value_name = "N")]
    ban_after: Option<u32>,
    /// How long a ban lasts [default: 10m].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::duration))]
    ban_for: Option<String>,
    /// A UDP sink clients may send events to, NAME=IP:PORT (repeat for more; adds to the file's
    /// [[udp_sinks]]).
    #[arg(long = "udp-sink", value_name = "NAME=IP:PORT", value_parser = checked(fields::udp_sink))]
    udp_sink: Vec<String>,
    /// HTTP edge: address of the plain HTTP listener (e.g. 0.0.0.0:80).
    #[arg(long, value_name = "ADDR:PORT", value_parser = checked(fields::listen_addr))]
    http_listen: Option<String>,
    /// HTTP edge: address of the HTTPS listener (e.g. 0.0.0.0:443): SNI passthrough, and
    /// termination with --edge-tls-cert.
    #[arg(long, value_name = "ADDR:PORT", value_parser = checked(fields::listen_addr))]
    https_listen: Option<String>,
    /// HTTP edge: a base domain; tunnels answer at NAME.DOMAIN (repeat for more; replaces the
    /// file's `domains`). Without one, tunnels answer at /NAME/ on the edge's address.
    #[arg(long, value_name = "DOMAIN", value_parser = checked(fields::hostname))]
    domain: Vec<String>,
    /// HTTP edge: PEM certificate chain the HTTPS listener terminates TLS with (e.g. a
    /// wildcard for the domain).
    #[arg(long, value_name = "FILE", requires = "edge_tls_key")]
    edge_tls_cert: Option<PathBuf>,
    /// HTTP edge: PEM private key of --edge-tls-cert.
    #[arg(long, value_name = "FILE", requires = "edge_tls_cert")]
    edge_tls_key: Option<PathBuf>,
    /// HTTP edge: a visitor must send its request head within this [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::duration))]
    http_header_timeout: Option<String>,
    /// HTTP edge: a target must start answering within this, else 504 [default: 60s].
    #[arg(long, value_name = "DUR", value_parser = checked(fields::duration))]
    http_response_timeout: Option<String>,
    /// QUIC carrier: UDP address to listen on (e.g. 0.0.0.0:7777, beside the TCP control port)
    /// [default: off].
    #[arg(long, value_name = "ADDR:PORT", value_parser = checked(fields::listen_addr))]
    quic_listen: Option<String>,
    /// WebSocket carrier: address of its plain-HTTP listener, for a reverse proxy, ingress or
    /// CDN in front (clients use carrier = "wss://HOST/PATH") [default: off].
    #[arg(long, value_name = "ADDR:PORT", value_parser = checked(fields::listen_addr))]
    ws_listen: Option<String>,
    /// WebSocket carrier: the path upgrades are accepted at [default: /burrow].
    #[arg(long, value_name = "PATH", value_parser = checked(ws_path))]
    ws_path: Option<String>,
    /// WebSocket carrier: a reverse proxy (address or network) whose X-Forwarded-For names the
    /// client; repeat for several [default: none].
    #[arg(long, value_name = "NET", value_parser = checked(bans::network))]
    ws_trusted_proxy: Vec<String>,
    /// Admin API (JSON, Prometheus /metrics): address to listen on, e.g. 127.0.0.1:7780. Off
    /// loopback it needs an admin token.
    #[arg(long, value_name = "ADDR:PORT", value_parser = checked(fields::listen_addr))]
    admin_listen: Option<String>,
    /// File holding the admin API's bearer token.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Export traces to this OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (else
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT) [default: off].
    #[arg(long, value_name = "URL", value_parser = checked(crate::traces::checked_url))]
    otlp_endpoint: Option<String>,
}

/// The server's TOML file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    listen: Option<Item<String>>,
    ports: Option<Item<String>>,
    public_bind: Option<Item<String>>,
    state_dir: Option<Item<PathBuf>>,
    token: Option<Item<String>>,
    token_file: Option<Item<PathBuf>>,
    insecure_plain: Option<Item<bool>>,
    tls_cert: Option<Item<PathBuf>>,
    tls_key: Option<Item<PathBuf>>,
    lease_grace: Option<Item<String>>,
    heartbeat_interval: Option<Item<String>>,
    dead_after: Option<Item<String>>,
    handshake_timeout: Option<Item<String>>,
    pool_wait: Option<Item<String>>,
    max_unauthenticated: Option<Item<i64>>,
    max_sessions: Option<Item<i64>>,
    max_udp_flows: Option<Item<i64>>,
    max_udp_flows_per_session: Option<Item<i64>>,
    shutdown_grace: Option<Item<String>>,
    max_session_lifetime: Option<Item<String>>,
    ban_after: Option<Item<i64>>,
    ban_window: Option<Item<String>>,
    ban_for: Option<Item<String>>,
    #[serde(default)]
    ban_exempt: Vec<Item<String>>,
    #[serde(default)]
    clients: Vec<RawIdentity>,
    #[serde(default)]
    udp_sinks: Vec<RawUdpSink>,
    http_listen: Option<Item<String>>,
    https_listen: Option<Item<String>>,
    #[serde(default)]
    domains: Vec<Item<String>>,
    edge_tls_cert: Option<Item<PathBuf>>,
    edge_tls_key: Option<Item<PathBuf>>,
    http_header_timeout: Option<Item<String>>,
    http_response_timeout: Option<Item<String>>,
    http_max_header_bytes: Option<Item<i64>>,
    admin_listen: Option<Item<String>>,
    quic_listen: Option<Item<String>>,
    ws_listen: Option<Item<String>>,
    ws_path: Option<Item<String>>,
    #[serde(default)]
    ws_trusted_proxies: Vec<Item<String>>,
    admin_token: Option<Item<String>>,
    admin_token_file: Option<Item<PathBuf>>,
    otlp_endpoint: Option<Item<String>>,
}

/// One `[[clients]]` entry, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: Item<String>,
    token: Option<Item<String>>,
    token_file: Option<Item<PathBuf>>,
    ports: Option<Item<String>>,
    /// Custom hostnames its HTTP tunnels may answer on (`shop.example.org`, `*.example.org`).
    #[serde(default)]
    hostnames: Vec<Item<String>>,
}

/// Where the server's TLS identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsSource {
    /// The operator's certificate and key.
    Files {
        /// PEM certificate chain.
        cert: PathBuf,
        /// PEM private key.
        key: PathBuf,
    },
    /// A self-signed identity kept in (and generated into) this directory.
    StateDir(PathBuf),
}

/// A checked server configuration, ready to load its TLS identity and bind.
#[derive(Debug)]
pub(crate) struct ServerPlan {
    /// Control address to bind.
    pub(crate) listen: SocketAddr,
    /// Whether `listen` was configured (else it is the default).
    pub(crate) listen_given: bool,
    /// TLS identity to load, or `None` for plain TCP.
    pub(crate) tls: Option<TlsSource>,
    /// Runtime config; its `transport` is [`Transport::Plain`] until the identity is loaded.
    pub(crate) config: ServerConfig,
    /// The HTTP edge's listeners and certificate.
    pub(crate) edge: edge::EdgePlan,
    /// The admin API's listener.
    pub(crate) admin: Option<SocketAddr>,
    /// The QUIC carrier's UDP address.
    pub(crate) quic: Option<SocketAddr>,
    /// The WebSocket carrier's listener.
    pub(crate) ws: Option<SocketAddr>,
    /// Where traces are exported, if anywhere.
    pub(crate) otlp: Option<crate::traces::Endpoint>,
}

/// Reads the file (if any), lays the flags over it and converts the result.
pub(crate) fn load(args: &ServerArgs) -> anyhow::Result<ServerPlan> {
    let (source, mut raw, problems) = match &args.config {
        Some(path) => {
            let source = Source::read(path)?;
            let (raw, problems) = source.parse::<RawServer>()?;
            (source, raw, problems)
        }
        None => (Source::default(), RawServer::default(), Problems::default()),
    };
    raw.apply_flags(args);
    raw.apply_env();
    Ok(raw.into_plan(&source, problems)?)
}

/// The WebSocket carrier's path: absolute, printable, no query, at most 256 bytes.
fn ws_path(s: &str) -> Result<String, String> {
    let ok = s.starts_with('/')
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a path like /burrow (absolute, no spaces, query or fragment, at most 256 bytes)"
        ))
    }
}

/// Converts a server TOML text on its own (what `burrow check` does).
pub(crate) fn check(source: &Source) -> Result<ServerPlan, ConfigError> {
    let (mut raw, problems) = source.parse::<RawServer>()?;
    raw.apply_env();
    raw.into_plan(source, problems)
}

impl RawServer {
    /// Lays command-line values over the file's.
    fn apply_flags(&mut self, a: &ServerArgs) {
        let text = |name, v: &Option<String>| v.clone().map(|v| Item::flag(name, v));
        let path = |name, v: &Option<PathBuf>| v.clone().map(|v| Item::flag(name, v));
        set(&mut self.listen, text("--listen", &a.listen));
        set(&mut self.ports, text("--ports", &a.ports));
        set(&mut self.public_bind, text("--public-bind", &a.public_bind));
        set(&mut self.state_dir, path("--state-dir", &a.state_dir));
        set(&mut self.lease_grace, text("--lease-grace", &a.lease_grace));
        set(
            &mut self.heartbeat_interval,
            text("--heartbeat-interval", &a.heartbeat_interval),
        );
        set(&mut self.dead_after, text("--dead-after", &a.dead_after));
        set(
            &mut self.max_session_lifetime,
            text("--max-session-lifetime", &a.max_session_lifetime),
        );
        set(
            &mut self.otlp_endpoint,
            text("--otlp-endpoint", &a.otlp_endpoint),
        );
        set(&mut self.quic_listen, text("--quic-listen", &a.quic_listen));
        set(&mut self.ws_listen, text("--ws-listen", &a.ws_listen));
        set(&mut self.ws_path, text("--ws-path", &a.ws_path));
        // A list: the flags, when given, replace the file's.
        if !a.ws_trusted_proxy.is_empty() {
            self.ws_trusted_proxies = (a.ws_trusted_proxy.iter())
                .map(|net| Item::flag("--ws-trusted-proxy", net.clone()))
                .collect();
        }
        // Sinks are a list: the flags' come after the file's, and a name used twice is an error.
        let flags = a.udp_sink.iter().map(|s| RawUdpSink::from_flag(s));
        self.udp_sinks.extend(flags);
        self.apply_edge_flags(a);
        self.apply_admin_flags(a);
        self.apply_ban_flags(a);
        // Flags choose the transport as a whole: plain drops the file's TLS files and TLS
        // files drop the file's `insecure_plain`.
        if a.insecure_plain {
            self.insecure_plain = Some(Item::flag("--insecure-plain", true));
            (self.tls_cert, self.tls_key) = (None, None);
        }
        // A token flag replaces the file's token source as a whole.
        if a.token.is_some() || a.token_file.is_some() {
            self.token = text("--token", &a.token);
            self.token_file = path("--token-file", &a.token_file);
        }
        // The certificate and key belong together; flags replace both.
        if a.tls_cert.is_some() {
            self.insecure_plain = None;
            self.tls_cert = path("--tls-cert", &a.tls_cert);
            self.tls_key = path("--tls-key", &a.tls_key);
        }
    }

    /// Fills in what only the environment says.
    fn apply_env(&mut self) {
        if self.token.is_none() && self.token_file.is_none() && self.clients.is_empty() {
            self.token = fields::env_item("BURROW_TOKEN");
        }
        if self.state_dir.is_none() {
            self.state_dir = fields::env_item("BURROW_STATE_DIR").map(|i| Item {
                value: PathBuf::from(i.value),
                origin: i.origin,
            });
        }
        if self.otlp_endpoint.is_none() {
            self.otlp_endpoint = crate::traces::env_endpoint();
        }
    }

    /// The QUIC carrier's address; QUIC is always encrypted, so not with `insecure_plain`.
    fn quic(&self, tls: bool, p: &mut Problems) -> Option<SocketAddr> {
        let addr = p.parse(self.quic_listen.as_ref(), fields::listen_addr)?;
        if !tls && let Some(item) = &self.quic_listen {
            p.push(item.problem(
                "the QUIC carrier is always encrypted: quic_listen cannot be used with insecure_plain",
            ));
        }
        Some(addr)
    }

    /// The one conversion into runtime types; every problem is reported.
    fn into_plan(self, source: &Source, mut p: Problems) -> Result<ServerPlan, ConfigError> {
        let listen = p.parse(self.listen.as_ref(), fields::listen_addr);
        let listen_given = self.listen.is_some();
        let listen = listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], DEFAULT_CONTROL_PORT)));
        let auth = self.auth(source, &mut p);
        let tls = self.tls_source(source, &mut p);
        let mut config = ServerConfig::new(auth, Transport::Plain);
        self.tune(&mut config, &mut p);
        config.bans = self.bans(&mut p);
        config.udp_sinks = sinks::udp_sinks(&self.udp_sinks, &mut p);
        let edge = self.edge(source, &mut config.http, &mut p);
        let admin = self.admin(source, &mut config, &mut p);
        let quic = self.quic(tls.is_some(), &mut p);
        let ws = p.parse(self.ws_listen.as_ref(), fields::listen_addr);
        if let Some(path) = p.parse(self.ws_path.as_ref(), ws_path) {
            config.ws_path = path;
        }
        config.ws_trusted_proxies = (self.ws_trusted_proxies.iter())
            .filter_map(|item| p.parse(Some(item), bans::network))
            .collect();
        let otlp = crate::traces::endpoint(self.otlp_endpoint.as_ref(), &mut p);
        p.finish(
            ServerPlan {
                listen,
                listen_given,
                tls,
                config,
                edge,
                admin,
                quic,
                ws,
                otlp,
            },
            source,
        )
    }

    /// Ports, bind address, timers and limits.
    fn tune(&self, c: &mut ServerConfig, p: &mut Problems) {
        if let Some(ports) = p.parse(self.ports.as_ref(), fields::ports) {
            c.ports = ports;
        }
        if let Some(ip) = p.parse(self.public_bind.as_ref(), fields::ip) {
            c.public_bind = ip;
        }
        let timers = [
            (&self.lease_grace, &mut c.lease_grace, true),
            (&self.heartbeat_interval, &mut c.heartbeat_interval, false),
            (&self.dead_after, &mut c.dead_after, false),
            (&self.handshake_timeout, &mut c.handshake_timeout, false),
            (&self.pool_wait, &mut c.pool_wait, false),
            (&self.shutdown_grace, &mut c.shutdown_grace, true),
        ];
        fields::durations(p, timers);
        let mut lifetime = std::time::Duration::ZERO;
        fields::durations(p, [(&self.max_session_lifetime, &mut lifetime, false)]);
        c.max_session_lifetime = self.max_session_lifetime.as_ref().map(|_| lifetime);
        let heartbeat = (&self.heartbeat_interval, c.heartbeat_interval);
        fields::liveness(p, heartbeat, (&self.dead_after, c.dead_after));
        let limits = [
            (&self.max_unauthenticated, &mut c.max_unauthenticated),
            (&self.max_sessions, &mut c.max_sessions),
        ];
        for (item, slot) in limits {
            if let Some(n) = p.parse(item.as_ref(), fields::count_in(1, MAX_LIMIT)) {
                *slot = n;
            }
        }
        let flows = [
            (&self.max_udp_flows, &mut c.max_udp_flows),
            (
                &self.max_udp_flows_per_session,
                &mut c.max_udp_flows_per_session,
            ),
        ];
        for (item, slot) in flows {
            let n = p.parse(item.as_ref(), fields::count_in(1, MAX_LIMIT));
            if let Some(n) = n.and_then(|n| u32::try_from(n).ok()) {
                *slot = n;
            }
        }
    }

    /// Shared token or named identities: exactly one of them.
    fn auth(&self, source: &Source, p: &mut Problems) -> Auth {
        let token = fields::token(self.token.as_ref(), self.token_file.as_ref(), source, p);
        if self.clients.is_empty() {
            if self.token.is_none() && self.token_file.is_none() {
                p.whole("no token given (`token` or `token_file`, [[clients]], --token or --token-file, or BURROW_TOKEN)");
            }
            // A missing or bad token was reported above, so this placeholder never runs.
            return Auth::SharedToken(token.unwrap_or_else(|| Secret::new("")));
        }
        let msg = "a shared token and [[clients]] are both given; use one or the other";
        let conflict = (self.token.as_ref().map(|t| t.problem(msg)))
            .or_else(|| self.token_file.as_ref().map(|t| t.problem(msg)));
        if let Some(problem) = conflict {
            p.push(problem);
        }
        Auth::Identities(identities(&self.clients, source, p))
    }

    /// The TLS identity to load, unless plain TCP was asked for.
    fn tls_source(&self, source: &Source, p: &mut Problems) -> Option<TlsSource> {
        let plain = self.insecure_plain.as_ref().is_some_and(|i| i.value);
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), _) | (None, Some(cert)) if plain => {
                p.push(cert.problem("TLS files are given but insecure_plain is on; choose one"));
                None
            }
            _ if plain => None,
            (Some(cert), Some(key)) => {
                let cert = fields::existing_file(cert, source, p);
                let key = fields::existing_file(key, source, p);
                Some(TlsSource::Files { cert, key })
            }
            (Some(one), None) | (None, Some(one)) => {
                p.push(one.problem("give both `tls_cert` and `tls_key`, or neither"));
                None
            }
            (None, None) => match self.state_dir.as_ref().map(|d| source.path(d)) {
                Some(dir) => Some(TlsSource::StateDir(dir)),
                None => match default_state_dir() {
                    Some(dir) => Some(TlsSource::StateDir(dir)),
                    None => {
                        p.whole("cannot find a state directory; set `state_dir` or --state-dir");
                        None
                    }
                },
            },
        }
    }
}

/// Replaces `slot` when the flag was given.
fn set<T>(slot: &mut Option<Item<T>>, flag: Option<Item<T>>) {
    if flag.is_some() {
        *slot = flag;
    }
}

/// Converts `[[clients]]`, reporting bad and duplicate names.
fn identities(raw: &[RawIdentity], source: &Source, p: &mut Problems) -> Vec<Identity> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for c in raw {
        let (item, written) = (&c.name, c.name.value.as_str());
        let name = p.parse(Some(item), fields::name);
        if written.is_empty() {
            p.push(item.problem("a client needs a name"));
        } else if !seen.insert(written) {
            p.push(item.problem(format!("client `{written}` is listed twice")));
        }
        let token = fields::token(c.token.as_ref(), c.token_file.as_ref(), source, p);
        if c.token.is_none() && c.token_file.is_none() {
            p.push(item.problem(format!("client `{written}` has no `token` or `token_file`")));
        }
        let ports: Option<PortSet> = p.parse(c.ports.as_ref(), fields::ports);
        let hostnames = edge::hostnames(&c.hostnames, p);
        if let (Some(name), Some(token)) = (name, token) {
            out.push(Identity {
                name,
                token,
                ports,
                hostnames,
            });
        }
    }
    out
}

/// `/var/lib/burrow` for root, else the user's state directory.
fn default_state_dir() -> Option<PathBuf> {
    if is_root() {
        return Some(PathBuf::from("/var/lib/burrow"));
    }
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .map(|d| d.join("burrow"))
}

/// True when running as root; `/proc/self` belongs to the process's effective user.
pub(crate) fn is_root() -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

#[cfg(test)]
mod tests;
