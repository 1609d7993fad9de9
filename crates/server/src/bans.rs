//! Banning sources that keep failing their handshake on the control port: a state machine with
//! no I/O and no clock of its own (every call takes `now`), so it is tested with made-up
//! instants.
//!
//! A source is an IPv4 address, or an IPv6 /64 network (one host commonly holds a whole /64,
//! so counting single IPv6 addresses would let it try forever). Its failures count from the
//! first one until the policy's window has passed; reaching `after` of them bans the source for
//! the policy's duration. A successful login resets the count but does not lift a ban (a
//! handshake that began before the ban may still finish). The table holds at most `cap`
//! sources: when it is full, the source that failed longest ago is forgotten first, and active
//! bans only once no other entry is left, so a flood of new sources cannot grow memory and can
//! only push out the oldest bans.

use crate::config::BanPolicy;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Sources tracked at once, by default.
pub(crate) const DEFAULT_CAP: usize = 65_536;

/// Longer bans are cut to this (a clock cannot count to "forever").
const LONGEST_BAN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Whom a failure is counted against: an IPv4 address, or the /64 network of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// One IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl Source {
    /// The source `ip` belongs to.
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6((v6.to_bits() >> 64) as u64),
        }
    }

    /// Reads a source as the admin API is given it: an address (an IPv6 address stands for
    /// its /64), optionally written with its prefix, `/32` or `/64`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().ok()?;
        let source = Source::of(ip);
        match (source, prefix) {
            (_, None) | (Source::V4(_), Some("32")) | (Source::V6(_), Some("64")) => Some(source),
            _ => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(v4) => write!(f, "{v4}"),
            Source::V6(net) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*net) << 64)),
        }
    }
}

/// An active ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ban {
    /// When it began.
    pub since: Instant,
    /// When it ends.
    pub until: Instant,
    /// The failures that started it.
    pub failures: u32,
}

/// What a failed handshake did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Not counted: banning is off, the source is exempt, or already banned.
    Ignored,
    /// Counted; this many failures within the window so far.
    Counted(u32),
    /// This failure started a ban.
    Banned(Ban),
}

/// Where an entry stands in the eviction order: entries without a ban first, then oldest
/// first; the sequence number tells apart entries touched at the same instant.
type Rank = (bool, Instant, u64);

#[derive(Debug)]
struct Entry {
    /// Failures since `window_start`.
    failures: u32,
    window_start: Instant,
    ban: Option<Ban>,
    rank: Rank,
}

/// Failures and bans by source, bounded.
#[derive(Debug)]
pub(crate) struct BanTable {
    policy: BanPolicy,
    cap: usize,
    entries: HashMap<Source, Entry>,
    order: BTreeMap<Rank, Source>,
    next_seq: u64,
}

impl BanTable {
    /// An empty table that tracks at most `cap` sources (at least one).
    pub(crate) fn new(policy: BanPolicy, cap: usize) -> Self {
        Self {
            policy,
            cap: cap.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Applies a new policy: turning banning off forgets everything, and sources that are now
    /// exempt are forgotten. Running bans keep their end.
    pub(crate) fn set_policy(&mut self, policy: BanPolicy) {
        self.policy = policy;
        if !self.policy.enabled() {
            self.entries.clear();
            self.order.clear();
            return;
        }
        let exempt: Vec<Source> = self
            .entries
            .keys()
            .filter(|s| self.policy.exempts(representative(**s)))
            .copied()
            .collect();
        for source in exempt {
            self.remove(source);
        }
    }

    /// True when connections from `ip` are to be closed at once. An expired ban is forgotten
    /// here.
    pub(crate) fn is_banned(&mut self, ip: IpAddr, now: Instant) -> bool {
        // An exempt host inside a banned IPv6 /64 still gets in.
        if self.policy.exempts(ip) {
            return false;
        }
        let source = Source::of(ip);
        let Some(ban) = self.entries.get(&source).and_then(|e| e.ban) else {
            return false;
        };
        if now < ban.until {
            return true;
        }
        self.remove(source);
        false
    }

    /// Counts a failed handshake from `ip`.
    pub(crate) fn failed(&mut self, ip: IpAddr, now: Instant) -> Failed {
        if !self.policy.enabled() || self.policy.exempts(ip) {
            return Failed::Ignored;
        }
        let source = Source::of(ip);
        let (window, after, duration) =
            (self.policy.window, self.policy.after, self.policy.duration);
        let mut entry = match self.take(source) {
            Some(e) if e.ban.is_some_and(|b| now < b.until) => {
                self.put(source, e, now);
                return Failed::Ignored;
            }
            Some(e)
                if e.ban.is_none() && now.saturating_duration_since(e.window_start) < window =>
            {
                e
            }
            // New, past its window, or after a ban that ended: a fresh count.
            _ => Entry {
                failures: 0,
                window_start: now,
                ban: None,
                rank: (false, now, 0),
            },
        };
        entry.failures = entry.failures.saturating_add(1);
        let outcome = if entry.failures >= after {
            let ban = Ban {
                since: now,
                until: now + duration.min(LONGEST_BAN),
                failures: entry.failures,
            };
            entry.ban = Some(ban);
            Failed::Banned(ban)
        } else {
            Failed::Counted(entry.failures)
        };
        self.put(source, entry, now);
        outcome
    }

    /// A successful login from `ip`: its failures are forgotten; an active ban stays.
    pub(crate) fn succeeded(&mut self, ip: IpAddr, now: Instant) {
        let source = Source::of(ip);
        match self.take(source) {
            Some(mut e) if e.ban.is_some_and(|b| now < b.until) => {
                e.failures = 0;
                self.put(source, e, now);
            }
            _ => {}
        }
    }

    /// Lifts the active ban of `source`; false when there was none.
    pub(crate) fn lift(&mut self, source: Source, now: Instant) -> bool {
        let active = (self.entries.get(&source))
            .and_then(|e| e.ban)
            .is_some_and(|b| now < b.until);
        if active {
            self.remove(source);
        }
        active
    }

    /// The active bans, oldest first. Expired bans and failure counts past their window are
    /// forgotten on the way.
    pub(crate) fn active(&mut self, now: Instant) -> Vec<(Source, Ban)> {
        let window = self.policy.window;
        let stale: Vec<Source> = (self.entries.iter())
            .filter(|(_, e)| match e.ban {
                Some(ban) => now >= ban.until,
                None => now.saturating_duration_since(e.window_start) >= window,
            })
            .map(|(s, _)| *s)
            .collect();
        for source in stale {
            self.remove(source);
        }
        let mut bans: Vec<(Source, Ban)> = (self.entries.iter())
            .filter_map(|(s, e)| Some((*s, e.ban?)))
            .collect();
        bans.sort_by_key(|(_, ban)| ban.since);
        bans
    }

    /// Sources tracked now (with failures or a ban).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes an entry out of the table (to be put back with [`BanTable::put`]).
    fn take(&mut self, source: Source) -> Option<Entry> {
        let entry = self.entries.remove(&source)?;
        self.order.remove(&entry.rank);
        Some(entry)
    }

    /// Puts an entry in at its new rank, first forgetting the lowest-ranked entry when full.
    fn put(&mut self, source: Source, mut entry: Entry, now: Instant) {
        if self.entries.len() >= self.cap
            && let Some((_, evicted)) = self.order.pop_first()
        {
            self.entries.remove(&evicted);
        }
        let touched = entry.ban.map_or(now, |b| b.since);
        entry.rank = (entry.ban.is_some(), touched, self.next_seq);
        self.next_seq += 1;
        self.order.insert(entry.rank, source);
        self.entries.insert(source, entry);
    }

    fn remove(&mut self, source: Source) {
        self.take(source);
    }
}

/// An address inside `source`, to test it against exempt networks.
fn representative(source: Source) -> IpAddr {
    match source {
        Source::V4(v4) => IpAddr::V4(v4),
        Source::V6(net) => IpAddr::V6(Ipv6Addr::from_bits(u128::from(net) << 64)),
    }
}

#[cfg(test)]
mod tests;
