//! `[[tunnels]]` with `protocol = "udp"` and `burrow udp`: flow options, defaults, and every
//! misuse reported at its value.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;
use crate::client_config::{ClientPlan, UdpArgs, check, from_udp};
use crate::diag::ConfigError;
use crate::testing::{lines, source};
use clap::Parser;

fn plan(text: &str) -> Result<ClientPlan, ConfigError> {
    check(&source("c.toml", text))
}

/// `burrow udp ARGS...` parsed as clap would.
fn udp(args: &[&str]) -> Result<ClientPlan, ConfigError> {
    #[derive(Parser)]
    struct Udp {
        #[command(flatten)]
        args: UdpArgs,
    }
    let parsed = Udp::try_parse_from(std::iter::once("udp").chain(args.iter().copied())).unwrap();
    from_udp(&parsed.args)
}

fn udp_tunnel(name: &str, local: &str, remote_port: Option<u16>, o: UdpOptions) -> TunnelConfig {
    TunnelConfig {
        name: name.into(),
        local: local.into(),
        remote_port,
        kind: TunnelKind::Udp(o),
        proxy_protocol: None,
        health_check: None,
    }
}

#[test]
fn udp_tunnels_convert_with_their_flow_options() {
    let text = r#"
server = "h"
token = "t"
known_hosts = "/k"

[[tunnels]]
protocol = "udp"
local_port = 53
remote_port = 5353

[[tunnels]]
name = "events"
protocol = "udp"
local_port = 9999
local_host = "192.168.1.255"
idle_timeout = "2m"
max_flows = 100
one_way = true

[[tunnels]]
protocol = "tcp"
local_port = 53
remote_port = 5353
"#;
    let plan = plan(text).unwrap();
    let dns = udp_tunnel("udp-53", "127.0.0.1:53", Some(5353), UdpOptions::default());
    let events = UdpOptions {
        idle_timeout_s: 120,
        max_flows: 100,
        one_way: true,
    };
    let events = udp_tunnel("events", "192.168.1.255:9999", None, events);
    // TCP and UDP ports are separate: both may ask for 5353.
    let tcp = TunnelConfig {
        name: "tcp-53".into(),
        local: "127.0.0.1:53".into(),
        remote_port: Some(5353),
        kind: TunnelKind::Tcp,
        proxy_protocol: None,
        health_check: None,
    };
    assert_eq!(plan.config.tunnels, [dns, events, tcp]);
    assert_eq!(
        UdpOptions::default(),
        UdpOptions {
            idle_timeout_s: 60,
            max_flows: 16_384,
            one_way: false
        }
    );
}

#[test]
fn the_udp_one_liner_builds_the_same_config_as_a_file() {
    let args = [
        "53",
        "--to",
        "example.net:9000",
        "--local-host",
        "10.0.0.255",
        "--remote-port",
        "5353",
        "--token",
        "t",
        "--known-hosts",
        "/k",
        "--idle-timeout",
        "90s",
        "--max-flows",
        "7",
        "--one-way",
    ];
    let flags = udp(&args).unwrap();
    let file = plan(
        r#"
server = "example.net:9000"
token = "t"
known_hosts = "/k"
[[tunnels]]
protocol = "udp"
local_port = 53
local_host = "10.0.0.255"
remote_port = 5353
idle_timeout = "90s"
max_flows = 7
one_way = true
"#,
    )
    .unwrap();
    assert_eq!(flags.trust, file.trust);
    assert_eq!(flags.config.server, file.config.server);
    assert_eq!(flags.config.tunnels, file.config.tunnels);
    let o = UdpOptions {
        idle_timeout_s: 90,
        max_flows: 7,
        one_way: true,
    };
    let want = udp_tunnel("udp-53", "10.0.0.255:53", Some(5353), o);
    assert_eq!(flags.config.tunnels, [want]);

    // Left out, the flow options are burrow's defaults and the name follows the protocol.
    let plan = udp(&["5353", "--to", "h", "--token", "t", "--insecure-plain"]).unwrap();
    let want = udp_tunnel("udp-5353", "127.0.0.1:5353", None, UdpOptions::default());
    assert_eq!(plan.config.tunnels, [want]);
    assert_eq!(plan.trust, None);
}

#[test]
fn udp_keys_are_checked_and_refused_on_tcp_tunnels() {
    let text = r#"server = "h"
token = "t"

[[tunnels]]
local_port = 80
idle_timeout = "10s"
max_flows = 10
one_way = false

[[tunnels]]
protocol = "quic"
local_port = 81
idle_timeout = "soon"

[[tunnels]]
protocol = "udp"
local_port = 82
idle_timeout = "1500ms"
max_flows = 0
one_way = "yes"

[[tunnels]]
protocol = "udp"
local_port = 83
remote_port = 9000
max_flows = 2000000

[[tunnels]]
protocol = "udp"
local_port = 84
remote_port = 9000
idle_timeout = "0s"
"#;
    let got = lines(plan(text));
    let want = [
        "c.toml:6:16: `idle_timeout` applies only to UDP tunnels; add protocol = \"udp\" or remove it",
        "c.toml:7:13: `max_flows` applies only to UDP tunnels; add protocol = \"udp\" or remove it",
        "c.toml:8:11: `one_way` applies only to UDP tunnels; add protocol = \"udp\" or remove it",
        "c.toml:11:12: `quic` is not a tunnel protocol (write \"tcp\", \"udp\" or \"http\")",
        "c.toml:13:16: `soon` is not a duration (write e.g. 30s, 500ms, 2m)",
        "c.toml:18:16: idle timeout `1500ms` is not a whole number of seconds (write e.g. 30s or 2m)",
        "c.toml:19:13: 0 is out of range (1-1048576)",
        "c.toml:20:11: invalid type: string \"yes\", expected a boolean",
        "c.toml:26:13: 2000000 is out of range (1-1048576)",
        "c.toml:31:15: remote port 9000/udp is asked for by two tunnels",
        "c.toml:32:16: idle timeout `0s` is shorter than 1s",
    ];
    assert_eq!(got, want);
}

#[test]
fn names_default_per_protocol_and_stay_unique() {
    let text = r#"server = "h"
token = "t"
[[tunnels]]
protocol = "udp"
local_port = 53
[[tunnels]]
name = "udp-53"
local_port = 1
"#;
    let got = lines(plan(text));
    assert_eq!(
        got,
        ["c.toml:7:8: tunnel `udp-53` is listed twice (give each tunnel its own `name`)"]
    );
}

#[test]
fn to_sink_tunnels_listen_locally_and_name_the_sink() {
    let text = r#"server = "h"
token = "t"
known_hosts = "/k"

[[tunnels]]
name = "lanevents"
protocol = "udp"
direction = "to-sink"
local_host = "0.0.0.0"
local_port = 9999

[[tunnels]]
name = "dns"
protocol = "udp"
direction = "from-server"
local_port = 53
remote_port = 9999
"#;
    let file = plan(text).unwrap();
    let events = TunnelConfig {
        name: "lanevents".into(),
        local: "0.0.0.0:9999".into(),
        remote_port: None,
        kind: TunnelKind::UdpToSink,
        proxy_protocol: None,
        health_check: None,
    };
    let dns = udp_tunnel("dns", "127.0.0.1:53", Some(9999), UdpOptions::default());
    assert_eq!(file.config.tunnels, [events.clone(), dns]);

    // The one-liner fills the same keys: `--to-sink` names the tunnel and sets its direction.
    let args = "9999 --to h --token t --known-hosts /k --to-sink lanevents --local-host 0.0.0.0";
    let flags = udp(&args.split_whitespace().collect::<Vec<_>>()).unwrap();
    assert_eq!(flags.config.tunnels, [events]);
    assert_eq!(flags.trust, file.trust);
    let flags = udp(&["5", "--to", "h", "--token", "t", "--to-sink", "e"]).unwrap();
    assert_eq!(flags.config.tunnels[0].local, "127.0.0.1:5");
}

#[test]
fn to_sink_tunnels_refuse_what_only_public_ports_have() {
    let text = r#"server = "h"
token = "t"

[[tunnels]]
name = "events"
protocol = "udp"
direction = "to-sink"
local_port = 9999
remote_port = 9999
idle_timeout = "10s"
max_flows = 10
one_way = true

[[tunnels]]
protocol = "udp"
direction = "to-sink"
local_port = 9998

[[tunnels]]
local_port = 80
direction = "to-sink"

[[tunnels]]
protocol = "udp"
direction = "sideways"
local_port = 81
"#;
    let sink_only = "does not apply to a to-sink tunnel (events go to a sink on the server: no \
                     public port, no flows, no replies); remove it";
    let got = lines(plan(text));
    let want = [
        format!("c.toml:9:15: `remote_port` {sink_only}"),
        format!("c.toml:10:16: `idle_timeout` {sink_only}"),
        format!("c.toml:11:13: `max_flows` {sink_only}"),
        format!("c.toml:12:11: `one_way` {sink_only}"),
        "c.toml:16:13: a to-sink tunnel needs `name`: the name of a UDP sink on the server".into(),
        "c.toml:21:13: `direction` applies only to UDP tunnels; add protocol = \"udp\" or remove it"
            .into(),
        "c.toml:25:13: `sideways` is not a UDP direction (write \"from-server\" or \"to-sink\")"
            .into(),
    ];
    assert_eq!(got, want);
}
