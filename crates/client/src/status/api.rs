//! The client's status API: JSON over HTTP/1.1 on a local Unix socket.
//!
//! [`route`] answers one request from a [`Status`] and never awaits, so it is tested without a
//! socket; [`serve`] runs it with hyper on a listener the caller bound (and chose the file mode
//! of). Each connection answers one request and closes; a request must arrive within
//! [`HEADER_TIMEOUT`], a whole connection ends after [`CONNECTION_DEADLINE`], and at most
//! [`MAX_CONNECTIONS`] are open at once.

use super::Status;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

/// A request must arrive whole within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay open, reading the request and writing the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// Status connections at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 16;
/// Pause after a failed accept (out of file descriptors, typically), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Serves `status` on `listener` until `shutdown` is cancelled; open connections end with it.
pub async fn serve(status: Status, listener: UnixListener, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!("status socket: accept failed: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!("status connection dropped: {MAX_CONNECTIONS} already open");
            continue;
        };
        let (status, shutdown) = (status.clone(), shutdown.clone());
        connections.spawn(async move {
            answer(status, stream, &shutdown).await;
            drop(permit);
        });
    }
    connections.close();
    connections.wait().await;
}

/// Answers one connection's request, within the deadlines.
async fn answer(status: Status, stream: tokio::net::UnixStream, shutdown: &CancellationToken) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let response = route(&status, &req);
        async move { Ok::<_, Infallible>(response) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        ended = tokio::time::timeout(CONNECTION_DEADLINE, conn) => match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!("status connection ended: {e}"),
            Err(_) => debug!("status connection closed after {CONNECTION_DEADLINE:?}"),
        },
    }
}

/// Answers one request: `GET /status` (everything) or `GET /tunnels` (the tunnels alone).
pub fn route<B>(status: &Status, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/status") => json(StatusCode::OK, &status.snapshot()),
        (&Method::GET, "/tunnels") => json(StatusCode::OK, &status.snapshot().tunnels),
        (_, "/status" | "/tunnels") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed here (use GET)",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "no such route (try /status or /tunnels)",
        ),
    }
}

/// `{"error": message}` with `code`.
fn error(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(code, &serde_json::json!({ "error": message }))
}

fn json(code: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let (code, body) = match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            (code, body)
        }
        // Plain data structures always serialize; this only keeps the answer well formed.
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{{\"error\":\"{e}\"}}\n").into_bytes(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if code == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::TunnelConfig;
    use burrow_proto::msg::TunnelKind;
    use http_body_util::BodyExt;

    fn request(method: Method, path: &str) -> Request<()> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap()
    }

    async fn body(response: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn status() -> Status {
        let status = Status::new();
        let tunnel = TunnelConfig {
            name: "web".into(),
            local: "127.0.0.1:8080".into(),
            remote_port: None,
            kind: TunnelKind::Tcp,
            proxy_protocol: None,
            health_check: None,
        };
        status.start("example.net:7777", &[tunnel]);
        status.connected(0xabc, "tcp");
        status.ready("web", Some("example.net:20001".into()), Vec::new());
        status
    }

    #[tokio::test]
    async fn status_answers_the_whole_snapshot() {
        let response = route(&status(), &request(Method::GET, "/status"));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let v = body(response).await;
        assert_eq!(v["server"], "example.net:7777");
        assert_eq!(v["state"], "connected");
        assert_eq!(v["session"], "0000000000000abc");
        assert_eq!(v["tunnels"][0]["name"], "web");
        assert_eq!(v["tunnels"][0]["public"], "example.net:20001");
        assert_eq!(v["tunnels"][0]["state"], "ready");
    }

    #[tokio::test]
    async fn tunnels_answers_the_list_alone() {
        let v = body(route(&status(), &request(Method::GET, "/tunnels"))).await;
        let list = v.as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["kind"], "tcp");
        assert_eq!(list[0]["local"], "127.0.0.1:8080");
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_are_json_errors() {
        let response = route(&status(), &request(Method::GET, "/nope"));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert!(body(response).await["error"].is_string());
        let response = route(&status(), &request(Method::DELETE, "/status"));
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET");
        assert!(body(response).await["error"].is_string());
    }
}
