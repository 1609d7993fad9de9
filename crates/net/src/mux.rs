//! Many streams over one connection: burrow's multiplexed carriers (`mux` over TCP/TLS, and the
//! WebSocket carrier), built on yamux.
//!
//! A multiplexed **link** is one connection that, after its preface, carries a yamux session.
//! Each yamux stream the client opens then behaves exactly like one of the TCP carrier's
//! connections: it starts with burrow's preface and handshake, becomes the control stream or a
//! data connection, and carries one visitor's bytes with its own flow control and half-close.
//! Only the dialing changes: opening a "connection" is opening a stream, which costs no round
//! trip of TCP or TLS. The server may open streams too, toward a client that asked for them
//! (see `burrow_proto::caps::SERVER_STREAMS`): a visitor then needs no pooled connection.
//!
//! yamux's `Connection` makes progress only while it is polled, so each link has one driver
//! task that owns it: the driver reads and writes the socket, hands inbound streams to a bounded
//! channel, and opens outbound streams on request. Each side opens at most its share of streams
//! ([`MAX_STREAMS`] for a client, [`SERVER_OPENED_STREAMS`] for a server) and accepts their sum
//! and more, because yamux ends the whole connection when a peer goes over its limit. The
//! client's link closes once every [`Opener`] and every stream is gone; the server's once its
//! inbound receiver is dropped.

use futures::task::AtomicWaker;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

/// Streams a client opens on one link at most (visitor connections and idle pooled ones);
/// past this, opening a stream fails (the client then reports the pool as failing).
pub const MAX_STREAMS: usize = 8192;

/// Streams a server opens on one link at most (visitors it serves without a pooled
/// connection); past this, opening fails and the visitor waits for the pool.
pub const SERVER_OPENED_STREAMS: usize = MAX_STREAMS / 2;

/// Streams either side holds on one link, all directions together. yamux ends the whole
/// connection when a peer opens one more than this, and a stream one side has finished with may
/// still count on the other for a moment, so this is twice both shares.
const LINK_STREAMS: usize = 2 * (MAX_STREAMS + SERVER_OPENED_STREAMS);

/// How far the streams of one link may grow their receive windows beyond yamux's initial
/// 256 KiB each, all together. yamux grows a busy stream's window toward twice the
/// bandwidth-delay product it measures, so one transfer fills a long fat path (256 MiB covers
/// 10 Gbit/s at a 100 ms round trip, twice); this bounds what a link can have in flight toward
/// this side, and so buffered here if nobody reads.
const WINDOW_GROWTH: usize = 256 << 20;

/// Receive-window budget of a whole link allowing `streams` streams: yamux wants 256 KiB per
/// stream it allows (a promise of credit, not an allocation), plus the room to grow.
const fn link_window(streams: usize) -> usize {
    streams
        .saturating_mul(yamux::DEFAULT_CREDIT as usize)
        .saturating_add(WINDOW_GROWTH)
}

/// Largest data frame yamux sends: larger writes are split, so a bulk stream cannot hold the
/// link for long and other streams' frames (and window updates) interleave.
const SPLIT_SEND: usize = 64 * 1024;

/// Streams accepted by a server's driver but not yet taken; more are refused (reset), and the
/// client's pool dials again.
const INBOUND_QUEUE: usize = 64;

/// Streams accepted by a client's driver but not yet taken: as many as the server may open, so
/// a burst of visitors is never refused while the server keeps to its share.
const CLIENT_INBOUND_QUEUE: usize = SERVER_OPENED_STREAMS;

/// Open requests waiting for the driver.
const OPEN_QUEUE: usize = 64;

/// One stream of a multiplexed link, as a tokio byte stream.
pub struct MuxStream {
    io: Compat<yamux::Stream>,
    _live: Live,
}

impl std::fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MuxStream({})", self.io.get_ref().id())
    }
}

/// Counts a link's streams, so a client's driver keeps a link whose session is over running
/// until the transfers on it finish (streams outlive sessions, as on the TCP carrier).
#[derive(Debug, Default)]
struct Streams {
    open: AtomicUsize,
    /// Of those, the streams this side opened (held to its share).
    opened: AtomicUsize,
    /// The driver, woken when the last stream goes.
    driver: AtomicWaker,
}

/// One stream's share of [`Streams`].
#[derive(Debug)]
struct Live {
    streams: Arc<Streams>,
    outbound: bool,
}

impl Live {
    fn new(streams: &Arc<Streams>, outbound: bool) -> Self {
        streams.open.fetch_add(1, Ordering::AcqRel);
        if outbound {
            streams.opened.fetch_add(1, Ordering::AcqRel);
        }
        Self {
            streams: streams.clone(),
            outbound,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.outbound {
            self.streams.opened.fetch_sub(1, Ordering::AcqRel);
        }
        if self.streams.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.streams.driver.wake();
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Half-closes the stream: the peer reads the end, and can still write back.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl MuxStream {
    /// Tells the peer at once that this stream, which it opened, was accepted: an empty data
    /// frame carrying yamux's ACK, which the peer's reader skips. Without it the ACK waits for
    /// this side's first byte, and yamux lets the opener hold only 256 unacknowledged streams
    /// before opening waits, so streams whose far end stays silent would block new ones.
    pub async fn acknowledge(&mut self) -> io::Result<()> {
        futures::AsyncWriteExt::write(self.io.get_mut(), &[]).await?;
        Ok(())
    }
}

type OpenReply = oneshot::Sender<io::Result<MuxStream>>;

/// Opens streams on a link. Cheap to clone. A client's link closes when the last clone and the
/// last stream are gone (or when the connection fails); a server's openers do not keep its link
/// open.
#[derive(Debug, Clone)]
pub struct Opener {
    requests: mpsc::Sender<OpenReply>,
}

impl Opener {
    /// Opens a new stream. Fails once the link is closed or this side holds its share of
    /// streams ([`MAX_STREAMS`] for a client, [`SERVER_OPENED_STREAMS`] for a server).
    pub async fn open(&self) -> io::Result<MuxStream> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .await
            .map_err(|_| closed("the multiplexed connection is closed"))?;
        answer
            .await
            .map_err(|_| closed("the multiplexed connection is closed"))?
    }

    /// True once the link's driver has stopped.
    pub fn is_closed(&self) -> bool {
        self.requests.is_closed()
    }

    /// Resolves when the link's driver stops (the connection failed or closed).
    pub async fn closed(&self) {
        self.requests.closed().await
    }
}

/// Starts the client's end of a link over `io` (already past its preface). The driver runs on
/// its own task until the connection ends, or until every [`Opener`] and every stream is gone;
/// streams the server opens are refused.
pub fn client<T>(io: T) -> Opener
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    start_client(io, None)
}

/// Starts the client's end of a link as [`client`] does, and also returns the streams the
/// server opens on it, in order. Dropping the receiver refuses them from then on; it does not
/// close the link.
pub fn client_accepting<T>(io: T) -> (Opener, mpsc::Receiver<MuxStream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (inbound, streams) = mpsc::channel(CLIENT_INBOUND_QUEUE);
    (start_client(io, Some(inbound)), streams)
}

fn start_client<T>(io: T, inbound: Option<mpsc::Sender<MuxStream>>) -> Opener
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (requests, opens) = mpsc::channel(OPEN_QUEUE);
    let connection = yamux::Connection::new(io.compat(), config(), yamux::Mode::Client);
    tokio::spawn(drive(connection, opens, inbound, Side::Client));
    Opener { requests }
}

/// Starts the server's end of a link over `io` (already past its preface): returns an
/// [`Opener`] for streams toward the client, and the streams the client opens, in order. The
/// link closes when the receiver is dropped or the connection ends (the receiver then yields
/// `None`, and opening fails).
pub fn server<T>(io: T) -> (Opener, mpsc::Receiver<MuxStream>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (inbound, streams) = mpsc::channel(INBOUND_QUEUE);
    let (requests, opens) = mpsc::channel(OPEN_QUEUE);
    let connection = yamux::Connection::new(io.compat(), config(), yamux::Mode::Server);
    // The driver notices a dropped receiver only when the connection wakes it; this closes an
    // idle link at once.
    let abandoned = inbound.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = drive(connection, opens, Some(inbound), Side::Server) => {}
            () = abandoned.closed() => {}
        }
    });
    (Opener { requests }, streams)
}

/// Which end of a link a driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

impl Side {
    /// Streams this side may have opened and still hold.
    fn share(self) -> usize {
        match self {
            Side::Client => MAX_STREAMS,
            Side::Server => SERVER_OPENED_STREAMS,
        }
    }
}

fn config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config
        .set_max_connection_receive_window(Some(link_window(LINK_STREAMS)))
        .set_max_num_streams(LINK_STREAMS)
        .set_split_send_size(SPLIT_SEND);
    config
}

/// Polls the connection until it ends: opens the streams asked for, delivers (or refuses) the
/// inbound ones. Returns when the connection closes, fails, or its owner let go of it.
async fn drive<T>(
    mut connection: yamux::Connection<T>,
    mut opens: mpsc::Receiver<OpenReply>,
    inbound: Option<mpsc::Sender<MuxStream>>,
    side: Side,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let streams = Arc::new(Streams::default());
    let wrap = |stream: yamux::Stream, outbound: bool| MuxStream {
        io: stream.compat(),
        _live: Live::new(&streams, outbound),
    };
    let mut waiting: Option<OpenReply> = None;
    let outcome = std::future::poll_fn(|cx| {
        streams.driver.register(cx.waker());
        loop {
            // The owner let go: close the link (a client's, once its streams are done too).
            let abandoned = match side {
                Side::Client => {
                    opens.is_closed()
                        && opens.is_empty()
                        && waiting.is_none()
                        && streams.open.load(Ordering::Acquire) == 0
                }
                Side::Server => inbound.as_ref().is_none_or(|i| i.is_closed()),
            };
            if abandoned {
                return Poll::Ready(Ok(()));
            }
            if waiting.is_none() {
                match opens.poll_recv(cx) {
                    Poll::Ready(Some(reply)) => waiting = Some(reply),
                    // Every opener is gone; the check above decides when to close.
                    Poll::Ready(None) | Poll::Pending => {}
                }
            }
            if let Some(reply) = waiting.take() {
                if streams.opened.load(Ordering::Acquire) >= side.share() {
                    let _ = reply.send(Err(io::Error::other(format!(
                        "this side already holds its {} streams on the link",
                        side.share()
                    ))));
                    continue;
                }
                match connection.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        let _ = reply.send(
                            result
                                .map(|s| wrap(s, true))
                                .map_err(|e| io::Error::other(format!("opening a stream: {e}"))),
                        );
                        continue;
                    }
                    Poll::Pending => waiting = Some(reply),
                }
            }
            match connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    // Without a receiver (a client that accepts nothing), or with a full or
                    // closed one, dropping the stream resets it.
                    if let Some(inbound) = &inbound {
                        match inbound.try_send(wrap(stream, false)) {
                            Ok(()) => {}
                            // The server's share fits the client's queue: a server past it is
                            // misbehaving, which the client's operator should see.
                            Err(mpsc::error::TrySendError::Full(_)) if side == Side::Client => {
                                tracing::warn!(
                                    "stream from the server refused: {CLIENT_INBOUND_QUEUE} already wait to be accepted"
                                );
                            }
                            Err(_) => {
                                tracing::debug!("stream refused: too many waiting to be accepted");
                            }
                        }
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    match outcome {
        Ok(()) => {
            let _ = std::future::poll_fn(|cx| connection.poll_close(cx)).await;
        }
        Err(e) => tracing::debug!("multiplexed connection ended: {e}"),
    }
}

fn closed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned())
}

#[cfg(test)]
mod tests;
