//! Reading and writing datagram frames on a UDP tunnel's data connection.
//!
//! Senders never wait on the carrier: they put whole frames on a bounded queue with
//! `try_send` and count what does not fit as dropped, so a congested carrier loses datagrams (as
//! a congested network would) instead of queueing them without bound. One writer task drains the
//! queue, batching what is ready into one write.

use crate::frame_io::FrameIo;
use burrow_proto::datagram::body_len;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Frames waiting for the carrier, per UDP tunnel; beyond this, datagrams are dropped.
pub const DATAGRAM_QUEUE: usize = 1024;
/// Most bytes gathered into one write.
const BATCH: usize = 256 * 1024;

/// Counts of what a datagram relay did, for logs (and later metrics).
#[derive(Debug, Default)]
pub struct DatagramStats {
    /// Datagrams carried toward the other side.
    pub sent: AtomicU64,
    /// Datagrams dropped because the carrier queue was full.
    pub dropped_full: AtomicU64,
    /// Datagrams dropped because their flow is unknown, expired or over the cap.
    pub dropped_flow: AtomicU64,
}

impl DatagramStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Queues one encoded frame, or counts it as dropped when the queue is full or closed.
pub fn offer(tx: &mpsc::Sender<Vec<u8>>, frame: Vec<u8>, stats: &DatagramStats) {
    match tx.try_send(frame) {
        Ok(()) => DatagramStats::bump(&stats.sent),
        Err(_) => DatagramStats::bump(&stats.dropped_full),
    }
}

/// Writes queued frames to the carrier until the queue closes or the carrier fails.
pub async fn write_datagrams<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(frame) = rx.recv().await {
        batch.extend_from_slice(&frame);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        w.write_all(&batch).await?;
        w.flush().await?;
        batch.clear();
        if batch.capacity() > BATCH {
            batch.shrink_to(BATCH);
        }
    }
    Ok(())
}

/// Sends a datagram on a UDP socket without waiting: a full socket buffer drops it, as the
/// network would. Unlike tokio's `try_send`, this goes straight to the non-blocking socket, so it
/// also works on a socket the reactor has not yet reported writable (a flow opened a moment
/// ago). `to` is `None` on a connected socket.
pub fn send_now(
    socket: &tokio::net::UdpSocket,
    payload: &[u8],
    to: Option<std::net::SocketAddr>,
) -> io::Result<usize> {
    let raw = socket2::SockRef::from(socket);
    match to {
        Some(to) => raw.send_to(payload, &to.into()),
        None => raw.send(payload),
    }
}

/// A socket that sends toward `to` from an unbound port, with `SO_BROADCAST` set so `to` may be
/// a broadcast address. `connected` makes `to` its only peer (a flow's socket toward the target:
/// the kernel then delivers only that peer's replies to it).
pub fn udp_sender(to: std::net::SocketAddr, connected: bool) -> io::Result<tokio::net::UdpSocket> {
    let any: std::net::SocketAddr = match to {
        std::net::SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.set_broadcast(true)?;
    if connected {
        socket.connect(to)?;
    }
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// A socket that hears datagrams sent to `addr`, broadcasts included; other programs may
/// listen on the same port too (`SO_REUSEADDR`).
pub fn udp_listener(addr: std::net::SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Reads one datagram frame, leaving its payload in `buf`; returns the flow id and the
/// payload length. An oversized or malformed frame ends the connection with an error.
pub async fn read_datagram<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(u32, usize), FrameIo> {
    let mut header = [0u8; 8];
    r.read_exact(&mut header).await?;
    let [l0, l1, l2, l3, f0, f1, f2, f3] = header;
    let len =
        body_len([l0, l1, l2, l3]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let payload = len - 4;
    buf.resize(payload, 0);
    r.read_exact(buf).await?;
    Ok((u32::from_be_bytes([f0, f1, f2, f3]), payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::datagram::{MAX_DATAGRAM, encode};

    #[tokio::test]
    async fn datagrams_cross_whole_and_in_order() {
        let (a, mut b) = tokio::io::duplex(8 * 1024);
        let (tx, rx) = mpsc::channel(DATAGRAM_QUEUE);
        let writer = tokio::spawn(write_datagrams(a, rx));
        let sizes = [0, 1, 1400, 9000, MAX_DATAGRAM];
        for (i, &len) in sizes.iter().enumerate() {
            let mut frame = Vec::new();
            encode(i as u32, &vec![i as u8; len], &mut frame).unwrap();
            tx.send(frame).await.unwrap();
        }
        drop(tx);
        let mut buf = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let (flow, n) = read_datagram(&mut b, &mut buf).await.unwrap();
            assert_eq!((flow, n), (i as u32, len));
            assert!(buf.iter().all(|&x| x == i as u8));
        }
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_oversized_frame_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // A complete header (length and flow id) announcing one byte more than the limit.
        a.write_all(&((MAX_DATAGRAM + 5) as u32).to_be_bytes())
            .await
            .unwrap();
        a.write_all(&7u32.to_be_bytes()).await.unwrap();
        assert!(read_datagram(&mut b, &mut Vec::new()).await.is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(1);
        let stats = DatagramStats::default();
        offer(&tx, vec![1], &stats);
        offer(&tx, vec![2], &stats);
        assert_eq!(stats.sent.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dropped_full.load(Ordering::Relaxed), 1);
    }
}
