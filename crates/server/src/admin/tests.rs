//! Every admin route and its errors, answered from a real registry without a socket.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::session::tests::session_with_tunnel;
use http_body_util::BodyExt;

async fn call(
    shared: &Shared,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let response = route(shared, &req.body(()).unwrap()).await;
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn json_of(shared: &Shared, uri: &str) -> Value {
    let (status, body) = call(shared, "GET", uri, None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(start_paused = true)]
async fn health_ready_clients_tunnels_and_ports() {
    let (shared, _client, session, _task) = session_with_tunnel().await;
    let id = format!("{session:016x}");
    assert_eq!(json_of(&shared, "/health").await["status"], "ok");
    assert_eq!(json_of(&shared, "/ready").await["status"], "ready");

    let clients = json_of(&shared, "/clients").await;
    assert_eq!(clients.as_array().unwrap().len(), 1);
    let c = &clients[0];
    assert_eq!(
        (c["id"].as_str(), c["identity"].as_str()),
        (Some(id.as_str()), Some("alice"))
    );
    assert_eq!(c["address"], "127.0.0.1:1");
    assert_eq!(c["carrier"], "memory");
    assert_eq!(c["ports"][0]["protocol"], "tcp");
    assert_eq!(json_of(&shared, &format!("/clients/{id}")).await["id"], id);
    assert_eq!(json_of(&shared, "/clients?identity=bob").await, json!([]));
    assert_eq!(
        json_of(&shared, "/clients?tags=eu").await,
        json!([]),
        "no HTTP tunnel, no tag"
    );

    let tunnels = json_of(&shared, "/tunnels").await;
    assert_eq!(tunnels["ports"][0]["state"], "in_use");
    assert_eq!(tunnels["ports"][0]["client"], id);
    assert_eq!(tunnels["ports"][0]["name"], "t");
    assert_eq!(tunnels["ports"][0]["target"], "127.0.0.1:8080");
    assert_eq!(
        c["host"],
        Value::Null,
        "the client has not described its host"
    );
    assert_eq!(tunnels["http"], json!([]));

    let ports = json_of(&shared, "/ports").await;
    assert_eq!(
        (ports["size"].as_u64(), ports["free"]["tcp"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(ports["free"]["udp"], 1);
}

#[tokio::test(start_paused = true)]
async fn the_openapi_document_describes_every_route() {
    let (shared, _client, session, _task) = session_with_tunnel().await;
    let spec = json_of(&shared, "/openapi.json").await;
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().unwrap();
    let id = format!("{session:016x}");
    // Every documented GET answers (not 404/405), and every answering route is documented.
    for (path, ops) in paths {
        let concrete = path.replace("{id}", &id);
        for method in ops
            .as_object()
            .unwrap()
            .keys()
            .filter(|m| *m != "parameters")
        {
            if method == "delete" || method == "post" {
                continue; // exercised in their own tests
            }
            let (status, body) = call(&shared, &method.to_uppercase(), &concrete, None).await;
            assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
        }
    }
    for path in [
        "/health",
        "/ready",
        "/clients",
        "/clients/{id}",
        "/clients/{id}/ping",
        "/tunnels",
        "/ports",
        "/metrics",
        "/bans",
        "/bans/{address}",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} is not in the OpenAPI document"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_are_openmetrics_text() {
    let (shared, _client, _session, _task) = session_with_tunnel().await;
    let (tunnels, _) = shared.registry.tunnels();
    let stats = tunnels[0].stats.clone().unwrap();
    stats.add_bytes(5, 7);
    stats.error();
    shared
        .metrics
        .auth_failure(crate::metrics::AuthFailure::Version);
    let ms = std::time::Duration::from_millis(1);
    shared.metrics.handshake(true, ms);
    let tcp = crate::metrics::VisitorKind::Tcp;
    shared
        .metrics
        .stream_opened(tcp, crate::registry::Opened::Pool, ms);
    let (status, text) = call(&shared, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Every sample line is `name{labels} number`, and each family has HELP and TYPE.
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        samples.insert(name.to_owned(), value);
    }
    let port = tunnels[0].endpoint.1;
    let tunnel = format!("tunnel=\"tcp/{port}\",identity=\"alice\"");
    for (series, want) in [
        ("burrow_sessions".to_owned(), 1.0),
        ("burrow_public_ports{state=\"in_use\"}".to_owned(), 1.0),
        ("burrow_free_ports{protocol=\"tcp\"}".to_owned(), 0.0),
        ("burrow_streams_active".to_owned(), 0.0),
        (
            format!("burrow_tunnel_bytes_total{{{tunnel},direction=\"in\"}}"),
            5.0,
        ),
        (
            format!("burrow_tunnel_bytes_total{{{tunnel},direction=\"out\"}}"),
            7.0,
        ),
        (format!("burrow_tunnel_errors_total{{{tunnel}}}"), 1.0),
        (
            "burrow_auth_failures_total{reason=\"version\"}".to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(samples.get(&series), Some(&want), "{series} in\n{text}");
    }
    assert!(
        !text.contains("burrow_datagrams_dropped_total{"),
        "no datagram series for a TCP tunnel"
    );
    for family in [
        "burrow_sessions gauge",
        "burrow_streams counter",
        "burrow_http_members gauge",
        "burrow_handshake_seconds histogram",
        "burrow_stream_open_seconds histogram",
        "burrow_carrier_rtt_seconds histogram",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_ping_measures_the_round_trip_to_the_client() {
    let (shared, mut client, session, _task) = session_with_tunnel().await;
    let id = format!("{session:016x}");
    let uri = format!("/clients/{id}/ping");
    let answer = async {
        loop {
            let msg: ServerMsg = burrow_net::read_frame(&mut client).await.unwrap();
            if let ServerMsg::Ping { seq } = msg {
                if seq & OPERATOR_PING != 0 {
                    let pong = burrow_proto::msg::ClientMsg::Pong { seq };
                    burrow_net::write_frame(&mut client, &pong).await.unwrap();
                    return;
                }
            }
        }
    };
    let ((status, body), ()) = tokio::join!(call(&shared, "POST", &uri, None), answer);
    assert_eq!(status, StatusCode::OK, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["id"], id);
    assert!(body["rtt_ms"].as_f64().is_some(), "{body}");

    // A client that does not answer: 504 once the deadline passes (paused time moves on).
    let (status, body) = call(&shared, "POST", &uri, None).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        shared
            .registry
            .session(session)
            .unwrap()
            .pings
            .lock()
            .unwrap()
            .is_empty()
    );
    let (status, _) = call(&shared, "POST", "/clients/0000000000000001/ping", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&shared, "GET", &uri, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(start_paused = true)]
async fn disconnecting_a_client_keeps_or_releases_its_leases() {
    for (query, free_after) in [("", 0), ("?leases=release", 1)] {
        let (shared, _client, session, task) = session_with_tunnel().await;
        let id = format!("{session:016x}");
        let (status, body) = call(&shared, "DELETE", &format!("/clients/{id}{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        task.await.unwrap();
        assert!(shared.registry.session(session).is_none());
        assert_eq!(
            shared.registry.free_ports(Protocol::Tcp),
            free_after,
            "{query:?}"
        );
        let (status, _) = call(&shared, "DELETE", &format!("/clients/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(start_paused = true)]
async fn errors_and_the_bearer_token() {
    let (shared, _client, _session, _task) = session_with_tunnel().await;
    for (method, uri, want) in [
        ("GET", "/nope", StatusCode::NOT_FOUND),
        ("GET", "/clients/zz", StatusCode::NOT_FOUND),
        ("GET", "/clients/0000000000000001", StatusCode::NOT_FOUND),
        ("POST", "/clients", StatusCode::METHOD_NOT_ALLOWED),
        ("DELETE", "/tunnels", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let (status, body) = call(&shared, method, uri, None).await;
        assert_eq!(status, want, "{method} {uri}: {body}");
        assert!(body.contains("\"error\""), "{body}");
    }

    // With a token: /health stays open, everything else wants it.
    let mut config = (*shared.config()).clone();
    config.admin_token = Some(burrow_proto::auth::Secret::new("s3cret"));
    let guarded = Shared::new(
        config,
        tokio_util::sync::CancellationToken::new(),
        Default::default(),
    );
    assert_eq!(
        call(&guarded, "GET", "/health", None).await.0,
        StatusCode::OK
    );
    for token in [None, Some("wrong"), Some("s3cre")] {
        assert_eq!(
            call(&guarded, "GET", "/ports", token).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        call(&guarded, "GET", "/ports", Some("s3cret")).await.0,
        StatusCode::OK
    );
    guarded.shutdown.cancel();
    assert_eq!(
        call(&guarded, "GET", "/ready", Some("s3cret")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(start_paused = true)]
async fn bans_are_listed_counted_and_lifted() {
    use crate::metrics::AuthFailure;
    let (shared, _client, _session, _task) = session_with_tunnel().await;
    let v4: std::net::SocketAddr = "192.0.2.7:4000".parse().unwrap();
    let v6: std::net::SocketAddr = "[2001:db8:1:2::9]:4000".parse().unwrap();
    // The default policy bans at the tenth failure; versions and unknown sessions never count.
    for _ in 0..20 {
        shared.handshake_failed(v4, AuthFailure::Version);
        shared.handshake_failed(v4, AuthFailure::UnknownSession);
    }
    assert_eq!(json_of(&shared, "/bans").await, json!([]));
    for why in [
        AuthFailure::BadCredentials,
        AuthFailure::Tls,
        AuthFailure::Timeout,
    ] {
        for _ in 0..4 {
            shared.handshake_failed(v4, why);
            shared.handshake_failed(v6, AuthFailure::NotBurrow);
        }
    }
    assert!(shared.refuse_banned(v4));
    assert!(shared.refuse_banned("[2001:db8:1:2::77]:1".parse().unwrap()));
    assert!(!shared.refuse_banned("192.0.2.8:1".parse().unwrap()));

    let bans = json_of(&shared, "/bans").await;
    let listed: Vec<&str> = (bans.as_array().unwrap().iter())
        .map(|b| b["address"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{bans}");
    assert!(
        listed.contains(&"192.0.2.7") && listed.contains(&"2001:db8:1:2::/64"),
        "{bans}"
    );
    let ban = &bans[0];
    assert_eq!(ban["failures"], 10, "{ban}");
    assert_eq!(
        ban["until_unix"].as_u64().unwrap() - ban["since_unix"].as_u64().unwrap(),
        600,
        "{ban}"
    );

    let (_, text) = call(&shared, "GET", "/metrics", None).await;
    for line in [
        "burrow_bans_total 2",
        "burrow_banned_connections_total 2",
        "burrow_banned_addresses 2",
        "# TYPE burrow_banned_addresses gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
    }

    for (uri, want) in [
        ("/bans/192.0.2.7", StatusCode::OK),
        ("/bans/192.0.2.7", StatusCode::NOT_FOUND),
        ("/bans/2001:db8:1:2::%2F64", StatusCode::OK),
        ("/bans/2001:db8:1:2::/64", StatusCode::NOT_FOUND),
        ("/bans/not-an-address", StatusCode::BAD_REQUEST),
        ("/bans/192.0.2.7/24", StatusCode::BAD_REQUEST),
    ] {
        let (status, body) = call(&shared, "DELETE", uri, None).await;
        assert_eq!(status, want, "DELETE {uri}: {body}");
    }
    assert_eq!(json_of(&shared, "/bans").await, json!([]));
    assert!(!shared.refuse_banned(v4));
    let (status, _) = call(&shared, "DELETE", "/bans", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
