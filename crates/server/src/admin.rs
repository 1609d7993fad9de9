//! The admin API: a small JSON (and Prometheus text) HTTP service on its own listener.
//!
//! [`route`] answers one request from the registry's state and never awaits, so every route is
//! tested without a socket; [`spawn`] serves it with hyper under a header deadline. When the
//! operator set an admin token, every route but `/health` needs `Authorization: Bearer TOKEN`
//! (the CLI refuses a listener off loopback without one).

use crate::Shared;
use crate::ports::Hold;
use burrow_proto::msg::Protocol;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info};

/// The API's OpenAPI 3 description, served at `/openapi.json`.
const OPENAPI: &str = include_str!("admin/openapi.json");

/// A request must arrive whole within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;

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
                let response = route(&shared2, &req);
                async move { Ok::<_, Infallible>(response) }
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

/// Answers one admin request.
pub(crate) fn route<B>(shared: &Shared, req: &Request<B>) -> Response<Full<Bytes>> {
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
        (&Method::GET, ["tunnels"]) => json_response(StatusCode::OK, tunnels(shared)),
        (&Method::GET, ["ports"]) => json_response(StatusCode::OK, ports(shared)),
        (&Method::GET, ["metrics"]) => metrics(shared),
        (
            _,
            [
                "health" | "ready" | "clients" | "tunnels" | "ports" | "metrics",
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
type Snapshot = (
    Vec<(crate::ports::Endpoint, String, Hold)>,
    Vec<crate::http::routes::NameInfo>,
);

/// One client (session) and what it publishes, out of `snapshot`.
fn client_json(snapshot: &Snapshot, s: &crate::registry::SessionHandle) -> Value {
    let id = format!("{:016x}", s.id);
    let (ports, names) = snapshot;
    let ports: Vec<Value> = ports
        .iter()
        .filter(|(_, _, hold)| *hold == Hold::InUse { session: s.id })
        .map(|((protocol, port), _, _)| json!({"protocol": protocol.to_string(), "port": port}))
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
        "address": s.peer.to_string(),
        "connected_since_unix": since,
        "carrier": s.carrier,
        "rtt_ms": (rtt_us > 0).then(|| rtt_us as f64 / 1e3),
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

/// `GET /tunnels`: every public port (in use or leased) and every HTTP name.
fn tunnels(shared: &Shared) -> Value {
    let (ports, names) = shared.registry.tunnels();
    let ports: Vec<Value> = ports
        .iter()
        .map(|((protocol, port), identity, hold)| {
            let (state, client) = match hold {
                Hold::InUse { session } => ("in_use", Some(format!("{session:016x}"))),
                Hold::Leased { .. } => ("leased", None),
            };
            json!({"protocol": protocol.to_string(), "port": port, "identity": identity,
                   "state": state, "client": client})
        })
        .collect();
    json!({"ports": ports, "http": names})
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

/// `GET /metrics`: Prometheus text exposition. No label carries a visitor or client address.
fn metrics(shared: &Shared) -> Response<Full<Bytes>> {
    let sessions = shared.registry.sessions();
    let (ports, names) = shared.registry.tunnels();
    let in_use = ports
        .iter()
        .filter(|(_, _, h)| matches!(h, Hold::InUse { .. }))
        .count();
    let members: usize = names.iter().map(|n| n.members.len()).sum();
    let unhealthy: usize = names
        .iter()
        .flat_map(|n| &n.members)
        .filter(|m| !m.healthy)
        .count();
    let streams_total = shared.next_stream.load(Ordering::Relaxed).saturating_sub(1);
    let streams_active = shared.active_streams.load(Ordering::Relaxed);
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    family(
        "burrow_sessions",
        "gauge",
        "Client sessions connected.",
        &[("", sessions.len() as f64)],
    );
    family(
        "burrow_public_ports",
        "gauge",
        "Public ports by state.",
        &[
            ("{state=\"in_use\"}", in_use as f64),
            ("{state=\"leased\"}", (ports.len() - in_use) as f64),
        ],
    );
    family(
        "burrow_free_ports",
        "gauge",
        "Free ports of the public range, per protocol.",
        &[
            (
                "{protocol=\"tcp\"}",
                shared.registry.free_ports(Protocol::Tcp) as f64,
            ),
            (
                "{protocol=\"udp\"}",
                shared.registry.free_ports(Protocol::Udp) as f64,
            ),
        ],
    );
    family(
        "burrow_http_names",
        "gauge",
        "Names on the HTTP edge (in use or leased).",
        &[("", names.len() as f64)],
    );
    family(
        "burrow_http_members",
        "gauge",
        "HTTP tunnels serving names, by health.",
        &[
            ("{healthy=\"true\"}", (members - unhealthy) as f64),
            ("{healthy=\"false\"}", unhealthy as f64),
        ],
    );
    family(
        "burrow_streams_active",
        "gauge",
        "Visitor streams open now.",
        &[("", streams_active as f64)],
    );
    family(
        "burrow_streams_total",
        "counter",
        "Visitor streams opened since start.",
        &[("", streams_total as f64)],
    );
    let mut response = Response::new(Full::new(Bytes::from(out)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
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
