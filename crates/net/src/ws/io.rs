//! [`WsIo`]: a WebSocket connection read and written as a byte stream.

use super::SEND_MESSAGE;
use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as TungError, Message};

/// What a WebSocket runs over: TCP, or TLS over TCP.
pub(super) trait Transport: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Transport for T {}

/// An open WebSocket connection as a byte stream.
///
/// Written bytes go out as binary messages. Like a `BufWriter`, small writes are gathered: a
/// message goes out when [`SEND_MESSAGE`] bytes are waiting or on `flush`, so callers must
/// flush (as `tokio::io::copy` and multiplexers do). Reads return the payloads of binary
/// messages in order. Pings are answered (while the stream is being read); a close frame, or the
/// end of the TCP connection, reads as end-of-stream; a text message is an
/// [`io::ErrorKind::InvalidData`] error, as is a message over [`super::MAX_MESSAGE`].
/// `shutdown` sends a close frame: the whole connection ends, as a WebSocket has no half-close.
///
/// Reads and writes are cancel-safe in the sense of `AsyncRead`/`AsyncWrite`: a poll that
/// returns `Pending` has consumed or lost nothing.
pub struct WsIo {
    ws: WebSocketStream<Box<dyn Transport>>,
    /// The unread rest of the last binary message received.
    unread: Bytes,
    /// True once the peer closed: reads return end-of-stream from then on.
    read_closed: bool,
    /// Bytes written but not yet handed to the WebSocket as a message.
    unsent: BytesMut,
    /// True once the close frame was sent.
    shut: bool,
}

// What the carrier code needs of a WebSocket connection (a task owns it, a multiplexer drives
// it), checked at compile time.
const _: fn() = || {
    fn byte_stream<T: AsyncRead + AsyncWrite + Send + Unpin + 'static>() {}
    byte_stream::<WsIo>();
};

impl std::fmt::Debug for WsIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsIo")
            .field("unread", &self.unread.len())
            .field("read_closed", &self.read_closed)
            .field("unsent", &self.unsent.len())
            .field("shut", &self.shut)
            .finish_non_exhaustive()
    }
}

impl WsIo {
    pub(super) fn new(ws: WebSocketStream<Box<dyn Transport>>) -> Self {
        Self {
            ws,
            unread: Bytes::new(),
            read_closed: false,
            unsent: BytesMut::new(),
            shut: false,
        }
    }

    /// Hands the gathered bytes to the WebSocket as one binary message (not yet flushed).
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unsent.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(write_error)?;
        let message = Message::Binary(self.unsent.split().freeze());
        Pin::new(&mut self.ws)
            .start_send(message)
            .map_err(write_error)?;
        Poll::Ready(Ok(()))
    }

    /// Receives the next binary message into `unread`, or marks the end of the stream.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = ready!(Pin::new(&mut self.ws).poll_next(cx));
            match next {
                Some(Ok(Message::Binary(payload))) => {
                    self.unread = payload;
                    return Poll::Ready(Ok(()));
                }
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the WebSocket peer sent a text message; burrow's carrier carries binary \
                         messages only",
                    )));
                }
                // Tungstenite queues the answer to a ping itself; pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    // Send the queued close reply now if the socket takes it, else at the next
                    // flush or shutdown; without either, the peer sees the TCP connection end,
                    // which is an end of stream too.
                    let _ = Pin::new(&mut self.ws).poll_flush(cx);
                    self.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
                None => {
                    self.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) if is_end_of_stream(&e) => {
                    self.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
                Some(Err(e)) => return Poll::Ready(Err(read_error(e))),
            }
        }
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // An empty message leaves `unread` empty: keep receiving rather than report an end.
        while this.unread.is_empty() && !this.read_closed {
            ready!(this.poll_receive(cx))?;
        }
        let n = this.unread.len().min(buf.remaining());
        buf.put_slice(&this.unread[..n]);
        this.unread.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.shut {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the WebSocket was closed",
            )));
        }
        if this.unsent.len() >= SEND_MESSAGE {
            ready!(this.poll_send_unsent(cx))?;
        }
        let n = buf.len().min(SEND_MESSAGE - this.unsent.len());
        this.unsent.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_unsent(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(write_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.shut {
            ready!(this.poll_send_unsent(cx))?;
        }
        // From here on a write would reopen nothing: refuse it, even while the close is pending.
        this.shut = true;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) if is_end_of_stream(&e) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(write_error(e))),
        }
    }
}

/// True for the errors that only say the connection is over: closed after a close frame, or
/// ended by the peer without one.
fn is_end_of_stream(e: &TungError) -> bool {
    matches!(
        e,
        TungError::ConnectionClosed
            | TungError::AlreadyClosed
            | TungError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
    )
}

fn read_error(e: TungError) -> io::Error {
    match e {
        TungError::Io(e) => e,
        TungError::Capacity(e) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the WebSocket peer sent too large a message: {e}"),
        ),
        e => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket protocol error from the peer: {e}"),
        ),
    }
}

fn write_error(e: TungError) -> io::Error {
    match e {
        TungError::Io(e) => e,
        TungError::ConnectionClosed | TungError::AlreadyClosed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the WebSocket connection is closed",
        ),
        TungError::Protocol(ProtocolError::SendAfterClosing) => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the WebSocket peer closed the connection",
        ),
        e => io::Error::other(format!("WebSocket: {e}")),
    }
}
