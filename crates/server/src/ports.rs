//! The port table: which public endpoint belongs to which identity, and in what state.
//!
//! An endpoint (a TCP or a UDP port; the two are separate namespaces) is free (absent from the
//! table), in use by a session, or leased: its session's carrier was lost and the identity has
//! `lease_grace` to come back for it. Only the owning identity may take a leased endpoint; anyone
//! may take a free one within their allowance. The table decides; the caller binds the socket
//! and reports back, so this stays pure and testable.

use crate::config::PortSet;
use burrow_proto::msg::{Protocol, Refusal};
use std::collections::HashMap;
use std::time::Instant;

/// A public endpoint.
pub type Endpoint = (Protocol, u16);

/// What holds an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A live session's tunnel uses it.
    InUse {
        /// The session.
        session: u64,
    },
    /// The owner's carrier was lost; reserved until the instant.
    Leased {
        /// When the reservation ends.
        until: Instant,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    identity: String,
    hold: Hold,
}

/// The server's public endpoints.
#[derive(Debug)]
pub struct PortTable {
    range: PortSet,
    entries: HashMap<Endpoint, Entry>,
}

/// The result of a successful claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The port.
    pub port: u16,
    /// True when the identity already held the endpoint (a lease or another session): its
    /// socket exists and is handed over instead of bound anew.
    pub taken_over: bool,
}

impl PortTable {
    /// A table over the server's public range.
    pub fn new(range: PortSet) -> Self {
        Self {
            range,
            entries: HashMap::new(),
        }
    }

    /// How many ports of the range are neither in use nor leased, for `protocol`.
    pub fn free_count(&self, protocol: Protocol) -> usize {
        self.range
            .iter()
            .filter(|&p| !self.entries.contains_key(&(protocol, p)))
            .count()
    }

    /// Every endpoint in use or leased, with its identity and hold, in port order.
    pub fn entries(&self) -> Vec<(Endpoint, String, Hold)> {
        let mut all: Vec<(Endpoint, String, Hold)> = self
            .entries
            .iter()
            .map(|(&endpoint, e)| (endpoint, e.identity.clone(), e.hold))
            .collect();
        all.sort_by_key(|(endpoint, _, _)| *endpoint);
        all
    }

    /// The public range.
    pub fn range(&self) -> &PortSet {
        &self.range
    }

    /// The holder of an endpoint, if any.
    pub fn hold(&self, endpoint: Endpoint) -> Option<Hold> {
        self.entries.get(&endpoint).map(|e| e.hold)
    }

    /// Claims a `protocol` port for `session` of `identity`: `want` names one, or `None` takes
    /// one of the identity's leased ports or else the first free port of `allowed` that `skip`
    /// does not exclude (ports the caller found busy).
    pub fn claim(
        &mut self,
        protocol: Protocol,
        identity: &str,
        allowed: Option<&PortSet>,
        want: Option<u16>,
        session: u64,
        skip: &[u16],
    ) -> Result<Claim, Refusal> {
        let permitted = |p: u16| self.range.contains(p) && allowed.is_none_or(|a| a.contains(p));
        let port = match want {
            Some(p) if !permitted(p) => return Err(Refusal::PortDenied(p)),
            Some(p) => p,
            None => self
                .leased_by(protocol, identity, &permitted)
                .or_else(|| {
                    let candidates = allowed.unwrap_or(&self.range);
                    candidates.iter().find(|&p| {
                        permitted(p)
                            && !self.entries.contains_key(&(protocol, p))
                            && !skip.contains(&p)
                    })
                })
                .ok_or(Refusal::NoFreePort)?,
        };
        let taken_over = match self.entries.get(&(protocol, port)) {
            None => false,
            Some(e) if e.identity == identity => true,
            Some(_) => return Err(Refusal::PortLeased(port)),
        };
        let entry = Entry {
            identity: identity.to_owned(),
            hold: Hold::InUse { session },
        };
        self.entries.insert((protocol, port), entry);
        Ok(Claim { port, taken_over })
    }

    /// A port `identity` holds as a lease that it may still claim (a reload may have narrowed
    /// what it may claim since).
    fn leased_by(
        &self,
        protocol: Protocol,
        identity: &str,
        permitted: &dyn Fn(u16) -> bool,
    ) -> Option<u16> {
        self.entries
            .iter()
            .filter(|((proto, p), e)| {
                *proto == protocol
                    && e.identity == identity
                    && matches!(e.hold, Hold::Leased { .. })
                    && permitted(*p)
            })
            .map(|(&(_, p), _)| p)
            .min()
    }

    /// Frees an endpoint at once (tunnel closed on purpose, or its socket could not be bound).
    pub fn release(&mut self, endpoint: Endpoint) {
        self.entries.remove(&endpoint);
    }

    /// Frees every endpoint `identity` holds, in use or leased (the identity was removed);
    /// returns them so the caller closes their sockets.
    pub fn release_identity(&mut self, identity: &str) -> Vec<Endpoint> {
        let held: Vec<Endpoint> = (self.entries.iter())
            .filter(|(_, e)| e.identity == identity)
            .map(|(&endpoint, _)| endpoint)
            .collect();
        for endpoint in &held {
            self.entries.remove(endpoint);
        }
        held
    }

    /// Turns every endpoint `session` uses into a lease that ends at `until`; returns them.
    pub fn lease_session(&mut self, session: u64, until: Instant) -> Vec<Endpoint> {
        let mut leased = Vec::new();
        for (&endpoint, e) in &mut self.entries {
            if e.hold == (Hold::InUse { session }) {
                e.hold = Hold::Leased { until };
                leased.push(endpoint);
            }
        }
        leased
    }

    /// Removes leases that ended by `now`; returns their endpoints so the caller closes sockets.
    pub fn expire(&mut self, now: Instant) -> Vec<Endpoint> {
        let expired: Vec<Endpoint> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.hold, Hold::Leased { until } if until <= now))
            .map(|(&endpoint, _)| endpoint)
            .collect();
        for endpoint in &expired {
            self.entries.remove(endpoint);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TCP: Protocol = Protocol::Tcp;
    const UDP: Protocol = Protocol::Udp;

    fn table() -> PortTable {
        PortTable::new("100-104".parse().unwrap())
    }

    #[test]
    fn releasing_an_identity_frees_its_ports_in_use_and_leased() {
        let mut t = table();
        t.claim(TCP, "a", None, Some(100), 1, &[]).unwrap();
        t.claim(UDP, "a", None, Some(101), 2, &[]).unwrap();
        t.lease_session(2, Instant::now() + Duration::from_secs(30));
        t.claim(TCP, "b", None, Some(102), 3, &[]).unwrap();
        let mut freed = t.release_identity("a");
        freed.sort();
        assert_eq!(freed, vec![(TCP, 100), (UDP, 101)]);
        assert_eq!(t.hold((TCP, 102)), Some(Hold::InUse { session: 3 }));
        // Another identity may now take the freed port.
        assert_eq!(
            t.claim(TCP, "b", None, Some(100), 3, &[]).unwrap().port,
            100
        );
    }

    #[test]
    fn a_lease_outside_a_narrowed_allowance_is_not_handed_back() {
        let mut t = table();
        t.claim(TCP, "a", None, Some(100), 1, &[]).unwrap();
        t.lease_session(1, Instant::now() + Duration::from_secs(30));
        // A reload narrowed `a` to 103-104: asking for any port must not return its lease.
        let narrowed: PortSet = "103-104".parse().unwrap();
        let claim = t.claim(TCP, "a", Some(&narrowed), None, 2, &[]).unwrap();
        assert_eq!((claim.port, claim.taken_over), (103, false));
        // With the whole range allowed, the lease comes back.
        let again = t.claim(TCP, "a", None, None, 2, &[]).unwrap();
        assert_eq!((again.port, again.taken_over), (100, true));
    }

    #[test]
    fn specific_and_any_port() {
        let mut t = table();
        assert_eq!(
            t.claim(TCP, "a", None, Some(102), 1, &[]),
            Ok(Claim {
                port: 102,
                taken_over: false
            })
        );
        assert_eq!(t.claim(TCP, "a", None, None, 1, &[]).unwrap().port, 100);
        assert_eq!(t.claim(TCP, "a", None, None, 1, &[101]).unwrap().port, 103);
        assert_eq!(t.free_count(TCP), 2);
        assert_eq!(
            t.claim(TCP, "a", None, Some(99), 1, &[]),
            Err(Refusal::PortDenied(99))
        );
    }

    #[test]
    fn tcp_and_udp_ports_are_separate() {
        let mut t = table();
        t.claim(TCP, "a", None, Some(100), 1, &[]).unwrap();
        assert_eq!(
            t.claim(UDP, "b", None, Some(100), 2, &[]),
            Ok(Claim {
                port: 100,
                taken_over: false
            })
        );
        assert_eq!(t.free_count(TCP), 4);
        assert_eq!(t.free_count(UDP), 4);
        assert_eq!(
            t.claim(UDP, "c", None, Some(100), 3, &[]),
            Err(Refusal::PortLeased(100))
        );
    }

    #[test]
    fn allowance_limits_claims() {
        let mut t = table();
        let allowed: PortSet = "101".parse().unwrap();
        assert_eq!(
            t.claim(TCP, "a", Some(&allowed), Some(102), 1, &[]),
            Err(Refusal::PortDenied(102))
        );
        assert_eq!(
            t.claim(TCP, "a", Some(&allowed), None, 1, &[])
                .unwrap()
                .port,
            101
        );
        assert_eq!(
            t.claim(TCP, "a", Some(&allowed), None, 1, &[]),
            Err(Refusal::NoFreePort)
        );
    }

    #[test]
    fn leases_keep_ports_for_their_identity_until_expiry() {
        let mut t = table();
        let now = Instant::now();
        let grace = Duration::from_secs(30);
        t.claim(TCP, "a", None, Some(103), 1, &[]).unwrap();
        assert_eq!(t.lease_session(1, now + grace), vec![(TCP, 103)]);
        // Another identity cannot take it, by number or by scan.
        assert_eq!(
            t.claim(TCP, "b", None, Some(103), 2, &[]),
            Err(Refusal::PortLeased(103))
        );
        assert_ne!(t.claim(TCP, "b", None, None, 2, &[]).unwrap().port, 103);
        // Nothing expires early.
        assert!(t.expire(now + grace - Duration::from_millis(1)).is_empty());
        // The owner comes back: asking for any port returns the leased one.
        assert_eq!(
            t.claim(TCP, "a", None, None, 3, &[]),
            Ok(Claim {
                port: 103,
                taken_over: true
            })
        );
        assert_eq!(t.hold((TCP, 103)), Some(Hold::InUse { session: 3 }));
    }

    #[test]
    fn expired_leases_free_the_port() {
        let mut t = table();
        let now = Instant::now();
        t.claim(UDP, "a", None, Some(100), 1, &[]).unwrap();
        t.lease_session(1, now);
        assert_eq!(t.expire(now), vec![(UDP, 100)]);
        assert_eq!(
            t.claim(UDP, "b", None, Some(100), 2, &[]).unwrap().port,
            100
        );
    }

    #[test]
    fn same_identity_takes_over_from_a_stale_session() {
        let mut t = table();
        t.claim(TCP, "a", None, Some(100), 1, &[]).unwrap();
        assert_eq!(
            t.claim(TCP, "a", None, Some(100), 2, &[]),
            Ok(Claim {
                port: 100,
                taken_over: true
            })
        );
        // The stale session's end no longer leases the port.
        assert!(t.lease_session(1, Instant::now()).is_empty());
        assert_eq!(
            t.claim(TCP, "b", None, Some(100), 3, &[]),
            Err(Refusal::PortLeased(100))
        );
    }
}
