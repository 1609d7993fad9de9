//! The HTTP edge's settings: `http_listen`, `https_listen`, `domains`, the certificate the
//! HTTPS listener terminates with, and its deadlines; and which custom hostnames each
//! `[[clients]]` identity may claim.

use super::{RawServer, ServerArgs, set};
use crate::diag::{Item, Problems, Source};
use crate::fields;
use burrow_server::HttpEdge;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Largest request head the edge may be told to accept.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// What the edge needs beyond [`HttpEdge`]: sockets to bind and files to load.
#[derive(Debug, Default)]
pub(crate) struct EdgePlan {
    /// Plain HTTP listener.
    pub(crate) http: Option<SocketAddr>,
    /// HTTPS listener (SNI passthrough; termination with `tls`).
    pub(crate) https: Option<SocketAddr>,
    /// Certificate chain and key the HTTPS listener terminates with.
    pub(crate) tls: Option<(PathBuf, PathBuf)>,
}

impl RawServer {
    /// Lays the edge's flags over the file's values.
    pub(super) fn apply_edge_flags(&mut self, a: &ServerArgs) {
        let text = |name, v: &Option<String>| v.clone().map(|v| Item::flag(name, v));
        let path = |name, v: &Option<PathBuf>| v.clone().map(|v| Item::flag(name, v));
        set(&mut self.http_listen, text("--http-listen", &a.http_listen));
        set(
            &mut self.https_listen,
            text("--https-listen", &a.https_listen),
        );
        if !a.domain.is_empty() {
            self.domains = a
                .domain
                .iter()
                .map(|d| Item::flag("--domain", d.clone()))
                .collect();
        }
        if a.edge_tls_cert.is_some() {
            self.edge_tls_cert = path("--edge-tls-cert", &a.edge_tls_cert);
            self.edge_tls_key = path("--edge-tls-key", &a.edge_tls_key);
        }
        set(
            &mut self.http_header_timeout,
            text("--http-header-timeout", &a.http_header_timeout),
        );
        set(
            &mut self.http_response_timeout,
            text("--http-response-timeout", &a.http_response_timeout),
        );
    }

    /// Converts the edge's settings, reporting every problem.
    pub(super) fn edge(&self, source: &Source, edge: &mut HttpEdge, p: &mut Problems) -> EdgePlan {
        let http = p.parse(self.http_listen.as_ref(), fields::listen_addr);
        let https = p.parse(self.https_listen.as_ref(), fields::listen_addr);
        let mut seen = HashSet::new();
        for d in &self.domains {
            if let Some(domain) = p.parse(Some(d), fields::hostname) {
                if seen.insert(domain.clone()) {
                    edge.domains.push(domain);
                } else {
                    p.push(d.problem(format!("domain `{domain}` is listed twice")));
                }
            }
        }
        // A domain under another would make `a.b.example.com` both name `a` under `b.example.com`
        // and tag `a` of name `b` under `example.com`: two owners for one address.
        for d in &self.domains {
            let Ok(domain) = fields::hostname(&d.value) else {
                continue;
            };
            if let Some(outer) = edge
                .domains
                .iter()
                .find(|o| domain.ends_with(&format!(".{o}")))
            {
                p.push(d.problem(format!(
                    "domain `{domain}` is under domain `{outer}`; give only one of them"
                )));
            }
        }
        let tls = match (&self.edge_tls_cert, &self.edge_tls_key) {
            (Some(cert), Some(key)) => {
                if self.https_listen.is_none() {
                    p.push(cert.problem("edge_tls_cert needs https_listen"));
                }
                let cert = fields::existing_file(cert, source, p);
                let key = fields::existing_file(key, source, p);
                Some((cert, key))
            }
            (Some(one), None) | (None, Some(one)) => {
                p.push(one.problem("give both `edge_tls_cert` and `edge_tls_key`, or neither"));
                None
            }
            (None, None) => None,
        };
        let timers = [
            (&self.http_header_timeout, &mut edge.header_timeout, false),
            (
                &self.http_response_timeout,
                &mut edge.response_timeout,
                false,
            ),
        ];
        fields::durations(p, timers);
        let bytes = fields::count_in(8192, MAX_HEADER_BYTES);
        if let Some(n) = p.parse(self.http_max_header_bytes.as_ref(), bytes) {
            edge.max_header_bytes = n;
        }
        if self.http_listen.is_none()
            && self.https_listen.is_none()
            && let Some(d) = self.domains.first()
        {
            p.push(d.problem("domains are set but neither http_listen nor https_listen is"));
        }
        EdgePlan { http, https, tls }
    }
}

/// Converts a `[[clients]]` entry's `hostnames`.
pub(super) fn hostnames(raw: &[Item<String>], p: &mut Problems) -> Vec<String> {
    raw.iter()
        .filter_map(|h| p.parse(Some(h), fields::hostname_pattern))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use crate::testing::{lines, source};
    use std::time::Duration;

    #[test]
    fn edge_settings_convert() {
        let text = r#"
token = "t"
state_dir = "/s"
http_listen = "0.0.0.0:80"
https_listen = "[::]:443"
domains = ["Tunnels.Example.com", "example.net"]
http_header_timeout = "5s"
http_response_timeout = "2m"
http_max_header_bytes = 16384

[[clients]]
name = "alice"
token = "a"
hostnames = ["shop.example.org", "*.Alice.example.org"]
"#;
        let text = text.replace("token = \"t\"\n", "");
        let plan = check(&source("s.toml", &text)).unwrap();
        assert_eq!(plan.edge.http, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(plan.edge.https, Some("[::]:443".parse().unwrap()));
        let http = &plan.config.http;
        assert_eq!(http.domains, vec!["tunnels.example.com", "example.net"]);
        assert_eq!(http.header_timeout, Duration::from_secs(5));
        assert_eq!(http.response_timeout, Duration::from_secs(120));
        assert_eq!(http.max_header_bytes, 16384);
        let burrow_server::Auth::Identities(ids) = &plan.config.auth else {
            panic!("identities expected")
        };
        assert_eq!(
            ids[0].hostnames,
            vec!["shop.example.org", "*.alice.example.org"]
        );
    }

    #[test]
    fn edge_problems_are_reported_at_their_values() {
        let text = r#"token = "t"
state_dir = "/s"
domains = ["ok.example.com", "bad_domain", "ok.example.com", "example.com"]
edge_tls_cert = "c.pem"
http_max_header_bytes = 10

[[clients]]
name = "alice"
token = "a"
hostnames = ["*.*.example.org"]
"#;
        let text = text.replace("token = \"t\"\n", "");
        let got = lines(check(&source("s.toml", &text)));
        let want = [
            "s.toml:2:12: domain `ok.example.com` is under domain `example.com`; give only one of them",
            "s.toml:2:12: domains are set but neither http_listen nor https_listen is",
            "s.toml:2:30: `bad_domain` is not a hostname (labels of a-z, 0-9 and -, joined by dots)",
            "s.toml:2:44: domain `ok.example.com` is listed twice",
            "s.toml:2:44: domain `ok.example.com` is under domain `example.com`; give only one of them",
            "s.toml:3:17: give both `edge_tls_cert` and `edge_tls_key`, or neither",
            "s.toml:4:25: 10 is out of range (8192-1048576)",
            "s.toml:9:14: `*.example.org` is not a hostname (labels of a-z, 0-9 and -, joined by dots)",
        ];
        assert_eq!(got, want);
    }
}
