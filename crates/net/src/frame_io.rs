//! Reading and writing prefaces and frames on any async byte stream.
//!
//! Reads use `read_exact` on the stream itself, never a read-ahead buffer: on a data connection
//! the bytes after the [`burrow_proto::msg::StreamOpen`] frame belong to the visitor and must stay
//! in the socket for the relay.

use burrow_proto::frame::{HEADER_LEN, payload_len};
use burrow_proto::{FrameError, PREFACE_LEN, Preface, PrefaceError, decode_payload, encode_frame};
use serde::{Serialize, de::DeserializeOwned};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame or preface could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameIo {
    /// The peer closed the connection or the socket failed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The frame was oversized or malformed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The preface was not a burrow preface.
    #[error(transparent)]
    Preface(#[from] PrefaceError),
}

/// Writes this build's preface.
pub async fn write_preface<W: AsyncWrite + Unpin>(w: &mut W) -> io::Result<()> {
    write_preface_with(w, Preface::ours()).await
}

/// Writes a preface (this build's, with capability bits added or taken away).
pub async fn write_preface_with<W: AsyncWrite + Unpin>(
    w: &mut W,
    preface: Preface,
) -> io::Result<()> {
    w.write_all(&preface.encode()).await?;
    w.flush().await
}

/// Reads the peer's preface.
pub async fn read_preface<R: AsyncRead + Unpin>(r: &mut R) -> Result<Preface, FrameIo> {
    let mut buf = [0u8; PREFACE_LEN];
    r.read_exact(&mut buf).await?;
    Ok(Preface::decode(&buf)?)
}

/// Most bytes [`read_preface_with`] reads past the preface.
pub const MAX_AFTER_PREFACE: usize = 64;

/// Reads the peer's preface and, in the same read calls, at most `after.len()` bytes that
/// follow it (at most [`MAX_AFTER_PREFACE`]), for a caller that knows the peer sends exactly that
/// much before it waits for an answer, so nothing past it is taken: what follows belongs to
/// someone else (the relay, on a data connection). Returns the preface and how much of `after`
/// was filled; the caller reads the rest. Saves a read per field over [`read_preface`] and
/// exact reads of what follows, when the peer sent them in one write.
pub async fn read_preface_with<R: AsyncRead + Unpin>(
    r: &mut R,
    after: &mut [u8],
) -> Result<(Preface, usize), FrameIo> {
    let mut buf = [0u8; PREFACE_LEN + MAX_AFTER_PREFACE];
    let end = PREFACE_LEN + after.len().min(MAX_AFTER_PREFACE);
    let mut got = 0;
    while got < PREFACE_LEN {
        let n = r.read(&mut buf[got..end]).await?;
        if n == 0 {
            return Err(FrameIo::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        got += n;
    }
    let mut preface = [0u8; PREFACE_LEN];
    preface.copy_from_slice(&buf[..PREFACE_LEN]);
    let preface = Preface::decode(&preface)?;
    let extra = got - PREFACE_LEN;
    after[..extra].copy_from_slice(&buf[PREFACE_LEN..got]);
    Ok((preface, extra))
}

/// Writes one message as a frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameIo> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame and decodes it as `T`. Not cancel-safe: a frame cut off by cancellation is
/// lost, so callers that `select!` on it must own the reader in a dedicated task or loop.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<T, FrameIo> {
    let mut header = [0u8; HEADER_LEN];
    r.read_exact(&mut header).await?;
    let len = payload_len(header)?;
    // Handshake and stream messages are small: read them on the stack, not the heap.
    if len <= SMALL_FRAME {
        let mut payload = [0u8; SMALL_FRAME];
        r.read_exact(&mut payload[..len]).await?;
        return Ok(decode_payload(&payload[..len])?);
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(decode_payload(&payload)?)
}

/// Payloads up to this size are read into a stack buffer by [`read_frame`].
const SMALL_FRAME: usize = 128;

/// Reads frames until the stream fails and forwards each, with the final error, to `tx`.
/// A control stream's reader runs this in its own task, so the session loop can `select!` on a
/// channel (cancel-safe) instead of on a half-read frame (not cancel-safe).
pub async fn forward_frames<R, T>(mut reader: R, tx: tokio::sync::mpsc::Sender<Result<T, FrameIo>>)
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    loop {
        let msg = read_frame(&mut reader).await;
        let failed = msg.is_err();
        if tx.send(msg).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::msg::ClientMsg;

    #[tokio::test]
    async fn frames_cross_a_pipe_and_leave_trailing_bytes() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_preface(&mut a).await.unwrap();
        write_frame(&mut a, &ClientMsg::Ping { seq: 5 })
            .await
            .unwrap();
        a.write_all(b"raw").await.unwrap();
        assert_eq!(read_preface(&mut b).await.unwrap(), Preface::ours());
        let msg: ClientMsg = read_frame(&mut b).await.unwrap();
        assert_eq!(msg, ClientMsg::Ping { seq: 5 });
        let mut rest = [0u8; 3];
        b.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"raw");
    }

    #[tokio::test]
    async fn a_preface_read_with_what_follows_takes_no_more() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_preface(&mut a).await.unwrap();
        a.write_all(b"0123456789").await.unwrap();
        let mut after = [0u8; 4];
        let (preface, filled) = read_preface_with(&mut b, &mut after).await.unwrap();
        assert_eq!(preface, Preface::ours());
        assert_eq!(&after[..filled], &b"0123"[..filled]);
        let mut rest = [0u8; 4];
        b.read_exact(&mut rest[..4 - filled]).await.unwrap();
        let mut tail = [0u8; 6];
        b.read_exact(&mut tail).await.unwrap();
        assert_eq!(&tail, b"456789");
        // A peer that closes after part of a preface is an early end of stream, as before.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&Preface::ours().encode()[..5]).await.unwrap();
        drop(a);
        let err = read_preface_with(&mut b, &mut after).await.unwrap_err();
        assert!(
            matches!(&err, FrameIo::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "{err}"
        );
    }

    #[tokio::test]
    async fn oversized_header_is_refused_without_reading_payload() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame::<_, ClientMsg>(&mut b).await.unwrap_err();
        assert!(
            matches!(err, FrameIo::Frame(FrameError::TooLarge(_))),
            "{err}"
        );
    }
}
