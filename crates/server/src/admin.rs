//! The admin API: a small JSON (and Prometheus text) HTTP service on its own listener.
//!
//! [`route`] answers one request from the registry's state and never awaits, so every route is
//! tested without a socket; [`spawn`] serves it with hyper under a header deadline. When the
//! operator set an admin token, every route but `/health` needs `Authorization: Bearer TOKEN`
//! (the CLI refuses a listener off loopback without one).

mod bans;
mod metrics;

use crate::Shared;
use crate::ports::Hold;
use crate::registry::PortInfo;
use crate::session::OPERATOR_PING;
use burrow_proto::msg::{Protocol, ServerMsg};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info};

/// The API's OpenAPI 3 description, served at `/openapi.json`.
const OPENAPI: &str = include_str!("admin/openapi.json");

/// A request must arrive whole within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// How long `POST /clients/{id}/ping` waits for the client's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Operator pings in flight to one client at once.
const MAX_PINGS: usize = 8;

/// Starts serving the admin API on `listener`.
pub(crate) fn spawn(shared: &Arc<Shared>, listener: TcpListener) {
    let span = tracing::info_span!("admin");
    shared
        .tracker
        .spawn(accept_loop(shared.clone(), listener).instrument(span));
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    while let Some((tcp, peer)) = crate::accept(&listener, &shared.shutdown).await {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "admin connection dropped: {MAX_CONNECTIONS} already open");
            continue;
        };
        let shared2 = shared.clone();
        shared.tracker.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let shared = shared2.clone();
                async move { Ok::<_, Infallible>(route(&shared, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                debug!(%peer, "admin connection ended: {e}");
            }
            drop(permit);
        });
    }
}

/// Answers one admin request. Only `POST /clients/{id}/ping` awaits (its pong).
pub(crate) async fn route<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let method = req.method();
    if path == "/health" && method == Method::GET {
        return json_response(StatusCode::OK, json!({"status": "ok"}));
    }
    if path == "/openapi.json" && method == Method::GET {
        let mut response = Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    if let Some(token) = &shared.config().admin_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !burrow_proto::auth::secrets_match(token.expose(), given.as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["ready"]) => ready(shared),
        (&Method::GET, ["clients"]) => json_response(StatusCode::OK, clients(shared, query)),
        (&Method::GET, ["clients", id]) => match client(shared, id) {
            Some(c) => json_response(StatusCode::OK, c),
            None => error(StatusCode::NOT_FOUND, "no such client"),
        },
        (&Method::DELETE, ["clients", id]) => disconnect(shared, id, query),
        (&Method::POST, ["clients", id, "ping"]) => ping(shared, id).await,
        (&Method::GET, ["tunnels"]) => json_response(StatusCode::OK, tunnels(shared)),
        (&Method::GET, ["ports"]) => json_response(StatusCode::OK, ports(shared)),
        (&Method::GET, ["metrics"]) => metrics::metrics(shared),
        (&Method::GET, ["bans"]) => json_response(StatusCode::OK, bans::list(shared)),
        (&Method::DELETE, ["bans", address @ ..]) if !address.is_empty() => {
            bans::lift(shared, &address.join("/"))
        }
        (
            _,
            [
                "health" | "ready" | "clients" | "tunnels" | "ports" | "metrics" | "bans",
                ..,
            ],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

fn ready(shared: &Shared) -> Response<Full<Bytes>> {
    if shared.shutdown.is_cancelled() {
        error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        json_response(StatusCode::OK, json!({"status": "ready"}))
    }
}

/// The registry's ports and names, read once per request.
type Snapshot = (Vec<PortInfo>, Vec<crate::http::routes::NameInfo>);

/// One client (session) and what it publishes, out of `snapshot`.
fn client_json(snapshot: &Snapshot, s: &crate::registry::SessionHandle) -> Value {
    let id = format!("{:016x}", s.id);
    let (ports, names) = snapshot;
    let ports: Vec<Value> = ports
        .iter()
        .filter(|p| p.hold == Hold::InUse { session: s.id })
        .map(|p| json!({"protocol": p.endpoint.0.to_string(), "port": p.endpoint.1}))
        .collect();
    let names: Vec<Value> = names
        .iter()
        .flat_map(|n| {
            n.members.iter().filter(|m| m.client == id).map(|m| {
                json!({"name": n.name, "tunnel": m.tunnel, "tags": m.tags,
                       "healthy": m.healthy, "passthrough": m.passthrough})
            })
        })
        .collect();
    let since = s
        .since
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let rtt_us = s.rtt_us.load(Ordering::Relaxed);
    json!({
        "id": id,
        "identity": s.identity,
        "address": s.address().to_string(),
        "connected_since_unix": since,
        "carrier": s.carrier,
        "rtt_ms": (rtt_us > 0).then(|| rtt_us as f64 / 1e3),
        "host": s.host.lock().ok().and_then(|h| h.clone()).map(|h| json!({
            "hostname": h.hostname, "os": h.os, "arch": h.arch, "version": h.version,
        })),
        "streams_active": s.streams.load(Ordering::Relaxed),
        "ports": ports,
        "http": names,
    })
}

/// `GET /clients[?tags=a,b][&identity=NAME]`: clients carrying every tag (on one of their HTTP
/// tunnels), of one identity.
fn clients(shared: &Shared, query: &str) -> Value {
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .filter(|v| !v.is_empty())
    };
    let tags: Vec<&str> = param("tags").map_or(Vec::new(), |t| t.split(',').collect());
    let identity = param("identity");
    let snapshot = shared.registry.tunnels();
    let all: Vec<Value> = shared
        .registry
        .sessions()
        .iter()
        .filter(|s| identity.is_none_or(|i| s.identity == i))
        .map(|s| client_json(&snapshot, s))
        .filter(|c| {
            tags.iter().all(|t| {
                c["http"].as_array().is_some_and(|h| {
                    h.iter().any(|n| {
                        n["tags"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == t))
                    })
                })
            })
        })
        .collect();
    Value::Array(all)
}

/// `POST /clients/{id}/ping`: a heartbeat sent now; answers with its round trip.
async fn ping(shared: &Shared, id: &str) -> Response<Full<Bytes>> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let Some(session) = find_session(shared, id) else {
        return error(StatusCode::NOT_FOUND, "no such client");
    };
    let seq = OPERATOR_PING | NEXT.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    {
        let Ok(mut pings) = session.pings.lock() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "ping table unavailable");
        };
        if pings.len() >= MAX_PINGS {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many pings in flight to this client",
            );
        }
        pings.insert(seq, tx);
    }
    let started = Instant::now();
    let sent = session.control.try_send(ServerMsg::Ping { seq }).is_ok();
    let answered = sent
        && tokio::select! {
            pong = tokio::time::timeout(PING_TIMEOUT, rx) => matches!(pong, Ok(Ok(()))),
            _ = session.closed.cancelled() => false,
        };
    if !answered {
        if let Ok(mut pings) = session.pings.lock() {
            pings.remove(&seq);
        }
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("the client did not answer within {PING_TIMEOUT:?}"),
        );
    }
    let rtt_ms = started.elapsed().as_secs_f64() * 1e3;
    json_response(StatusCode::OK, json!({"id": id, "rtt_ms": rtt_ms}))
}

fn find_session(shared: &Shared, id: &str) -> Option<Arc<crate::registry::SessionHandle>> {
    let id = u64::from_str_radix(id, 16).ok()?;
    shared.registry.session(id)
}

fn client(shared: &Shared, id: &str) -> Option<Value> {
    find_session(shared, id).map(|s| client_json(&shared.registry.tunnels(), &s))
}

/// `DELETE /clients/{id}[?leases=release]`: ends the client's session; its ports and names are
/// leased as after a lost carrier (the default) or released at once.
fn disconnect(shared: &Shared, id: &str, query: &str) -> Response<Full<Bytes>> {
    let Some(session) = find_session(shared, id) else {
        return error(StatusCode::NOT_FOUND, "no such client");
    };
    let release = query.split('&').any(|kv| kv == "leases=release");
    session
        .kicked
        .store(if release { 2 } else { 1 }, Ordering::Relaxed);
    session.closed.cancel();
    info!(client = %id, release, "client disconnected by the operator");
    json_response(
        StatusCode::OK,
        json!({"disconnected": id, "leases": if release { "released" } else { "kept" }}),
    )
}

/// `GET /tunnels`: every public port (in use or leased) and every HTTP name, with traffic.
fn tunnels(shared: &Shared) -> Value {
    let (ports, names) = shared.registry.tunnels();
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| {
            let (state, client) = match p.hold {
                Hold::InUse { session } => ("in_use", Some(format!("{session:016x}"))),
                Hold::Leased { .. } => ("leased", None),
            };
            let mut entry = json!({"protocol": p.endpoint.0.to_string(), "port": p.endpoint.1,
                   "identity": p.identity, "state": state, "client": client,
                   "name": p.about.name, "target": p.about.target});
            if let Some(stats) = &p.stats {
                merge(&mut entry, stats.json());
            }
            entry
        })
        .collect();
    let names: Vec<Value> = names
        .iter()
        .map(|n| {
            let mut entry = json!(n);
            merge(&mut entry, n.stats.json());
            entry
        })
        .collect();
    json!({"ports": ports, "http": names})
}

/// Adds the fields of the object `extra` to the object `into`.
fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}

/// `GET /ports`: the public range and how many ports of it are free, per protocol.
fn ports(shared: &Shared) -> Value {
    let range = shared.registry.port_range();
    json!({
        "range": range.to_string(),
        "size": range.len(),
        "free": {
            "tcp": shared.registry.free_ports(Protocol::Tcp),
            "udp": shared.registry.free_ports(Protocol::Udp),
        },
    })
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({"error": message}))
}

#[cfg(test)]
mod tests;
