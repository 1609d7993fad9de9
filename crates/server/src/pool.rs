//! A session's idle data connections, waiting for visitors.
//!
//! The client keeps the pool filled; a visitor takes one without a round trip, and a reusable
//! stream's connection comes back when the stream has ended cleanly. When the pool is empty,
//! the visitor asks the client for more and waits, bounded by `pool_wait`. Connections are
//! checked on the way out, so one the client closed while idle is skipped, not handed over.

use burrow_net::Carrier;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tracing::debug;

/// Idle data connections of one session.
#[derive(Debug)]
pub(crate) struct DataPool {
    idle: Mutex<VecDeque<Carrier>>,
    arrived: Notify,
    cap: usize,
    /// Set when the session ends: the pool takes nothing more.
    closed: AtomicBool,
}

impl DataPool {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            idle: Mutex::new(VecDeque::new()),
            arrived: Notify::new(),
            cap,
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Carrier>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection; gives it back when the pool is full or closed.
    pub(crate) fn put(&self, carrier: Carrier) -> Result<(), Carrier> {
        {
            let mut idle = self.lock();
            // Checked under the lock that `close` drains under, after setting the flag: a
            // connection is either drained by `close` or refused here.
            if idle.len() >= self.cap || self.is_closed() {
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

    /// Drops every idle connection and takes no more (the session ended).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let drained: Vec<Carrier> = self.lock().drain(..).collect();
        drop(drained);
    }

    /// True once the session ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// How long the server waits for a client to release a connection whose reusable stream has
/// ended on the server's side: as long as a client keeps an unused extra connection.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// Puts a data connection back into its session's pool after a reusable stream ended cleanly
/// on it (both ways ended with their end chunks, so it is at a frame boundary), once the client
/// has released it (`burrow_proto::reuse::RELEASE`: its side of the stream is over too, and it
/// waits on the connection for the next stream header). Closed instead when the release does
/// not come (something else, the connection's end, nothing within [`RELEASE_WAIT`]), when the
/// session has ended, or when the pool is full.
pub(crate) async fn reuse(pool: &DataPool, mut carrier: Carrier) {
    let mut release = [0u8; burrow_proto::reuse::HEADER_LEN];
    match tokio::time::timeout(RELEASE_WAIT, carrier.read_exact(&mut release)).await {
        Ok(Ok(_)) if release == burrow_proto::reuse::RELEASE => {}
        Ok(Ok(_)) => {
            return debug!(
                ?release,
                "data connection closed after its stream: no release"
            );
        }
        Ok(Err(e)) => return debug!("data connection closed after its stream: {e}"),
        Err(_) => {
            return debug!(
                "data connection closed after its stream: not released within {RELEASE_WAIT:?}"
            );
        }
    }
    put_back(pool, carrier, "reused");
}

/// Puts a ready connection in the pool, unless the session has ended or the pool is full.
fn put_back(pool: &DataPool, carrier: Carrier, hello: &'static str) {
    match pool.put(carrier) {
        Ok(()) => debug!(idle = pool.len(), hello = %hello, "data connection ready"),
        Err(_) if pool.is_closed() => debug!("data connection closed: its session ended"),
        Err(_) => debug!("data connection closed: the pool is full"),
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
    put_back(&handle.pool, carrier, hello);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A connection whose stream ended on the server's side, and the client's end of it; the
    /// client sends `then` and, with `close`, closes its end.
    async fn after_a_stream(
        then: &[u8],
        close: bool,
    ) -> (Carrier, Option<tokio::io::DuplexStream>) {
        let (server, mut client) = tokio::io::duplex(64);
        client.write_all(then).await.unwrap();
        (Carrier::Memory(server), (!close).then_some(client))
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_released_connection_goes_back_to_the_pool() {
        let pool = DataPool::new(4);
        let (carrier, _client) = after_a_stream(&burrow_proto::reuse::RELEASE, false).await;
        reuse(&pool, carrier).await;
        assert_eq!(pool.len(), 1, "released");
        for (sent, close) in [
            (&b"GET"[..], false),
            (&[0u8][..], true),
            (&[][..], true),
            // Nothing, and the connection stays open: the wait runs out.
            (&[][..], false),
        ] {
            let (carrier, _client) = after_a_stream(sent, close).await;
            reuse(&pool, carrier).await;
            assert_eq!(pool.len(), 1, "not released: {sent:?}, closed: {close}");
        }
    }

    #[tokio::test]
    async fn a_released_connection_of_an_ended_session_is_closed() {
        let pool = DataPool::new(4);
        pool.close();
        let (carrier, _client) = after_a_stream(&burrow_proto::reuse::RELEASE, false).await;
        reuse(&pool, carrier).await;
        assert_eq!(pool.len(), 0);
        // A full pool closes it too.
        let pool = DataPool::new(0);
        let (carrier, _client) = after_a_stream(&burrow_proto::reuse::RELEASE, false).await;
        reuse(&pool, carrier).await;
        assert_eq!(pool.len(), 0);
    }
}
