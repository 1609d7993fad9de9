//! SOCKS5 (RFC 1928) with user name and password (RFC 1929), by the `tokio-socks` crate; this
//! module chooses who resolves the server's name and words each refusal for the user.

use super::Credentials;
use crate::connect::ConnectError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_socks::Error as Socks;
use tokio_socks::tcp::Socks5Stream;

/// Has the SOCKS5 proxy at the other end of `stream` connect to `host:port`, resolving `host`
/// itself when `remote_dns` (socks5h) and here otherwise (socks5); returns `stream`, now
/// carrying the server's bytes.
pub(super) async fn connect<S>(
    stream: S,
    host: &str,
    port: u16,
    remote_dns: bool,
    credentials: Option<&Credentials>,
) -> Result<S, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = if remote_dns {
        tokio_socks::TargetAddr::Domain(host.into(), port)
    } else {
        tokio_socks::TargetAddr::Ip(resolve(host, port).await?)
    };
    let result = match credentials {
        None => Socks5Stream::connect_with_socket(stream, target).await,
        Some(c) => {
            let password = c.password();
            Socks5Stream::connect_with_password_and_socket(stream, target, &c.user, &password).await
        }
    };
    result
        .map(Socks5Stream::into_inner)
        .map_err(|e| classify(&e, credentials.is_some()))
}

/// The first address `host` resolves to here (socks5: the client resolves).
async fn resolve(host: &str, port: u16) -> Result<std::net::SocketAddr, ConnectError> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ConnectError::Retry(format!("cannot resolve {host}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| ConnectError::Retry(format!("{host} resolves to no address")))
}

/// A SOCKS failure as the user should read it: credentials problems are [`ConnectError::ProxyAuth`],
/// the rest are worth retrying.
pub(super) fn classify(e: &Socks, sent_credentials: bool) -> ConnectError {
    let retry = |m: &str| ConnectError::Retry(m.to_owned());
    match e {
        Socks::PasswordAuthFailure(_) => {
            ConnectError::ProxyAuth("the proxy refused these credentials".into())
        }
        Socks::NoAcceptableAuthMethods if sent_credentials => ConnectError::ProxyAuth(
            "the proxy accepts none of the offered ways to log in (no authentication, or user \
             and password)"
                .into(),
        ),
        Socks::NoAcceptableAuthMethods | Socks::AuthorizationRequired => ConnectError::ProxyAuth(
            "the proxy wants credentials: give them in the proxy URL, \
             socks5://USER:PASSWORD@HOST:PORT"
                .into(),
        ),
        Socks::GeneralSocksServerFailure => retry("the proxy reports a general failure"),
        Socks::ConnectionNotAllowedByRuleset => {
            retry("the proxy's rules do not allow a connection to the server")
        }
        Socks::NetworkUnreachable => retry("the proxy cannot reach the server's network"),
        Socks::HostUnreachable => retry("the proxy cannot reach the server's host"),
        Socks::ConnectionRefused => retry("the server refused the proxy's connection"),
        Socks::TtlExpired => retry("the proxy's connection to the server timed out (TTL expired)"),
        Socks::CommandNotSupported => retry("the proxy does not support CONNECT"),
        Socks::AddressTypeNotSupported => retry(
            "the proxy does not support this kind of address (try socks5:// to resolve the \
             server's name here, or socks5h:// to have the proxy resolve it)",
        ),
        Socks::Io(io) => ConnectError::Retry(format!("connection to the proxy lost: {io}")),
        other => ConnectError::Retry(format!("the proxy's answer is not SOCKS5: {other}")),
    }
}
