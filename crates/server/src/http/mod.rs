//! The HTTP edge: many named tunnels behind one HTTP and one HTTPS port.
//!
//! The HTTP listener reads each request head (under a deadline), finds the tunnel by `Host` (or,
//! when no domain is configured, by path prefix), and proxies the request over a stream of that
//! tunnel's session, with `X-Forwarded-*` added and hop-by-hop headers dropped ([`proxy`]). The
//! HTTPS listener reads the TLS ClientHello and either passes the connection through untouched
//! to a tunnel whose target holds the certificate (routing by server name, [`sni`]), or
//! terminates TLS with the operator's certificate and serves HTTP/1.1 and HTTP/2 like the HTTP
//! listener does.

mod body;
mod proxy;
mod rewind;
pub(crate) mod routes;
mod sni;

use crate::Shared;
use crate::config::HttpEdge;
use burrow_proto::msg::{HttpOptions, MAX_HTTP_ALIASES, MAX_NAME_LEN, Refusal};
use burrow_proto::names;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{Instrument, warn};

/// The edge's listeners as far as tunnels see them: which exist, on which ports.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EdgePorts {
    pub http: Option<u16>,
    pub https: Option<u16>,
}

impl EdgePorts {
    /// Checks an HTTP tunnel's request and returns it in canonical form.
    pub(crate) fn check(&self, options: &HttpOptions) -> Result<HttpOptions, Refusal> {
        if self.http.is_none() && self.https.is_none() {
            return Err(Refusal::NoHttpEdge);
        }
        if options.tls_passthrough && self.https.is_none() {
            return Err(Refusal::Invalid(
                "TLS passthrough needs the server's HTTPS listener, and it has none".into(),
            ));
        }
        let subdomain = match &options.subdomain {
            None => None,
            Some(s) => {
                let s = s.to_ascii_lowercase();
                if !names::is_label(&s) {
                    return Err(Refusal::Invalid(format!(
                        "`{}` is not a DNS label (a-z, 0-9 and -, at most 63)",
                        crate::session::printable(&s)
                    )));
                }
                Some(s)
            }
        };
        if options.hostnames.len() > MAX_HTTP_ALIASES || options.tags.len() > MAX_HTTP_ALIASES {
            return Err(Refusal::Invalid(format!(
                "at most {MAX_HTTP_ALIASES} hostnames and {MAX_HTTP_ALIASES} tags"
            )));
        }
        let mut hostnames = Vec::new();
        for h in &options.hostnames {
            let host = names::hostname(h).ok_or_else(|| {
                Refusal::Invalid(format!(
                    "`{}` is not a hostname",
                    crate::session::printable(h)
                ))
            })?;
            hostnames.push(host);
        }
        let mut tags = Vec::new();
        for t in &options.tags {
            let tag = t.to_ascii_lowercase();
            if !names::is_label(&tag) || tag.len() > MAX_NAME_LEN {
                return Err(Refusal::Invalid(format!(
                    "tag `{}` is not a DNS label",
                    crate::session::printable(t)
                )));
            }
            tags.push(tag);
        }
        Ok(HttpOptions {
            subdomain,
            hostnames,
            tags,
            tls_passthrough: options.tls_passthrough,
        })
    }

    /// Where visitors reach a tunnel called `name`. With no domain the host is left empty
    /// (`http://:8080/name/`): the client fills in the server's address it dialed.
    pub(crate) fn urls(&self, edge: &HttpEdge, name: &str, options: &HttpOptions) -> Vec<String> {
        let mut hosts: Vec<String> = edge.domains.iter().map(|d| format!("{name}.{d}")).collect();
        hosts.extend(options.hostnames.iter().cloned());
        let schemes: Vec<(&str, u16, u16)> = if options.tls_passthrough {
            self.https.map(|p| ("https", p, 443)).into_iter().collect()
        } else {
            let https = self.https.filter(|_| edge.terminate.is_some());
            let http = self.http.map(|p| ("http", p, 80));
            http.into_iter()
                .chain(https.map(|p| ("https", p, 443)))
                .collect()
        };
        let mut urls = Vec::new();
        for (scheme, port, default) in schemes {
            let port = if port == default {
                String::new()
            } else {
                format!(":{port}")
            };
            if hosts.is_empty() {
                urls.push(format!("{scheme}://{port}/{name}/"));
            }
            for host in &hosts {
                urls.push(format!("{scheme}://{host}{port}"));
            }
        }
        urls
    }
}

/// Whether a visitor came in over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Starts accepting visitors on the edge's listeners.
pub(crate) fn spawn(shared: &Arc<Shared>, http: Option<TcpListener>, https: Option<TcpListener>) {
    let limit = Arc::new(Semaphore::new(shared.config().http.max_connections));
    for (listener, scheme) in [(http, Scheme::Http), (https, Scheme::Https)] {
        let Some(listener) = listener else { continue };
        let span = tracing::info_span!("edge", scheme = scheme.as_str());
        shared
            .tracker
            .spawn(accept_loop(shared.clone(), listener, scheme, limit.clone()).instrument(span));
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    scheme: Scheme,
    limit: Arc<Semaphore>,
) {
    while let Some((tcp, peer)) = crate::accept(&listener, &shared.shutdown).await {
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(visitor = %peer, "connection dropped: {} edge connections open", shared.config().http.max_connections);
            continue;
        };
        let _ = burrow_net::tune_endpoint(&tcp);
        let shared2 = shared.clone();
        let permit = Arc::new(permit);
        let task = async move {
            match scheme {
                Scheme::Http => proxy::serve(shared2, tcp, peer, Scheme::Http, permit).await,
                Scheme::Https => sni::serve(shared2, tcp, peer, permit).await,
            }
        };
        let span = tracing::debug_span!("visitor", visitor = %peer);
        shared.tracker.spawn(task.instrument(span));
    }
}
