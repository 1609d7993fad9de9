//! The port table: which public port belongs to which identity, and in what state.
//!
//! A port is free (absent from the table), in use by a session, or leased: its session's carrier
//! was lost and the identity has `lease_grace` to come back for it. Only the owning identity may
//! take a leased port; anyone may take a free one within their allowance. The table decides; the
//! caller binds the listener and reports back, so this stays pure and testable.

use crate::config::PortSet;
use burrow_proto::msg::Refusal;
use std::collections::HashMap;
use std::time::Instant;

/// What holds a port.
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

/// The server's public ports.
#[derive(Debug)]
pub struct PortTable {
    range: PortSet,
    entries: HashMap<u16, Entry>,
}

/// The result of a successful claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The port.
    pub port: u16,
    /// True when the identity already held the port (a lease or another session): its listener
    /// exists and is handed over instead of bound anew.
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

    /// How many ports of the range are neither in use nor leased.
    pub fn free_count(&self) -> usize {
        self.range
            .iter()
            .filter(|p| !self.entries.contains_key(p))
            .count()
    }

    /// The holder of a port, if any.
    pub fn hold(&self, port: u16) -> Option<Hold> {
        self.entries.get(&port).map(|e| e.hold)
    }

    /// Claims a port for `session` of `identity`: `want` names one, or `None` takes one of the
    /// identity's leased ports or else the first free port of `allowed` that `skip` does not
    /// exclude (ports the caller found busy).
    pub fn claim(
        &mut self,
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
                .leased_by(identity)
                .or_else(|| {
                    let candidates = allowed.unwrap_or(&self.range);
                    candidates.iter().find(|&p| {
                        permitted(p) && !self.entries.contains_key(&p) && !skip.contains(&p)
                    })
                })
                .ok_or(Refusal::NoFreePort)?,
        };
        let taken_over = match self.entries.get(&port) {
            None => false,
            Some(e) if e.identity == identity => true,
            Some(_) => return Err(Refusal::PortLeased(port)),
        };
        self.entries.insert(
            port,
            Entry {
                identity: identity.to_owned(),
                hold: Hold::InUse { session },
            },
        );
        Ok(Claim { port, taken_over })
    }

    fn leased_by(&self, identity: &str) -> Option<u16> {
        self.entries
            .iter()
            .filter(|(_, e)| e.identity == identity && matches!(e.hold, Hold::Leased { .. }))
            .map(|(&p, _)| p)
            .min()
    }

    /// Frees a port at once (tunnel closed on purpose, or its listener could not be bound).
    pub fn release(&mut self, port: u16) {
        self.entries.remove(&port);
    }

    /// Turns every port `session` uses into a lease that ends at `until`; returns those ports.
    pub fn lease_session(&mut self, session: u64, until: Instant) -> Vec<u16> {
        let mut ports = Vec::new();
        for (&port, e) in &mut self.entries {
            if e.hold == (Hold::InUse { session }) {
                e.hold = Hold::Leased { until };
                ports.push(port);
            }
        }
        ports
    }

    /// Removes leases that ended by `now`; returns their ports so the caller closes listeners.
    pub fn expire(&mut self, now: Instant) -> Vec<u16> {
        let expired: Vec<u16> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.hold, Hold::Leased { until } if until <= now))
            .map(|(&p, _)| p)
            .collect();
        for p in &expired {
            self.entries.remove(p);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn table() -> PortTable {
        PortTable::new("100-104".parse().unwrap())
    }

    #[test]
    fn specific_and_any_port() {
        let mut t = table();
        assert_eq!(
            t.claim("a", None, Some(102), 1, &[]),
            Ok(Claim {
                port: 102,
                taken_over: false
            })
        );
        assert_eq!(t.claim("a", None, None, 1, &[]).unwrap().port, 100);
        assert_eq!(t.claim("a", None, None, 1, &[101]).unwrap().port, 103);
        assert_eq!(t.free_count(), 2);
        assert_eq!(
            t.claim("a", None, Some(99), 1, &[]),
            Err(Refusal::PortDenied(99))
        );
    }

    #[test]
    fn allowance_limits_claims() {
        let mut t = table();
        let allowed: PortSet = "101".parse().unwrap();
        assert_eq!(
            t.claim("a", Some(&allowed), Some(102), 1, &[]),
            Err(Refusal::PortDenied(102))
        );
        assert_eq!(
            t.claim("a", Some(&allowed), None, 1, &[]).unwrap().port,
            101
        );
        assert_eq!(
            t.claim("a", Some(&allowed), None, 1, &[]),
            Err(Refusal::NoFreePort)
        );
    }

    #[test]
    fn leases_keep_ports_for_their_identity_until_expiry() {
        let mut t = table();
        let now = Instant::now();
        let grace = Duration::from_secs(30);
        t.claim("a", None, Some(103), 1, &[]).unwrap();
        assert_eq!(t.lease_session(1, now + grace), vec![103]);
        // Another identity cannot take it, by number or by scan.
        assert_eq!(
            t.claim("b", None, Some(103), 2, &[]),
            Err(Refusal::PortLeased(103))
        );
        assert_ne!(t.claim("b", None, None, 2, &[]).unwrap().port, 103);
        // Nothing expires early.
        assert!(t.expire(now + grace - Duration::from_millis(1)).is_empty());
        // The owner comes back: asking for any port returns the leased one.
        assert_eq!(
            t.claim("a", None, None, 3, &[]),
            Ok(Claim {
                port: 103,
                taken_over: true
            })
        );
        assert_eq!(t.hold(103), Some(Hold::InUse { session: 3 }));
    }

    #[test]
    fn expired_leases_free_the_port() {
        let mut t = table();
        let now = Instant::now();
        t.claim("a", None, Some(100), 1, &[]).unwrap();
        t.lease_session(1, now);
        assert_eq!(t.expire(now), vec![100]);
        assert_eq!(t.claim("b", None, Some(100), 2, &[]).unwrap().port, 100);
    }

    #[test]
    fn same_identity_takes_over_from_a_stale_session() {
        let mut t = table();
        t.claim("a", None, Some(100), 1, &[]).unwrap();
        assert_eq!(
            t.claim("a", None, Some(100), 2, &[]),
            Ok(Claim {
                port: 100,
                taken_over: true
            })
        );
        // The stale session's end no longer leases the port.
        assert!(t.lease_session(1, Instant::now()).is_empty());
        assert_eq!(
            t.claim("b", None, Some(100), 3, &[]),
            Err(Refusal::PortLeased(100))
        );
    }
}
