//! Unit tests for `burrow check`: which errors are found, and where they are reported.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::testing::{lines, source};

#[test]
fn the_kind_follows_the_top_level_keys() {
    let ok = |text: &str| check_source(&source("f.toml", text)).unwrap();
    assert_eq!(
        ok("token = \"t\"\nstate_dir = \"/s\"\n"),
        "ok: server config"
    );
    let client = "server = \"h:1\"\ntoken = \"t\"\n[[tunnels]]\nlocal_port = 1\n[[tunnels]]\nlocal_port = 2\n";
    assert_eq!(ok(client), "ok: client config (2 tunnels)");
    // UDP sinks belong to the server; a to-sink tunnel is one of the client's tunnels.
    let sinks = "token = \"t\"\nstate_dir = \"/s\"\n[[udp_sinks]]\nname = \"e\"\ndeliver_to = \"127.0.0.1:9\"\n";
    assert_eq!(ok(sinks), "ok: server config");
    let to_sink = "server = \"h\"\ntoken = \"t\"\n[[tunnels]]\nname = \"e\"\nprotocol = \"udp\"\ndirection = \"to-sink\"\nlocal_port = 9\n";
    assert_eq!(ok(to_sink), "ok: client config (1 tunnels)");
    // A file with tunnels but no server is a client file missing its server.
    let got = lines(check_source(&source(
        "f.toml",
        "token = \"t\"\n[[tunnels]]\nlocal_port = 1\n",
    )));
    assert!(got[0].contains("missing field `server`"), "{got:?}");
}

#[test]
fn syntax_errors_are_all_reported_with_positions() {
    let got = lines(check_source(&source("f.toml", "a = \nb = \"x\n[[x]\n")));
    let want = [
        "f.toml:1:5: string values must be quoted, expected literal string",
        "f.toml:2:7: invalid basic string, expected `\"`",
        "f.toml:3:5: unclosed array table, expected `]`",
    ];
    assert_eq!(got, want);
}

#[test]
fn check_runs_on_a_file() {
    let dir = crate::testing::scratch("check-file");
    let good = dir.join("good.toml");
    std::fs::write(&good, "token = \"t\"\nstate_dir = \"s\"\n").unwrap();
    let mut out = Vec::new();
    run_to(&good, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "ok: server config\n");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "token = \"t\"\nports = \"x\"\nlisten = \"y\"\n").unwrap();
    let mut out = Vec::new();
    let err = run_to(&bad, &mut out).unwrap_err().to_string();
    assert_eq!(err, format!("{} has 2 problems", bad.display()));
    let want = format!(
        "{0}:2:9: `x` in `x` is not a port number (1-65535)\n\
         {0}:3:10: `y` is not an IP:PORT address (write e.g. 0.0.0.0:7777 or [::]:7777)\n",
        bad.display()
    );
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert!(run_to(&dir.join("missing.toml"), &mut Vec::new()).is_err());
}

#[test]
fn udp_tunnels_are_checked() {
    let ok = |text: &str| check_source(&source("f.toml", text)).unwrap();
    let base = "server = \"h:1\"\ntoken = \"t\"\nknown_hosts = \"/k\"\n";
    let udp = "[[tunnels]]\nprotocol = \"udp\"\nlocal_port = 53\nidle_timeout = \"30s\"\n\
               max_flows = 64\none_way = true\nremote_port = 53\n\
               [[tunnels]]\nlocal_port = 53\nremote_port = 53\n";
    assert_eq!(ok(&format!("{base}{udp}")), "ok: client config (2 tunnels)");
    let bad = "[[tunnels]]\nlocal_port = 53\none_way = true\n\
               [[tunnels]]\nprotocol = \"udp\"\nlocal_port = 54\nmax_flows = -1\nflows = 3\n";
    let got = lines(check_source(&source("f.toml", &format!("{base}{bad}"))));
    let want = [
        "f.toml:6:11: `one_way` applies only to UDP tunnels; add protocol = \"udp\" or remove it",
        "f.toml:10:13: -1 is out of range (1-1048576)",
    ];
    assert_eq!(got[..2], want);
    // The list of known keys that follows is serde's, and grows with every new key.
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[2].starts_with("f.toml:11:1: unknown field `flows`, expected one of `name`"),
        "{got:?}"
    );
}
