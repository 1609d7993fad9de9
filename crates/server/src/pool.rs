//! A session's idle data connections, waiting for visitors.
//!
//! The client keeps the pool filled; a visitor takes one without a round trip, and a reusable
//! stream's connection comes back when the stream has ended cleanly. When the pool is empty,
//! the visitor asks the client for more and waits, bounded by `pool_wait`. Connections are
//! checked on the way out, so one the client closed while idle is skipped, not handed over.

use burrow_net::Carrier;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;
use tracing::debug;

/// Idle data connections of one session.
#[derive(Debug)]
pub(crate) struct DataPool {
    idle: Mutex<VecDeque<Carrier>>,
    arrived: Notify,
    cap: usize,
}

impl DataPool {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            idle: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Carrier>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection; gives it back when the pool is full.
    pub(crate) fn put(&self, carrier: Carrier) -> Result<(), Carrier> {
        {
            let mut idle = self.lock();
            if idle.len() >= self.cap {
                return Err(carrier);
            }
            idle.push_back(carrier);
        }
        self.arrived.notify_one();
        Ok(())
    }

    /// Takes a live idle connection, if there is one.
    pub(crate) fn take(&self) -> Option<Carrier> {
        loop {
            let mut carrier = self.lock().pop_front()?;
            if carrier.is_idle_and_open() {
                return Some(carrier);
            }
        }
    }

    /// Waits until a connection may have arrived. Call [`DataPool::take`] afterwards; the
    /// returned future must be created before the `take` that found the pool empty, so that no
    /// arrival is missed (see [`DataPool::take_or_wait`]).
    pub(crate) async fn take_or_wait(&self, on_empty: impl FnOnce()) -> Carrier {
        let mut on_empty = Some(on_empty);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(c) = self.take() {
                return c;
            }
            if let Some(f) = on_empty.take() {
                f();
            }
            arrived.await;
        }
    }

    /// Closes idle connections the client has closed (a retired extra slot), so their sockets
    /// do not linger until the next visitor.
    pub(crate) fn prune(&self) {
        let closed: Vec<Carrier> = {
            let mut idle = self.lock();
            let mut closed = Vec::new();
            for mut carrier in std::mem::take(&mut *idle) {
                if carrier.is_idle_and_open() {
                    idle.push_back(carrier);
                } else {
                    closed.push(carrier);
                }
            }
            closed
        };
        drop(closed);
    }

    /// Number of idle connections.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drops every idle connection (the session ended).
    pub(crate) fn clear(&self) {
        let drained: Vec<Carrier> = self.lock().drain(..).collect();
        drop(drained);
    }
}

/// Puts a data connection back into its session's pool after a reusable stream ended cleanly
/// on it (both ways ended with their end chunks, so it is at a frame boundary); the client
/// waits on it for the next stream header. Closed instead when the session has ended or the
/// pool is full.
pub(crate) fn reuse(session: &crate::registry::SessionHandle, carrier: Carrier) {
    if session.closed.is_cancelled() {
        return debug!("data connection closed after its stream: the session ended");
    }
    match session.pool.put(carrier) {
        Ok(()) => debug!(idle = session.pool.len(), hello = %"reused", "data connection ready"),
        Err(_) => debug!("data connection closed after its stream: the pool is full"),
    }
}

/// Puts an authenticated data connection into its session's pool.
pub(crate) async fn add(shared: &crate::Shared, mut carrier: Carrier, session: u64, early: bool) {
    let Some(handle) = shared.registry.session(session) else {
        // An early hello's client waits for no answer: closing tells it.
        if !early {
            crate::handshake::refuse(
                &mut carrier,
                burrow_proto::msg::HandshakeError::UnknownSession,
            )
            .await;
        }
        return debug!("data connection closed: its session ended");
    };
    if !early {
        let cfg = shared.config();
        let welcome = crate::handshake::send_welcome(
            &mut carrier,
            session,
            cfg.heartbeat_interval,
            cfg.dead_after,
        );
        if let Err(e) = welcome.await {
            return debug!("data connection lost before use: {e}");
        }
    }
    let hello = if early { "early" } else { "challenge" };
    match handle.pool.put(carrier) {
        Ok(()) => debug!(idle = handle.pool.len(), hello = %hello, "data connection ready"),
        Err(_) => debug!("data connection closed: the pool is full"),
    }
}
