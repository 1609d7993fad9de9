//! Joining two byte streams: a visitor and a stream's data connection.

use tokio::io::{AsyncRead, AsyncWrite, copy_bidirectional_with_sizes};

/// Buffer size per direction. 64 KiB keeps bulk transfers efficient over TLS records while
/// staying small; the buffers exist only while a relay runs.
const RELAY_BUF: usize = 64 * 1024;

/// Copies both ways until both directions have finished, carrying half-close: when one side
/// stops sending, the other side's write half is shut down and the opposite direction goes on.
/// Returns bytes copied (a → b, b → a).
pub async fn relay<A, B>(a: &mut A, b: &mut B) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy_bidirectional_with_sizes(a, b, RELAY_BUF, RELAY_BUF).await
}
