//! One bidirectional QUIC stream as one byte stream, like a TCP connection.

use super::QuicLink;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A QUIC stream's two halves as one `AsyncRead + AsyncWrite` value, so burrow's handshake,
/// frame I/O and relay run over it as over a TCP connection.
///
/// Shutdown finishes the sending half: the peer reads end of stream after the last byte, and
/// reading here goes on (a half-close, as TCP's FIN). Dropping the stream finishes it too, so
/// whatever was written is still delivered; unread incoming data is refused with
/// `STOP_SENDING`, which the peer sees as a write error, as a TCP reset.
#[derive(Debug)]
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Set once shutdown has finished the sending half, so a second shutdown is a no-op.
    finished: bool,
    /// The link it was opened or accepted on, when opened through one.
    link: Option<QuicLink>,
}

impl QuicStream {
    /// Joins the two halves of one bidirectional stream.
    pub fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self {
            send,
            recv,
            finished: false,
            link: None,
        }
    }

    /// The same stream, knowing it belongs to `link`.
    pub(crate) fn on(self, link: QuicLink) -> Self {
        Self {
            link: Some(link),
            ..self
        }
    }

    /// The link the stream belongs to, when it was opened or accepted through a [`QuicLink`]:
    /// a UDP tunnel's datagram stream asks it for a datagram channel.
    pub fn link(&self) -> Option<&QuicLink> {
        self.link.as_ref()
    }

    /// The stream's id within its connection, for logs.
    pub fn id(&self) -> quinn::StreamId {
        self.send.id()
    }

    /// The two halves again, for callers that need quinn's own methods.
    pub fn into_parts(self) -> (quinn::SendStream, quinn::RecvStream) {
        (self.send, self.recv)
    }
}

/// Opens a new stream on `conn`. Waits while the peer's limit of concurrent streams is reached.
///
/// The peer's [`accept`] sees the stream only once something is written on it, so the opener
/// must speak first (burrow's preface does).
pub async fn open(conn: &quinn::Connection) -> io::Result<QuicStream> {
    let (send, recv) = conn.open_bi().await?;
    Ok(QuicStream::new(send, recv))
}

/// Accepts the next stream the peer opened; `None` once the connection was closed by either
/// side's application (a clean end), an error when it failed (timed out, reset, refused).
pub async fn accept(conn: &quinn::Connection) -> Option<io::Result<QuicStream>> {
    match conn.accept_bi().await {
        Ok((send, recv)) => Some(Ok(QuicStream::new(send, recv))),
        Err(
            quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::LocallyClosed,
        ) => None,
        Err(e) => Some(Err(e.into())),
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.get_mut().recv), cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.get_mut().send), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.finished {
            // Queues the FIN after the data already written; quinn delivers both.
            this.send
                .finish()
                .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e))?;
            this.finished = true;
        }
        Poll::Ready(Ok(()))
    }
}
