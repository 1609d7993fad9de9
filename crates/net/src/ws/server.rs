//! The server's side of the upgrade: read the request head, check it, answer it.
//!
//! Done here rather than by tungstenite so that every refusal gets an HTTP answer (a scanner or
//! a browser asking for `/` sees a 404, a plain GET of the carrier's path a 426) and so that the
//! head has a hard size limit. [`upgrade_answer`] is the pure decision, tested on its own.

use super::io::{Transport, WsIo};
use super::{MAX_HEAD, WsError, config};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// Most header lines a request may have.
const MAX_HEADERS: usize = 64;

/// Accepts a WebSocket upgrade for exactly `path` (the query string is not compared) on a
/// connection the server accepted (TCP, or TLS over TCP for `wss://` served directly).
///
/// Any other path gets `404 Not Found` and [`WsError::WrongPath`]; a request for `path` that is
/// not a WebSocket upgrade gets a 4xx answer and [`WsError::BadRequest`]. The request head may
/// be at most [`MAX_HEAD`] bytes. This waits for the client without limit: the caller bounds it
/// with its handshake deadline (dropping the future drops the connection).
pub async fn accept<S>(io: S, path: &str) -> Result<WsIo, WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    Ok(upgrade(io, path, |_| Ok(())).await?.io)
}

/// An accepted upgrade: the WebSocket, and what the request said about where it came from.
#[derive(Debug)]
pub struct Upgraded {
    /// The WebSocket.
    pub io: WsIo,
    /// The request's `X-Forwarded-For` entries, left (the original client, as the first proxy
    /// saw it) to right (added by the proxy nearest to the server); `None` for an entry that is
    /// not an address. Empty without the header. Only a proxy the server trusts may be believed.
    pub forwarded_for: Vec<Option<std::net::IpAddr>>,
}

/// Accepts an upgrade as [`accept`] does, and also returns the request's `X-Forwarded-For`.
/// Before answering an acceptable request, `admit` sees those entries and may turn it down: the
/// client then gets `403 Forbidden` and the caller [`WsError::Forbidden`] with its reason.
pub async fn upgrade<S>(
    mut io: S,
    path: &str,
    admit: impl FnOnce(&[Option<std::net::IpAddr>]) -> Result<(), String>,
) -> Result<Upgraded, WsError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (head, rest) = match read_head(&mut io).await? {
        Ok(split) => split,
        Err(refusal) => return Err(refuse(&mut io, refusal).await),
    };
    let Answer {
        accept_key,
        forwarded_for,
    } = match upgrade_answer(&head, path) {
        Ok(answer) => answer,
        Err(refusal) => return Err(refuse(&mut io, refusal).await),
    };
    if let Err(why) = admit(&forwarded_for) {
        let refusal = Refusal {
            status: "403 Forbidden",
            headers: "",
            error: WsError::Forbidden(why),
        };
        return Err(refuse(&mut io, refusal).await);
    }
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept_key}\r\n\r\n"
    );
    io.write_all(response.as_bytes()).await?;
    io.flush().await?;
    let io: Box<dyn Transport> = Box::new(io);
    let ws = WebSocketStream::from_partially_read(io, rest, Role::Server, Some(config())).await;
    Ok(Upgraded {
        io: WsIo::new(ws),
        forwarded_for,
    })
}

/// What an acceptable request gets: the `Sec-WebSocket-Accept` value, and its
/// `X-Forwarded-For` entries.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) accept_key: String,
    pub(super) forwarded_for: Vec<Option<std::net::IpAddr>>,
}

/// A request the server turns down: the HTTP answer and the error for the caller.
#[derive(Debug)]
pub(super) struct Refusal {
    /// Status code and reason of the answer, e.g. `404 Not Found`.
    status: &'static str,
    /// Extra header lines, each ending in CRLF.
    headers: &'static str,
    error: WsError,
}

/// Reads until the end of the request head; returns the head and the bytes after it.
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<Result<(Vec<u8>, Vec<u8>), Refusal>, WsError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = head_end(&buf) {
            let rest = buf.split_off(end);
            return Ok(Ok((buf, rest)));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(Err(bad(
                "431 Request Header Fields Too Large",
                String::new(),
                format!("the request head is larger than {MAX_HEAD} bytes"),
            )));
        }
        let mut chunk = [0u8; 2048];
        let want = chunk.len().min(MAX_HEAD - buf.len());
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(WsError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed before a complete request head",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the head (through its blank line), once it is all in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Decides on a complete request head: the answer, or why not.
pub(super) fn upgrade_answer(head: &[u8], path: &str) -> Result<Answer, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(head);
    if let Err(httparse::Error::TooManyHeaders) = parsed {
        return Err(bad(
            "431 Request Header Fields Too Large",
            String::new(),
            format!("the request has more than {MAX_HEADERS} header lines"),
        ));
    }
    if !matches!(parsed, Ok(httparse::Status::Complete(_))) {
        return Err(bad(
            "400 Bad Request",
            String::new(),
            "not an HTTP/1.1 request".to_owned(),
        ));
    }
    let target = request.path.unwrap_or_default();
    let asked = target.split('?').next().unwrap_or_default();
    if asked != path {
        return Err(Refusal {
            status: "404 Not Found",
            headers: "",
            error: WsError::WrongPath {
                requested: printable(target),
                expected: path.to_owned(),
            },
        });
    }
    let accept_key = check_upgrade(&request).map_err(|(status, headers, why)| Refusal {
        status,
        headers,
        error: WsError::BadRequest {
            path: printable(target),
            why: why.to_owned(),
        },
    })?;
    Ok(Answer {
        accept_key,
        forwarded_for: forwarded_for(request.headers),
    })
}

/// Most `X-Forwarded-For` entries read; further ones (to the left, the farthest from the
/// server) are not looked at.
const MAX_FORWARDED: usize = 32;

/// Every `X-Forwarded-For` entry of `headers`, in order (several header lines read as one
/// list), at most the last [`MAX_FORWARDED`]. An entry is an address, possibly with a port
/// (`192.0.2.7:4711`, `[2001:db8::7]:4711`); anything else (`unknown`, an obfuscated name)
/// reads as `None`.
fn forwarded_for(headers: &[httparse::Header<'_>]) -> Vec<Option<std::net::IpAddr>> {
    use std::net::{IpAddr, SocketAddr};
    let mut entries: Vec<Option<IpAddr>> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("X-Forwarded-For"))
        .flat_map(|h| {
            let value = std::str::from_utf8(h.value).unwrap_or("\u{fffd}");
            value.split(',').map(|entry| {
                let entry = entry.trim();
                (entry.parse::<IpAddr>().ok())
                    .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
            })
        })
        .collect();
    if entries.len() > MAX_FORWARDED {
        entries.drain(..entries.len() - MAX_FORWARDED);
    }
    entries
}

/// An answer's status, its extra headers, and what was wrong.
type Rejection = (&'static str, &'static str, &'static str);

/// The WebSocket checks of RFC 6455 section 4.2.1 on a request for the right path; returns the
/// accept key.
fn check_upgrade(request: &httparse::Request<'_, '_>) -> Result<String, Rejection> {
    const NEED_UPGRADE: &str = "Upgrade: websocket\r\n";
    if request.method != Some("GET") {
        return Err(("405 Method Not Allowed", "Allow: GET\r\n", "not a GET"));
    }
    if request.version != Some(1) {
        return Err(("400 Bad Request", "", "not HTTP/1.1"));
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("Upgrade", "websocket") {
        return Err((
            "426 Upgrade Required",
            NEED_UPGRADE,
            "not a WebSocket upgrade (no `Upgrade: websocket`); a proxy in between may drop it",
        ));
    }
    if !has_token("Connection", "upgrade") {
        return Err((
            "426 Upgrade Required",
            NEED_UPGRADE,
            "no `Connection: Upgrade`; a proxy in between may drop it",
        ));
    }
    if header("Sec-WebSocket-Version").map(str::trim) != Some("13") {
        return Err((
            "426 Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            "not WebSocket version 13",
        ));
    }
    // The key is 16 random bytes in base64: 24 characters ending in `==`.
    match header("Sec-WebSocket-Key").map(str::trim) {
        Some(key) if key.len() == 24 && key.ends_with("==") => {
            Ok(derive_accept_key(key.as_bytes()))
        }
        _ => Err(("400 Bad Request", "", "no valid Sec-WebSocket-Key")),
    }
}

fn bad(status: &'static str, path: String, why: String) -> Refusal {
    Refusal {
        status,
        headers: "",
        error: WsError::BadRequest { path, why },
    }
}

/// A request target for an error message: at most 200 characters, control characters escaped.
fn printable(target: &str) -> String {
    target
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect()
}

/// Sends the refusal's answer (best effort: the error matters more) and returns its error.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, refusal: Refusal) -> WsError {
    let Refusal {
        status,
        headers,
        error,
    } = refusal;
    let body = format!("{status}\n");
    let answer = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    if io.write_all(answer.as_bytes()).await.is_ok() {
        let _ = io.shutdown().await;
    }
    error
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    const PATH: &str = "/burrow";

    /// Sends `request` from a raw TCP client; returns the server's error and the raw answer.
    async fn raw_request(request: &[u8]) -> (WsError, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp, PATH).await
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request).await.unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        (server.await.unwrap().unwrap_err(), answer)
    }

    #[tokio::test]
    async fn plain_http_requests_get_an_http_answer() {
        let (err, answer) = raw_request(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        assert!(matches!(err, WsError::WrongPath { requested, .. } if requested == "/"));

        let (err, answer) = raw_request(b"GET /burrow HTTP/1.1\r\nHost: example\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{answer}"
        );
        assert!(answer.contains("\r\nUpgrade: websocket\r\n"), "{answer}");
        let msg = err.to_string();
        assert!(
            msg.contains("/burrow") && msg.contains("Upgrade: websocket"),
            "{msg}"
        );

        let huge = format!(
            "GET /burrow HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        let (err, answer) = raw_request(huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn upgrade_checks() {
        let upgrade = "Upgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let head = |first: &str, headers: &str| format!("{first}\r\nHost: h\r\n{headers}\r\n");
        let ok = head("GET /burrow HTTP/1.1", upgrade);
        // The example of RFC 6455 section 1.3.
        assert_eq!(
            upgrade_answer(ok.as_bytes(), PATH).unwrap().accept_key,
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let no_version = upgrade.replace("Sec-WebSocket-Version: 13\r\n", "");
        let short_key = upgrade.replace("dGhlIHNhbXBsZSBub25jZQ==", "abc");
        let many = "X: y\r\n".repeat(70);
        let cases = [
            (head("GET /burrowx HTTP/1.1", upgrade), "404 Not Found"),
            (head("GET /burrow/ HTTP/1.1", upgrade), "404 Not Found"),
            (
                head("POST /burrow HTTP/1.1", upgrade),
                "405 Method Not Allowed",
            ),
            (head("GET /burrow HTTP/1.0", upgrade), "400 Bad Request"),
            (
                head("GET /burrow HTTP/1.1", &upgrade.replace("WebSocket", "h2c")),
                "426 Upgrade Required",
            ),
            (
                head(
                    "GET /burrow HTTP/1.1",
                    &upgrade.replace("keep-alive, Upgrade", "close"),
                ),
                "426 Upgrade Required",
            ),
            (
                head("GET /burrow HTTP/1.1", &no_version),
                "426 Upgrade Required",
            ),
            (head("GET /burrow HTTP/1.1", &short_key), "400 Bad Request"),
            (
                head("GET /burrow HTTP/1.1", &many),
                "431 Request Header Fields Too Large",
            ),
            (
                "\x16\x03\x01 not http\r\n\r\n".to_owned(),
                "400 Bad Request",
            ),
        ];
        for (head, want) in cases {
            let refusal = upgrade_answer(head.as_bytes(), PATH).unwrap_err();
            assert_eq!(refusal.status, want, "{head:?}: {}", refusal.error);
        }
    }

    #[test]
    fn forwarded_for_lists_every_entry_in_order() {
        let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let with = |extra: &str| {
            let head = format!("GET /burrow HTTP/1.1\r\nHost: h\r\n{upgrade}{extra}\r\n");
            upgrade_answer(head.as_bytes(), PATH).unwrap().forwarded_for
        };
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        assert_eq!(with(""), Vec::new());
        assert_eq!(
            with("X-Forwarded-For: 203.0.113.7, unknown,2001:db8::1\r\n"),
            vec![ip("203.0.113.7"), None, ip("2001:db8::1")]
        );
        // Several lines are one list; ports are dropped; case does not matter.
        assert_eq!(
            with("x-forwarded-for: 198.51.100.2:4711\r\nX-Forwarded-For: [2001:db8::2]:80\r\n"),
            vec![ip("198.51.100.2"), ip("2001:db8::2")]
        );
        // Only the last entries are kept, the ones nearest to the server.
        let long = (0..40).map(|i| format!("10.0.0.{i}")).collect::<Vec<_>>();
        let kept = with(&format!("X-Forwarded-For: {}\r\n", long.join(", ")));
        assert_eq!(kept.len(), MAX_FORWARDED);
        assert_eq!(kept.first(), Some(&ip("10.0.0.8")));
        assert_eq!(kept.last(), Some(&ip("10.0.0.39")));
    }
}
