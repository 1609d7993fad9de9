//! Unit tests for the server configuration: files, flags, environment, and their errors.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::testing::{env_set, lines, scratch, source, source_in};
use std::time::Duration;

fn plan(text: &str) -> Result<ServerPlan, ConfigError> {
    check(&source("s.toml", text))
}

#[test]
fn documented_sample_converts() {
    let dir = scratch("server-sample");
    std::fs::write(dir.join("cert.pem"), "x").unwrap();
    std::fs::write(dir.join("key.pem"), "x").unwrap();
    let text = r#"
listen = "0.0.0.0:7777"
ports = "8080,9000-9100"
public_bind = "127.0.0.1"
state_dir = "/var/lib/burrow"
token = "s3cret"
insecure_plain = false
tls_cert = "cert.pem"
tls_key = "key.pem"
lease_grace = "30s"
heartbeat_interval = "2s"
dead_after = "7s"
handshake_timeout = "10s"
pool_wait = "500ms"
max_unauthenticated = 256
max_sessions = 4096
max_udp_flows = 1000
max_udp_flows_per_session = 5000
shutdown_grace = "1m"
"#;
    let plan = check(&source_in("s.toml", text, dir.clone())).unwrap();
    assert_eq!(plan.listen, "0.0.0.0:7777".parse().unwrap());
    assert!(plan.listen_given);
    assert_eq!(
        plan.tls,
        Some(TlsSource::Files {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem")
        })
    );
    let c = &plan.config;
    assert_eq!(c.ports.to_string(), "8080,9000-9100");
    assert_eq!(c.public_bind.to_string(), "127.0.0.1");
    assert_eq!(c.pool_wait, Duration::from_millis(500));
    assert_eq!(c.shutdown_grace, Duration::from_secs(60));
    assert_eq!(c.max_sessions, 4096);
    assert_eq!((c.max_udp_flows, c.max_udp_flows_per_session), (1000, 5000));
    assert!(matches!(&c.auth, Auth::SharedToken(t) if t.expose() == b"s3cret"));
}

#[test]
fn defaults_fill_what_is_left_out() {
    let plan = plan("token = \"t\"\nstate_dir = \"/x\"\n").unwrap();
    assert_eq!(plan.listen, "0.0.0.0:7777".parse().unwrap());
    assert!(
        !plan.listen_given,
        "the default address is not a configured one"
    );
    assert_eq!(plan.config.ports, PortSet::range(20000, 29999));
    assert_eq!(plan.config.lease_grace, Duration::from_secs(30));
    assert_eq!(plan.tls, Some(TlsSource::StateDir("/x".into())));
}

#[test]
fn named_clients_convert() {
    let dir = scratch("server-clients");
    std::fs::write(dir.join("bob.token"), "bob-token\n").unwrap();
    let text = r#"
[[clients]]
name = "alice"
token = "alice-token"
ports = "8080,20000-20100"

[[clients]]
name = "bob"
token_file = "bob.token"
"#;
    let plan = check(&source_in("s.toml", text, dir.to_path_buf())).unwrap();
    let Auth::Identities(ids) = &plan.config.auth else {
        panic!("not identities")
    };
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].name, "alice");
    assert_eq!(ids[0].ports.as_ref().map(|p| p.len()), Some(102));
    // The token file's trailing newline is not part of the token.
    assert_eq!(ids[1].token.expose(), b"bob-token");
    assert_eq!(ids[1].ports, None);
}

#[test]
fn every_problem_is_reported_at_its_value() {
    let text = r#"listen = "0.0.0.0:77777"
ports = "9-1"
token = "x"
token_file = "nope"
lease_grace = "soon"
heartbeat_interval = "5s"
dead_after = "3s"
max_sessions = 0

[[clients]]
name = "alice"
token = "a"
ports = "0"

[[clients]]
name = "alice"

[[clients]]
name = "b c"
token = "b"
"#;
    let got = lines(plan(text));
    let want = [
        "s.toml:1:10: `0.0.0.0:77777` is not an IP:PORT address (write e.g. 0.0.0.0:7777 or [::]:7777)",
        "s.toml:2:9: port range `9-1` runs backwards",
        "s.toml:3:9: a shared token and [[clients]] are both given; use one or the other",
        "s.toml:4:14: give `token` or `token_file`, not both",
        "s.toml:5:15: `soon` is not a duration (write e.g. 30s, 500ms, 2m)",
        "s.toml:7:14: dead_after must be longer than heartbeat_interval",
        "s.toml:8:16: 0 is out of range (1-1048576)",
        "s.toml:13:9: `0` in `0` is not a port number (1-65535)",
        "s.toml:16:8: client `alice` is listed twice",
        "s.toml:16:8: client `alice` has no `token` or `token_file`",
        "s.toml:19:8: name `b c` has ` `; names use only A-Z a-z 0-9 . _ -",
    ];
    assert_eq!(got, want);
}

#[test]
fn unknown_and_mistyped_keys_are_all_reported() {
    let text = "token = \"t\"\nbogus = 1\nports = 8080\n[[clients]]\nname = \"a\"\ntoken = \"a\"\ncolour = \"red\"\n";
    let got = lines(plan(text));
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got[0].starts_with("s.toml:1:9: a shared token and [[clients]]"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("s.toml:2:1: unknown field `bogus`"),
        "{got:?}"
    );
    assert!(
        got[2].starts_with("s.toml:3:9: invalid type: integer `8080`, expected a string"),
        "{got:?}"
    );
    assert!(
        got[3].starts_with("s.toml:7:1: unknown field `colour`"),
        "{got:?}"
    );
}

#[test]
fn tokens_are_checked() {
    let dir = scratch("server-tokens");
    std::fs::write(dir.join("empty"), "\n").unwrap();
    let check_in = |text: &str| lines(check(&source_in("s.toml", text, dir.clone())));
    assert_eq!(check_in("token = \"\""), ["s.toml:1:9: the token is empty"]);
    assert_eq!(
        check_in("token_file = \"empty\""),
        ["s.toml:1:14: the token is empty"]
    );
    let missing = check_in("token_file = \"missing\"");
    assert!(
        missing[0].starts_with("s.toml:1:14: cannot read "),
        "{missing:?}"
    );
    if !env_set("BURROW_TOKEN") {
        assert_eq!(
            lines(plan("ports = \"1-2\"")),
            [
                "s.toml:1:1: no token given (`token` or `token_file`, [[clients]], --token or --token-file, or BURROW_TOKEN)"
            ]
        );
    }
}

#[test]
fn tls_files_come_in_pairs_and_not_with_plain() {
    let got = lines(plan("token = \"t\"\ntls_cert = \"c.pem\"\n"));
    assert_eq!(
        got,
        ["s.toml:2:12: give both `tls_cert` and `tls_key`, or neither"]
    );
    let got = lines(plan(
        "token = \"t\"\ninsecure_plain = true\ntls_key = \"k.pem\"\n",
    ));
    assert_eq!(
        got,
        ["s.toml:3:11: TLS files are given but insecure_plain is on; choose one"]
    );
    assert_eq!(
        plan("token = \"t\"\ninsecure_plain = true\n").unwrap().tls,
        None
    );
}

#[test]
fn flags_win_over_the_file() {
    let dir = scratch("server-flags");
    let file = dir.join("server.toml");
    let text = "token_file = \"tok\"\nports = \"1000-2000\"\nlisten = \"127.0.0.1:1\"\ninsecure_plain = true\n";
    std::fs::write(&file, text).unwrap();
    let args = ServerArgs {
        config: Some(file),
        ports: Some("3000".into()),
        token: Some("flag-token".into()),
        tls_cert: Some("c.pem".into()),
        tls_key: Some("k.pem".into()),
        ..Default::default()
    };
    // The file's token_file does not exist; the flag's token replaces it, so it is never read.
    let err = load(&args).unwrap_err().to_string();
    // c.pem does not exist either, and a flag's relative path is not moved to the file's dir.
    assert_eq!(
        err,
        "--tls-cert: cannot read c.pem: No such file or directory (os error 2)\n--tls-key: cannot read k.pem: No such file or directory (os error 2)"
    );
    let args = ServerArgs {
        tls_cert: None,
        tls_key: None,
        state_dir: Some("/s".into()),
        ..args
    };
    let plan = load(&args).unwrap();
    assert_eq!(plan.config.ports, PortSet::range(3000, 3000));
    assert_eq!(plan.listen, "127.0.0.1:1".parse().unwrap());
    assert!(matches!(&plan.config.auth, Auth::SharedToken(t) if t.expose() == b"flag-token"));
    assert_eq!(plan.tls, None, "the file's insecure_plain still holds");
}

#[test]
fn flag_problems_name_the_flag() {
    let args = ServerArgs {
        token: Some("t".into()),
        heartbeat_interval: Some("10s".into()),
        insecure_plain: true,
        ..Default::default()
    };
    let err = load(&args).unwrap_err().to_string();
    assert_eq!(
        err,
        "--heartbeat-interval: dead_after must be longer than heartbeat_interval"
    );
}

#[test]
fn udp_sinks_come_from_the_file_and_the_flags() {
    let dir = scratch("server-sinks");
    let file = dir.join("server.toml");
    let text = r#"token = "t"
state_dir = "/s"

[[udp_sinks]]
name = "events"
deliver_to = "127.0.0.1:9999"

[[udp_sinks]]
name = "lan"
deliver_to = "10.0.0.255:5000"
"#;
    std::fs::write(&file, text).unwrap();
    let sink = |name: &str, to: &str| burrow_server::config::UdpSink {
        name: name.into(),
        deliver_to: to.parse().unwrap(),
    };
    let plan = check(&source("s.toml", text)).unwrap();
    let from_file = [
        sink("events", "127.0.0.1:9999"),
        sink("lan", "10.0.0.255:5000"),
    ];
    assert_eq!(plan.config.udp_sinks, from_file);
    // Flags add to the file's list.
    let args = ServerArgs {
        config: Some(file.clone()),
        udp_sink: vec!["v6=[::1]:7".into()],
        ..Default::default()
    };
    let plan = load(&args).unwrap();
    let mut all = from_file.to_vec();
    all.push(sink("v6", "[::1]:7"));
    assert_eq!(plan.config.udp_sinks, all);
    // A flag cannot take a name the file uses.
    let args = ServerArgs {
        config: Some(file),
        udp_sink: vec!["lan=10.0.0.1:1".into()],
        ..Default::default()
    };
    let err = load(&args).unwrap_err().to_string();
    assert_eq!(err, "--udp-sink: UDP sink `lan` is listed twice");
    // No sinks unless the operator names some.
    let plan = plan_default();
    assert!(plan.config.udp_sinks.is_empty());
}

fn plan_default() -> ServerPlan {
    plan("token = \"t\"\nstate_dir = \"/s\"\n").unwrap()
}

#[test]
fn udp_sink_problems_are_reported_at_their_values() {
    let text = r#"token = "t"
state_dir = "/s"

[[udp_sinks]]
name = "events"
deliver_to = "example.net:9999"

[[udp_sinks]]
name = "events"
deliver_to = "0.0.0.0:9999"

[[udp_sinks]]
name = ""
deliver_to = "127.0.0.1:0"

[[udp_sinks]]
name = "a b"
deliver_to = "127.0.0.1"

[[udp_sinks]]
name = "x"
deliver_to = "127.0.0.1:1"
port = 1
"#;
    let got = lines(plan(text));
    let want = [
        "s.toml:6:14: `example.net:9999` is not an IP:PORT address (write e.g. 127.0.0.1:9999 or 10.0.0.255:9999)",
        "s.toml:9:8: UDP sink `events` is listed twice",
        "s.toml:10:14: `0.0.0.0:9999` names no host; write the address to deliver to",
        "s.toml:13:8: a UDP sink needs a name",
        "s.toml:14:14: `127.0.0.1:0` has port 0; write the port to deliver to",
        "s.toml:17:8: name `a b` has ` `; names use only A-Z a-z 0-9 . _ -",
        "s.toml:18:14: `127.0.0.1` is not an IP:PORT address (write e.g. 127.0.0.1:9999 or 10.0.0.255:9999)",
        "s.toml:23:1: unknown field `port`, expected `name` or `deliver_to`",
    ];
    assert_eq!(got, want);
}
