//! End-to-end: traces exported over OTLP/HTTP by a real server and client.
//!
//! The collector is a small HTTP server inside the test that accepts `POST /v1/traces` and
//! decodes the protobuf body. A visitor goes through a tunnel once, then the client is stopped
//! with SIGINT and the server with SIGTERM: a graceful exit sends the last spans, so everything
//! is in the receiver by the time the processes have exited.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::targets::{assert_echo, echo_target};
use common::{Client, Server, TestDir, bounded, ports};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::time::Duration;
use tokio::sync::mpsc;

/// Export requests the receiver holds before the exporter has to wait for the test.
const RECEIVED: usize = 256;

/// One span as received, with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    /// A string, integer or boolean attribute of the span, as text.
    fn attr(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        AnyValue {
            value: Some(any_value::Value::StringValue(s)),
        } => Some(s.clone()),
        AnyValue {
            value: Some(any_value::Value::IntValue(i)),
        } => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Starts the receiver; returns its base URL and the requests it decodes.
async fn receiver() -> (String, mpsc::Receiver<ExportTraceServiceRequest>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel(RECEIVED);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let service = hyper::service::service_fn(move |req| accept(req, tx.clone()));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (url, rx)
}

/// Answers one export: 200 with an empty response for a decodable `POST /v1/traces`.
async fn accept(
    req: Request<hyper::body::Incoming>,
    tx: mpsc::Sender<ExportTraceServiceRequest>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let reply = |status| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("content-type", "application/x-protobuf".parse().unwrap());
        Ok(response)
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND);
    }
    let body = req.into_body().collect().await?.to_bytes();
    match ExportTraceServiceRequest::decode(body) {
        Ok(export) => {
            let _ = tx.send(export).await;
            reply(StatusCode::OK)
        }
        Err(_) => reply(StatusCode::BAD_REQUEST),
    }
}

/// Every span received so far.
fn drain(rx: &mut mpsc::Receiver<ExportTraceServiceRequest>) -> Vec<Received> {
    let mut spans = Vec::new();
    while let Ok(export) = rx.try_recv() {
        for resource in export.resource_spans {
            let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attribute(&attributes, "service.name").unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
    spans
}

/// The session id a process logged with `session established`.
fn logged_session(stderr: &[String]) -> String {
    let line = stderr
        .iter()
        .find(|l| l.contains("session established"))
        .expect("no `session established` line");
    let start = line.find("session=").expect("no session= on the line") + "session=".len();
    line[start..start + 16].to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn session_and_stream_spans_reach_the_collector() {
    bounded(90, async {
        let dir = TestDir::new("otlp");
        let (url, mut received) = receiver().await;
        let block = ports(2).arg();
        let args = ["--token", "t", "--ports", &block, "--otlp-endpoint", &url];
        let mut server = Server::start(&dir, &args).await;
        let echo = echo_target().await;
        let mut client =
            Client::start_tcp(&dir, &server, echo, "t", &["--otlp-endpoint", &url]).await;
        assert_echo(client.port, b"traced").await;

        client.proc.signal("INT");
        assert!(
            client
                .proc
                .wait_exit(Duration::from_secs(20))
                .await
                .success()
        );
        server.proc.signal("TERM");
        assert!(
            server
                .proc
                .wait_exit(Duration::from_secs(20))
                .await
                .success()
        );

        let session = logged_session(&server.proc.output().stderr);
        let spans = drain(&mut received);
        let from = |service: &str, name: &str| -> Vec<Received> {
            spans
                .iter()
                .filter(|s| s.service == service && s.span.name == name)
                .cloned()
                .collect()
        };
        let sessions = from("burrow-server", "session");
        let server_session = sessions
            .iter()
            .find(|s| s.attr("session").as_deref() == Some(&session))
            .unwrap_or_else(|| panic!("no server session span {session} in {spans:#?}"));
        assert!(server_session.attr("peer").is_some());
        let streams = from("burrow-server", "stream");
        let stream = streams
            .iter()
            .find(|s| s.attr("session").as_deref() == Some(&session))
            .unwrap_or_else(|| panic!("no server stream span of {session} in {spans:#?}"));
        assert!(stream.attr("stream").is_some() && stream.attr("visitor").is_some());
        assert!(
            (stream.span.links.iter()).any(|l| l.span_id == server_session.span.span_id),
            "the stream span does not link to its session's span: {stream:#?}"
        );
        // The client traces the same session and stream under the ids the server gave them.
        let client_session = from("burrow-client", "session");
        assert!(
            (client_session.iter()).any(|s| s.attr("session").as_deref() == Some(&session)),
            "no client session span {session} in {spans:#?}"
        );
        let client_stream = from("burrow-client", "stream");
        assert!(
            (client_stream.iter()).any(|s| s.attr("session").as_deref() == Some(&session)
                && s.attr("stream") == stream.attr("stream")),
            "no client stream span {:?} in {spans:#?}",
            stream.attr("stream")
        );
        // Only the session and stream spans are exported.
        let names: std::collections::BTreeSet<_> = spans.iter().map(|s| &s.span.name).collect();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["session", "stream"]);
    })
    .await
}
