//! Reading and writing datagram frames on a UDP tunnel's data connection.
//!
//! Senders never wait on the carrier: they append whole frames to a bounded [`Outbox`] and count
//! what does not fit as dropped, so a congested carrier loses datagrams (as a congested network
//! would) instead of queueing them without bound. One writer task takes everything waiting in
//! one swap and writes it with one call; frames are encoded straight into the outbox's buffer,
//! and the writer's and the outbox's buffers trade places, so no datagram costs an allocation.
//! [`FrameReader`] reads the other way in large chunks and hands out every whole frame they hold.

use crate::quic::{QuicOffer, QuicSender};
use crate::udp_batch::BatchSocket;
use burrow_proto::datagram::{DATAGRAM_HEADER, MAX_DATAGRAM, body_len, encode};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Frames waiting for the carrier, per UDP tunnel; beyond this, datagrams are dropped.
pub const DATAGRAM_QUEUE: usize = 1024;
/// Bytes of frames waiting for the carrier, per UDP tunnel; beyond this, datagrams are dropped
/// (one frame is always accepted into an empty queue, however large).
pub const DATAGRAM_QUEUE_BYTES: usize = 4 * 1024 * 1024;
/// Receive and send buffer requested on every UDP socket burrow opens. The kernel's default
/// (`net.core.rmem_default`, about 208 KiB) overflows within a few milliseconds of a 1 Gbit/s
/// burst; the kernel caps the request at `net.core.rmem_max` / `net.core.wmem_max`.
pub const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// A written batch's buffer is kept for the next one up to this size.
const KEEP: usize = 256 * 1024;
/// Bytes a [`FrameReader`] asks the carrier for at once, beyond a partial frame it holds.
const READ_CHUNK: usize = 256 * 1024;

/// Counts of what a datagram relay did, for logs and metrics.
#[derive(Debug, Default)]
pub struct DatagramStats {
    /// Datagrams carried toward the other side.
    pub sent: AtomicU64,
    /// Datagrams dropped because the carrier queue (or a socket's send buffer) was full.
    pub dropped_full: AtomicU64,
    /// Datagrams dropped because their flow is unknown, expired or over the cap.
    pub dropped_flow: AtomicU64,
    /// Of those sent, the datagrams that rode QUIC DATAGRAM frames rather than the stream.
    pub quic_sent: AtomicU64,
    /// Datagrams received in QUIC DATAGRAM frames.
    pub quic_received: AtomicU64,
}

impl DatagramStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Frames waiting for one carrier writer: bounded by [`DATAGRAM_QUEUE`] frames and
/// [`DATAGRAM_QUEUE_BYTES`] bytes. Over a QUIC link, datagrams that fit one packet skip the
/// queue and leave at once as QUIC datagrams (see [`Outbox::with_quic`]).
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Mutex<Pending>,
    ready: Notify,
    quic: Option<QuicSender>,
}

#[derive(Debug, Default)]
struct Pending {
    bytes: Vec<u8>,
    frames: usize,
}

/// The outbox, locked for a burst of offers; the writer is woken when it is released.
pub struct Offers<'a> {
    pending: MutexGuard<'a, Pending>,
    ready: &'a Notify,
    quic: Option<&'a QuicSender>,
    added: bool,
}

impl Outbox {
    /// An outbox that sends what fits as QUIC datagrams through `quic`, once it is enabled
    /// ([`QuicSender::enable`], through [`Outbox::enable_quic`]), and queues the rest for the
    /// stream.
    pub fn with_quic(quic: QuicSender) -> Self {
        Self {
            quic: Some(quic),
            ..Self::default()
        }
    }

    /// Turns the QUIC path on, if there is one: the peer routes this stream's QUIC datagrams.
    pub fn enable_quic(&self) {
        if let Some(quic) = &self.quic {
            quic.enable();
        }
    }

    /// Locks the outbox for a burst of [`Offers::offer`]s. Hold it only for encoding, never
    /// across I/O.
    pub fn offers(&self) -> Offers<'_> {
        Offers {
            pending: self.pending.lock().unwrap_or_else(|p| p.into_inner()),
            ready: &self.ready,
            quic: self.quic.as_ref(),
            added: false,
        }
    }

    /// Offers one datagram: see [`Offers::offer`].
    pub fn offer(&self, flow: u32, payload: &[u8], stats: &DatagramStats) -> bool {
        self.offers().offer(flow, payload, stats)
    }

    /// Swaps everything waiting into `out` (which must be empty) and empties the queue.
    fn take(&self, out: &mut Vec<u8>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut pending.bytes, out);
        pending.frames = 0;
    }
}

impl Offers<'_> {
    /// Sends one datagram as a QUIC datagram when it can, else appends its frame, or counts it
    /// as dropped when the queue (or the QUIC send buffer) is full; `true` when it was sent or
    /// queued.
    pub fn offer(&mut self, flow: u32, payload: &[u8], stats: &DatagramStats) -> bool {
        match self.quic.map(|q| q.offer(flow, payload, stats)) {
            Some(QuicOffer::Sent) => return true,
            Some(QuicOffer::Dropped) => return false,
            Some(QuicOffer::ToStream) | None => {}
        }
        let p = &mut *self.pending;
        let fits = p.frames == 0
            || (p.frames < DATAGRAM_QUEUE
                && p.bytes.len() + DATAGRAM_HEADER + payload.len() <= DATAGRAM_QUEUE_BYTES);
        // `encode` refuses only a payload above MAX_DATAGRAM, which no UDP socket delivers.
        if fits && encode(flow, payload, &mut p.bytes).is_ok() {
            p.frames += 1;
            self.added = true;
            DatagramStats::bump(&stats.sent);
            true
        } else {
            DatagramStats::bump(&stats.dropped_full);
            false
        }
    }
}

impl Drop for Offers<'_> {
    fn drop(&mut self) {
        if self.added {
            self.ready.notify_one();
        }
    }
}

/// Writes the outbox's frames to the carrier until the carrier fails; it never ends otherwise,
/// so callers race it against the relay's other halves.
pub async fn write_datagrams<W: AsyncWrite + Unpin>(mut w: W, outbox: &Outbox) -> io::Result<()> {
    let mut batch = Vec::with_capacity(KEEP);
    loop {
        outbox.ready.notified().await;
        outbox.take(&mut batch);
        if batch.is_empty() {
            continue;
        }
        w.write_all(&batch).await?;
        w.flush().await?;
        batch.clear();
        if batch.capacity() > KEEP {
            batch.shrink_to(KEEP);
        }
    }
}

/// Reads datagram frames from a carrier in large chunks.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `inner` (a carrier's read half).
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: vec![0; READ_CHUNK + DATAGRAM_HEADER + MAX_DATAGRAM],
            start: 0,
            end: 0,
        }
    }

    /// Waits until at least one whole frame is buffered. An oversized or malformed frame, or
    /// the carrier's end, is an error. Cancel-safe: bytes read are kept for the next call.
    pub async fn fill(&mut self) -> io::Result<()> {
        while self.whole_frame()?.is_none() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = self.inner.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.end += n;
        }
        Ok(())
    }

    /// The next whole buffered frame (flow id and payload), if any; never waits.
    pub fn next_frame(&mut self) -> io::Result<Option<(u32, &[u8])>> {
        let Some(len) = self.whole_frame()? else {
            return Ok(None);
        };
        let frame = &self.buf[self.start..self.start + len];
        self.start += len;
        let (flow, payload) = frame[4..].split_at(4);
        let flow = u32::from_be_bytes([flow[0], flow[1], flow[2], flow[3]]);
        Ok(Some((flow, payload)))
    }

    /// The length of the whole frame at the start of the buffer, if it is all there.
    fn whole_frame(&self) -> io::Result<Option<usize>> {
        let held = &self.buf[self.start..self.end];
        let Some(header) = held.first_chunk::<4>() else {
            return Ok(None);
        };
        let len =
            4 + body_len(*header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((held.len() >= len).then_some(len))
    }
}

/// Asks for [`SOCKET_BUFFER`] bytes of receive and send buffer on `socket` (capped by the kernel).
pub fn enlarge_buffers(socket: socket2::SockRef<'_>) -> io::Result<()> {
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.set_send_buffer_size(SOCKET_BUFFER)
}

/// A socket that sends toward `to` from an unbound port, with `SO_BROADCAST` set so `to` may be
/// a broadcast address. `connected` makes `to` its only peer (a flow's socket toward the target:
/// the kernel then delivers only that peer's replies to it).
pub fn udp_sender(to: std::net::SocketAddr, connected: bool) -> io::Result<BatchSocket> {
    let any: std::net::SocketAddr = match to {
        std::net::SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.set_broadcast(true)?;
    if connected {
        socket.connect(to)?;
    }
    BatchSocket::new(socket)
}

/// A socket that hears datagrams sent to `addr`, broadcasts included; other programs may
/// listen on the same port too (`SO_REUSEADDR`).
pub fn udp_listener(addr: std::net::SocketAddr) -> io::Result<BatchSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind(&addr.into())?;
    BatchSocket::new(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn datagrams_cross_whole_and_in_order() {
        let (a, b) = tokio::io::duplex(8 * 1024);
        let outbox = Outbox::default();
        let stats = DatagramStats::default();
        let sizes = [0, 1, 1400, 9000, MAX_DATAGRAM];
        for (i, &len) in sizes.iter().enumerate() {
            assert!(outbox.offer(i as u32, &vec![i as u8; len], &stats));
        }
        let writer = write_datagrams(a, &outbox);
        let read = async {
            let mut frames = FrameReader::new(b);
            let mut got = Vec::new();
            while got.len() < sizes.len() {
                frames.fill().await.unwrap();
                while let Some((flow, payload)) = frames.next_frame().unwrap() {
                    got.push((flow, payload.to_vec()));
                }
            }
            got
        };
        let got = tokio::select! {
            r = writer => panic!("the writer ended: {r:?}"),
            got = read => got,
        };
        let expected: Vec<_> = (sizes.iter().enumerate())
            .map(|(i, &len)| (i as u32, vec![i as u8; len]))
            .collect();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_put_together() {
        let (mut a, b) = tokio::io::duplex(64 * 1024);
        let mut wire = Vec::new();
        for i in 0..50u32 {
            encode(i, &vec![i as u8; 1000 + i as usize], &mut wire).unwrap();
        }
        let mut frames = FrameReader::new(b);
        let mut got = Vec::new();
        let write = async {
            // Odd-sized pieces, so headers and payloads are cut everywhere.
            for piece in wire.chunks(777) {
                a.write_all(piece).await.unwrap();
            }
            std::future::pending::<()>().await
        };
        let read = async {
            while got.len() < 50 {
                frames.fill().await.unwrap();
                while let Some((flow, payload)) = frames.next_frame().unwrap() {
                    assert_eq!(payload, vec![flow as u8; 1000 + flow as usize]);
                    got.push(flow);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! { _ = write => {}, _ = read => {} }
        })
        .await
        .unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_an_error() {
        let (mut a, b) = tokio::io::duplex(64);
        // A complete header (length and flow id) announcing one byte more than the limit.
        a.write_all(&((MAX_DATAGRAM + 5) as u32).to_be_bytes())
            .await
            .unwrap();
        a.write_all(&7u32.to_be_bytes()).await.unwrap();
        let err = FrameReader::new(b).fill().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let outbox = Outbox::default();
        let stats = DatagramStats::default();
        let mut offers = outbox.offers();
        for _ in 0..DATAGRAM_QUEUE + 5 {
            offers.offer(1, &[0; 10], &stats);
        }
        drop(offers);
        assert_eq!(stats.sent.load(Ordering::Relaxed), DATAGRAM_QUEUE as u64);
        assert_eq!(stats.dropped_full.load(Ordering::Relaxed), 5);
        // Bytes bound the queue too; an empty queue still takes the largest datagram.
        let big = Outbox::default();
        let stats = DatagramStats::default();
        let fit = DATAGRAM_QUEUE_BYTES / (DATAGRAM_HEADER + MAX_DATAGRAM);
        for _ in 0..fit + 1 {
            big.offer(1, &vec![0; MAX_DATAGRAM], &stats);
        }
        assert_eq!(stats.sent.load(Ordering::Relaxed), fit as u64);
        assert_eq!(stats.dropped_full.load(Ordering::Relaxed), 1);
        // Once the writer takes the queue, there is room again.
        big.take(&mut Vec::new());
        assert!(big.offer(1, &vec![0; MAX_DATAGRAM], &stats));
    }
}
