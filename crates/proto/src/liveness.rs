//! Heartbeats as a state machine: feed it what happened and when, it says what to do next.
//!
//! Both sides run one. Every received frame counts as a sign of life; a ping goes out every
//! `interval`; silence longer than `dead_after` means the carrier is gone (a dead link or a NAT
//! that forgot the flow sends no FIN, so only silence reveals it). Round-trip time is measured
//! from our pings to their pongs.

use std::time::{Duration, Instant};

/// Default heartbeat interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default silence after which a carrier is declared dead (the bound is 10 s).
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(7);

/// What the owner of a [`Liveness`] should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing until this instant (or until a frame arrives).
    WaitUntil(Instant),
    /// Send a ping with this sequence number, then ask again.
    SendPing(u64),
    /// The peer has been silent too long: close the carrier.
    Dead,
}

/// Heartbeat bookkeeping for one carrier.
#[derive(Debug, Clone)]
pub struct Liveness {
    interval: Duration,
    dead_after: Duration,
    last_heard: Instant,
    next_ping: Instant,
    seq: u64,
    in_flight: Option<(u64, Instant)>,
    rtt: Option<Duration>,
}

impl Liveness {
    /// Starts tracking at `now`, as if the peer had just been heard.
    pub fn new(now: Instant, interval: Duration, dead_after: Duration) -> Self {
        Self {
            interval,
            dead_after,
            last_heard: now,
            next_ping: now + interval,
            seq: 0,
            in_flight: None,
            rtt: None,
        }
    }

    /// Any frame from the peer arrived.
    pub fn on_frame(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// A pong arrived; returns the measured round trip when it answers our latest ping.
    pub fn on_pong(&mut self, seq: u64, now: Instant) -> Option<Duration> {
        self.on_frame(now);
        match self.in_flight {
            Some((sent_seq, sent_at)) if sent_seq == seq => {
                self.in_flight = None;
                let rtt = now.saturating_duration_since(sent_at);
                self.rtt = Some(rtt);
                Some(rtt)
            }
            _ => None,
        }
    }

    /// The latest measured round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Decides the next step at `now`.
    pub fn poll(&mut self, now: Instant) -> Action {
        let deadline = self.last_heard + self.dead_after;
        if now >= deadline {
            return Action::Dead;
        }
        if now >= self.next_ping {
            self.seq += 1;
            self.in_flight = Some((self.seq, now));
            self.next_ping = now + self.interval;
            return Action::SendPing(self.seq);
        }
        Action::WaitUntil(self.next_ping.min(deadline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(2);
    const D: Duration = Duration::from_secs(7);

    #[test]
    fn pings_on_schedule_and_measures_rtt() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, I, D);
        assert_eq!(l.poll(t0), Action::WaitUntil(t0 + I));
        assert_eq!(l.poll(t0 + I), Action::SendPing(1));
        assert_eq!(
            l.on_pong(1, t0 + I + Duration::from_millis(30)),
            Some(Duration::from_millis(30))
        );
        assert_eq!(l.rtt(), Some(Duration::from_millis(30)));
        // A stale or unknown pong measures nothing.
        assert_eq!(l.on_pong(1, t0 + I * 2), None);
    }

    #[test]
    fn silence_is_death_and_frames_keep_it_alive() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, I, D);
        let mut now = t0;
        // Frames every second keep it alive indefinitely.
        for _ in 0..20 {
            now += Duration::from_secs(1);
            l.on_frame(now);
            assert_ne!(l.poll(now), Action::Dead);
        }
        // Then silence: pings go out, but death comes at exactly dead_after.
        let last = now;
        let mut pings = 0;
        loop {
            match l.poll(now) {
                Action::SendPing(_) => pings += 1,
                Action::WaitUntil(t) => now = t,
                Action::Dead => break,
            }
        }
        assert_eq!(now, last + D);
        assert!(pings >= 3, "pinged {pings} times while waiting");
    }
}
