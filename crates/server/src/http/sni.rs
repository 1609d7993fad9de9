//! The HTTPS listener: routes by the TLS server name without terminating TLS (passthrough), or
//! terminates with the operator's certificate and serves HTTP.
//!
//! The ClientHello is read into a buffer (under the edge's header deadline, at most
//! [`MAX_HELLO`] bytes) and parsed by rustls' [`Acceptor`], which only looks. For passthrough
//! the buffered bytes are sent first and the rest of the connection is relayed as is; for
//! termination they are replayed into the TLS handshake.

use super::proxy;
use super::rewind::Rewind;
use super::routes::Miss;
use crate::Shared;
use crate::metrics::{OpenStream, VisitorKind};
use burrow_net::tls::rustls::server::Acceptor;
use burrow_net::{relay, relay_reusable};
use burrow_proto::encode_frame;
use burrow_proto::msg::{StreamKind, StreamOpen, Target};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{Instrument, debug, info, warn};

/// Most bytes read while looking for a whole ClientHello (post-quantum key shares make them a
/// few KiB; a record is at most 16 KiB).
const MAX_HELLO: usize = 32 * 1024;

/// What the first bytes of a connection said.
#[derive(Debug, PartialEq, Eq)]
enum Hello {
    /// A ClientHello, with its server name when it has one.
    Tls(Option<String>),
    /// Not TLS.
    NotTls,
}

/// Reads until `buf` holds a whole ClientHello and says what it names.
async fn read_hello(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Hello> {
    let mut acceptor = Acceptor::default();
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() >= MAX_HELLO {
            return Ok(Hello::NotTls);
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return Ok(Hello::NotTls);
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let name = accepted
                    .client_hello()
                    .server_name()
                    .and_then(burrow_proto::names::hostname);
                return Ok(Hello::Tls(name));
            }
            Ok(None) => continue,
            Err(_) => return Ok(Hello::NotTls),
        }
    }
}

/// Serves one HTTPS visitor connection.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    permit: proxy::Permit,
) {
    let mut buf = Vec::new();
    let deadline = shared.config().http.header_timeout;
    let hello = match tokio::time::timeout(deadline, read_hello(&mut tcp, &mut buf)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => return debug!("visitor left before its ClientHello: {e}"),
        Err(_) => return debug!("no ClientHello within {deadline:?}; closed"),
    };
    let server_name = match hello {
        Hello::Tls(name) => name,
        Hello::NotTls => return debug!("not TLS on the HTTPS listener; closed"),
    };
    if let Some(name) = &server_name {
        match shared.registry.http_pick(Some(name), "/", true) {
            Ok((resolved, member)) => {
                return passthrough(&shared, tcp, peer, buf, &resolved.name, member).await;
            }
            // A passthrough name whose clients are away: never decrypted here, closed.
            Err(Miss::Offline(name)) => {
                return info!(tunnel = %name, "passthrough tunnel offline; connection closed");
            }
            Err(Miss::Unknown) => {}
        }
    }
    let Some(config) = shared.config().http.terminate.clone() else {
        let name = server_name.as_deref().unwrap_or("(none)");
        return info!(server_name = %name, "no passthrough tunnel for this server name; closed");
    };
    let acceptor = burrow_net::tls::tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(deadline, acceptor.accept(Rewind::new(buf, tcp))).await {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            if h2 {
                proxy::serve_h2(shared, tls, peer, permit).await
            } else {
                proxy::serve(shared, tls, peer, super::Scheme::Https, permit).await
            }
        }
        Ok(Err(e)) => debug!("TLS handshake failed: {e}"),
        Err(_) => debug!("TLS handshake not finished within {deadline:?}"),
    }
}

/// Relays an HTTPS connection, still encrypted, to a tunnel whose target holds the certificate.
async fn passthrough(
    shared: &Shared,
    mut tcp: TcpStream,
    peer: SocketAddr,
    hello: Vec<u8>,
    name: &str,
    member: crate::registry::HttpMember,
) {
    let session = member.value;
    let stats = shared.registry.http_stats(name).unwrap_or_default();
    let arrived = std::time::Instant::now();
    let wait = shared.config().pool_wait;
    let Ok((mut carrier, opened)) = tokio::time::timeout(wait, session.take_data()).await else {
        stats.error();
        return warn!(tunnel = %name, "visitor closed: no data connection within {wait:?}");
    };
    let stream = shared.next_stream.fetch_add(1, Ordering::Relaxed);
    let span = crate::spans::session_stream(stream, peer, &session, member.tunnel);
    // As for a TCP tunnel's visitor, a reusable stream's connection goes back to the pool after it.
    let reusable = session.reusable_stream(opened, &carrier);
    // The stream's span covers it from its header to the end of the relay.
    async {
        let open = StreamOpen {
            stream,
            kind: if reusable {
                StreamKind::TcpReusable
            } else {
                StreamKind::Tcp
            },
            target: Target::Tunnel(member.tunnel),
            visitor: Some(peer),
        };
        // The header and the ClientHello leave in one write (one segment, one TLS record); on a
        // reusable stream the ClientHello is its first chunk.
        let sent = match encode_frame(&open) {
            Ok(mut first) => {
                if reusable {
                    burrow_proto::reuse::chunk_into(&mut first, &hello);
                } else {
                    first.extend_from_slice(&hello);
                }
                let written = carrier.write_all(&first).await;
                written.and(carrier.flush().await)
            }
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = sent {
            stats.error();
            return warn!(tunnel = %name, "visitor closed: data connection failed: {e}");
        }
        shared
            .metrics
            .stream_opened(VisitorKind::Passthrough, opened, arrived.elapsed());
        let open = OpenStream::new(&shared.active_streams, &session.streams, &stats);
        let result = if reusable {
            relay_reusable(&mut tcp, &mut carrier).await
        } else {
            relay(&mut tcp, &mut carrier).await
        };
        drop(open);
        match result {
            Ok(r) => {
                let up = r.to_carrier + hello.len() as u64;
                stats.add_bytes(up, r.from_carrier);
                info!(target: "burrow::access", visitor = %peer, tunnel = %name, client = %format_args!("{:016x}", session.id), up, down = r.from_carrier, %opened, path = %r.path, "tls passthrough");
                // Only a reusable stream that kept to its chunks both ways can leave its
                // connection at a chunk boundary. The visitor is done with: close its socket
                // before waiting for the client's release.
                if r.path == burrow_net::relay::Path::Chunked {
                    drop(tcp);
                    crate::pool::reuse(&session.pool, carrier).await;
                }
            }
            Err(e) => debug!(tunnel = %name, "passthrough ended: {e}"),
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_net::tls::rustls;
    use tokio::net::TcpListener;

    /// A real ClientHello from rustls' client, for a given server name.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server_name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    async fn hello_of(bytes: Vec<u8>, split: usize) -> Hello {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let split = split.min(bytes.len());
            c.write_all(&bytes[..split]).await.unwrap();
            c.flush().await.unwrap();
            tokio::task::yield_now().await;
            c.write_all(&bytes[split..]).await.unwrap();
            c
        });
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let hello = read_hello(&mut tcp, &mut buf).await.unwrap();
        let _client = writer.await.unwrap();
        hello
    }

    #[tokio::test]
    async fn reads_the_server_name_even_in_pieces() {
        let hello = client_hello("App.Example.com");
        for split in [hello.len(), 3, 100] {
            assert_eq!(
                hello_of(hello.clone(), split).await,
                Hello::Tls(Some("app.example.com".into()))
            );
        }
    }

    #[tokio::test]
    async fn plain_http_is_not_tls() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(hello_of(req, usize::MAX).await, Hello::NotTls);
    }
}
