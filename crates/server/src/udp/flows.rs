//! The flow table of one UDP tunnel: visitor address ↔ flow id, with idle expiry and a cap.
//!
//! Pure: every method takes the current instant, so expiry is tested without clocks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Flow {
    visitor: SocketAddr,
    last_seen: Instant,
}

/// Flows of one UDP tunnel.
#[derive(Debug)]
pub(crate) struct FlowTable {
    by_visitor: HashMap<SocketAddr, u32>,
    by_id: HashMap<u32, Flow>,
    next_id: u32,
    cap: usize,
    idle: Duration,
}

impl FlowTable {
    pub(crate) fn new(cap: usize, idle: Duration) -> Self {
        Self {
            by_visitor: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 1,
            cap,
            idle,
        }
    }

    /// Whether `visitor` has a flow now.
    pub(crate) fn knows(&self, visitor: SocketAddr) -> bool {
        self.by_visitor.contains_key(&visitor)
    }

    /// The flow of a datagram from `visitor`, created if new; `None` when the table is full.
    pub(crate) fn flow_for(&mut self, visitor: SocketAddr, now: Instant) -> Option<u32> {
        if let Some(&id) = self.by_visitor.get(&visitor) {
            if let Some(flow) = self.by_id.get_mut(&id) {
                flow.last_seen = now;
            }
            return Some(id);
        }
        if self.by_id.len() >= self.cap {
            return None;
        }
        // Ids are never reused while a flow holds one: skip any still in the table after a wrap.
        while self.by_id.contains_key(&self.next_id) || self.next_id == 0 {
            self.next_id = self.next_id.wrapping_add(1);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.by_visitor.insert(visitor, id);
        self.by_id.insert(
            id,
            Flow {
                visitor,
                last_seen: now,
            },
        );
        Some(id)
    }

    /// Where a reply on flow `id` goes; `None` for an unknown or expired flow.
    pub(crate) fn visitor_of(&mut self, id: u32, now: Instant) -> Option<SocketAddr> {
        let flow = self.by_id.get_mut(&id)?;
        flow.last_seen = now;
        Some(flow.visitor)
    }

    /// Forgets flows idle since before `now - idle`; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let idle = self.idle;
        let before = self.by_id.len();
        let by_visitor = &mut self.by_visitor;
        self.by_id.retain(|_, f| {
            let keep = now.saturating_duration_since(f.last_seen) < idle;
            if !keep {
                by_visitor.remove(&f.visitor);
            }
            keep
        });
        before - self.by_id.len()
    }

    /// Flows alive now.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        ([192, 0, 2, 1], port).into()
    }

    #[test]
    fn each_visitor_address_is_one_flow() {
        let now = Instant::now();
        let mut t = FlowTable::new(10, Duration::from_secs(60));
        let a = t.flow_for(addr(1), now).unwrap();
        let b = t.flow_for(addr(2), now).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.flow_for(addr(1), now), Some(a));
        assert_eq!(t.visitor_of(b, now), Some(addr(2)));
        assert_eq!(t.visitor_of(999, now), None);
    }

    #[test]
    fn the_cap_refuses_new_flows_but_serves_old_ones() {
        let now = Instant::now();
        let mut t = FlowTable::new(2, Duration::from_secs(60));
        let a = t.flow_for(addr(1), now).unwrap();
        t.flow_for(addr(2), now).unwrap();
        assert_eq!(t.flow_for(addr(3), now), None);
        assert_eq!(t.flow_for(addr(1), now), Some(a));
    }

    #[test]
    fn idle_flows_expire_and_active_ones_stay() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut t = FlowTable::new(10, idle);
        let quiet = t.flow_for(addr(1), t0).unwrap();
        let busy = t.flow_for(addr(2), t0).unwrap();
        // A reply counts as activity too.
        assert!(t.visitor_of(busy, t0 + Duration::from_secs(50)).is_some());
        assert_eq!(t.expire(t0 + idle - Duration::from_millis(1)), 0);
        assert_eq!(t.expire(t0 + idle), 1);
        assert_eq!(t.visitor_of(quiet, t0 + idle), None);
        assert!(t.visitor_of(busy, t0 + idle).is_some());
        // The forgotten visitor comes back as a new flow.
        assert_ne!(t.flow_for(addr(1), t0 + idle), Some(quiet));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ten_thousand_flows_get_distinct_ids() {
        let now = Instant::now();
        let mut t = FlowTable::new(20_000, Duration::from_secs(60));
        let ids: std::collections::HashSet<u32> = (0..10_000u16)
            .map(|p| t.flow_for(addr(p), now).unwrap())
            .collect();
        assert_eq!(ids.len(), 10_000);
    }
}
