#![allow(clippy::unwrap_used)]

use super::*;
use burrow_proto::msg::UdpOptions;

fn tunnel(name: &str, kind: TunnelKind) -> TunnelConfig {
    TunnelConfig {
        name: name.into(),
        local: "127.0.0.1:9".into(),
        remote_port: None,
        kind,
        proxy_protocol: None,
        health_check: None,
    }
}

fn tunnels() -> Vec<TunnelConfig> {
    vec![
        tunnel("web", TunnelKind::Tcp),
        tunnel("dns", TunnelKind::Udp(UdpOptions::default())),
        tunnel("events", TunnelKind::UdpToSink),
    ]
}

fn find(snapshot: &Snapshot, name: &str) -> TunnelSnapshot {
    snapshot
        .tunnels
        .iter()
        .find(|t| t.name == name)
        .cloned()
        .unwrap()
}

#[test]
fn a_new_client_is_connecting_with_pending_tunnels() {
    let status = Status::new();
    status.start("srv:7777", &tunnels());
    let s = status.snapshot();
    assert_eq!(s.server, "srv:7777");
    assert_eq!(s.state, State::Connecting);
    assert_eq!(s.session, None);
    let kinds: Vec<Kind> = s.tunnels.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [Kind::Tcp, Kind::Udp, Kind::Sink]);
    assert!(s.tunnels.iter().all(|t| t.state == TunnelState::Pending));
}

#[test]
fn a_failed_first_attempt_stays_connecting_with_its_error() {
    let status = Status::new();
    status.start("srv:7777", &tunnels());
    status.failed("cannot reach srv:7777: refused");
    let s = status.snapshot();
    assert_eq!(s.state, State::Connecting);
    assert_eq!(
        s.last_error.as_deref(),
        Some("cannot reach srv:7777: refused")
    );
}

#[test]
fn sessions_grants_and_reconnects_are_tracked() {
    let status = Status::new();
    status.start("srv:7777", &tunnels());
    status.connected(0x5f0c, "tcp");
    status.rtt(Duration::from_micros(1500));
    status.ready("web", Some("srv:20001".into()), Vec::new());
    status.refused("dns", "port taken".into());
    let s = status.snapshot();
    assert_eq!(s.state, State::Connected);
    assert_eq!(s.session.as_deref(), Some("0000000000005f0c"));
    assert!(s.connected_since_unix.is_some());
    assert_eq!(s.rtt_ms, Some(1.5));
    assert_eq!(s.reconnects, 0);
    let web = find(&s, "web");
    assert_eq!(
        (web.state, web.public.as_deref()),
        (TunnelState::Ready, Some("srv:20001"))
    );
    let dns = find(&s, "dns");
    assert_eq!(
        (dns.state, dns.refused.as_deref()),
        (TunnelState::Refused, Some("port taken"))
    );

    status.failed("carrier lost");
    let s = status.snapshot();
    assert_eq!(s.state, State::Reconnecting);
    assert_eq!((s.rtt_ms, s.connected_since_unix), (None, None));
    let web = find(&s, "web");
    assert_eq!(web.state, TunnelState::Pending);
    assert_eq!(
        web.public.as_deref(),
        Some("srv:20001"),
        "the last grant is kept"
    );

    status.connected(0x77, "tcp");
    let s = status.snapshot();
    assert_eq!((s.state, s.reconnects), (State::Connected, 1));
    assert_eq!(s.session.as_deref(), Some("0000000000000077"));
    assert_eq!(find(&s, "dns").refused, None, "a new session asks again");
}

#[test]
fn streams_are_counted_while_open_and_bytes_when_they_end() {
    let status = Status::new();
    status.start("srv:7777", &tunnels());
    let first = status.stream("web").unwrap();
    let second = status.stream("web").unwrap();
    assert!(status.stream("nope").is_none());
    first.bytes(10, 20);
    drop(first);
    let web = find(&status.snapshot(), "web");
    assert_eq!((web.streams_active, web.streams_total), (1, 2));
    assert_eq!((web.bytes_in, web.bytes_out), (10, 20));
    drop(second);
    let web = find(&status.snapshot(), "web");
    assert_eq!((web.streams_active, web.streams_total), (0, 2));
}

#[test]
fn tunnels_are_added_and_removed_by_name() {
    let status = Status::new();
    status.start("srv:7777", &tunnels());
    let open = status.stream("web").unwrap();
    status.remove_tunnel("dns");
    status.add_tunnel(&tunnel("api", TunnelKind::Tcp));
    let names: Vec<String> = status
        .snapshot()
        .tunnels
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["web", "events", "api"]);
    // A tunnel added again under a name in use starts afresh; old streams do not count.
    status.add_tunnel(&tunnel("web", TunnelKind::Tcp));
    drop(open);
    let web = find(&status.snapshot(), "web");
    assert_eq!((web.streams_active, web.streams_total), (0, 0));
}

#[test]
fn snapshots_read_back_from_json() {
    let status = Status::new();
    status.start("srv:7777", &tunnels());
    status.connected(1, "tcp");
    status.ready("web", Some("srv:1".into()), Vec::new());
    let snapshot = status.snapshot();
    let text = serde_json::to_string(&snapshot).unwrap();
    assert!(text.contains("\"state\":\"connected\""), "{text}");
    assert!(text.contains("\"kind\":\"sink\""), "{text}");
    let back: Snapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snapshot);
}
