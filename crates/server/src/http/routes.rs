//! The HTTP edge's name table: which names and hostnames exist, who owns them, and which live
//! tunnels serve them.
//!
//! A *name* is one DNS label (`app` in `app.example.com`). Tunnels of one identity that ask for
//! the same name form its *group*; visitors are spread over the group's members round robin. A
//! member may carry tags (`eu.app.example.com` reaches only members tagged `eu`), and each member
//! can be addressed alone by its client id (`<client-id>.app.example.com`). Custom hostnames
//! point at a name as well.
//!
//! Names are leased like ports: when the last member's carrier is lost, the name (and its
//! hostnames) stays reserved for the owning identity until the lease ends; a client that said
//! goodbye or closed the tunnel frees it at once. The table is pure (values of `T` stand for a
//! session's handle) so every rule is tested without sockets.

use crate::metrics::TunnelStats;
use burrow_proto::msg::Refusal;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// One tunnel serving a name.
#[derive(Debug, Clone)]
pub(crate) struct Member<T> {
    /// The session it belongs to (also its client id).
    pub session: u64,
    /// The client's tunnel id.
    pub tunnel: u32,
    /// Tags it answers to.
    pub tags: Vec<String>,
    /// Its target speaks TLS: only the HTTPS listener's passthrough reaches it.
    pub passthrough: bool,
    /// Custom hostnames it answers on; a hostname stays pointed at the group while a member
    /// (or the group's lease) holds it.
    pub hostnames: Vec<String>,
    /// False while its client reports that the target fails its health check: not picked.
    pub healthy: bool,
    /// The client's local target, as it says (for the admin API).
    pub target: String,
    /// The session's handle.
    pub value: T,
}

#[derive(Debug)]
struct Group<T> {
    owner: String,
    members: Vec<Member<T>>,
    /// Every hostname pointed at the group (the union of its members', or the last members'
    /// while leased).
    hostnames: Vec<String>,
    /// Some member ever served TLS passthrough: a TLS visitor for this name is never terminated
    /// by the edge, even while its clients are away.
    passthrough: bool,
    /// Set while the group has no member: the name is reserved for `owner` until then.
    lease_until: Option<Instant>,
    /// Round-robin position.
    next: usize,
    /// Traffic of every member, for the admin API.
    stats: Arc<TunnelStats>,
}

/// Which members of a group a visitor asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selector {
    /// Any member.
    Any,
    /// Members carrying this tag, or the one member with this client id (16 hex digits).
    Tag(String),
}

/// What a visitor's host (or path) resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The group's name.
    pub name: String,
    /// Which of its members.
    pub selector: Selector,
    /// Length of the path prefix to strip (path routing only).
    pub prefix_len: usize,
}

/// Why no member was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No such name or hostname.
    Unknown,
    /// The name exists, but no live member matches (its clients are away, or none carries the
    /// tag, or they serve the other scheme).
    Offline(String),
}

/// A name as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct NameInfo {
    pub name: String,
    pub owner: String,
    pub hostnames: Vec<String>,
    pub leased: bool,
    pub members: Vec<MemberInfo>,
    #[serde(skip)]
    pub stats: Arc<TunnelStats>,
}

/// A member of a name's group as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct MemberInfo {
    pub client: String,
    pub tunnel: u32,
    pub target: String,
    pub tags: Vec<String>,
    pub passthrough: bool,
    pub healthy: bool,
}

/// The edge's names.
#[derive(Debug)]
pub(crate) struct HttpRoutes<T> {
    groups: HashMap<String, Group<T>>,
    /// Custom hostname → name.
    hostnames: HashMap<String, String>,
}

impl<T: Clone> HttpRoutes<T> {
    pub(crate) fn new() -> Self {
        Self {
            groups: HashMap::new(),
            hostnames: HashMap::new(),
        }
    }

    /// Adds `member` to the group called `want` (creating it), or to a fresh name drawn from
    /// `random` when `want` is `None`, and points the member's hostnames at it. Returns the name.
    ///
    /// Refused when the name or a hostname belongs to another identity, in use or leased. The
    /// caller has checked that the identity may claim the hostnames.
    pub(crate) fn claim(
        &mut self,
        identity: &str,
        want: Option<&str>,
        member: Member<T>,
        mut random: impl FnMut() -> String,
    ) -> Result<String, Refusal> {
        let name = match want {
            Some(name) => name.to_owned(),
            None => loop {
                let candidate = random();
                if !self.groups.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        if let Some(group) = self.groups.get(&name)
            && group.owner != identity
        {
            return Err(Refusal::NameTaken(name));
        }
        for host in &member.hostnames {
            if self.hostnames.get(host).is_some_and(|n| *n != name) {
                return Err(Refusal::NameTaken(host.clone()));
            }
        }
        let group = self.groups.entry(name.clone()).or_insert_with(|| Group {
            owner: identity.to_owned(),
            members: Vec::new(),
            hostnames: Vec::new(),
            passthrough: false,
            lease_until: None,
            next: 0,
            stats: Arc::default(),
        });
        group.lease_until = None;
        group.passthrough |= member.passthrough;
        group
            .members
            .retain(|m| (m.session, m.tunnel) != (member.session, member.tunnel));
        for host in &member.hostnames {
            if !group.hostnames.contains(host) {
                group.hostnames.push(host.clone());
            }
            self.hostnames.insert(host.clone(), name.clone());
        }
        group.members.push(member);
        self.reconcile_hostnames(&name);
        Ok(name)
    }

    /// Removes one tunnel (its client closed it); an emptied group is freed at once.
    pub(crate) fn leave(&mut self, session: u64, tunnel: u32) {
        self.remove_members(|m| (m.session, m.tunnel) == (session, tunnel), None);
    }

    /// Removes every tunnel of a session. Groups left empty stay reserved until `until`, or are
    /// freed at once when `until` is `None` (the client said goodbye).
    pub(crate) fn end_session(&mut self, session: u64, until: Option<Instant>) {
        self.remove_members(|m| m.session == session, until);
    }

    fn remove_members(&mut self, gone: impl Fn(&Member<T>) -> bool, until: Option<Instant>) {
        let mut freed = Vec::new();
        let mut shrunk = Vec::new();
        for (name, group) in &mut self.groups {
            let before = group.members.len();
            group.members.retain(|m| !gone(m));
            if group.members.len() == before {
                continue;
            }
            match (group.members.is_empty(), until) {
                (true, Some(until)) => group.lease_until = Some(until),
                (true, None) => freed.push(name.clone()),
                (false, _) => shrunk.push(name.clone()),
            }
        }
        for name in freed {
            self.free(&name);
        }
        for name in shrunk {
            self.reconcile_hostnames(&name);
        }
    }

    /// Points exactly the hostnames of a live group's members at it, releasing the rest.
    fn reconcile_hostnames(&mut self, name: &str) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        let held: Vec<String> = group
            .members
            .iter()
            .flat_map(|m| m.hostnames.iter().cloned())
            .collect();
        let (kept, dropped): (Vec<String>, Vec<String>) =
            group.hostnames.drain(..).partition(|h| held.contains(h));
        group.hostnames = kept;
        for host in dropped {
            self.hostnames.remove(&host);
        }
    }

    /// True while tunnel `tunnel` of `session` is a healthy member of the group called `name`
    /// (a kept stream to it may be reused).
    pub(crate) fn is_member(&self, name: &str, session: u64, tunnel: u32) -> bool {
        self.groups.get(name).is_some_and(|g| {
            g.members
                .iter()
                .any(|m| (m.session, m.tunnel) == (session, tunnel) && m.healthy)
        })
    }

    /// Records a member's health check; returns false when no such member exists.
    pub(crate) fn set_health(&mut self, session: u64, tunnel: u32, healthy: bool) -> bool {
        let mut found = false;
        for group in self.groups.values_mut() {
            for m in &mut group.members {
                if (m.session, m.tunnel) == (session, tunnel) {
                    m.healthy = healthy;
                    found = true;
                }
            }
        }
        found
    }

    /// Frees names whose lease ended by `now`; returns them.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.lease_until.is_some_and(|t| t <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &expired {
            self.free(name);
        }
        expired
    }

    /// Frees every name `identity` owns, in use or leased (the identity was removed); returns
    /// them.
    pub(crate) fn release_owner(&mut self, identity: &str) -> Vec<String> {
        let owned: Vec<String> = (self.groups.iter())
            .filter(|(_, g)| g.owner == identity)
            .map(|(n, _)| n.clone())
            .collect();
        for name in &owned {
            self.free(name);
        }
        owned
    }

    fn free(&mut self, name: &str) {
        if let Some(group) = self.groups.remove(name) {
            for host in group.hostnames {
                self.hostnames.remove(&host);
            }
        }
    }

    /// Number of names in use or leased.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// The traffic counters of the group called `name`.
    pub(crate) fn stats(&self, name: &str) -> Option<Arc<TunnelStats>> {
        self.groups.get(name).map(|g| g.stats.clone())
    }

    /// Every name, for the admin API: owner, hostnames, members, and whether it is leased.
    pub(crate) fn names(&self) -> Vec<NameInfo> {
        let mut all: Vec<NameInfo> = self
            .groups
            .iter()
            .map(|(name, g)| NameInfo {
                name: name.clone(),
                owner: g.owner.clone(),
                hostnames: g.hostnames.clone(),
                leased: g.lease_until.is_some(),
                members: g
                    .members
                    .iter()
                    .map(|m| MemberInfo {
                        client: format!("{:016x}", m.session),
                        tunnel: m.tunnel,
                        target: m.target.clone(),
                        tags: m.tags.clone(),
                        passthrough: m.passthrough,
                        healthy: m.healthy,
                    })
                    .collect(),
                stats: g.stats.clone(),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Resolves a visitor's host against the custom hostnames and the base `domains`:
    /// `host` itself, `<name>.<domain>`, or `<tag>.<name>.<domain>`.
    pub(crate) fn resolve_host(&self, host: &str, domains: &[String]) -> Option<Resolved> {
        if let Some(name) = self.hostnames.get(host) {
            return Some(Resolved {
                name: name.clone(),
                selector: Selector::Any,
                prefix_len: 0,
            });
        }
        let labels = domains.iter().find_map(|d| {
            host.strip_suffix(d.as_str())
                .and_then(|h| h.strip_suffix('.'))
                .filter(|h| !h.is_empty())
        })?;
        let (selector, name) = match labels.split_once('.') {
            None => (Selector::Any, labels),
            Some((tag, name)) if !name.contains('.') => (Selector::Tag(tag.to_owned()), name),
            Some(_) => return None,
        };
        Some(Resolved {
            name: name.to_owned(),
            selector,
            prefix_len: 0,
        })
    }

    /// Resolves a request path when the edge has no domain: `/<name>/…`, or `/~<tag>/<name>/…`
    /// for a tag or client id (a name never starts with `~`, so the two cannot be confused).
    pub(crate) fn resolve_path(&self, path: &str) -> Option<Resolved> {
        let mut segments = path.strip_prefix('/')?.splitn(3, '/');
        let first = segments.next().filter(|s| !s.is_empty())?;
        let Some(tag) = first.strip_prefix('~') else {
            return self.groups.contains_key(first).then(|| Resolved {
                name: first.to_owned(),
                selector: Selector::Any,
                prefix_len: 1 + first.len(),
            });
        };
        let name = segments.next().filter(|s| self.groups.contains_key(*s))?;
        Some(Resolved {
            name: name.to_owned(),
            selector: Selector::Tag(tag.to_owned()),
            prefix_len: 2 + first.len() + name.len(),
        })
    }

    /// Picks the next member of `resolved`'s group that matches its selector and serves
    /// `passthrough` (TLS passed through) or plain HTTP.
    pub(crate) fn pick(
        &mut self,
        resolved: &Resolved,
        passthrough: bool,
    ) -> Result<Member<T>, Miss> {
        let group = self.groups.get_mut(&resolved.name).ok_or(Miss::Unknown)?;
        if passthrough && !group.passthrough {
            // Not a passthrough name: the HTTPS listener may terminate TLS for it.
            return Err(Miss::Unknown);
        }
        // A tag slot of 16 hex digits may name one client; read it once, not per member.
        let client_id = match &resolved.selector {
            Selector::Tag(t) if t.len() == 16 => u64::from_str_radix(t, 16).ok(),
            _ => None,
        };
        let matches = |m: &&Member<T>| {
            m.healthy
                && m.passthrough == passthrough
                && match &resolved.selector {
                    Selector::Any => true,
                    Selector::Tag(t) => m.tags.contains(t) || client_id == Some(m.session),
                }
        };
        let count = group.members.iter().filter(matches).count();
        if count == 0 {
            return Err(Miss::Offline(resolved.name.clone()));
        }
        let index = group.next % count;
        group.next = group.next.wrapping_add(1);
        group
            .members
            .iter()
            .filter(matches)
            .nth(index)
            .cloned()
            .ok_or_else(|| Miss::Offline(resolved.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn member(session: u64, tunnel: u32, tags: &[&str]) -> Member<u64> {
        Member {
            session,
            tunnel,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            passthrough: false,
            hostnames: Vec::new(),
            healthy: true,
            target: String::new(),
            value: session,
        }
    }

    fn hosted(mut m: Member<u64>, hosts: &[String]) -> Member<u64> {
        m.hostnames = hosts.to_vec();
        m
    }

    fn no_random() -> String {
        unreachable!("a name was given")
    }

    fn domains() -> Vec<String> {
        vec!["example.com".into()]
    }

    fn pick(t: &mut HttpRoutes<u64>, host: &str) -> Result<u64, Miss> {
        let resolved = t.resolve_host(host, &domains()).ok_or(Miss::Unknown)?;
        t.pick(&resolved, false).map(|m| m.value)
    }

    #[test]
    fn same_identity_forms_a_group_served_round_robin() {
        let mut t = HttpRoutes::new();
        for s in 1..=3 {
            t.claim("alice", Some("app"), member(s, 0, &[]), no_random)
                .unwrap();
        }
        let picks: Vec<u64> = (0..6)
            .map(|_| pick(&mut t, "app.example.com").unwrap())
            .collect();
        assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn another_identity_cannot_take_a_name_or_hostname() {
        let mut t = HttpRoutes::new();
        let hosts = vec!["shop.example.org".to_string()];
        t.claim(
            "alice",
            Some("app"),
            hosted(member(1, 0, &[]), &hosts),
            no_random,
        )
        .unwrap();
        assert_eq!(
            t.claim("bob", Some("app"), member(2, 0, &[]), no_random),
            Err(Refusal::NameTaken("app".into()))
        );
        assert_eq!(
            t.claim(
                "bob",
                Some("other"),
                hosted(member(2, 0, &[]), &hosts),
                no_random
            ),
            Err(Refusal::NameTaken("shop.example.org".into()))
        );
        // The refused claim left nothing behind.
        assert_eq!(pick(&mut t, "other.example.com"), Err(Miss::Unknown));
        assert_eq!(pick(&mut t, "shop.example.org"), Ok(1));
    }

    #[test]
    fn random_names_skip_taken_ones() {
        let mut t = HttpRoutes::new();
        t.claim("alice", Some("aaaa"), member(1, 0, &[]), no_random)
            .unwrap();
        let mut draws = vec!["bbbb".to_string(), "aaaa".to_string()];
        let name = t
            .claim("bob", None, member(2, 0, &[]), || draws.pop().unwrap())
            .unwrap();
        assert_eq!(name, "bbbb");
    }

    #[test]
    fn tags_and_client_ids_select_members() {
        let mut t = HttpRoutes::new();
        t.claim("a", Some("app"), member(0x11, 0, &["eu"]), no_random)
            .unwrap();
        t.claim("a", Some("app"), member(0x22, 0, &["us"]), no_random)
            .unwrap();
        for _ in 0..3 {
            assert_eq!(pick(&mut t, "eu.app.example.com"), Ok(0x11));
            assert_eq!(pick(&mut t, "0000000000000022.app.example.com"), Ok(0x22));
        }
        assert_eq!(
            pick(&mut t, "asia.app.example.com"),
            Err(Miss::Offline("app".into()))
        );
        assert_eq!(pick(&mut t, "a.b.app.example.com"), Err(Miss::Unknown));
        assert_eq!(pick(&mut t, "app.example.net"), Err(Miss::Unknown));
    }

    #[test]
    fn a_lost_member_leaves_at_once_and_the_name_is_leased() {
        let mut t = HttpRoutes::new();
        let now = Instant::now();
        t.claim("alice", Some("app"), member(1, 0, &[]), no_random)
            .unwrap();
        t.claim("alice", Some("app"), member(2, 0, &[]), no_random)
            .unwrap();
        t.end_session(1, Some(now + Duration::from_secs(30)));
        for _ in 0..3 {
            assert_eq!(pick(&mut t, "app.example.com"), Ok(2));
        }
        t.end_session(2, Some(now + Duration::from_secs(30)));
        assert_eq!(
            pick(&mut t, "app.example.com"),
            Err(Miss::Offline("app".into()))
        );
        // Leased: only its owner may come back for it.
        assert!(
            t.claim("bob", Some("app"), member(3, 0, &[]), no_random)
                .is_err()
        );
        assert!(t.expire(now + Duration::from_secs(29)).is_empty());
        assert_eq!(t.expire(now + Duration::from_secs(30)), vec!["app"]);
        t.claim("bob", Some("app"), member(3, 0, &[]), no_random)
            .unwrap();
    }

    #[test]
    fn the_owner_takes_a_leased_name_back_with_its_hostnames() {
        let mut t = HttpRoutes::new();
        let hosts = vec!["shop.example.org".to_string()];
        t.claim(
            "alice",
            Some("app"),
            hosted(member(1, 0, &[]), &hosts),
            no_random,
        )
        .unwrap();
        t.end_session(1, Some(Instant::now() + Duration::from_secs(30)));
        assert_eq!(
            pick(&mut t, "shop.example.org"),
            Err(Miss::Offline("app".into()))
        );
        t.claim(
            "alice",
            Some("app"),
            hosted(member(5, 0, &[]), &hosts),
            no_random,
        )
        .unwrap();
        assert_eq!(pick(&mut t, "shop.example.org"), Ok(5));
        // A leased group is not expired once it has members again.
        assert!(
            t.expire(Instant::now() + Duration::from_secs(60))
                .is_empty()
        );
    }

    #[test]
    fn goodbye_and_closing_free_names_at_once() {
        let mut t = HttpRoutes::new();
        let hosts = vec!["shop.example.org".to_string()];
        t.claim(
            "alice",
            Some("app"),
            hosted(member(1, 0, &[]), &hosts),
            no_random,
        )
        .unwrap();
        t.claim("alice", Some("web"), member(1, 1, &[]), no_random)
            .unwrap();
        t.leave(1, 1);
        assert_eq!(pick(&mut t, "web.example.com"), Err(Miss::Unknown));
        t.end_session(1, None);
        assert_eq!(t.len(), 0);
        assert_eq!(pick(&mut t, "shop.example.org"), Err(Miss::Unknown));
    }

    #[test]
    fn passthrough_and_plain_members_are_picked_apart() {
        let mut t = HttpRoutes::new();
        let mut tls = member(1, 0, &[]);
        tls.passthrough = true;
        t.claim("a", Some("app"), tls, no_random).unwrap();
        assert_eq!(
            pick(&mut t, "app.example.com"),
            Err(Miss::Offline("app".into()))
        );
        let resolved = t.resolve_host("app.example.com", &domains()).unwrap();
        assert_eq!(t.pick(&resolved, true).map(|m| m.value), Ok(1));
    }

    #[test]
    fn paths_resolve_names_then_tags() {
        let mut t = HttpRoutes::new();
        t.claim("a", Some("app"), member(1, 0, &["eu"]), no_random)
            .unwrap();
        let r = t.resolve_path("/app/index.html").unwrap();
        assert_eq!((r.name.as_str(), r.prefix_len), ("app", 4));
        assert_eq!(r.selector, Selector::Any);
        let r = t.resolve_path("/~eu/app/x?y").unwrap();
        assert_eq!((r.name.as_str(), r.prefix_len), ("app", 8));
        assert_eq!(r.selector, Selector::Tag("eu".into()));
        assert_eq!(t.resolve_path("/app").unwrap().prefix_len, 4);
        assert!(t.resolve_path("/nope/x").is_none());
        // Without the `~`, a first segment is always a name, never a tag.
        assert!(t.resolve_path("/eu/app/x").is_none());
        assert!(t.resolve_path("/").is_none());
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use std::time::Duration;

    fn member(session: u64, tunnel: u32, hosts: &[&str], passthrough: bool) -> Member<u64> {
        Member {
            session,
            tunnel,
            tags: Vec::new(),
            passthrough,
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            healthy: true,
            target: String::new(),
            value: session,
        }
    }

    #[test]
    fn hostnames_follow_the_members_that_hold_them() {
        let mut t = HttpRoutes::new();
        let none = || -> String { unreachable!() };
        t.claim("a", Some("app"), member(1, 0, &[], false), none)
            .unwrap();
        for round in 0..3 {
            let host = format!("h{round}.example.org");
            t.claim("a", Some("app"), member(1, 1, &[&host], false), none)
                .unwrap();
            assert!(t.resolve_host(&host, &[]).is_some());
            t.leave(1, 1);
            // Gone with its member: nothing piles up while the group lives on.
            assert!(t.resolve_host(&host, &[]).is_none(), "{host}");
        }
        assert_eq!(t.hostnames.len(), 0);
    }

    #[test]
    fn a_leased_groups_hostnames_wait_for_its_owner_then_follow_the_new_members() {
        let mut t = HttpRoutes::new();
        let none = || -> String { unreachable!() };
        t.claim(
            "a",
            Some("app"),
            member(1, 0, &["x.org", "y.org"], false),
            none,
        )
        .unwrap();
        t.end_session(1, Some(Instant::now() + Duration::from_secs(30)));
        assert!(
            t.resolve_host("y.org", &[]).is_some(),
            "kept during the lease"
        );
        t.claim("a", Some("app"), member(2, 0, &["x.org"], false), none)
            .unwrap();
        assert!(t.resolve_host("x.org", &[]).is_some());
        assert!(
            t.resolve_host("y.org", &[]).is_none(),
            "no member holds it any more"
        );
    }

    #[test]
    fn a_passthrough_name_stays_passthrough_while_its_clients_are_away() {
        let mut t = HttpRoutes::new();
        let none = || -> String { unreachable!() };
        t.claim("a", Some("tls"), member(1, 0, &[], true), none)
            .unwrap();
        t.claim("a", Some("web"), member(1, 1, &[], false), none)
            .unwrap();
        t.end_session(1, Some(Instant::now() + Duration::from_secs(30)));
        let tls = t
            .resolve_host("tls.example.com", &["example.com".into()])
            .unwrap();
        assert_eq!(
            t.pick(&tls, true).map(|m| m.value),
            Err(Miss::Offline("tls".into()))
        );
        // A name that never passed TLS through may be terminated by the edge.
        let web = t
            .resolve_host("web.example.com", &["example.com".into()])
            .unwrap();
        assert_eq!(t.pick(&web, true).map(|m| m.value), Err(Miss::Unknown));
    }

    #[test]
    fn an_unhealthy_member_is_skipped_until_it_recovers() {
        let mut t = HttpRoutes::new();
        let none = || -> String { unreachable!() };
        t.claim("a", Some("app"), member(1, 0, &[], false), none)
            .unwrap();
        t.claim("a", Some("app"), member(2, 0, &[], false), none)
            .unwrap();
        let app = t
            .resolve_host("app.example.com", &["example.com".into()])
            .unwrap();
        assert!(t.set_health(1, 0, false));
        assert!(
            !t.is_member("app", 1, 0),
            "a kept stream to it is not reused"
        );
        for _ in 0..4 {
            assert_eq!(t.pick(&app, false).map(|m| m.value), Ok(2));
        }
        t.set_health(2, 0, false);
        assert_eq!(
            t.pick(&app, false).map(|m| m.value),
            Err(Miss::Offline("app".into()))
        );
        t.set_health(1, 0, true);
        assert_eq!(t.pick(&app, false).map(|m| m.value), Ok(1));
        assert!(!t.set_health(9, 0, true), "no such member");
    }

    #[test]
    fn membership_is_checked_for_kept_streams() {
        let mut t = HttpRoutes::new();
        let none = || -> String { unreachable!() };
        t.claim("a", Some("app"), member(1, 0, &[], false), none)
            .unwrap();
        assert!(t.is_member("app", 1, 0));
        t.leave(1, 0);
        t.claim("b", Some("app"), member(2, 0, &[], false), none)
            .unwrap();
        assert!(!t.is_member("app", 1, 0));
        assert!(t.is_member("app", 2, 0));
    }
}
