//! `protocol = "http"` tunnels and `burrow http`: a name on the server's HTTP edge instead of a
//! public port. The keys `subdomain`, `hostnames`, `tags` and `tls_passthrough` belong to them
//! alone; `remote_port` and the UDP keys mean nothing here, and each is reported.

use super::{RawTunnel, Seen, name, report};
use crate::diag::{Item, Problems};
use crate::fields;
use burrow_client::TunnelConfig;
use burrow_client::config::TunnelKind;
use burrow_proto::msg::{HttpOptions, MAX_HTTP_ALIASES};
use std::collections::HashSet;

/// The `protocol` value of an HTTP tunnel.
pub(crate) const HTTP: &str = "http";

/// True for a tunnel written with `protocol = "http"`.
pub(super) fn is_http(t: &RawTunnel) -> bool {
    t.protocol.as_ref().is_some_and(|p| p.value == HTTP)
}

/// Converts an HTTP tunnel.
pub(super) fn tunnel(t: &RawTunnel, seen: &mut Seen, p: &mut Problems) -> Option<TunnelConfig> {
    let not_here = [
        ("remote_port", t.remote_port.as_ref().map(|i| &i.origin)),
        ("idle_timeout", t.idle_timeout.as_ref().map(|i| &i.origin)),
        ("max_flows", t.max_flows.as_ref().map(|i| &i.origin)),
        ("one_way", t.one_way.as_ref().map(|i| &i.origin)),
        ("direction", t.direction.as_ref().map(|i| &i.origin)),
    ];
    let message = |key| {
        format!(
            "`{key}` does not apply to an HTTP tunnel (it is reached by name on the server's \
             HTTP edge); remove it"
        )
    };
    report(p, not_here, message);
    let local_port = p.parse(Some(&t.local_port), fields::port_number);
    let host = p.parse(t.local_host.as_ref(), fields::host);
    let host = host.unwrap_or_else(|| super::DEFAULT_LOCAL_HOST.to_owned());
    let default = format!("{HTTP}-{}", t.local_port.value);
    let name = name(t, Some(default), seen, p);
    let subdomain = p.parse(t.subdomain.as_ref(), label);
    let hostnames = list(&t.hostnames, fields::hostname, "hostname", p);
    let tags = list(&t.tags, label, "tag", p);
    let tls_passthrough = t.tls_passthrough.as_ref().is_some_and(|i| i.value);
    // Passed-through TLS is a byte stream like a TCP tunnel's, so it can carry a PROXY header;
    // a proxied HTTP request carries the visitor's address in X-Forwarded-For instead.
    let proxy_protocol = t.proxy_protocol.as_ref().and_then(|item| {
        let version = p.parse(Some(item), super::proxy_version)?;
        if !tls_passthrough {
            p.push(item.problem(
                "`proxy_protocol` applies to an HTTP tunnel only with tls_passthrough \
                 (HTTP requests carry the visitor's address in X-Forwarded-For); remove it",
            ));
        }
        tls_passthrough.then_some(version)
    });
    let options = HttpOptions {
        subdomain,
        hostnames,
        tags,
        tls_passthrough,
    };
    Some(TunnelConfig {
        name: name?,
        local: format!("{host}:{}", local_port?),
        remote_port: None,
        kind: TunnelKind::Http(options),
        proxy_protocol,
        health_check: p.parse(t.health_check.as_ref(), health_check).flatten(),
    })
}

/// Reports the HTTP keys on a TCP or UDP tunnel.
pub(super) fn reject_keys(t: &RawTunnel, p: &mut Problems) {
    let keys = [
        ("subdomain", t.subdomain.as_ref().map(|i| &i.origin)),
        ("hostnames", t.hostnames.first().map(|i| &i.origin)),
        ("tags", t.tags.first().map(|i| &i.origin)),
        (
            "tls_passthrough",
            t.tls_passthrough.as_ref().map(|i| &i.origin),
        ),
        ("health_check", t.health_check.as_ref().map(|i| &i.origin)),
    ];
    let message =
        |key| format!("`{key}` applies only to HTTP tunnels; add protocol = \"http\" or remove it");
    report(p, keys, message);
}

/// Most often a health check may run.
const MIN_HEALTH_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// A health-check interval: a duration, or `off`.
pub(crate) fn health_check(s: &str) -> Result<Option<std::time::Duration>, String> {
    if s.trim() == "off" {
        return Ok(None);
    }
    let d = fields::duration(s)?;
    if d < MIN_HEALTH_CHECK {
        return Err(format!("health check interval `{s}` is shorter than 200ms"));
    }
    Ok(Some(d))
}

/// A subdomain or tag: one DNS label, lower-cased.
pub(crate) fn label(s: &str) -> Result<String, String> {
    let lower = s.trim().to_ascii_lowercase();
    if burrow_proto::names::is_label(&lower) {
        Ok(lower)
    } else {
        Err(format!(
            "`{s}` is not a DNS label (1-63 of a-z, 0-9 and -, not starting or ending with -)"
        ))
    }
}

/// Converts a list of hostnames or tags, each once, at most [`MAX_HTTP_ALIASES`].
fn list(
    raw: &[Item<String>],
    parse: fn(&str) -> Result<String, String>,
    what: &str,
    p: &mut Problems,
) -> Vec<String> {
    if let Some(extra) = raw.get(MAX_HTTP_ALIASES) {
        p.push(extra.problem(format!("at most {MAX_HTTP_ALIASES} {what}s per tunnel")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for item in raw {
        if let Some(value) = p.parse(Some(item), parse) {
            if seen.insert(value.clone()) {
                out.push(value);
            } else {
                p.push(item.problem(format!("{what} `{value}` is listed twice")));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::client_config::{HttpArgs, check, from_http};
    use crate::testing::{lines, source};
    use burrow_client::config::TunnelKind;
    use burrow_proto::msg::HttpOptions;
    use clap::Parser;

    const BASE: &str = "server = \"h\"\ntoken = \"t\"\nknown_hosts = \"/k\"\n";

    #[test]
    fn http_tunnels_convert() {
        let text = format!(
            "{BASE}[[tunnels]]\nprotocol = \"http\"\nlocal_port = 3000\nsubdomain = \"App\"\n\
             hostnames = [\"Shop.example.org\"]\ntags = [\"eu\"]\nhealth_check = \"2s\"\n\
             [[tunnels]]\nname = \"tls\"\nprotocol = \"http\"\nlocal_port = 8443\ntls_passthrough = true\n\
             proxy_protocol = \"v2\"\n"
        );
        let plan = check(&source("c.toml", &text)).unwrap();
        let t = &plan.config.tunnels;
        assert_eq!(
            (t[0].name.as_str(), t[0].local.as_str()),
            ("http-3000", "127.0.0.1:3000")
        );
        let want = HttpOptions {
            subdomain: Some("app".into()),
            hostnames: vec!["shop.example.org".into()],
            tags: vec!["eu".into()],
            tls_passthrough: false,
        };
        assert_eq!(t[0].kind, TunnelKind::Http(want));
        let want = HttpOptions {
            tls_passthrough: true,
            ..Default::default()
        };
        assert_eq!(t[1].kind, TunnelKind::Http(want));
        assert_eq!(t[0].proxy_protocol, None);
        assert_eq!(t[0].health_check, Some(std::time::Duration::from_secs(2)));
        assert_eq!(t[1].health_check, None, "off unless asked for");
        assert_eq!(
            t[1].proxy_protocol,
            Some(burrow_client::config::ProxyProtocol::V2)
        );
    }

    #[test]
    fn keys_of_other_kinds_are_reported() {
        let text = format!(
            "{BASE}[[tunnels]]\nprotocol = \"http\"\nlocal_port = 3000\nremote_port = 80\n\
             subdomain = \"-bad\"\ntags = [\"eu\", \"eu\"]\n\
             [[tunnels]]\nlocal_port = 22\nsubdomain = \"ssh\"\n"
        );
        let got = lines(check(&source("c.toml", &text)));
        let want = [
            "c.toml:7:15: `remote_port` does not apply to an HTTP tunnel (it is reached by name on \
             the server's HTTP edge); remove it",
            "c.toml:8:13: `-bad` is not a DNS label (1-63 of a-z, 0-9 and -, not starting or \
             ending with -)",
            "c.toml:9:15: tag `eu` is listed twice",
            "c.toml:12:13: `subdomain` applies only to HTTP tunnels; add protocol = \"http\" or \
             remove it",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn the_one_liner_builds_the_same_tunnel() {
        #[derive(Parser)]
        struct Http {
            #[command(flatten)]
            args: HttpArgs,
        }
        let args = [
            "http",
            "3000",
            "--to",
            "h",
            "--token",
            "t",
            "--known-hosts",
            "/k",
            "--subdomain",
            "app",
            "--hostname",
            "a.example.org",
            "--hostname",
            "b.example.org",
            "--tag",
            "eu",
            "--tls-passthrough",
        ];
        let parsed = Http::try_parse_from(args).unwrap();
        let plan = from_http(&parsed.args).unwrap();
        let want = HttpOptions {
            subdomain: Some("app".into()),
            hostnames: vec!["a.example.org".into(), "b.example.org".into()],
            tags: vec!["eu".into()],
            tls_passthrough: true,
        };
        assert_eq!(plan.config.tunnels[0].kind, TunnelKind::Http(want));
        let bad = Http::try_parse_from(["http", "1", "--to", "h", "--subdomain", "a.b"]);
        assert!(bad.is_err(), "a dotted subdomain is not one label");
        let bad = Http::try_parse_from(["http", "1", "--to", "h", "--health-check", "10ms"]);
        assert!(bad.is_err(), "a health check more often than every 200ms");
        let off = Http::try_parse_from(["http", "1", "--to", "h", "--health-check", "off"]);
        assert!(off.is_ok());
    }
}
