//! A QUIC connection as a link: streams opened on it remember it, and its DATAGRAM frames are
//! routed to the UDP tunnels that ride it.
//!
//! A UDP tunnel over QUIC keeps its datagram stream (the tunnel's anchor, and the way for
//! datagrams too large for one packet) and registers that stream's id with the link for a
//! [`DatagramChannel`]. One reader task per link takes every DATAGRAM frame, reads its
//! [`QuicHeader`], and hands the payload to the channel of that stream through a bounded queue:
//! a full queue drops the datagram (counted in the tunnel's [`DatagramStats`]), and a datagram
//! for no registered stream (a tunnel that just closed, or garbage) is dropped and counted on
//! the link ([`QuicLink::dropped_unknown`]). Sending never waits: see [`QuicSender::offer`].

use super::stream::{self, QuicStream};
use crate::datagram_io::DatagramStats;
use burrow_proto::datagram::QuicHeader;
use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Datagram channels one link may hold at once: one per UDP tunnel of its sessions (each also
/// holds one of the link's streams).
pub const DATAGRAM_CHANNELS: usize = 1024;
/// Datagrams received for one tunnel and not yet taken by it; beyond this they are dropped.
pub const CHANNEL_QUEUE: usize = 1024;

/// A QUIC connection whose streams carry burrow connections and whose DATAGRAM frames carry
/// UDP tunnels' datagrams. Cheap to clone; the datagram reader stops when the last clone (and
/// the last stream opened through it) is gone.
#[derive(Clone, Debug)]
pub struct QuicLink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: quinn::Connection,
    routes: Arc<Routes>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The reader holds a handle to the connection, which would otherwise keep it open.
        self.reader.abort();
    }
}

/// The link's table of datagram channels, by stream id.
#[derive(Debug, Default)]
struct Routes {
    table: Mutex<HashMap<u64, Route>>,
    unknown: AtomicU64,
}

#[derive(Debug)]
struct Route {
    inbox: mpsc::Sender<(u32, Bytes)>,
    stats: Arc<DatagramStats>,
}

impl QuicLink {
    /// Wraps an established connection and starts routing its datagrams. Must be called inside
    /// a tokio runtime.
    pub fn new(connection: quinn::Connection) -> Self {
        let routes = Arc::new(Routes::default());
        let reader = tokio::spawn(route_datagrams(connection.clone(), routes.clone()));
        Self {
            inner: Arc::new(Inner {
                connection,
                routes,
                reader: reader.abort_handle(),
            }),
        }
    }

    /// The QUIC connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.inner.connection
    }

    /// Opens a stream, as [`stream::open`], that knows its link.
    pub async fn open(&self) -> io::Result<QuicStream> {
        Ok(stream::open(self.connection()).await?.on(self.clone()))
    }

    /// Accepts a stream, as [`stream::accept`], that knows its link.
    pub async fn accept(&self) -> Option<io::Result<QuicStream>> {
        Some(
            stream::accept(self.connection())
                .await?
                .map(|s| s.on(self.clone())),
        )
    }

    /// Datagrams that arrived for no registered stream, or with a malformed header.
    pub fn dropped_unknown(&self) -> u64 {
        self.inner.routes.unknown.load(Ordering::Relaxed)
    }

    /// Registers datagram stream `stream` (the id of its `StreamOpen`) and returns its channel;
    /// `None` when the stream is registered already or the link holds [`DATAGRAM_CHANNELS`].
    /// Datagrams received and dropped for it are counted in `stats`.
    pub fn datagrams(&self, stream: u64, stats: Arc<DatagramStats>) -> Option<DatagramChannel> {
        let routes = &self.inner.routes;
        let (inbox, receiver) = mpsc::channel(CHANNEL_QUEUE);
        {
            let mut table = routes.table.lock().unwrap_or_else(|p| p.into_inner());
            if table.len() >= DATAGRAM_CHANNELS || table.contains_key(&stream) {
                return None;
            }
            table.insert(stream, Route { inbox, stats });
        }
        Some(DatagramChannel {
            routes: routes.clone(),
            connection: self.connection().clone(),
            stream,
            receiver,
        })
    }
}

/// Reads the connection's datagrams and routes each to its channel, until the connection ends.
async fn route_datagrams(connection: quinn::Connection, routes: Arc<Routes>) {
    while let Ok(datagram) = connection.read_datagram().await {
        routes.route(datagram);
    }
    tracing::debug!(
        dropped_unknown = routes.unknown.load(Ordering::Relaxed),
        "QUIC datagrams no longer routed: the connection ended"
    );
}

impl Routes {
    /// Hands one datagram to its channel, or drops and counts it.
    fn route(&self, datagram: Bytes) {
        let Ok((header, len)) = QuicHeader::decode(&datagram) else {
            return DatagramStats::bump(&self.unknown);
        };
        let payload = datagram.slice(len..);
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Some(route) = table.get(&header.stream) else {
            return DatagramStats::bump(&self.unknown);
        };
        match route.inbox.try_send((header.flow, payload)) {
            Ok(()) => DatagramStats::bump(&route.stats.quic_received),
            Err(mpsc::error::TrySendError::Full(_)) => {
                DatagramStats::bump(&route.stats.dropped_full);
            }
            // The channel is being dropped; it unregisters right after.
            Err(mpsc::error::TrySendError::Closed(_)) => DatagramStats::bump(&self.unknown),
        }
    }
}

/// One datagram stream's share of its link's DATAGRAM frames: what arrives for it, and a
/// [`QuicSender`] for what it sends. Dropping it unregisters the stream.
#[derive(Debug)]
pub struct DatagramChannel {
    routes: Arc<Routes>,
    connection: quinn::Connection,
    stream: u64,
    receiver: mpsc::Receiver<(u32, Bytes)>,
}

impl DatagramChannel {
    /// The next datagram (flow id and payload); `None` never comes while the channel lives.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<(u32, Bytes)> {
        self.receiver.recv().await
    }

    /// The next datagram already waiting, if any; never waits.
    pub fn try_recv(&mut self) -> Option<(u32, Bytes)> {
        self.receiver.try_recv().ok()
    }

    /// A sender of this stream's datagrams, off until [`QuicSender::enable`]: the peer must
    /// have registered the stream first, or what is sent is dropped as unknown.
    pub fn sender(&self) -> QuicSender {
        QuicSender {
            connection: self.connection.clone(),
            stream: self.stream,
            enabled: AtomicBool::new(false),
        }
    }
}

impl Drop for DatagramChannel {
    fn drop(&mut self) {
        let mut table = self.routes.table.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(&self.stream);
    }
}

/// Sends one datagram stream's datagrams as QUIC DATAGRAM frames when they fit one.
#[derive(Debug)]
pub struct QuicSender {
    connection: quinn::Connection,
    stream: u64,
    enabled: AtomicBool,
}

impl QuicSender {
    /// Turns sending on: the peer routes this stream's datagrams.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Sends one datagram as a QUIC datagram, without waiting; see [`QuicOffer`] for what
    /// became of it. Queued datagrams are never evicted: a full send buffer drops the new one.
    pub fn offer(&self, flow: u32, payload: &[u8], stats: &DatagramStats) -> QuicOffer {
        if !self.enabled.load(Ordering::Relaxed) {
            return QuicOffer::ToStream;
        }
        let header = QuicHeader {
            stream: self.stream,
            flow,
        };
        let size = header.encoded_len() + payload.len();
        let fits = super::max_datagram_size(&self.connection).is_some_and(|max| size <= max);
        if !fits {
            return QuicOffer::ToStream;
        }
        if self.connection.datagram_send_buffer_space() < size {
            DatagramStats::bump(&stats.dropped_full);
            return QuicOffer::Dropped;
        }
        let mut datagram = Vec::with_capacity(size);
        if header.encode(&mut datagram).is_err() {
            return QuicOffer::ToStream;
        }
        datagram.extend_from_slice(payload);
        // Too large after all (the path shrank) or the connection is gone: the stream takes it,
        // or fails in turn.
        if super::send_datagram(&self.connection, datagram.into()).is_err() {
            return QuicOffer::ToStream;
        }
        DatagramStats::bump(&stats.sent);
        DatagramStats::bump(&stats.quic_sent);
        QuicOffer::Sent
    }
}

/// What [`QuicSender::offer`] did with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuicOffer {
    /// Sent as a QUIC datagram (counted in `sent` and `quic_sent`).
    Sent,
    /// Dropped: the connection's datagram send buffer is full (counted in `dropped_full`).
    Dropped,
    /// Not taken; the stream must carry it: sending is off, it is larger than the connection
    /// takes now (see [`super::max_datagram_size`]), or the connection failed.
    ToStream,
}
