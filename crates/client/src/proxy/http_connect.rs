//! HTTP CONNECT: ask an HTTP proxy for a tunnel to `host:port` and read its answer.
//!
//! The answer's head is read without taking a byte past its blank line: the server's first
//! bytes (a plain server's preface) may arrive in the same packet, and they belong to the
//! connection, not to the proxy. Reads are sized so that they cannot cross the end of the head
//! (see [`read_head`]), which keeps the stream a plain socket with nothing buffered aside.

use super::Credentials;
use crate::connect::ConnectError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest answer head accepted from a proxy.
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// Most header lines parsed in an answer.
const MAX_HEADERS: usize = 64;
/// What ends an HTTP head.
const END: &[u8; 4] = b"\r\n\r\n";

/// Sends `CONNECT target` (with `credentials` as Basic authorization) and reads the proxy's
/// answer: `Ok` on a 2xx, with the stream positioned at the first byte from the server.
pub(super) async fn handshake<S>(
    stream: &mut S,
    target: &str,
    credentials: Option<&Credentials>,
) -> Result<(), ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = request(target, credentials);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ConnectError::Retry(format!("cannot send CONNECT: {e}")))?;
    let head = read_head(stream).await?;
    check_answer(&head, credentials.is_some())
}

/// The CONNECT request for `target` (`host:port`, IPv6 in brackets).
pub(super) fn request(target: &str, credentials: Option<&Credentials>) -> String {
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(c) = credentials {
        let pair = format!("{}:{}", c.user, c.password());
        let token = BASE64.encode(pair.as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    request
}

/// Reads an answer head up to and including its blank line, and not one byte further.
///
/// Each read asks for at most `4 - k` bytes, where `k` is how much of `\r\n\r\n` the bytes read
/// so far already end with (the longest such overlap). The terminator cannot end sooner than
/// `4 - k` bytes on, so a read never crosses it, and four bytes per read at most keep the cost
/// to a few dozen small reads for a usual answer.
pub(super) async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Vec<u8>, ConnectError> {
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; END.len()];
    loop {
        let want = END.len() - overlap(&head);
        let n = stream
            .read(&mut chunk[..want])
            .await
            .map_err(|e| ConnectError::Retry(format!("connection lost reading its answer: {e}")))?;
        if n == 0 {
            return Err(ConnectError::Retry(
                "the proxy closed the connection before answering CONNECT".into(),
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if head.ends_with(END) {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(ConnectError::Retry(format!(
                "the proxy's answer to CONNECT is longer than {} KiB",
                MAX_HEAD / 1024
            )));
        }
    }
}

/// How many bytes at the end of `head` are the start of `\r\n\r\n` (the longest overlap).
fn overlap(head: &[u8]) -> usize {
    (1..END.len())
        .rev()
        .find(|&k| head.ends_with(&END[..k]))
        .unwrap_or(0)
}

/// Reads the status of an answer head: 2xx is a tunnel, 407 a credentials problem (one the
/// user must fix), anything else a refusal worth retrying. 401 counts as 407: before the tunnel
/// exists only the proxy can answer, and some proxies (tinyproxy) send 401 for their own login.
pub(super) fn check_answer(head: &[u8], sent_credentials: bool) -> Result<(), ConnectError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    match answer.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(ConnectError::Retry(
                "the proxy's answer to CONNECT is cut short".into(),
            ));
        }
        Err(e) => {
            return Err(ConnectError::Retry(format!(
                "the proxy's answer to CONNECT is not HTTP: {e}"
            )));
        }
    }
    let code = answer.code.unwrap_or(0);
    let reason = answer.reason.unwrap_or("");
    let status = format!("{code} {reason}").trim_end().to_owned();
    match code {
        200..=299 => Ok(()),
        401 | 407 if sent_credentials => Err(ConnectError::ProxyAuth(format!(
            "the proxy refused these credentials ({status})"
        ))),
        401 | 407 => Err(ConnectError::ProxyAuth(format!(
            "the proxy wants credentials ({status}): give them in the proxy URL, \
             http://USER:PASSWORD@HOST:PORT"
        ))),
        _ => Err(ConnectError::Retry(format!(
            "the proxy answered CONNECT with {status}"
        ))),
    }
}
