//! HTTP on the edge: reads visitors' requests, picks the tunnel, and forwards each request over
//! a stream of that tunnel's session to the client's target.
//!
//! One visitor connection keeps one upstream stream per tunnel it talks to (keep-alive on both
//! sides); a new visitor connection picks the next member of the name's group, so groups are
//! spread round robin by connection. `Upgrade` requests (WebSocket and others) are forwarded
//! with their `Connection: upgrade`, and after a `101` the two upgraded connections are joined
//! byte for byte.

use super::body::{Access, Counted, Logged};
use super::routes::Miss;
use super::{Scheme, routes::Resolved};
use crate::Shared;
use crate::metrics::{CountedIo, OpenStream, TunnelStats, VisitorKind};
use burrow_net::write_frame;
use burrow_proto::msg::{StreamKind, StreamOpen, Target};
use burrow_proto::names::host_of_authority;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client_http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{Instrument, debug, warn};

/// What the edge sends to a visitor: the target's response, or one of the edge's own pages.
pub(crate) type EdgeBody = Logged<Either<Incoming, Full<Bytes>>>;
type UpstreamBody = Counted<Incoming>;
type Sender = client_http1::SendRequest<UpstreamBody>;

/// The upstream stream a visitor connection is using, and what it was picked for.
struct Upstream {
    /// It carried an earlier request of this connection.
    reused: bool,
    /// The visitor's host it was picked for (`None` with path routing, which is per request).
    host: Option<String>,
    resolved: Resolved,
    member: (u64, u32),
    /// Its session: the stream is not reused once the session has ended.
    session: Arc<crate::registry::SessionHandle>,
    tunnel: String,
    /// The name's traffic counters.
    stats: Arc<TunnelStats>,
    sender: Sender,
}

/// Per visitor connection.
struct Visitor {
    shared: Arc<Shared>,
    peer: SocketAddr,
    scheme: Scheme,
    /// Taken out while a request uses it, so no lock is held across an await; put back after.
    upstream: Mutex<Option<Upstream>>,
    permit: Permit,
    /// The visitor's IP address as X-Forwarded-For carries it, formatted once.
    ip: HeaderValue,
}

/// The connection-limit permit of a visitor connection, held as long as any part of it runs
/// (an upgraded connection outlives hyper's connection task).
pub(crate) type Permit = Arc<tokio::sync::OwnedSemaphorePermit>;

/// The HTTP/2 connection preface a client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How often an idle HTTP/2 connection is pinged, and how long an answer may take.
const H2_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(20);

/// Serves HTTP/1.1 on a visitor connection (plain, or TLS without `h2`) until it closes.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    io: S,
    peer: SocketAddr,
    scheme: Scheme,
    permit: Permit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = shared.config();
    let edge = &config.http;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(edge.header_timeout)
        .max_buf_size(edge.max_header_bytes.max(8192));
    let visitor = Visitor::new(&shared, peer, scheme, permit);
    let service = hyper::service::service_fn(move |req| {
        let visitor = visitor.clone();
        async move { Ok::<_, Infallible>(visitor.handle(req).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        result = conn => if let Err(e) = result { debug!("visitor connection ended: {e}") },
        _ = shared.shutdown.cancelled() => {}
    }
}

/// Serves HTTP/2 on a TLS-terminated visitor connection that chose `h2` by ALPN. The preface
/// must arrive within the header deadline; after that, pings keep idle connections honest.
pub(crate) async fn serve_h2<S>(shared: Arc<Shared>, mut tls: S, peer: SocketAddr, permit: Permit)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let config = shared.config();
    let edge = &config.http;
    let mut preface = [0u8; 24];
    match tokio::time::timeout(edge.header_timeout, tls.read_exact(&mut preface)).await {
        Ok(Ok(_)) if &preface == H2_PREFACE => {}
        Ok(Ok(_)) => return debug!("not an HTTP/2 preface after ALPN h2; closed"),
        Ok(Err(e)) => return debug!("visitor left before its HTTP/2 preface: {e}"),
        Err(_) => return debug!("no HTTP/2 preface within {:?}; closed", edge.header_timeout),
    }
    let io = super::rewind::Rewind::new(preface.to_vec(), tls);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEPALIVE))
        .keep_alive_timeout(H2_KEEPALIVE)
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(edge.max_header_bytes).unwrap_or(u32::MAX));
    let visitor = Visitor::new(&shared, peer, Scheme::Https, permit);
    let service = hyper::service::service_fn(move |req| {
        let visitor = visitor.clone();
        async move { Ok::<_, Infallible>(visitor.handle(req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = conn => if let Err(e) = result { debug!("visitor connection ended: {e}") },
        _ = shared.shutdown.cancelled() => {}
    }
}

/// Why the edge answers a request itself.
enum Refused {
    Unknown(String),
    Offline(String),
    NoStream(String),
    Unreachable(String),
    Timeout(String),
    BadRequest(&'static str),
    HeadTooLarge(usize),
    Connect,
}

impl Refused {
    fn page(&self) -> (StatusCode, String) {
        match self {
            Refused::Unknown(host) => (
                StatusCode::NOT_FOUND,
                format!("404 Not Found\n\nNo tunnel is published at {host}.\n"),
            ),
            Refused::Offline(name) => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "502 Bad Gateway\n\nThe tunnel `{name}` is offline: its client is not connected.\n"
                ),
            ),
            Refused::NoStream(name) => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "502 Bad Gateway\n\nThe client of tunnel `{name}` did not open a stream in time.\n"
                ),
            ),
            Refused::Unreachable(name) => (
                StatusCode::BAD_GATEWAY,
                format!(
                    "502 Bad Gateway\n\nThe target of tunnel `{name}` closed the connection or could not be reached.\n"
                ),
            ),
            Refused::Timeout(name) => (
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "504 Gateway Timeout\n\nThe target of tunnel `{name}` did not answer in time.\n"
                ),
            ),
            Refused::HeadTooLarge(limit) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "431 Request Header Fields Too Large\n\nThe request head is over {limit} bytes.\n"
                ),
            ),
            Refused::Connect => (
                StatusCode::METHOD_NOT_ALLOWED,
                "405 Method Not Allowed\n\nThe edge is not a forward proxy: CONNECT is not served.\n".to_owned(),
            ),
            Refused::BadRequest(why) => (
                StatusCode::BAD_REQUEST,
                format!("400 Bad Request\n\n{why}\n"),
            ),
        }
    }
}

impl Visitor {
    fn new(shared: &Arc<Shared>, peer: SocketAddr, scheme: Scheme, permit: Permit) -> Arc<Self> {
        Arc::new(Visitor {
            shared: shared.clone(),
            peer,
            scheme,
            upstream: Mutex::new(None),
            permit,
            ip: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<EdgeBody> {
        let start = Instant::now();
        let host = request_host(&req);
        // Built only when the access log is on: its strings (and the upload counter) cost more
        // than the rest of a request's bookkeeping.
        let up = super::body::access_log_on().then(|| Arc::new(AtomicU64::new(0)));
        let mut access = up.as_ref().map(|up| Access {
            start,
            visitor: self.peer,
            method: req.method().to_string(),
            host: host.clone().unwrap_or_default(),
            path: req.uri().path().to_owned(),
            status: 0,
            up: up.clone(),
            first_byte: Default::default(),
            tunnel: "-".into(),
            client: None,
        });
        let limit = self.shared.config().http.max_header_bytes;
        let result = if head_len(&req) > limit {
            Err(Refused::HeadTooLarge(limit))
        } else if req.method() == http::Method::CONNECT {
            Err(Refused::Connect)
        } else {
            self.forward(req, host, up, &mut access).await
        };
        if let Some(access) = access.as_mut() {
            access.first_byte = start.elapsed();
        }
        let response = match result {
            Ok(response) => response.map(Either::Left),
            Err(refused) => {
                let (status, text) = refused.page();
                let mut response = Response::new(Either::Right(Full::new(Bytes::from(text))));
                *response.status_mut() = status;
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                if matches!(refused, Refused::HeadTooLarge(_) | Refused::BadRequest(_)) {
                    // The rest of what this visitor sends cannot be trusted to frame a request.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        if let Some(access) = access.as_mut() {
            access.status = response.status().as_u16();
        }
        response.map(|body| Logged::new(body, access))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        host: Option<String>,
        up: Option<Arc<AtomicU64>>,
        access: &mut Option<Access>,
    ) -> Result<Response<Incoming>, Refused> {
        let registry = &self.shared.registry;
        let resolved = match self.kept_route(host.as_deref()) {
            Some(resolved) => Ok(resolved),
            None => registry.http_resolve(host.as_deref(), req.uri().path(), false),
        };
        let resolved = match resolved {
            Ok(resolved) => resolved,
            Err(Miss::Unknown) => {
                return Err(Refused::Unknown(
                    host.unwrap_or_else(|| "this address".into()),
                ));
            }
            Err(Miss::Offline(name)) => return Err(Refused::Offline(name)),
        };
        if let Some(access) = access.as_mut() {
            access.tunnel = resolved.name.clone();
        }
        let upgrade = wants_upgrade(req.headers());
        let visitor_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let shown = host.as_deref().unwrap_or(&resolved.name).to_owned();
        let mut upstream = self.upstream_for(&resolved, &shown, false).await?;
        let forwarded = self.rewrite(req, &resolved, upgrade, up)?;
        let name = upstream.tunnel.clone();
        let timeout = self.shared.config().http.response_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent =
            tokio::time::timeout_at(deadline, send(&mut upstream.sender, forwarded)).await;
        if upstream.reused {
            if let Ok(Sent::Unsent(request, e)) = sent {
                // The kept stream was closed (by the target, between two requests) before this
                // request went out: it is safe to send it once more on a fresh stream.
                debug!(tunnel = %name, "kept stream closed ({e}); sending on a fresh one");
                upstream = self.upstream_for(&resolved, &shown, true).await?;
                sent = tokio::time::timeout_at(deadline, send(&mut upstream.sender, request)).await;
            }
        }
        if let Some(access) = access.as_mut() {
            access.client = Some(upstream.member.0);
        }
        let mut response = match sent {
            Ok(Sent::Answered(response)) => response,
            Ok(Sent::Unsent(_, e) | Sent::Failed(e)) => {
                debug!(tunnel = %name, "upstream failed: {e}");
                upstream.stats.error();
                return Err(Refused::Unreachable(name));
            }
            Err(_) => {
                upstream.stats.error();
                return Err(Refused::Timeout(name));
            }
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(visitor_side) = visitor_upgrade {
                let target_side = hyper::upgrade::on(&mut response);
                self.shared.tracker.spawn(join_upgraded(
                    visitor_side,
                    target_side,
                    self.permit.clone(),
                ));
            }
        } else if !upgrade {
            // Keep the stream for this connection's next request; a host route is kept with it
            // (checked again against the group's members each time it is reused).
            upstream.host = host.filter(|_| resolved.prefix_len == 0);
            if let Ok(mut slot) = self.upstream.lock() {
                *slot = Some(upstream);
            }
        }
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        strip_hop_by_hop(response.headers_mut(), switching);
        Ok(response)
    }

    /// The route of the kept stream when this request is for the same host.
    fn kept_route(&self, host: Option<&str>) -> Option<Resolved> {
        // Without a domain each request's path is routed first, so nothing is kept by host.
        if self.shared.config().http.domains.is_empty() {
            return None;
        }
        let host = host?;
        let slot = self.upstream.lock().ok()?;
        let up = slot.as_ref()?;
        (up.host.as_deref() == Some(host)).then(|| up.resolved.clone())
    }

    /// The connection's stream to `member`'s target when it has one for the same route,
    /// otherwise a new stream over the member's session.
    async fn upstream_for(
        &self,
        resolved: &Resolved,
        shown: &str,
        fresh: bool,
    ) -> Result<Upstream, Refused> {
        let cached = self.upstream.lock().ok().and_then(|mut slot| slot.take());
        if let Some(mut up) = cached.filter(|_| !fresh) {
            let alive = !up.sender.is_closed() && !up.session.closed.is_cancelled();
            if alive
                && up.resolved == *resolved
                && self
                    .shared
                    .registry
                    .http_is_member(&resolved.name, up.member.0, up.member.1)
            {
                up.reused = true;
                return Ok(up);
            }
        }
        let member = match self.shared.registry.http_member(resolved, false) {
            Ok(member) => member,
            Err(Miss::Unknown) => return Err(Refused::Unknown(shown.to_owned())),
            Err(Miss::Offline(name)) => return Err(Refused::Offline(name)),
        };
        let name = resolved.name.clone();
        let session = member.value;
        let stats = self.shared.registry.http_stats(&name).unwrap_or_default();
        let opened = self.open_stream(&session, member.tunnel, &stats).await;
        let (stream, carrier) = opened.inspect_err(|_| stats.error()).map_err(|e| match e {
            None => Refused::Offline(name.clone()),
            Some(e) => {
                warn!(tunnel = %name, "visitor refused: {e}");
                Refused::NoStream(name.clone())
            }
        })?;
        let (sender, conn) = client_http1::Builder::new()
            .handshake(TokioIo::new(carrier))
            .await
            .map_err(|_| Refused::Unreachable(name.clone()))?;
        let span = crate::spans::session_stream(stream, self.peer, &session, member.tunnel);
        let open = OpenStream::new(&self.shared.active_streams, &session.streams, &stats);
        let conn = async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!("upstream connection ended: {e}");
            }
            drop(open);
        };
        self.shared.tracker.spawn(conn.instrument(span));
        Ok(Upstream {
            reused: false,
            host: None,
            resolved: resolved.clone(),
            member: (session.id, member.tunnel),
            session: session.clone(),
            tunnel: name,
            stats,
            sender,
        })
    }

    /// A new stream to tunnel `tunnel` of `session`, counted in `stats`, and its id; `None`
    /// when the session ended meanwhile.
    async fn open_stream(
        &self,
        session: &crate::registry::SessionHandle,
        tunnel: u32,
        stats: &Arc<TunnelStats>,
    ) -> Result<(u64, CountedIo<burrow_net::Carrier>), Option<String>> {
        let arrived = std::time::Instant::now();
        let wait = self.shared.config().pool_wait;
        let (mut carrier, opened) = tokio::select! {
            c = tokio::time::timeout(wait, session.take_data()) => c.map_err(|_| {
                Some(format!("no data connection within {wait:?}"))
            })?,
            _ = session.closed.cancelled() => return Err(None),
        };
        let stream = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let open = StreamOpen {
            stream,
            kind: StreamKind::Tcp,
            target: Target::Tunnel(tunnel),
            visitor: Some(self.peer),
        };
        write_frame(&mut carrier, &open)
            .await
            .map_err(|e| Some(format!("data connection failed: {e}")))?;
        self.shared
            .metrics
            .stream_opened(VisitorKind::Http, opened, arrived.elapsed());
        debug!(stream, %opened, "upstream stream open");
        Ok((stream, CountedIo::new(carrier, stats.clone())))
    }

    /// The request as the target gets it: origin-form URI (prefix stripped in path routing),
    /// `Host` kept, hop-by-hop headers dropped, `X-Forwarded-*` added.
    fn rewrite(
        &self,
        req: Request<Incoming>,
        resolved: &Resolved,
        upgrade: bool,
        up: Option<Arc<AtomicU64>>,
    ) -> Result<Request<UpstreamBody>, Refused> {
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            });
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let stripped = &path_and_query[resolved.prefix_len.min(path_and_query.len())..];
        let stripped = if stripped.starts_with('/') {
            stripped.to_owned()
        } else {
            format!("/{stripped}")
        };
        parts.uri = stripped
            .parse::<Uri>()
            .map_err(|_| Refused::BadRequest("the request target is not a valid path"))?;
        let from_h2 = parts.version == http::Version::HTTP_2;
        parts.version = http::Version::HTTP_11;
        let headers = &mut parts.headers;
        if from_h2 {
            join_cookies(headers);
        }
        let upgrade_value = headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(headers, false);
        headers.remove(header::EXPECT);
        // Only the edge says where a request came from; a visitor's own claims go (except the
        // X-Forwarded-For list, which is appended to as proxies do).
        for name in [header::FORWARDED, X_FORWARDED_HOST, X_FORWARDED_PREFIX] {
            headers.remove(name);
        }
        if upgrade && let Some(value) = upgrade_value {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, value);
        }
        if let Some(authority) = &authority
            && let Ok(value) = HeaderValue::from_str(authority)
        {
            headers.insert(header::HOST, value.clone());
            headers.insert(X_FORWARDED_HOST, value);
        }
        let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) => HeaderValue::from_str(&format!(
                "{earlier}, {}",
                self.ip.to_str().unwrap_or_default()
            ))
            .ok(),
            None => Some(self.ip.clone()),
        };
        if let Some(value) = xff {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(self.scheme.as_str()),
        );
        if resolved.prefix_len > 0
            && let Ok(value) = HeaderValue::from_str(&path_and_query[..resolved.prefix_len])
        {
            headers.insert(X_FORWARDED_PREFIX, value);
        }
        Ok(Request::from_parts(parts, Counted::new(body, up)))
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// What became of a request sent on an upstream stream.
enum Sent {
    /// The target answered.
    Answered(Response<Incoming>),
    /// The stream was closed before the request went out; here it is back.
    Unsent(Request<UpstreamBody>, hyper::Error),
    /// The request went out (or partly) and the stream failed.
    Failed(hyper::Error),
}

/// Sends a request on an upstream stream, getting it back if the stream turns out closed first.
async fn send(sender: &mut Sender, request: Request<UpstreamBody>) -> Sent {
    if let Err(e) = sender.ready().await {
        return Sent::Unsent(request, e);
    }
    match sender.try_send_request(request).await {
        Ok(response) => Sent::Answered(response),
        Err(mut e) => match e.take_message() {
            Some(request) => Sent::Unsent(request, e.into_error()),
            None => Sent::Failed(e.into_error()),
        },
    }
}

/// The visitor's host: the URI's authority (HTTP/2, absolute-form) or the `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .and_then(|a| host_of_authority(&a))
}

/// Roughly the bytes of a request's head: its target and every header line. hyper bounds its
/// read buffer, but a head that arrives in one piece can pass that bound; this one is exact
/// enough to enforce the edge's limit.
fn head_len<B>(req: &Request<B>) -> usize {
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let uri = req.uri();
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    target + req.method().as_str().len() + headers
}

/// True for an HTTP/1.1 request asking to switch protocols.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the hop-by-hop headers of RFC 9110 §7.6.1 and those the `Connection` header names;
/// for a `101` answer, `Connection` and `Upgrade` stay (they are the answer).
fn strip_hop_by_hop(headers: &mut HeaderMap, switching: bool) {
    // One pass over the names, no hashing; most messages carry one of these at most.
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(&present) {
        let answer = name == header::CONNECTION || name == header::UPGRADE;
        if !(switching && answer) {
            headers.remove(name);
        }
    }
}

/// HTTP/2 may split `Cookie` into one field per cookie; HTTP/1.1 wants them in one field,
/// joined with `; ` (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

/// True for the hop-by-hop header names that are always removed (and `Connection`/`Upgrade`).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Joins the visitor's and the target's upgraded connections until both sides finish.
async fn join_upgraded(
    visitor: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    _permit: Permit,
) {
    let (visitor, target) = match tokio::try_join!(visitor, target) {
        Ok(both) => both,
        Err(e) => return debug!("upgrade failed: {e}"),
    };
    let mut visitor = TokioIo::new(visitor);
    let mut target = TokioIo::new(target);
    match tokio::io::copy_bidirectional(&mut visitor, &mut target).await {
        Ok((up, down)) => debug!(up, down, "upgraded connection closed"),
        Err(e) => debug!("upgraded connection ended: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn split_cookies_are_joined_for_http1() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn switching_keeps_the_upgrade_answer() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true);
        assert!(h.contains_key(header::UPGRADE) && h.contains_key(header::CONNECTION));
        assert!(wants_upgrade(&h));
    }

    #[test]
    fn hosts_come_from_authority_or_header() {
        let req = Request::builder()
            .uri("/x")
            .header(header::HOST, "App.Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("app.example.com"));
        let req = Request::builder()
            .uri("https://h2.example.com/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("h2.example.com"));
    }
}
