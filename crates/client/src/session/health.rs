//! Health checks of HTTP tunnels' targets: one checker task per tunnel and session, reporting
//! each change of the answer, which the session passes on to the server.
//!
//! A checker stops when the session ends or its tunnel is withdrawn or retargeted (its guard
//! in [`Published`] drops). Reports carry the checker's serial, so one that was already queued
//! when its checker was replaced is ignored.

use super::{End, Published, Session};
use crate::config::TunnelConfig;
use burrow_proto::msg::{ClientMsg, TunnelKind};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

/// Longest a health check waits for the target to accept a connection.
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A checker's news: the target of tunnel `id` now answers, or no longer does.
#[derive(Debug)]
pub(super) struct Report {
    id: u32,
    checker: u64,
    healthy: bool,
}

impl Session<'_> {
    /// Starts tunnel `id`'s checker when it has one (an HTTP tunnel with `health_check`);
    /// returns its serial and the guard that stops it.
    pub(super) fn start_health(
        &mut self,
        id: u32,
        tunnel: &TunnelConfig,
    ) -> Option<(u64, DropGuard)> {
        let (TunnelKind::Http(_), Some(every)) = (&tunnel.kind, tunnel.health_check) else {
            return None;
        };
        self.health.1 += 1;
        let checker = self.health.1;
        let stop = self.pool.closed.child_token();
        let reports = self.health.0.clone();
        let local = tunnel.local.clone();
        tokio::spawn(check_health(
            id,
            checker,
            local,
            every,
            reports,
            stop.clone(),
        ));
        Some((checker, stop.drop_guard()))
    }

    /// Passes a checker's report on to the server, unless its checker was replaced since.
    pub(super) async fn on_health(&mut self, report: Report) -> Result<(), End> {
        let Report {
            id,
            checker,
            healthy,
        } = report;
        let Some(published) = self.published.get_mut(&id) else {
            return Ok(());
        };
        if !is_current(published, checker) {
            return Ok(());
        }
        published.unhealthy = !healthy;
        let tunnel = &published.config;
        if healthy {
            info!(tunnel = %tunnel.name, local = %tunnel.local, "target healthy again");
        } else {
            warn!(tunnel = %tunnel.name, local = %tunnel.local, "target failed its health check; visitors go to the other clients of this name");
        }
        self.send(ClientMsg::TunnelHealth { id, healthy }).await
    }
}

fn is_current(published: &Published, checker: u64) -> bool {
    published
        .health
        .as_ref()
        .is_some_and(|(c, _)| *c == checker)
}

/// Checks every `every` that `local` accepts a TCP connection and reports each change of the
/// answer (starting from healthy) until `stop` is cancelled.
async fn check_health(
    id: u32,
    checker: u64,
    local: String,
    every: Duration,
    reports: mpsc::Sender<Report>,
    stop: CancellationToken,
) {
    let mut healthy = true;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let wait = every.min(HEALTH_CONNECT_TIMEOUT);
        let answers = matches!(
            timeout(wait, tokio::net::TcpStream::connect(&local)).await,
            Ok(Ok(_))
        );
        if answers != healthy {
            healthy = answers;
            let report = Report {
                id,
                checker,
                healthy,
            };
            let sent = tokio::select! {
                _ = stop.cancelled() => return,
                sent = reports.send(report) => sent,
            };
            if sent.is_err() {
                return;
            }
        }
    }
}
