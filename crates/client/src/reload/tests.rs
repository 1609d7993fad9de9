use super::*;
use crate::config::{ProxyProtocol, TunnelKind, UdpOptions};
use burrow_proto::auth::Secret;
use burrow_proto::msg::HttpOptions;
use std::time::Duration;

fn config(tunnels: Vec<TunnelConfig>) -> ClientConfig {
    let mut config = ClientConfig::new(
        "example.net:7777".into(),
        "alice".into(),
        Secret::new("t"),
        Transport::Plain,
    );
    config.tunnels = tunnels;
    config
}

fn with(base: &TunnelConfig, edit: impl FnOnce(&mut TunnelConfig)) -> TunnelConfig {
    let mut t = base.clone();
    edit(&mut t);
    t
}

#[test]
fn tunnels_and_settings_diff_by_name() {
    let web = TunnelConfig::tcp("web", "127.0.0.1:8080");
    let ssh = TunnelConfig::tcp("ssh", "127.0.0.1:22");
    let dns = TunnelConfig {
        kind: TunnelKind::Udp(UdpOptions::default()),
        ..TunnelConfig::tcp("dns", "127.0.0.1:53")
    };
    let app = TunnelConfig {
        kind: TunnelKind::Http(HttpOptions::default()),
        ..TunnelConfig::tcp("app", "127.0.0.1:3000")
    };
    let base = config(vec![web.clone(), ssh.clone(), dns.clone(), app.clone()]);
    let named = |c: fn(String) -> Change, n: &str| c(n.to_owned());
    let cases: Vec<(&str, ClientConfig, Vec<Change>)> = vec![
        ("same", base.clone(), vec![]),
        (
            "reordered",
            config(vec![app.clone(), dns.clone(), ssh.clone(), web.clone()]),
            vec![],
        ),
        (
            "added",
            config(vec![
                web.clone(),
                ssh.clone(),
                dns.clone(),
                app.clone(),
                TunnelConfig::tcp("db", "127.0.0.1:5432"),
            ]),
            vec![named(Change::TunnelAdded, "db")],
        ),
        (
            "removed",
            config(vec![web.clone(), dns.clone(), app.clone()]),
            vec![named(Change::TunnelRemoved, "ssh")],
        ),
        (
            "renamed: removed and added",
            config(vec![
                TunnelConfig::tcp("www", "127.0.0.1:8080"),
                ssh.clone(),
                dns.clone(),
                app.clone(),
            ]),
            vec![
                named(Change::TunnelRemoved, "web"),
                named(Change::TunnelAdded, "www"),
            ],
        ),
        (
            "new local port: retargeted in place",
            config(vec![
                with(&web, |t| t.local = "127.0.0.1:8081".into()),
                ssh.clone(),
                dns.clone(),
                app.clone(),
            ]),
            vec![named(Change::TunnelRetargeted, "web")],
        ),
        (
            "PROXY header and health check: retargeted in place",
            config(vec![
                with(&web, |t| t.proxy_protocol = Some(ProxyProtocol::V2)),
                ssh.clone(),
                dns.clone(),
                with(&app, |t| t.health_check = Some(Duration::from_secs(5))),
            ]),
            vec![
                named(Change::TunnelRetargeted, "app"),
                named(Change::TunnelRetargeted, "web"),
            ],
        ),
        (
            "public port, protocol, UDP and HTTP options: published again",
            config(vec![
                with(&web, |t| t.remote_port = Some(9000)),
                with(&ssh, |t| t.kind = TunnelKind::Udp(UdpOptions::default())),
                with(&dns, |t| {
                    t.kind = TunnelKind::Udp(UdpOptions {
                        one_way: true,
                        ..UdpOptions::default()
                    })
                }),
                with(&app, |t| {
                    t.kind = TunnelKind::Http(HttpOptions {
                        subdomain: Some("app".into()),
                        ..HttpOptions::default()
                    })
                }),
            ]),
            ["app", "dns", "ssh", "web"]
                .map(|n| named(Change::TunnelChanged, n))
                .to_vec(),
        ),
    ];
    for (what, new, expected) in cases {
        assert_eq!(diff(&base, &new), expected, "{what}");
    }
}

#[test]
fn session_settings_need_a_restart() {
    let base = config(vec![TunnelConfig::tcp("web", "127.0.0.1:8080")]);
    type Edit = fn(&mut ClientConfig);
    let edits: Vec<(&str, Edit)> = vec![
        ("server", |c| c.server = "other.net:7777".into()),
        ("name", |c| c.name = "bob".into()),
        ("token", |c| c.token = Secret::new("u")),
        ("pool_size", |c| c.pool_size = 2),
        ("exit_on_disconnect", |c| c.exit_on_disconnect = true),
        ("heartbeat_interval", |c| {
            c.heartbeat_interval = Duration::from_secs(1)
        }),
        ("dead_after", |c| c.dead_after = Duration::from_secs(3)),
        ("connect_timeout", |c| {
            c.connect_timeout = Duration::from_secs(3)
        }),
        ("target_timeout", |c| {
            c.target_timeout = Duration::from_secs(3)
        }),
        ("max_backoff", |c| c.max_backoff = Duration::from_secs(3)),
        ("proxy", |c| c.proxy = "socks5h://proxy:1080".parse().ok()),
    ];
    for (setting, edit) in edits {
        let mut new = base.clone();
        edit(&mut new);
        assert_eq!(
            diff(&base, &new),
            vec![Change::NeedsRestart(setting)],
            "{setting}"
        );
        assert!(Change::NeedsRestart(setting).needs_restart());
    }
    // Settings and tunnels together: tunnels first.
    let mut both = config(vec![]);
    both.server = "other.net:7777".into();
    assert_eq!(
        diff(&base, &both),
        vec![
            Change::TunnelRemoved("web".into()),
            Change::NeedsRestart("server"),
        ]
    );
    // A new `status` is not a change: the running one keeps reporting.
    let mut fresh = base.clone();
    fresh.status = crate::Status::new();
    assert_eq!(diff(&base, &fresh), vec![]);
}

#[test]
fn changes_read_as_log_lines() {
    assert_eq!(
        Change::TunnelAdded("db".into()).to_string(),
        "tunnel `db` added"
    );
    assert_eq!(
        Change::NeedsRestart("server").to_string(),
        "`server` changed; needs a restart to apply"
    );
    assert!(!Change::TunnelRetargeted("web".into()).needs_restart());
}
