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
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(decode_payload(&payload)?)
}

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
