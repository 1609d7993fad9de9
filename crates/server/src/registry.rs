//! The server's shared state: live sessions, published tunnels and the port table.
//!
//! One `std::sync::Mutex` guards it; every critical section is a few map operations and never
//! awaits. Tasks clone what they need (an `Arc<SessionHandle>`, a `watch::Receiver`) and drop the
//! guard before any I/O.

use crate::config::{Auth, PortSet, ServerConfig};
use crate::handshake::Authority;
use crate::http::routes::{HttpRoutes, Member};
use crate::metrics::TunnelStats;
use crate::pool::DataPool;
use crate::ports::{Claim, Endpoint, PortTable};
use burrow_proto::auth::Secret;
use burrow_proto::msg::{Protocol, Refusal, ServerMsg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub(crate) use crate::link::Opened;

/// How long a visitor waits for a stream the server opens on a link before it falls back to
/// the pool: opening a mux stream is immediate, a QUIC one waits only while the client has
/// given no credit for another stream (it holds [`burrow_net::quic::MAX_STREAMS`] already).
const SERVER_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A live session as other tasks see it.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    /// Session id.
    pub id: u64,
    /// Identity name.
    pub identity: String,
    /// The secret its data connections prove knowledge of, keyed for their proofs.
    pub data_key: burrow_proto::auth::DataKey,
    /// Idle data connections, ready for visitors.
    pub pool: DataPool,
    /// The sequence numbers of early data hellos taken so far (each is taken once).
    pub early_seqs: Mutex<burrow_proto::auth::SeqWindow>,
    /// Messages to send on the control stream (bounded; senders never wait on it).
    pub control: mpsc::Sender<ServerMsg>,
    /// Cancelled when the session ends.
    pub closed: CancellationToken,
    /// Where its control connection comes from.
    pub peer: std::net::SocketAddr,
    /// The session's QUIC connection, when it runs over QUIC: the client's address can change
    /// under it (connection migration), so [`SessionHandle::address`] asks it.
    pub quic: Option<burrow_net::quic::quinn::Connection>,
    /// When it was established.
    pub since: std::time::SystemTime,
    /// `tls` or `plain`.
    pub carrier: &'static str,
    /// Last heartbeat round trip, in microseconds (0 before the first).
    pub rtt_us: std::sync::atomic::AtomicU64,
    /// Set by an operator's disconnect: 1 keeps the client's leases, 2 releases them.
    pub kicked: std::sync::atomic::AtomicU8,
    /// Visitor streams of this session open now.
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Operator pings waiting for their pong, by sequence number.
    pub pings: Mutex<HashMap<u64, tokio::sync::oneshot::Sender<()>>>,
    /// The machine the client says it runs on.
    pub host: Mutex<Option<burrow_proto::msg::HostInfo>>,
    /// UDP flows held by this session's tunnels, against `max_udp_flows_per_session`.
    pub udp_flows: std::sync::atomic::AtomicUsize,
    /// The session's span, for its streams' spans to link to.
    pub span: crate::spans::SessionSpan,
    /// Opens streams toward the client on its link, when it asked for them
    /// (`caps::SERVER_STREAMS`): a visitor that finds the pool empty needs no round trip.
    pub opener: Option<crate::link::Opener>,
    /// The client takes reusable streams (`caps::REUSE`): a TCP visitor on one of its pooled
    /// data connections gives the connection back to the pool when both ways have ended.
    pub reuse: bool,
}

impl SessionHandle {
    /// The client's address now: where its QUIC connection currently comes from, else the
    /// address its control connection came from.
    pub(crate) fn address(&self) -> std::net::SocketAddr {
        self.quic
            .as_ref()
            .map_or(self.peer, |connection| connection.remote_address())
    }

    /// Whether a visitor's stream on `carrier`, opened as `opened`, is a reusable one: on a
    /// pooled data connection that can carry one stream after another, of a client that takes
    /// them. A stream the server opened on a link ends with its visitor.
    pub(crate) fn reusable_stream(&self, opened: Opened, carrier: &burrow_net::Carrier) -> bool {
        opened.pooled() && self.reuse && carrier.takes_reusable_streams()
    }

    /// A stream toward the client for one visitor, and how it was opened: an idle pooled data
    /// connection when there is one (free); else, for a client that asked for them, a stream
    /// the server opens on its link (waiting at most [`SERVER_OPEN_WAIT`]); else, or when that
    /// fails (the server holds its share of the link's streams, the link is gone), the pool's
    /// next connection, asking the client for more. Waits as long as that takes (callers bound
    /// the wait). If the client's request queue is full, a request is already pending.
    ///
    /// Cancel-safe: a stream opened but not yet returned is dropped, which resets it.
    pub(crate) async fn take_data(&self) -> (burrow_net::Carrier, Opened) {
        if let Some(pooled) = self.pool.take() {
            return (pooled, Opened::Pool);
        }
        if let Some(opener) = &self.opener {
            match tokio::time::timeout(SERVER_OPEN_WAIT, opener.open()).await {
                Ok(Ok(carrier)) => return (carrier, Opened::Server),
                Ok(Err(e)) => {
                    debug!("cannot open a stream toward the client ({e}); waiting for the pool")
                }
                Err(_) => debug!(
                    "no stream toward the client within {SERVER_OPEN_WAIT:?}; waiting for the pool"
                ),
            }
        }
        let want_more = || {
            debug!("the pool is empty: asking the client for a data connection");
            let _ = self.control.try_send(ServerMsg::WantData { count: 1 });
        };
        (self.pool.take_or_wait(want_more).await, Opened::Waited)
    }
}

/// Where a tunnel's visitors go right now: the session serving it and the client's tunnel id,
/// or `None` while the port is leased and its client is away.
pub(crate) type Route = Option<(Arc<SessionHandle>, u32)>;

/// A published tunnel: its listener lives as long as the port is in use or leased.
#[derive(Debug)]
struct TunnelEntry {
    route: watch::Sender<Route>,
    /// Cancelling it closes the public listener.
    listener: CancellationToken,
    /// Its traffic.
    stats: Arc<TunnelStats>,
    /// What its client says it is: its name and local target.
    about: TunnelAbout,
}

/// A tunnel as its client describes it, for the admin API.
#[derive(Debug, Clone, Default)]
pub(crate) struct TunnelAbout {
    /// The client's name of the tunnel.
    pub name: String,
    /// The client's local target.
    pub target: String,
}

/// A public port as the admin API shows it.
#[derive(Debug)]
pub(crate) struct PortInfo {
    pub endpoint: Endpoint,
    /// The identity holding it.
    pub identity: String,
    pub hold: crate::ports::Hold,
    /// Its traffic, while a listener serves it.
    pub stats: Option<Arc<TunnelStats>>,
    /// What the client serving it (or last serving it) says it is.
    pub about: TunnelAbout,
}

#[derive(Debug)]
struct State {
    sessions: HashMap<u64, Arc<SessionHandle>>,
    tunnels: HashMap<Endpoint, TunnelEntry>,
    ports: PortTable,
    http: HttpRoutes<Arc<SessionHandle>>,
    /// Who may log in; swapped by a reload in the same critical section that revokes.
    auth: Auth,
    max_sessions: usize,
}

/// [`SessionHandle::kicked`] for a session whose identity a reload removed: its ports and
/// names are released at once.
pub(crate) const REVOKED: u8 = 3;

/// What a reload took away from identities that no longer exist.
#[derive(Debug, Default)]
pub(crate) struct Revoked {
    /// Their live sessions, already out of the registry; the caller closes them.
    pub sessions: Vec<Arc<SessionHandle>>,
    /// Their ports (in use or leased), released and their listeners closed.
    pub ports: Vec<Endpoint>,
    /// Their HTTP names, released.
    pub names: Vec<String>,
}

/// An HTTP tunnel picked for a visitor.
pub(crate) type HttpMember = Member<Arc<SessionHandle>>;

/// The registry and the parts of the configuration it applies.
#[derive(Debug)]
pub(crate) struct Registry {
    state: Mutex<State>,
    domains: Vec<String>,
}

impl Registry {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        let state = State {
            sessions: HashMap::new(),
            tunnels: HashMap::new(),
            ports: PortTable::new(config.ports.clone()),
            http: HttpRoutes::new(),
            auth: config.auth.clone(),
            max_sessions: config.max_sessions,
        };
        Self {
            state: Mutex::new(state),
            domains: config.http.domains.clone(),
        }
    }

    /// Takes the reloadable parts of `config` (who may log in, the session cap) and removes
    /// whatever belongs to identities that no longer have a token: their sessions leave the
    /// registry and their ports and names are released at once.
    pub(crate) fn reconfigure(&self, config: &ServerConfig) -> Revoked {
        let mut state = self.lock();
        state.auth = config.auth.clone();
        state.max_sessions = config.max_sessions;
        let gone = |state: &State, identity: &str| token_for(&state.auth, identity).is_none();
        let sessions: Vec<Arc<SessionHandle>> = (state.sessions.values())
            .filter(|s| gone(&state, &s.identity))
            .cloned()
            .collect();
        for session in &sessions {
            end_session(&mut state, session.id, None);
        }
        let mut owners: Vec<String> = (state.ports.entries().into_iter())
            .map(|(_, owner, _)| owner)
            .chain(state.http.names().into_iter().map(|n| n.owner))
            .filter(|owner| gone(&state, owner))
            .collect();
        owners.sort();
        owners.dedup();
        let mut revoked = Revoked {
            sessions,
            ..Revoked::default()
        };
        for owner in owners {
            let ports = state.ports.release_identity(&owner);
            for &endpoint in &ports {
                close_tunnel(&mut state, endpoint);
            }
            revoked.ports.extend(ports);
            revoked.names.extend(state.http.release_owner(&owner));
        }
        revoked
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // more than stopping the server would, so recover the guard.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ports an identity may claim (`None`: the whole range).
    fn allowance(state: &State, identity: &str) -> Option<PortSet> {
        match &state.auth {
            Auth::SharedToken(_) => None,
            Auth::Identities(ids) => ids
                .iter()
                .find(|i| i.name == identity)
                .and_then(|i| i.ports.clone()),
        }
    }

    /// Registers a new session and returns the session count; refused, with the reason, when
    /// the server is at its session limit or a reload removed the identity while it logged in.
    pub(crate) fn add_session(&self, session: Arc<SessionHandle>) -> Result<usize, String> {
        let mut state = self.lock();
        if state.sessions.len() >= state.max_sessions {
            return Err(format!("at the limit of {} sessions", state.max_sessions));
        }
        if token_for(&state.auth, &session.identity).is_none() {
            return Err("its identity was just removed from the config".into());
        }
        state.sessions.insert(session.id, session);
        Ok(state.sessions.len())
    }

    /// A live session.
    pub(crate) fn session(&self, id: u64) -> Option<Arc<SessionHandle>> {
        self.lock().sessions.get(&id).cloned()
    }

    /// Removes a session; its tunnels become leases until `until` (or are closed at once when
    /// `until` is `None`, for a client that said goodbye). Returns the remaining session count.
    pub(crate) fn end_session(&self, id: u64, until: Option<Instant>) -> usize {
        let mut state = self.lock();
        end_session(&mut state, id, until);
        state.sessions.len()
    }

    /// Closes leases that ended by `now`; returns the ports and HTTP names freed.
    pub(crate) fn expire_leases(&self, now: Instant) -> (Vec<Endpoint>, Vec<String>) {
        let mut state = self.lock();
        let expired = state.ports.expire(now);
        for &endpoint in &expired {
            close_tunnel(&mut state, endpoint);
        }
        let names = state.http.expire(now);
        (expired, names)
    }

    /// Claims a `protocol` port for a tunnel of `session`; see [`PortTable::claim`].
    pub(crate) fn claim(
        &self,
        session: &SessionHandle,
        protocol: Protocol,
        want: Option<u16>,
        skip: &[u16],
    ) -> Result<Claim, Refusal> {
        let mut state = self.lock();
        let allowance = Self::allowance(&state, &session.identity);
        state.ports.claim(
            protocol,
            &session.identity,
            allowance.as_ref(),
            want,
            session.id,
            skip,
        )
    }

    /// Gives up a claimed endpoint whose socket could not be bound.
    pub(crate) fn unclaim(&self, endpoint: Endpoint) {
        self.lock().ports.release(endpoint);
    }

    /// Records the socket of a newly bound tunnel and routes it to `session`; returns the
    /// receiver the socket's task watches, and the tunnel's counters.
    pub(crate) fn publish(
        &self,
        endpoint: Endpoint,
        route: Route,
        listener: CancellationToken,
    ) -> (watch::Receiver<Route>, Arc<TunnelStats>) {
        let (tx, rx) = watch::channel(route);
        let stats = Arc::new(TunnelStats::default());
        self.lock().tunnels.insert(
            endpoint,
            TunnelEntry {
                route: tx,
                listener,
                stats: stats.clone(),
                about: TunnelAbout::default(),
            },
        );
        (rx, stats)
    }

    /// Records what the client serving `endpoint` says the tunnel is.
    pub(crate) fn describe(&self, endpoint: Endpoint, about: TunnelAbout) {
        if let Some(t) = self.lock().tunnels.get_mut(&endpoint) {
            t.about = about;
        }
    }

    /// Routes an existing tunnel (a lease taken back, or a stale session's endpoint) to a new
    /// session. Returns false when the tunnel no longer exists.
    pub(crate) fn reroute(&self, endpoint: Endpoint, route: Route) -> bool {
        match self.lock().tunnels.get(&endpoint) {
            Some(t) => {
                t.route.send_replace(route);
                true
            }
            None => false,
        }
    }

    /// Closes a tunnel of `session` on the client's request, freeing its endpoint.
    pub(crate) fn close_by_client(&self, session: u64, endpoint: Endpoint) {
        let mut state = self.lock();
        if state.ports.hold(endpoint) == Some(crate::ports::Hold::InUse { session }) {
            state.ports.release(endpoint);
            close_tunnel(&mut state, endpoint);
        }
    }

    /// Every live session.
    pub(crate) fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        let mut all: Vec<Arc<SessionHandle>> = self.lock().sessions.values().cloned().collect();
        all.sort_by_key(|s| s.since);
        all
    }

    /// The port table's endpoints and the edge's names, as one consistent snapshot.
    pub(crate) fn tunnels(&self) -> (Vec<PortInfo>, Vec<crate::http::routes::NameInfo>) {
        let state = self.lock();
        let ports = state
            .ports
            .entries()
            .into_iter()
            .map(|(endpoint, identity, hold)| {
                let tunnel = state.tunnels.get(&endpoint);
                PortInfo {
                    endpoint,
                    identity,
                    hold,
                    stats: tunnel.map(|t| t.stats.clone()),
                    about: tunnel.map(|t| t.about.clone()).unwrap_or_default(),
                }
            })
            .collect();
        (ports, state.http.names())
    }

    /// The public port range.
    pub(crate) fn port_range(&self) -> PortSet {
        self.lock().ports.range().clone()
    }

    /// Free ports in the public range for `protocol` (for spreading clients across servers).
    pub(crate) fn free_ports(&self, protocol: Protocol) -> usize {
        self.lock().ports.free_count(protocol)
    }
}

/// Removes a session; see [`Registry::end_session`].
fn end_session(state: &mut State, id: u64, until: Option<Instant>) {
    state.sessions.remove(&id);
    state.http.end_session(id, until);
    let ports = state
        .ports
        .lease_session(id, until.unwrap_or_else(Instant::now));
    for endpoint in ports {
        if until.is_none() {
            state.ports.release(endpoint);
            close_tunnel(state, endpoint);
        } else if let Some(t) = state.tunnels.get(&endpoint) {
            t.route.send_replace(None);
        }
    }
}

/// The token of identity `name` under `auth`; with a shared token every name has it.
fn token_for(auth: &Auth, name: &str) -> Option<Secret> {
    match auth {
        Auth::SharedToken(token) => Some(token.clone()),
        Auth::Identities(ids) => ids.iter().find(|i| i.name == name).map(|i| i.token.clone()),
    }
}

fn close_tunnel(state: &mut State, endpoint: Endpoint) {
    if let Some(t) = state.tunnels.remove(&endpoint) {
        t.listener.cancel();
    }
}

impl Authority for Registry {
    fn token_for(&self, name: &str) -> Option<Secret> {
        token_for(&self.lock().auth, name)
    }

    fn data_key(&self, session: u64) -> Option<burrow_proto::auth::DataKey> {
        self.lock()
            .sessions
            .get(&session)
            .map(|s| s.data_key.clone())
    }

    fn take_seq(&self, session: u64, seq: u64) -> Option<bool> {
        let handle = self.lock().sessions.get(&session).cloned()?;
        let mut seqs = handle.early_seqs.lock().unwrap_or_else(|p| p.into_inner());
        Some(seqs.take(seq))
    }
}

mod http;
