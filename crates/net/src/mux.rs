//! Many streams over one connection: burrow's multiplexed carriers (`mux` over TCP/TLS, and the
//! WebSocket carrier), built on yamux.
//!
//! A multiplexed **link** is one connection that, after its preface, carries a yamux session.
//! Each yamux stream then behaves exactly like one of the TCP carrier's connections: it starts
//! with burrow's preface and handshake, becomes the control stream or a data connection, and
//! carries one visitor's bytes with its own flow control and half-close. Only the dialing
//! changes: opening a "connection" is opening a stream, which costs no round trip of TCP or TLS.
//!
//! yamux's `Connection` makes progress only while it is polled, so each link has one driver
//! task that owns it: the driver reads and writes the socket, hands inbound streams to a bounded
//! channel (the server's side), and opens outbound streams on request (the client's side).
//! Dropping every [`Opener`] (client) or the inbound receiver (server) closes the link.

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

/// Streams a server accepts on one link. yamux ends the whole connection when a peer opens one
/// more than this, and a stream the client has finished with may still count here for a moment,
/// so the server allows twice what a client opens.
const SERVER_MAX_STREAMS: usize = 2 * MAX_STREAMS;

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

/// Streams accepted by the driver but not yet taken by the server; more are refused (reset).
const INBOUND_QUEUE: usize = 64;

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
    /// The driver, woken when the last stream goes.
    driver: AtomicWaker,
}

/// One stream's share of [`Streams`].
#[derive(Debug)]
struct Live(Arc<Streams>);

impl Live {
    fn new(streams: &Arc<Streams>) -> Self {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Self(streams.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.driver.wake();
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

type OpenReply = oneshot::Sender<io::Result<MuxStream>>;

/// Opens streams on a client's link. Cheap to clone; the link closes when the last clone and
/// the last stream are gone (or when the connection fails).
#[derive(Debug, Clone)]
pub struct Opener {
    requests: mpsc::Sender<OpenReply>,
}

impl Opener {
    /// Opens a new stream. Fails once the link is closed or holds [`MAX_STREAMS`] streams.
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
    let (requests, opens) = mpsc::channel(OPEN_QUEUE);
    let connection = yamux::Connection::new(io.compat(), config(MAX_STREAMS), yamux::Mode::Client);
    tokio::spawn(drive(connection, Some(opens), None));
    Opener { requests }
}

/// Starts the server's end of a link over `io` (already past its preface) and returns the
/// streams the client opens, in order. The link closes when the receiver is dropped or the
/// connection ends (the receiver then yields `None`).
pub fn server<T>(io: T) -> mpsc::Receiver<MuxStream>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (inbound, streams) = mpsc::channel(INBOUND_QUEUE);
    let connection =
        yamux::Connection::new(io.compat(), config(SERVER_MAX_STREAMS), yamux::Mode::Server);
    // The driver notices a dropped receiver only when the connection wakes it; this closes an
    // idle link at once.
    let abandoned = inbound.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = drive(connection, None, Some(inbound)) => {}
            () = abandoned.closed() => {}
        }
    });
    streams
}

fn config(streams: usize) -> yamux::Config {
    let mut config = yamux::Config::default();
    config
        .set_max_connection_receive_window(Some(link_window(streams)))
        .set_max_num_streams(streams)
        .set_split_send_size(SPLIT_SEND);
    config
}

/// Polls the connection until it ends: opens the streams asked for, delivers (or refuses) the
/// inbound ones. Returns when the connection closes, fails, or its owner let go of it.
async fn drive<T>(
    mut connection: yamux::Connection<T>,
    mut opens: Option<mpsc::Receiver<OpenReply>>,
    inbound: Option<mpsc::Sender<MuxStream>>,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let streams = Arc::new(Streams::default());
    let wrap = |stream: yamux::Stream| MuxStream {
        io: stream.compat(),
        _live: Live::new(&streams),
    };
    let mut waiting: Option<OpenReply> = None;
    let outcome = std::future::poll_fn(|cx| {
        streams.driver.register(cx.waker());
        loop {
            // The owner let go: close the link (a client's, once its streams are done too).
            let abandoned = match (&mut opens, &inbound) {
                (Some(opens), _) => {
                    opens.is_closed()
                        && opens.is_empty()
                        && waiting.is_none()
                        && streams.open.load(Ordering::Acquire) == 0
                }
                (None, Some(inbound)) => inbound.is_closed(),
                (None, None) => true,
            };
            if abandoned {
                return Poll::Ready(Ok(()));
            }
            if waiting.is_none() {
                if let Some(opens) = &mut opens {
                    match opens.poll_recv(cx) {
                        Poll::Ready(Some(reply)) => waiting = Some(reply),
                        // Every opener is gone; the check above decides when to close.
                        Poll::Ready(None) | Poll::Pending => {}
                    }
                }
            }
            if let Some(reply) = waiting.take() {
                match connection.poll_new_outbound(cx) {
                    Poll::Ready(result) => {
                        let _ = reply.send(
                            result
                                .map(wrap)
                                .map_err(|e| io::Error::other(format!("opening a stream: {e}"))),
                        );
                        continue;
                    }
                    Poll::Pending => waiting = Some(reply),
                }
            }
            match connection.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    if let Some(inbound) = &inbound {
                        if inbound.try_send(wrap(stream)).is_err() {
                            tracing::debug!("stream refused: too many waiting to be accepted");
                        }
                    }
                    // A client does not accept streams: dropping one resets it.
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
