//! The registry's side of the HTTP edge: claiming names and hostnames for a session's HTTP
//! tunnels, health, and picking the member that serves a visitor.

use super::{HttpMember, Registry, SessionHandle};
use crate::config::Auth;
use crate::http::routes::{Member, Miss, Resolved};
use crate::metrics::TunnelStats;
use burrow_proto::msg::{HttpOptions, Refusal};
use std::sync::Arc;

impl Registry {
    /// Publishes HTTP tunnel `tunnel` of `session` on the edge; returns the name it holds.
    /// `options` has been validated (canonical hostnames, labels).
    pub(crate) fn http_claim(
        &self,
        session: &Arc<SessionHandle>,
        tunnel: u32,
        options: &HttpOptions,
        target: &str,
    ) -> Result<String, Refusal> {
        for host in &options.hostnames {
            if self
                .domains
                .iter()
                .any(|d| burrow_proto::names::matches_pattern(&format!("*.{d}"), host) || d == host)
            {
                return Err(Refusal::Invalid(format!(
                    "`{host}` is under the server's domain; ask for the name instead"
                )));
            }
            if !self.may_claim_hostname(&session.identity, host) {
                return Err(Refusal::HostnameDenied(host.clone()));
            }
        }
        let member = Member {
            session: session.id,
            tunnel,
            tags: options.tags.clone(),
            passthrough: options.tls_passthrough,
            hostnames: options.hostnames.clone(),
            healthy: true,
            target: target.to_owned(),
            value: session.clone(),
        };
        self.lock().http.claim(
            &session.identity,
            options.subdomain.as_deref(),
            member,
            random_name,
        )
    }

    /// Whether `identity` may answer on `host`. With a shared token anyone may claim any name
    /// but an IP address (that would capture visitors who reach the edge by its address).
    fn may_claim_hostname(&self, identity: &str, host: &str) -> bool {
        match &self.lock().auth {
            Auth::SharedToken(_) => !burrow_proto::names::is_ip_literal(host),
            Auth::Identities(ids) => ids.iter().any(|i| {
                i.name == identity
                    && i.hostnames
                        .iter()
                        .any(|p| burrow_proto::names::matches_pattern(p, host))
            }),
        }
    }

    /// True while tunnel `tunnel` of `session` still serves the name (a kept stream to it may
    /// be reused).
    pub(crate) fn http_is_member(&self, name: &str, session: u64, tunnel: u32) -> bool {
        self.lock().http.is_member(name, session, tunnel)
    }

    /// Records the client's health check of one of its HTTP tunnels.
    pub(crate) fn http_set_health(&self, session: u64, tunnel: u32, healthy: bool) -> bool {
        self.lock().http.set_health(session, tunnel, healthy)
    }

    /// Withdraws an HTTP tunnel its client closed.
    pub(crate) fn http_leave(&self, session: u64, tunnel: u32) {
        self.lock().http.leave(session, tunnel);
    }

    /// Finds the tunnel serving a visitor's `host` (or, with no domain configured, its `path`),
    /// round robin within the group.
    pub(crate) fn http_pick(
        &self,
        host: Option<&str>,
        path: &str,
        passthrough: bool,
    ) -> Result<(Resolved, HttpMember), Miss> {
        let resolved = self.http_resolve(host, path, passthrough)?;
        let member = self.http_member(&resolved, passthrough)?;
        Ok((resolved, member))
    }

    /// What a visitor's `host` (or, with no domain configured, its `path`) names.
    pub(crate) fn http_resolve(
        &self,
        host: Option<&str>,
        path: &str,
        passthrough: bool,
    ) -> Result<Resolved, Miss> {
        let state = self.lock();
        // Path routing first where it applies, so a custom hostname (say, the edge's own name)
        // cannot capture the paths of every other tunnel.
        let by_path = || {
            (self.domains.is_empty() && !passthrough)
                .then(|| state.http.resolve_path(path))
                .flatten()
        };
        by_path()
            .or_else(|| host.and_then(|h| state.http.resolve_host(h, &self.domains)))
            .ok_or(Miss::Unknown)
    }

    /// The next member of a resolved group, round robin.
    pub(crate) fn http_member(
        &self,
        resolved: &Resolved,
        passthrough: bool,
    ) -> Result<HttpMember, Miss> {
        self.lock().http.pick(resolved, passthrough)
    }

    /// The traffic counters of the HTTP name `name`.
    pub(crate) fn http_stats(&self, name: &str) -> Option<Arc<TunnelStats>> {
        self.lock().http.stats(name)
    }
}

/// A fresh name for an HTTP tunnel that did not ask for one: a letter and seven letters or
/// digits, from the system's random source.
fn random_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = burrow_proto::auth::nonce();
    bytes[..8]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let letters = if i == 0 { 26 } else { ALPHABET.len() };
            char::from(ALPHABET[usize::from(*b) % letters])
        })
        .collect()
}
