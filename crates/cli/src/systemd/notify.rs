//! The `sd_notify` protocol: telling systemd when burrow is ready, reloading or stopping, and
//! feeding its watchdog.
//!
//! Each message is one datagram to `NOTIFY_SOCKET`; without that variable nothing is sent. A
//! message that cannot be sent is logged and otherwise ignored: systemd's bookkeeping must
//! never stop a running server or client.

use sd_notify::NotifyState;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::{debug, warn};

/// Whether the first `READY=1` went out: until then a reload says nothing to systemd, which
/// would otherwise take the reload's `READY=1` for the start-up's.
static READY: AtomicBool = AtomicBool::new(false);

/// Sends `READY=1`: the server's listeners are bound, or a client's tunnels are all published.
pub(crate) fn notify_ready() {
    READY.store(true, Ordering::Relaxed);
    send(&[NotifyState::Ready]);
}

/// Sends `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` requires, when a
/// configuration reload starts; [`notify_reloaded`] ends it. Nothing before start-up is over.
pub(crate) fn notify_reloading() {
    if !READY.load(Ordering::Relaxed) {
        return;
    }
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => warn!("cannot tell systemd about the reload: no monotonic clock: {e}"),
    }
}

/// Sends `READY=1` at the end of a reload, if start-up is over.
pub(crate) fn notify_reloaded() {
    if READY.load(Ordering::Relaxed) {
        send(&[NotifyState::Ready]);
    }
}

/// Sends one message, logging a failure.
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        let what: Vec<String> = states.iter().map(ToString::to_string).collect();
        warn!("cannot notify systemd ({}): {e}", what.join(" "));
    }
}

/// Sends `STOPPING=1`: shutdown has begun.
pub(crate) fn notify_stopping() {
    send(&[NotifyState::Stopping]);
}

/// Feeds systemd's watchdog when it watches this process: `WATCHDOG=1` every half of
/// `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or this process. Does nothing without
/// `NOTIFY_SOCKET`. The task ends with the runtime, so the watchdog stays fed while open streams
/// drain.
pub(crate) fn spawn_watchdog() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = period / 2;
    if every.is_zero() {
        return warn!("ignoring WATCHDOG_USEC: the watchdog period is too short");
    }
    debug!("feeding the systemd watchdog every {every:?}");
    tokio::spawn(feed_watchdog(every));
}

/// Sends `WATCHDOG=1` every `every`, starting at once.
async fn feed_watchdog(every: Duration) {
    let mut ticks = tokio::time::interval(every);
    // After a stall, one ping is enough; a burst would only hide how late it was.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

/// A client's readiness: `READY=1` once every one of its tunnels has been published, on the
/// first session. Later reconnects publish them again without a second `READY=1`.
#[derive(Debug)]
pub(crate) struct FirstReady {
    /// Tunnels not published yet; `None` once all were.
    waiting: Mutex<Option<HashSet<String>>>,
}

impl FirstReady {
    /// Waits for the tunnels named `names`.
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            waiting: Mutex::new(Some(names.into_iter().collect())),
        }
    }

    /// Records that tunnel `name` is published, and sends `READY=1` if it was the last.
    pub(crate) fn published(&self, name: &str) {
        if self.mark(name) {
            notify_ready();
        }
    }

    /// Stops waiting for tunnels a reload removed: readiness means every tunnel of the
    /// current configuration is published. Sends `READY=1` if none is left to wait for.
    pub(crate) fn keep_only<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let keep: HashSet<&str> = names.into_iter().collect();
        let Ok(mut waiting) = self.waiting.lock() else {
            return;
        };
        let Some(left) = waiting.as_mut() else {
            return;
        };
        left.retain(|n| keep.contains(n.as_str()));
        if left.is_empty() {
            *waiting = None;
            drop(waiting);
            notify_ready();
        }
    }

    /// Records that tunnel `name` is published; true exactly once, when it was the last.
    fn mark(&self, name: &str) -> bool {
        let Ok(mut waiting) = self.waiting.lock() else {
            return false;
        };
        let Some(names) = waiting.as_mut() else {
            return false;
        };
        names.remove(name);
        if names.is_empty() {
            *waiting = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_ready_once_every_tunnel_was_published() {
        let ready = FirstReady::new(["web".to_owned(), "dns".to_owned()]);
        assert!(!ready.mark("web"));
        // Published again (a reconnect before `dns` came up): still waiting for `dns`.
        assert!(!ready.mark("web"));
        assert!(ready.mark("dns"));
        // Later sessions publish them again; readiness was already sent.
        assert!(!ready.mark("dns"));
        assert!(!ready.mark("web"));
    }
}
