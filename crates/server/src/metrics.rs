//! What the server counts, and the Prometheus text it answers at `/metrics`.
//!
//! Two kinds of figures. Events are recorded as they happen, into [`Metrics`]: handshake and
//! stream-open latencies, heartbeat round trips, authentication failures by reason. State is
//! read at scrape time: sessions, ports, names, and each tunnel's [`TunnelStats`], which live in
//! the registry beside the tunnel and vanish with it, so the number of series follows the live
//! tunnels and never a visitor or an address.

use crate::link::Opened;
use burrow_net::datagram_io::DatagramStats;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One label, its value fixed at the call site.
type Label = [(&'static str, &'static str); 1];
/// A histogram family whose members share [`latency_buckets`].
type Latencies = Family<Label, Histogram, fn() -> Histogram>;
/// The same with two labels.
type Latencies2 = Family<[(&'static str, &'static str); 2], Histogram, fn() -> Histogram>;

/// The member `kind` of `family`, looked up on first use and kept in `cache` (a histogram is a
/// handle to shared counts, so the kept clone and the family's member are one series).
fn series<'a>(
    family: &Latencies,
    cache: &'a OnceLock<Histogram>,
    kind: &'static str,
) -> &'a Histogram {
    cache.get_or_init(|| family.get_or_create(&[("kind", kind)]).clone())
}

/// Buckets from 0.5 ms to about 16 s, doubling: handshakes, stream opens and round trips on a
/// LAN and across continents alike.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Why a connection to the control port failed its handshake, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// Wrong token or proof (or an unknown identity: the two are not told apart).
    BadCredentials,
    /// A data connection for a session that does not exist (any more).
    UnknownSession,
    /// A burrow client of another protocol version.
    Version,
    /// Not a burrow client at all.
    NotBurrow,
    /// A hello that could not be decoded.
    Malformed,
    /// The TLS handshake failed.
    Tls,
    /// Not finished within the handshake deadline.
    Timeout,
}

impl AuthFailure {
    /// True for failures that count toward banning the address: those of peers that are not
    /// honest burrow clients. A client of another version, or a data connection of a session
    /// that just ended, is honest and never counted.
    pub(crate) fn counts_toward_ban(self) -> bool {
        !matches!(self, AuthFailure::Version | AuthFailure::UnknownSession)
    }

    fn label(self) -> &'static str {
        match self {
            AuthFailure::BadCredentials => "bad_credentials",
            AuthFailure::UnknownSession => "unknown_session",
            AuthFailure::Version => "version",
            AuthFailure::NotBurrow => "not_burrow",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Tls => "tls",
            AuthFailure::Timeout => "timeout",
        }
    }
}

/// What kind of visitor a stream was opened for, as a metric label.
#[derive(Debug, Clone, Copy)]
pub(crate) enum VisitorKind {
    /// A visitor of a TCP tunnel's public port.
    Tcp,
    /// A stream to an HTTP tunnel, opened by the edge for HTTP requests.
    Http,
    /// A TLS visitor passed through to its tunnel by server name.
    Passthrough,
}

/// Event counters and latency histograms of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    handshakes: Latencies,
    stream_opens: Latencies2,
    /// The members of `handshakes` (control, data) and `stream_opens` (tcp, http,
    /// tls_passthrough, each from the pool at once, from the pool after a wait, or opened by the
    /// server), each looked up once: a family lookup hashes its label under a lock, which every
    /// new connection would pay again. Filled on first use, so a series appears when it is
    /// first observed, as before.
    handshake_series: [OnceLock<Histogram>; 2],
    open_series: [[OnceLock<Histogram>; 3]; 3],
    carrier_rtt: Histogram,
    auth_failures: Family<Label, Counter>,
    bans: Counter,
    banned_connections: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let handshakes = Latencies::new_with_constructor(latency_histogram);
        let stream_opens = Latencies2::new_with_constructor(latency_histogram);
        let carrier_rtt = latency_histogram();
        let auth_failures = Family::<Label, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "burrow_handshake_seconds",
            "Time from accepting a connection on the control port to its verdict (TLS included)",
            handshakes.clone(),
        );
        registry.register(
            "burrow_stream_open_seconds",
            "Time from a visitor's arrival to its stream being sent to the client, by how the stream was opened (an idle pooled data connection, one the visitor waited for, or a stream the server opened on the client's link)",
            stream_opens.clone(),
        );
        registry.register(
            "burrow_carrier_rtt_seconds",
            "Heartbeat round trips of client sessions",
            carrier_rtt.clone(),
        );
        registry.register(
            "burrow_auth_failures",
            "Connections to the control port that failed their handshake, by reason",
            auth_failures.clone(),
        );
        let bans = Counter::default();
        registry.register(
            "burrow_bans",
            "Bans started: addresses (IPv6: /64 networks) that failed too many handshakes",
            bans.clone(),
        );
        let banned_connections = Counter::default();
        registry.register(
            "burrow_banned_connections",
            "Connections to the control port closed at once because their address is banned",
            banned_connections.clone(),
        );
        Self {
            registry,
            handshakes,
            stream_opens,
            handshake_series: Default::default(),
            open_series: Default::default(),
            carrier_rtt,
            auth_failures,
            bans,
            banned_connections,
        }
    }

    /// A finished handshake: `data` for a data connection, else a new session.
    pub(crate) fn handshake(&self, data: bool, took: Duration) {
        let (slot, kind) = if data { (1, "data") } else { (0, "control") };
        series(&self.handshakes, &self.handshake_series[slot], kind).observe(took.as_secs_f64());
    }

    /// A visitor's stream, `opened` as it was, reached its client `took` after the visitor
    /// arrived.
    pub(crate) fn stream_opened(&self, kind: VisitorKind, opened: Opened, took: Duration) {
        let (slot, kind) = match kind {
            VisitorKind::Tcp => (0, "tcp"),
            VisitorKind::Http => (1, "http"),
            VisitorKind::Passthrough => (2, "tls_passthrough"),
        };
        let (how, opened) = match opened {
            Opened::Pool => (0, "pool"),
            Opened::Waited => (1, "waited"),
            Opened::Server => (2, "server"),
        };
        let cache = &self.open_series[slot][how];
        let series = cache.get_or_init(|| {
            (self.stream_opens)
                .get_or_create(&[("kind", kind), ("opened", opened)])
                .clone()
        });
        series.observe(took.as_secs_f64());
    }

    /// A heartbeat answered.
    pub(crate) fn carrier_rtt(&self, rtt: Duration) {
        self.carrier_rtt.observe(rtt.as_secs_f64());
    }

    /// A failed handshake.
    pub(crate) fn auth_failure(&self, why: AuthFailure) {
        self.auth_failures
            .get_or_create(&[("reason", why.label())])
            .inc();
    }

    /// A ban began.
    pub(crate) fn ban_started(&self) {
        self.bans.inc();
    }

    /// A connection from a banned address was closed.
    pub(crate) fn banned_connection(&self) {
        self.banned_connections.inc();
    }

    /// The recorded events as OpenMetrics text, followed by `live` (families read at scrape
    /// time) and the closing `# EOF`.
    pub(crate) fn render(&self, live: &Registry) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry)
            .and_then(|()| encode_registry(&mut out, live))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

/// Counters of one tunnel (a public port, or a name on the HTTP edge), shared by its visitor
/// tasks and read by the admin API. Bytes of a TCP stream are added when the stream closes;
/// HTTP and UDP bytes as they pass.
#[derive(Debug, Default)]
pub(crate) struct TunnelStats {
    /// Bytes from visitors toward the client's target.
    pub bytes_in: AtomicU64,
    /// Bytes from the client's target toward visitors.
    pub bytes_out: AtomicU64,
    /// Streams open now (UDP: flows).
    pub streams_active: AtomicUsize,
    /// Streams opened since the tunnel was published (UDP: flows).
    pub streams_total: AtomicU64,
    /// Visitors that could not be served: no data connection in time, a failed data
    /// connection, an unreachable target.
    pub errors: AtomicU64,
    /// What the tunnel's datagram relay did (UDP tunnels only); shared with the QUIC link that
    /// routes the tunnel's QUIC datagrams, if any.
    pub datagrams: Arc<DatagramStats>,
}

impl TunnelStats {
    /// Adds a finished stream's bytes.
    pub(crate) fn add_bytes(&self, bytes_in: u64, bytes_out: u64) {
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// Counts a visitor that was not served.
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as the admin API shows them.
    pub(crate) fn json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "bytes_in": get(&self.bytes_in),
            "bytes_out": get(&self.bytes_out),
            "streams_active": self.streams_active.load(Ordering::Relaxed),
            "streams_total": get(&self.streams_total),
            "errors": get(&self.errors),
            "datagrams_dropped": get(&self.datagrams.dropped_full) + get(&self.datagrams.dropped_flow),
        })
    }
}

/// Counts one open stream in the server's, the session's and the tunnel's figures, for as long
/// as it lives.
#[derive(Debug)]
pub(crate) struct OpenStream {
    counts: [Arc<AtomicUsize>; 2],
    tunnel: Arc<TunnelStats>,
}

impl OpenStream {
    /// Counts a stream as open in `server` and `session` totals and in `tunnel`.
    pub(crate) fn new(
        server: &Arc<AtomicUsize>,
        session: &Arc<AtomicUsize>,
        tunnel: &Arc<TunnelStats>,
    ) -> Self {
        server.fetch_add(1, Ordering::Relaxed);
        session.fetch_add(1, Ordering::Relaxed);
        tunnel.streams_active.fetch_add(1, Ordering::Relaxed);
        tunnel.streams_total.fetch_add(1, Ordering::Relaxed);
        Self {
            counts: [server.clone(), session.clone()],
            tunnel: tunnel.clone(),
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        for count in &self.counts {
            count.fetch_sub(1, Ordering::Relaxed);
        }
        self.tunnel.streams_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection whose bytes are added to a tunnel's counters as they pass (an HTTP tunnel's
/// stream: requests in, responses out). One atomic add per read or write call.
#[derive(Debug)]
pub(crate) struct CountedIo<T> {
    inner: T,
    stats: Arc<TunnelStats>,
}

impl<T> CountedIo<T> {
    pub(crate) fn new(inner: T, stats: Arc<TunnelStats>) -> Self {
        Self { inner, stats }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        self.stats.bytes_out.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_render_as_openmetrics() {
        let metrics = Metrics::new();
        metrics.handshake(false, Duration::from_millis(3));
        metrics.auth_failure(AuthFailure::BadCredentials);
        metrics.auth_failure(AuthFailure::BadCredentials);
        metrics.carrier_rtt(Duration::from_millis(1));
        let text = metrics.render(&Registry::default());
        assert!(
            text.contains("burrow_auth_failures_total{reason=\"bad_credentials\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("burrow_handshake_seconds_count{kind=\"control\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("burrow_carrier_rtt_seconds_bucket{le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn an_open_stream_is_counted_until_dropped() {
        let server = Arc::new(AtomicUsize::new(0));
        let session = Arc::new(AtomicUsize::new(0));
        let tunnel = Arc::new(TunnelStats::default());
        let open = OpenStream::new(&server, &session, &tunnel);
        assert_eq!(server.load(Ordering::Relaxed), 1);
        assert_eq!(tunnel.streams_active.load(Ordering::Relaxed), 1);
        drop(open);
        assert_eq!(server.load(Ordering::Relaxed), 0);
        assert_eq!(session.load(Ordering::Relaxed), 0);
        assert_eq!(tunnel.streams_active.load(Ordering::Relaxed), 0);
        assert_eq!(tunnel.streams_total.load(Ordering::Relaxed), 1);
    }
}
