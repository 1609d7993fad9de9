//! Unit tests for the client configuration: files, flags, environment, and their errors.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::testing::{env_set, lines, scratch, source, source_in};
use burrow_client::{ProxyProtocol, TunnelConfig};
use clap::Parser;
use std::time::Duration;

fn plan(text: &str) -> Result<ClientPlan, ConfigError> {
    check(&source("c.toml", text))
}

/// `burrow tcp ARGS...` parsed as clap would.
fn tcp(args: &[&str]) -> Result<ClientPlan, ConfigError> {
    #[derive(Parser)]
    struct Tcp {
        #[command(flatten)]
        args: TcpArgs,
    }
    let parsed = Tcp::try_parse_from(std::iter::once("tcp").chain(args.iter().copied())).unwrap();
    from_tcp(&parsed.args)
}

const FP: &str = "sha256:abababababababababababababababababababababababababababababababab";

#[test]
fn documented_sample_converts() {
    let text = format!(
        r#"
server = "example.net:7777"
name = "alice"
token = "alice-token"
server_fingerprint = "{FP}"
known_hosts = "/path/known_servers"
insecure_plain = false
pool_size = 4
exit_on_disconnect = true
heartbeat_interval = "1s"
dead_after = "5s"
connect_timeout = "3s"

[[tunnels]]
name = "web"
local_port = 8080
local_host = "127.0.0.1"
remote_port = 8080

[[tunnels]]
local_port = 22
local_host = "::1"
"#
    );
    let plan = plan(&text).unwrap();
    assert_eq!(plan.trust, Some(Trust::Fingerprint(FP.into())));
    let c = &plan.config;
    assert_eq!(
        (c.server.as_str(), c.name.as_str()),
        ("example.net:7777", "alice")
    );
    assert_eq!(c.token.expose(), b"alice-token");
    assert_eq!((c.pool_size, c.exit_on_disconnect), (4, true));
    assert_eq!(c.dead_after, Duration::from_secs(5));
    assert_eq!(c.connect_timeout, Duration::from_secs(3));
    let web = TunnelConfig {
        name: "web".into(),
        local: "127.0.0.1:8080".into(),
        remote_port: Some(8080),
        kind: burrow_client::config::TunnelKind::Tcp,
        proxy_protocol: None,
        health_check: None,
    };
    let ssh = TunnelConfig {
        name: "tcp-22".into(),
        local: "[::1]:22".into(),
        remote_port: None,
        kind: burrow_client::config::TunnelKind::Tcp,
        proxy_protocol: None,
        health_check: None,
    };
    assert_eq!(c.tunnels, [web, ssh]);
}

#[test]
fn the_one_liner_builds_the_same_config() {
    let plan = tcp(&[
        "8080",
        "--to",
        "example.net",
        "--token",
        "t",
        "--known-hosts",
        "/k",
    ])
    .unwrap();
    assert_eq!(
        plan.trust,
        Some(Trust::FirstUse {
            known_hosts: "/k".into()
        })
    );
    let c = &plan.config;
    assert_eq!(
        (c.server.as_str(), c.name.as_str()),
        ("example.net:7777", "")
    );
    let want = TunnelConfig {
        name: "tcp-8080".into(),
        local: "127.0.0.1:8080".into(),
        remote_port: None,
        kind: burrow_client::config::TunnelKind::Tcp,
        proxy_protocol: None,
        health_check: None,
    };
    assert_eq!(c.tunnels, [want]);
    assert!(!c.exit_on_disconnect);

    let args = [
        "22",
        "--to",
        "[::1]:9000",
        "--local-host",
        "10.0.0.2",
        "--remote-port",
        "2222",
        "--name",
        "alice",
        "--token",
        "t",
        "--ca",
        "/",
        "--exit-on-disconnect",
        "--pool-size",
        "2",
    ];
    let plan = tcp(&args).unwrap();
    assert_eq!(plan.trust, Some(Trust::CaFile("/".into())));
    let c = &plan.config;
    assert_eq!(
        (c.server.as_str(), c.name.as_str(), c.pool_size),
        ("[::1]:9000", "alice", 2)
    );
    assert!(c.exit_on_disconnect);
    let want = TunnelConfig {
        name: "tcp-22".into(),
        local: "10.0.0.2:22".into(),
        remote_port: Some(2222),
        kind: burrow_client::config::TunnelKind::Tcp,
        proxy_protocol: None,
        health_check: None,
    };
    assert_eq!(c.tunnels, [want]);

    let plan = tcp(&["1", "--to", "h", "--token", "t", "--insecure-plain"]).unwrap();
    assert_eq!(plan.trust, None);
}

#[test]
fn the_one_liner_reports_flags_by_name() {
    let dir = scratch("client-flags");
    let empty = dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    let got = lines(tcp(&[
        "1",
        "--to",
        "h",
        "--token-file",
        empty.to_str().unwrap(),
    ]));
    assert_eq!(got, ["--token-file: the token is empty"]);
    if !env_set("BURROW_TOKEN") {
        let got = lines(tcp(&["1", "--to", "h"]));
        assert_eq!(
            got,
            ["no token given (`token` or `token_file`, --token or --token-file, or BURROW_TOKEN)"]
        );
    }
}

#[test]
fn every_problem_is_reported_at_its_value() {
    let long = "n".repeat(65);
    let text = format!(
        r#"server = "example.net:0"
name = "{long}"
token = "t"
server_fingerprint = "{FP}"
ca = "ca.pem"
pool_size = 300

[[tunnels]]
name = "web"
local_port = 8080
remote_port = 0

[[tunnels]]
local_port = 70000
local_host = "a b"

[[tunnels]]
name = "web"
local_port = 22
remote_port = 2222

[[tunnels]]
name = "ssh"
local_port = 23
remote_port = 2222
"#
    );
    let got = lines(plan(&text));
    let want = [
        "c.toml:1:10: `0` is not a port number (1-65535)",
        "c.toml:2:8: name `nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn` is longer than 64 bytes",
        "c.toml:5:6: give `server_fingerprint` or `ca`, not both",
        "c.toml:6:13: 300 is out of range (0-256)",
        "c.toml:11:15: remote_port 0 is not a port; leave remote_port out to let the server choose",
        "c.toml:14:14: 70000 is not a port number (1-65535)",
        "c.toml:15:14: `a b` is not a host name or IP address",
        "c.toml:18:8: tunnel `web` is listed twice (give each tunnel its own `name`)",
        "c.toml:25:15: remote port 2222/tcp is asked for by two tunnels",
    ];
    assert_eq!(got, want);
}

#[test]
fn trust_settings_are_checked() {
    let dir = scratch("client-trust");
    std::fs::write(dir.join("ca.pem"), "x").unwrap();
    let base = "server = \"h\"\ntoken = \"t\"\n[[tunnels]]\nlocal_port = 1\n";
    let with = |top: &str| check(&source_in("c.toml", &format!("{top}\n{base}"), dir.clone()));
    assert_eq!(
        with("ca = \"ca.pem\"").unwrap().trust,
        Some(Trust::CaFile(dir.join("ca.pem")))
    );
    let kh = with("known_hosts = \"kh\"").unwrap().trust;
    assert_eq!(
        kh,
        Some(Trust::FirstUse {
            known_hosts: dir.join("kh")
        })
    );
    let got = lines(with("ca = \"missing.pem\""));
    assert!(got[0].starts_with("c.toml:1:6: cannot read "), "{got:?}");
    let got = lines(with("insecure_plain = true\nserver_fingerprint = \"nope\""));
    assert_eq!(
        got,
        ["c.toml:2:22: server_fingerprint has no effect with insecure_plain; remove one of them"]
    );
    let got = lines(with("server_fingerprint = \"sha256:12\""));
    assert!(
        got[0].starts_with("c.toml:1:22: invalid server fingerprint"),
        "{got:?}"
    );
}

#[test]
fn a_client_needs_a_server_and_tunnels() {
    let got = lines(plan("server = \"h\"\ntoken = \"t\"\n"));
    assert_eq!(got, ["c.toml:1:1: no [[tunnels]]: add at least one"]);
    let got = lines(plan("token = \"t\"\n[[tunnels]]\nlocal_port = 1\n"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("missing field `server`"), "{got:?}");
}

#[test]
fn proxy_protocol_is_set_per_tcp_tunnel() {
    let text = r#"
server = "h"
token = "t"
known_hosts = "/k"

[[tunnels]]
name = "web"
local_port = 8080
proxy_protocol = "v1"

[[tunnels]]
name = "smtp"
protocol = "tcp"
local_port = 25
proxy_protocol = "v2"

[[tunnels]]
local_port = 22
"#;
    let plan = plan(text).unwrap();
    let got: Vec<_> = plan
        .config
        .tunnels
        .iter()
        .map(|t| (t.name.as_str(), t.proxy_protocol))
        .collect();
    let want = [
        ("web", Some(ProxyProtocol::V1)),
        ("smtp", Some(ProxyProtocol::V2)),
        ("tcp-22", None),
    ];
    assert_eq!(got, want);
}

#[test]
fn the_proxy_protocol_flag_builds_the_same_config_as_a_file() {
    let flags = tcp(&[
        "8080",
        "--to",
        "h",
        "--token",
        "t",
        "--known-hosts",
        "/k",
        "--proxy-protocol",
        "v2",
    ])
    .unwrap();
    let file = "server = \"h\"\ntoken = \"t\"\nknown_hosts = \"/k\"\n\
                [[tunnels]]\nlocal_port = 8080\nproxy_protocol = \"v2\"\n";
    let file = plan(file).unwrap();
    assert_eq!(flags.config.tunnels, file.config.tunnels);
    let want = TunnelConfig {
        name: "tcp-8080".into(),
        local: "127.0.0.1:8080".into(),
        remote_port: None,
        kind: burrow_client::config::TunnelKind::Tcp,
        proxy_protocol: Some(ProxyProtocol::V2),
        health_check: None,
    };
    assert_eq!(flags.config.tunnels, [want]);
    // Left out, no header is sent.
    let plain = tcp(&["8080", "--to", "h", "--token", "t", "--insecure-plain"]).unwrap();
    assert_eq!(plain.config.tunnels[0].proxy_protocol, None);
}

#[test]
fn proxy_protocol_misuse_is_reported_at_its_value() {
    let text = r#"server = "h"
token = "t"

[[tunnels]]
local_port = 1
proxy_protocol = "v3"

[[tunnels]]
protocol = "udp"
local_port = 53
proxy_protocol = "v1"

[[tunnels]]
name = "events"
protocol = "udp"
direction = "to-sink"
local_port = 9999
proxy_protocol = "v2"

[[tunnels]]
protocol = "udp"
local_port = 54
proxy_protocol = "V2"

[[tunnels]]
protocol = "http"
local_port = 80
proxy_protocol = "v1"
"#;
    let udp_only = "`proxy_protocol` applies only to TCP tunnels (a UDP flow has no stream to \
                    put a header in front of); remove it";
    let got = lines(plan(text));
    let want = [
        "c.toml:6:18: `v3` is not a PROXY protocol version (write \"v1\" or \"v2\")".to_owned(),
        format!("c.toml:11:18: {udp_only}"),
        format!("c.toml:18:18: {udp_only}"),
        // A bad value is reported as such, whatever the protocol.
        "c.toml:23:18: `V2` is not a PROXY protocol version (write \"v1\" or \"v2\")".to_owned(),
        "c.toml:28:18: `proxy_protocol` applies to an HTTP tunnel only with tls_passthrough \
         (HTTP requests carry the visitor's address in X-Forwarded-For); remove it"
            .to_owned(),
    ];
    assert_eq!(got, want);
}

#[test]
fn the_status_socket_is_named_after_the_file_or_the_tunnel() {
    use crate::status_socket::StatusSocket;
    let base = format!(
        "server = \"h:1\"\ntoken = \"t\"\nserver_fingerprint = \"{FP}\"\n{{}}\n[[tunnels]]\nlocal_port = 22\n"
    );
    let with = |line: &str| {
        let text = base.replace("{}", line);
        check(&source_in(
            "/etc/burrow/alice.toml",
            &text,
            "/etc/burrow".into(),
        ))
        .unwrap()
        .status_socket
    };
    let default = StatusSocket::Default("alice".into());
    assert_eq!(with(""), default);
    assert_eq!(with("status_socket = true"), default);
    assert_eq!(with("status_socket = false"), StatusSocket::Off);
    assert_eq!(with("status_socket = \"\""), StatusSocket::Off);
    assert_eq!(
        with("status_socket = \"run/a.sock\""),
        StatusSocket::At("/etc/burrow/run/a.sock".into())
    );
    let one_liner = |extra: &[&str]| {
        let mut args = vec!["8080", "--to", "h", "--token", "t"];
        args.extend(extra);
        tcp(&args).unwrap().status_socket
    };
    assert_eq!(one_liner(&[]), StatusSocket::Default("tcp-8080".into()));
    assert_eq!(one_liner(&["--no-status-socket"]), StatusSocket::Off);
    assert_eq!(
        one_liner(&["--status-socket", "s.sock"]),
        StatusSocket::At("s.sock".into())
    );
}

#[test]
fn a_status_socket_of_the_wrong_type_is_reported_at_its_value() {
    let text = format!(
        "server = \"h:1\"\ntoken = \"t\"\nserver_fingerprint = \"{FP}\"\nstatus_socket = 5\n"
    );
    let lines = lines(plan(&text));
    assert!(
        lines.iter().any(|l| l.starts_with("c.toml:4:")),
        "{lines:?}"
    );
}

#[test]
fn the_proxy_comes_from_the_file_or_the_flags() {
    let base = "server = \"example.net\"\ntoken = \"t\"\n";
    let tunnel = "\n[[tunnels]]\nlocal_port = 80\n";
    let file = plan(&format!(
        "{base}proxy = \"socks5h://bob:p%40ss@proxy.corp:1080\"\n{tunnel}"
    ))
    .unwrap();
    let proxy = file.config.proxy.unwrap();
    assert_eq!(proxy.to_string(), "socks5h://bob:***@proxy.corp:1080");
    let password = proxy.credentials.map(|c| c.password);
    assert_eq!(password, Some(burrow_proto::auth::Secret::new("p@ss")));
    // `""` turns a proxy from the environment off.
    let off = plan(&format!("{base}proxy = \"\"\n{tunnel}")).unwrap();
    assert_eq!(off.config.proxy, None);

    let flag = tcp(&[
        "80",
        "--to",
        "h",
        "--token",
        "t",
        "--proxy",
        "http://p:3128",
    ])
    .unwrap();
    assert_eq!(flag.config.proxy.unwrap().to_string(), "http://p:3128");
    let none = tcp(&["80", "--to", "h", "--token", "t", "--no-proxy"]).unwrap();
    assert_eq!(none.config.proxy, None);
    if !["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
        .iter()
        .any(|v| env_set(v))
    {
        assert_eq!(
            tcp(&["80", "--to", "h", "--token", "t"])
                .unwrap()
                .config
                .proxy,
            None
        );
    }
}

#[test]
fn a_bad_proxy_is_reported_at_its_value_without_the_password() {
    let text = "server = \"h\"\ntoken = \"t\"\nproxy = \"gopher://u:hunter2@p:1\"\n\
                \n[[tunnels]]\nlocal_port = 80\n";
    assert_eq!(
        lines(plan(text)),
        [
            "c.toml:3:9: `gopher://u:***@p:1`: unknown proxy scheme `gopher` (use http://, \
          socks5:// or socks5h://)"
        ]
    );
    let got = lines(tcp(&[
        "80",
        "--to",
        "h",
        "--token",
        "t",
        "--proxy",
        "socks5://u@p",
    ]));
    assert_eq!(
        got,
        [
            "--proxy: `socks5://u@p`: SOCKS5 credentials need a user and a password of 1 to 255 \
          bytes each"
        ]
    );
    let wrong_type = lines(plan("server = \"h\"\ntoken = \"t\"\nproxy = 3\n"));
    assert!(
        wrong_type.contains(&"c.toml:3:9: invalid type: integer `3`, expected a string".into()),
        "{wrong_type:?}"
    );
}

#[test]
fn the_carrier_is_one_name_or_a_list_in_order() {
    let base =
        format!("server = \"example.net:7777\"\ntoken = \"t\"\nserver_fingerprint = \"{FP}\"\n");
    let tunnel = "[[tunnels]]\nlocal_port = 8080\n";
    let carriers = |setting: &str| {
        let text = format!("{base}{setting}\n{tunnel}");
        plan(&text).map(|p| p.config.carriers)
    };
    assert_eq!(carriers("").unwrap(), vec![CarrierKind::Tcp]);
    assert_eq!(
        carriers("carrier = \"mux\"").unwrap(),
        vec![CarrierKind::Mux]
    );
    assert_eq!(
        carriers("carrier = [\"quic\", \"mux\", \"tcp\"]").unwrap(),
        vec![CarrierKind::Quic, CarrierKind::Mux, CarrierKind::Tcp]
    );
    let flag = tcp(&[
        "8080",
        "--to",
        "h",
        "--token",
        "t",
        "--carrier",
        "quic, tcp",
    ])
    .unwrap();
    assert_eq!(
        flag.config.carriers,
        vec![CarrierKind::Quic, CarrierKind::Tcp]
    );
    for (setting, says) in [
        (
            "carrier = \"udp\"",
            "c.toml:4:11: unknown carrier `udp` (expected tcp, mux, quic, or a ws:// or wss:// URL)",
        ),
        ("carrier = []", "c.toml:4:11: name at least one carrier"),
        (
            "carrier = [\"mux\", \"mux\"]",
            "c.toml:4:11: carrier mux is listed twice",
        ),
    ] {
        let text = format!("{base}{setting}\n{tunnel}");
        assert_eq!(lines(plan(&text)), vec![says.to_owned()], "{setting}");
    }
    let plain = format!(
        "server = \"example.net:7777\"\ntoken = \"t\"\ninsecure_plain = true\ncarrier = [\"quic\", \"tcp\"]\n{tunnel}"
    );
    assert_eq!(
        lines(plan(&plain)),
        vec![
            "c.toml:4:11: the QUIC carrier is always encrypted: it cannot be used with insecure_plain"
                .to_owned()
        ]
    );
}
