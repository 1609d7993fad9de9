//! The reload diff as a table: one row per kind of change, and what a reload carries over.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::config::{PortSet, Transport};
use burrow_proto::auth::Secret;
use std::time::Duration;

fn identity(name: &str, token: &str) -> Identity {
    Identity {
        name: name.into(),
        token: Secret::new(token),
        ports: None,
        hostnames: Vec::new(),
    }
}

fn sink(name: &str, to: &str) -> UdpSink {
    UdpSink {
        name: name.into(),
        deliver_to: to.parse().unwrap(),
    }
}

/// A server with two identities and one sink.
fn base() -> ServerConfig {
    let mut c = ServerConfig::new(
        Auth::Identities(vec![identity("alice", "a"), identity("bob", "b")]),
        Transport::Plain,
    );
    c.udp_sinks = vec![sink("events", "127.0.0.1:9999")];
    c
}

fn ids(c: &mut ServerConfig) -> &mut Vec<Identity> {
    match &mut c.auth {
        Auth::Identities(ids) => ids,
        Auth::SharedToken(_) => panic!("not identities"),
    }
}

#[test]
fn every_kind_of_change_is_found() {
    type Edit = fn(&mut ServerConfig);
    let table: Vec<(&str, Edit, Vec<Change>)> = vec![
        ("nothing", |_| {}, vec![]),
        (
            "identity added",
            |c| ids(c).push(identity("carol", "c")),
            vec![Change::IdentityAdded("carol".into())],
        ),
        (
            "identity removed",
            |c| ids(c).retain(|i| i.name != "bob"),
            vec![Change::IdentityRemoved("bob".into())],
        ),
        (
            "token changed",
            |c| ids(c)[0].token = Secret::new("a2"),
            vec![Change::TokenChanged("alice".into())],
        ),
        (
            "ports narrowed",
            |c| ids(c)[1].ports = Some(PortSet::range(20000, 20001)),
            vec![Change::AllowanceChanged("bob".into())],
        ),
        (
            "hostnames changed",
            |c| ids(c)[1].hostnames = vec!["shop.example.org".into()],
            vec![Change::AllowanceChanged("bob".into())],
        ),
        (
            "token and ports changed together",
            |c| {
                ids(c)[0].token = Secret::new("a2");
                ids(c)[0].ports = Some(PortSet::range(1, 2));
            },
            vec![
                Change::TokenChanged("alice".into()),
                Change::AllowanceChanged("alice".into()),
            ],
        ),
        ("identities reordered", |c| ids(c).reverse(), vec![]),
        (
            "to a shared token",
            |c| c.auth = Auth::SharedToken(Secret::new("s")),
            vec![Change::AuthModeChanged],
        ),
        (
            "sink added",
            |c| c.udp_sinks.push(sink("lan", "10.0.0.255:9999")),
            vec![Change::SinkAdded("lan".into())],
        ),
        (
            "sink removed",
            |c| c.udp_sinks.clear(),
            vec![Change::SinkRemoved("events".into())],
        ),
        (
            "sink moved",
            |c| c.udp_sinks[0].deliver_to = "127.0.0.1:9998".parse().unwrap(),
            vec![Change::SinkChanged("events".into())],
        ),
        (
            "live settings",
            |c| {
                c.lease_grace = Duration::from_secs(5);
                c.pool_wait = Duration::from_secs(1);
                c.max_sessions = 10;
                c.http.response_timeout = Duration::from_secs(5);
                c.admin_token = Some(Secret::new("admin"));
                c.max_session_lifetime = Some(Duration::from_secs(7200));
                c.ws_path = "/tunnel".into();
            },
            vec![
                Change::Setting("lease_grace"),
                Change::Setting("pool_wait"),
                Change::Setting("max_sessions"),
                Change::Setting("http_response_timeout"),
                Change::Setting("admin_token"),
                Change::Setting("max_session_lifetime"),
                Change::Setting("ws_path"),
            ],
        ),
        (
            "ban settings",
            |c| {
                c.bans.after = 0;
                c.bans.window = Duration::from_secs(5);
                c.bans.duration = Duration::from_secs(5);
                c.bans.exempt = vec!["127.0.0.0/8".parse().unwrap()];
            },
            vec![
                Change::Setting("ban_after"),
                Change::Setting("ban_window"),
                Change::Setting("ban_for"),
                Change::Setting("ban_exempt"),
            ],
        ),
        (
            "restart-only settings",
            |c| {
                c.ports = PortSet::range(30000, 30010);
                c.public_bind = [127, 0, 0, 1].into();
                c.max_unauthenticated = 1;
                c.http.domains = vec!["example.net".into()];
                c.http.max_connections = 1;
            },
            vec![
                Change::NeedsRestart("ports"),
                Change::NeedsRestart("public_bind"),
                Change::NeedsRestart("max_unauthenticated"),
                Change::NeedsRestart("domains"),
                Change::NeedsRestart("http_max_connections"),
            ],
        ),
    ];
    for (what, edit, want) in table {
        let old = base();
        let mut new = base();
        edit(&mut new);
        assert_eq!(diff(&old, &new), want, "{what}");
    }
}

#[test]
fn shared_token_changes_are_found() {
    let shared = |t: &str| ServerConfig::new(Auth::SharedToken(Secret::new(t)), Transport::Plain);
    assert_eq!(diff(&shared("a"), &shared("a")), vec![]);
    assert_eq!(
        diff(&shared("a"), &shared("b")),
        vec![Change::SharedTokenChanged]
    );
    let mut named = base();
    named.udp_sinks.clear();
    assert_eq!(diff(&shared("a"), &named), vec![Change::AuthModeChanged]);
}

#[test]
fn restart_only_settings_keep_their_running_values() {
    let running = base();
    let mut new = base();
    new.ports = PortSet::range(30000, 30010);
    new.public_bind = [127, 0, 0, 1].into();
    new.http.domains = vec!["example.net".into()];
    new.lease_grace = Duration::from_secs(5);
    ids(&mut new).push(identity("carol", "c"));
    let next = next_config(&running, new);
    assert_eq!(next.ports, running.ports);
    assert_eq!(next.public_bind, running.public_bind);
    assert!(next.http.domains.is_empty());
    assert_eq!(next.lease_grace, Duration::from_secs(5));
    assert_eq!(ids(&mut next.clone()).len(), 3);
    // What was carried over no longer shows as a difference; the rest is applied.
    assert!(diff(&running, &next).iter().all(|c| !c.needs_restart()));
}

#[test]
fn changes_read_as_log_lines() {
    assert_eq!(
        Change::NeedsRestart("ports").to_string(),
        "`ports` changed; needs a restart to apply"
    );
    assert_eq!(
        Change::IdentityRemoved("bob".into()).to_string(),
        "identity `bob` removed: sessions closed, ports released"
    );
}

#[tokio::test]
async fn a_removed_identity_loses_its_session_and_its_port_at_once() {
    use burrow_proto::msg::{Protocol, ServerMsg};
    let (shared, mut client, _session, task) = crate::session::tests::session_with_tunnel().await;
    let mut new = (*shared.config()).clone();
    new.auth = Auth::Identities(vec![identity("bob", "b")]);
    let reloader = Reloader {
        shared: shared.clone(),
    };
    assert_eq!(reloader.reload(new), vec![Change::AuthModeChanged]);
    // Released by the reload itself, before the session's task has even noticed.
    assert_eq!(shared.registry.free_ports(Protocol::Tcp), 1);
    assert!(shared.registry.sessions().is_empty());
    // The client is told to go away, and the session's task ends.
    loop {
        match burrow_net::read_frame::<_, ServerMsg>(&mut client).await {
            Ok(ServerMsg::Shutdown) => break,
            Ok(_) => continue,
            Err(e) => panic!("no shutdown message: {e}"),
        }
    }
    task.await.unwrap();
}
