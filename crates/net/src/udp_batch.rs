//! UDP sockets that move datagrams in batches, through `quinn-udp`: up to 32 datagrams per
//! receive call (`recvmmsg`), and a run of equal-sized datagrams toward one address in one send
//! call (UDP GSO: the kernel cuts the run back into the original datagrams).
//!
//! `quinn-udp` prepares a socket for QUIC, which must never be fragmented; burrow carries any
//! datagram up to 65,507 bytes, so [`BatchSocket::new`] gives the kernel back its usual
//! fragmentation (path MTU discovery "want", no IPv6 don't-fragment) and turns GRO off, so every
//! receive slot holds exactly one datagram and a datagram is never cut.

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Bytes per receive slot: the largest UDP payload (65,527 over IPv6) fits, so nothing is cut.
const SLOT: usize = 64 * 1024;
/// Largest datagram sent in a GSO run: below the common 1500-byte path MTU with IPv6 and UDP
/// headers, because the kernel refuses a run whose datagrams would need fragmenting. Larger
/// datagrams leave one per call.
const GSO_SEGMENT_MAX: usize = 1452;
/// Most payload bytes in one GSO run (the kernel's limit for one send).
const GSO_BYTES_MAX: usize = 65_000;
/// Most datagrams taken per receive call.
pub const RECV_BATCH: usize = quinn_udp::BATCH_SIZE;

/// A non-blocking UDP socket with batched receive and send.
#[derive(Debug)]
pub struct BatchSocket {
    io: UdpSocket,
    state: UdpSocketState,
}

/// Receive buffers for [`BatchSocket::recv_batch`]: one slot per datagram.
#[derive(Debug)]
pub struct RecvSlots {
    buf: Vec<u8>,
    meta: Vec<RecvMeta>,
}

impl RecvSlots {
    /// Room for `slots` datagrams per call (at most [`RECV_BATCH`] are used); 64 KiB each.
    pub fn new(slots: usize) -> Self {
        let slots = slots.clamp(1, RECV_BATCH);
        Self {
            buf: vec![0; slots * SLOT],
            meta: vec![RecvMeta::default(); slots],
        }
    }

    /// The first `n` datagrams of the last receive call: sender and payload.
    pub fn datagrams(&self, n: usize) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        (self.meta.iter().zip(self.buf.chunks(SLOT)))
            .take(n)
            .map(|(meta, slot)| (meta.addr, &slot[..meta.len.min(slot.len())]))
    }
}

/// Datagrams gathered to leave toward one address in one send call.
#[derive(Debug, Default)]
pub struct SendBatch {
    contents: Vec<u8>,
    segment: usize,
    count: usize,
}

impl SendBatch {
    /// Adds `payload` when it can leave in the same call as those gathered (same size, small
    /// enough for GSO, within `max_segments`); `false` means: send the batch first.
    pub fn push(&mut self, payload: &[u8], max_segments: usize) -> bool {
        let joins = self.count == 0
            || (payload.len() == self.segment
                && (1..=GSO_SEGMENT_MAX).contains(&payload.len())
                && self.count < max_segments
                && self.contents.len() + payload.len() <= GSO_BYTES_MAX);
        if joins {
            self.contents.extend_from_slice(payload);
            self.segment = payload.len();
            self.count += 1;
        }
        joins
    }

    /// Datagrams gathered.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when nothing is gathered.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Payload bytes gathered.
    pub fn bytes(&self) -> usize {
        self.contents.len()
    }

    fn clear(&mut self) {
        self.contents.clear();
        self.count = 0;
        self.segment = 0;
    }
}

/// What became of a [`SendBatch`].
#[derive(Debug, Default)]
pub struct SendReport {
    /// Datagrams dropped because the socket's send buffer was full.
    pub full: usize,
    /// Another error (an ICMP error from an earlier send, for example): the batch's datagrams
    /// that met it were not sent.
    pub failed: Option<io::Error>,
}

impl BatchSocket {
    /// Takes over a bound UDP socket: large buffers ([`crate::datagram_io::SOCKET_BUFFER`]), non-blocking, batched.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        crate::datagram_io::enlarge_buffers((&socket).into())?;
        let state = UdpSocketState::new((&socket).into())?;
        keep_datagrams_whole(&socket)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            io: UdpSocket::from_std(socket)?,
            state,
        })
    }

    /// The tokio socket underneath.
    pub fn get_ref(&self) -> &UdpSocket {
        &self.io
    }

    /// Waits for datagrams and receives as many as `slots` holds; returns how many (read them
    /// with [`RecvSlots::datagrams`]). Cancel-safe: nothing is received unless it returns.
    pub async fn recv_batch(&self, slots: &mut RecvSlots) -> io::Result<usize> {
        let RecvSlots { buf, meta } = slots;
        self.io
            .async_io(Interest::READABLE, || {
                let mut iovs: Vec<IoSliceMut<'_>> =
                    buf.chunks_mut(SLOT).map(IoSliceMut::new).collect();
                self.state.recv((&self.io).into(), &mut iovs, meta)
            })
            .await
    }

    /// Sends one datagram without waiting: a full socket buffer is an error
    /// ([`io::ErrorKind::WouldBlock`]), never a wait.
    pub fn send_now(&self, payload: &[u8], to: SocketAddr) -> io::Result<usize> {
        socket2::SockRef::from(&self.io).send_to(payload, &to.into())
    }

    /// The most datagrams one [`SendBatch`] may gather on this socket (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends every datagram of `batch` to `to` without waiting, and empties it. A GSO run the
    /// kernel refuses is sent again one datagram at a time.
    pub fn send_batch(&self, batch: &mut SendBatch, to: SocketAddr) -> SendReport {
        let mut report = SendReport::default();
        if batch.count > 1 {
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents: &batch.contents,
                segment_size: Some(batch.segment),
                src_ip: None,
            };
            match self.state.try_send((&self.io).into(), &transmit) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => report.full = batch.count,
                Err(_) => {
                    for datagram in batch.contents.chunks(batch.segment) {
                        self.send_one(datagram, to, &mut report);
                    }
                }
            }
        } else if batch.count == 1 {
            self.send_one(&batch.contents, to, &mut report);
        }
        batch.clear();
        report
    }

    fn send_one(&self, payload: &[u8], to: SocketAddr, report: &mut SendReport) {
        match self.send_now(payload, to) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => report.full += 1,
            Err(e) => report.failed = Some(e),
        }
    }
}

/// Undoes what `quinn-udp` sets for QUIC and burrow must not have: no fragmentation (so a
/// datagram above the path MTU would be refused) and GRO (several datagrams in one slot).
fn keep_datagrams_whole(socket: &std::net::UdpSocket) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    use rustix::net::sockopt as rs;
    let _ = setsockopt(socket, sockopt::UdpGroSegment, &false);
    if socket.local_addr()?.is_ipv4() {
        rs::set_ip_mtu_discover(socket, rs::Ipv4PathMtuDiscovery::WANT)?;
    } else {
        rs::set_ipv6_mtu_discover(socket, rs::Ipv6PathMtuDiscovery::WANT)?;
        setsockopt(socket, sockopt::Ipv6DontFrag, &false).map_err(io::Error::from)?;
        // Also covers IPv4-mapped peers of a dual-stack socket; an IPv6-only socket refuses it.
        let _ = rs::set_ip_mtu_discover(socket, rs::Ipv4PathMtuDiscovery::WANT);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (BatchSocket, BatchSocket) {
        let bind = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        (
            BatchSocket::new(bind()).unwrap(),
            BatchSocket::new(bind()).unwrap(),
        )
    }

    #[test]
    fn only_equal_small_datagrams_share_a_call() {
        let mut batch = SendBatch::default();
        assert!(batch.push(&[1; 1400], 3));
        assert!(!batch.push(&[1; 1399], 3), "a different size");
        assert!(batch.push(&[2; 1400], 3));
        assert!(batch.push(&[3; 1400], 3));
        assert!(!batch.push(&[4; 1400], 3), "beyond max_segments");
        assert_eq!((batch.len(), batch.bytes()), (3, 4200));
        let mut big = SendBatch::default();
        assert!(big.push(&[0; 1500], 64));
        assert!(!big.push(&[0; 1500], 64), "too large for GSO");
        let mut empty = SendBatch::default();
        assert!(empty.push(&[], 64));
        assert!(!empty.push(&[], 64), "GSO cannot carry empty datagrams");
    }

    #[tokio::test]
    async fn a_run_of_equal_datagrams_arrives_as_separate_datagrams() {
        let (a, b) = pair();
        let to = b.get_ref().local_addr().unwrap();
        let mut batch = SendBatch::default();
        let sent: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 1400]).collect();
        for datagram in &sent {
            if !batch.push(datagram, a.max_segments()) {
                assert_eq!(a.send_batch(&mut batch, to).full, 0);
                assert!(batch.push(datagram, a.max_segments()));
            }
        }
        let report = a.send_batch(&mut batch, to);
        assert!(batch.is_empty());
        assert_eq!((report.full, report.failed.is_none()), (0, true));
        let mut slots = RecvSlots::new(RECV_BATCH);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let n = b.recv_batch(&mut slots).await.unwrap();
            got.extend(slots.datagrams(n).map(|(_, d)| d.to_vec()));
        }
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn the_largest_and_the_empty_datagram_arrive_whole() {
        let (a, b) = pair();
        let to = b.get_ref().local_addr().unwrap();
        let from = a.get_ref().local_addr().unwrap();
        for len in [burrow_proto::datagram::MAX_DATAGRAM, 0] {
            let mut batch = SendBatch::default();
            assert!(batch.push(&vec![7; len], a.max_segments()));
            assert!(
                !batch.push(&vec![7; len], a.max_segments()),
                "too large or empty for GSO"
            );
            assert_eq!(a.send_batch(&mut batch, to).full, 0);
            let mut slots = RecvSlots::new(4);
            let n = b.recv_batch(&mut slots).await.unwrap();
            let got: Vec<_> = slots.datagrams(n).collect();
            assert_eq!(got, vec![(from, &vec![7u8; len][..])]);
        }
    }
}
