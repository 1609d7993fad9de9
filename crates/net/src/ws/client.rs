//! The client's side: TLS for `wss://`, the upgrade request, and errors that say what happened.

use super::io::{Transport, WsIo};
use super::{WsError, config};
use crate::tls::{load_roots, server_name, trust_error_message};
use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{Error as TungError, ProtocolError};
use url::Url;

/// Opens a WebSocket to `url` (`ws://` or `wss://`) over `tcp`, a connection the caller dialed
/// to the URL's host (directly or through a proxy).
///
/// The request carries a `Host` header for the URL's host (and port, unless the scheme's
/// default) and the URL's path and query. For `wss://`, TLS runs over `tcp` with `tls`, or, when
/// `tls` is `None`, with [`webpki_client_config`]`(None)`; the TLS server name is the URL's
/// host. `tls` is ignored for `ws://`. This waits for the server without limit: the caller bounds
/// it with its handshake deadline.
pub async fn connect(
    tcp: TcpStream,
    url: &Url,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<WsIo, WsError> {
    let target = Target::parse(url)?;
    let io: Box<dyn Transport> = if target.secure {
        let tls = match tls {
            Some(tls) => tls,
            None => webpki_client_config(None).map_err(|e| WsError::TlsConfig(format!("{e:#}")))?,
        };
        Box::new(tls_connect(tcp, &target.host, tls).await?)
    } else {
        Box::new(tcp)
    };
    let request = target
        .uri
        .as_str()
        .into_client_request()
        .map_err(|e| target.url_error(e.to_string()))?;
    match tokio_tungstenite::client_async_with_config(request, io, Some(config())).await {
        Ok((ws, _response)) => Ok(WsIo::new(ws)),
        Err(e) => Err(handshake_error(e, target.path)),
    }
}

/// A rustls client configuration for `wss://` that trusts the Mozilla root certificates (built
/// in, from the `webpki-roots` crate) and, when given, the CA certificates in the PEM file
/// `ca_file` (for a server with a private CA or a self-signed certificate).
///
/// TLS 1.2 and 1.3, ALPN `http/1.1` (what WebSocket proxies and CDNs expect).
pub fn webpki_client_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for cert in load_roots(path)?.roots {
            roots.roots.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider supports no safe TLS version")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What [`connect`] needs from the URL.
struct Target {
    /// The URL without its fragment, which is never sent.
    uri: Url,
    secure: bool,
    host: String,
    /// Path and query, for the request and for error messages.
    path: String,
}

impl Target {
    fn parse(url: &Url) -> Result<Self, WsError> {
        let mut uri = url.clone();
        uri.set_fragment(None);
        let error = |why: &str| WsError::Url {
            url: url.to_string(),
            why: why.to_owned(),
        };
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            _ => return Err(error("the scheme must be ws:// or wss://")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| error("no host"))?
            .to_owned();
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        Ok(Self {
            uri,
            secure,
            host,
            path,
        })
    }

    fn url_error(&self, why: String) -> WsError {
        WsError::Url {
            url: self.uri.to_string(),
            why,
        }
    }
}

async fn tls_connect(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, WsError> {
    let name = server_name(host).map_err(|e| WsError::Url {
        url: host.to_owned(),
        why: e.to_string(),
    })?;
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| match trust_error_message(&e) {
            Some(why) => WsError::Trust {
                host: host.to_owned(),
                why,
            },
            None => WsError::Tls(e),
        })
}

/// Turns tungstenite's handshake failure into what the user should know.
fn handshake_error(e: TungError, path: String) -> WsError {
    let not_websocket = |why: String| WsError::NotWebSocket {
        path: path.clone(),
        why,
    };
    match e {
        TungError::Http(response) => WsError::Status {
            status: response.status().as_u16(),
            reason: response
                .status()
                .canonical_reason()
                .unwrap_or("(unknown status)")
                .to_owned(),
            path,
        },
        TungError::Io(e) => WsError::Io(e),
        TungError::Protocol(ProtocolError::HandshakeIncomplete) => {
            not_websocket("the connection closed before a complete answer".to_owned())
        }
        TungError::Protocol(ProtocolError::HttparseError(e)) => {
            not_websocket(format!("the answer is not HTTP ({e})"))
        }
        TungError::AttackAttempt | TungError::Capacity(_) => {
            not_websocket("the answer's head is too large".to_owned())
        }
        e => not_websocket(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn the_request_names_the_host_and_the_path() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                tcp.read_exact(&mut byte).await.unwrap();
                head.push(byte[0]);
            }
            tcp.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let url = Url::parse(&format!("ws://LocalHost:{port}/burrow/x?a=1&b=2#frag")).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let err = connect(tcp, &url, None).await.unwrap_err();
        let head = server.await.unwrap();
        assert!(
            head.starts_with("GET /burrow/x?a=1&b=2 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nHost: localhost:{port}\r\n")),
            "{head}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("503 Service Unavailable at /burrow/x?a=1&b=2: a proxy"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn bad_urls_and_non_websocket_servers_are_named() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for bad in ["http://h/x", "tcp://h:1"] {
            let url = Url::parse(bad).unwrap();
            let tcp = TcpStream::connect(addr).await.unwrap();
            let err = connect(tcp, &url, None).await.unwrap_err();
            assert!(matches!(err, WsError::Url { .. }), "{bad}: {err:?}");
            let _ = listener.accept().await.unwrap();
        }
        // A server that answers something else than HTTP.
        let answer = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 64];
            let _ = tcp.read(&mut head).await.unwrap();
            tcp.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await.unwrap();
        });
        let url = Url::parse(&format!("ws://{addr}/x")).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let err = connect(tcp, &url, None).await.unwrap_err();
        answer.await.unwrap();
        assert!(matches!(err, WsError::NotWebSocket { .. }), "{err:?}");
        assert!(err.to_string().contains("/x"), "{err}");
    }
}
