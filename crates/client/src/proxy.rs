//! Reaching the server through a proxy: HTTP CONNECT or SOCKS5, for hotel and corporate networks
//! that let nothing else out.
//!
//! A [`Proxy`] is parsed once from a URL (`http://`, `socks5://`, `socks5h://`, with optional
//! `user:password@`). [`dial`] connects to the proxy and has it open a tunnel to the server; what
//! it returns is the TCP connection to the proxy, now carrying the server's bytes and nothing of
//! the proxy's, so TLS, the burrow handshake and the splice relay run over it unchanged. Every
//! step runs under the caller's connect deadline.

mod http_connect;
mod no_proxy;
mod socks;

pub use no_proxy::bypasses;

use crate::connect::ConnectError;
use burrow_proto::auth::Secret;
use percent_encoding::percent_decode_str;
use std::fmt;
use tokio::net::TcpStream;

/// The port of a proxy URL that names none, for each kind: HTTP's, and SOCKS's registered one.
const DEFAULT_HTTP_PORT: u16 = 80;
const DEFAULT_SOCKS_PORT: u16 = 1080;

/// How the proxy is asked for a connection to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `http://`: an HTTP `CONNECT host:port` request.
    Http,
    /// `socks5://`: SOCKS5, with the server's name resolved by the client.
    Socks5,
    /// `socks5h://`: SOCKS5, with the server's name resolved by the proxy.
    Socks5h,
}

impl ProxyKind {
    /// The URL scheme of this kind.
    pub fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
        }
    }
}

/// A user name and password for the proxy; `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, percent-decoded.
    pub user: String,
    /// The password, percent-decoded (UTF-8).
    pub password: Secret,
}

impl Credentials {
    /// The password as text (it was UTF-8 when parsed).
    fn password(&self) -> String {
        String::from_utf8_lossy(self.password.expose()).into_owned()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

/// A proxy the client reaches the server through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// HTTP CONNECT or SOCKS5.
    pub kind: ProxyKind,
    /// The proxy's host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// What to log in with, if anything.
    pub credentials: Option<Credentials>,
}

impl fmt::Display for Proxy {
    /// The proxy as a URL with the password masked, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.kind.scheme())?;
        if let Some(c) = &self.credentials {
            write!(f, "{}:***@", c.user)?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Proxy {
    type Err = String;

    /// Parses `SCHEME://[USER:PASSWORD@]HOST[:PORT]`; a URL without a scheme is taken as
    /// `http://`, as other programs read the proxy variables.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        // Error messages quote the URL without its password.
        let shown = masked(s);
        let text = if s.contains("://") {
            s.to_owned()
        } else {
            format!("http://{s}")
        };
        let url =
            url::Url::parse(&text).map_err(|e| format!("`{shown}` is not a proxy URL: {e}"))?;
        let kind = match url.scheme() {
            "http" => ProxyKind::Http,
            "socks5" => ProxyKind::Socks5,
            "socks5h" => ProxyKind::Socks5h,
            "https" => {
                return Err(format!(
                    "`{shown}`: proxies spoken to over TLS (https://) are not supported; use http:// \
                     (the connection to the server inside is TLS already)"
                ));
            }
            other => {
                return Err(format!(
                    "`{shown}`: unknown proxy scheme `{other}` (use http://, socks5:// or socks5h://)"
                ));
            }
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{shown}`: a proxy URL is SCHEME://[USER:PASSWORD@]HOST[:PORT], with no path"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(format!("`{shown}`: the proxy URL names no host")),
        };
        if host.is_empty() {
            return Err(format!("`{shown}`: the proxy URL names no host"));
        }
        let default = match kind {
            ProxyKind::Http => DEFAULT_HTTP_PORT,
            ProxyKind::Socks5 | ProxyKind::Socks5h => DEFAULT_SOCKS_PORT,
        };
        let port = url.port().unwrap_or(default);
        if port == 0 {
            return Err(format!("`{shown}`: the proxy's port cannot be 0"));
        }
        let credentials = credentials(&url, kind).map_err(|e| format!("`{shown}`: {e}"))?;
        Ok(Proxy {
            kind,
            host,
            port,
            credentials,
        })
    }
}

/// The percent-decoded user and password of `url`, checked for `kind`.
fn credentials(url: &url::Url, kind: ProxyKind) -> Result<Option<Credentials>, String> {
    let decode = |part: &str, what: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| format!("the proxy {what} is not UTF-8 once percent-decoded"))
    };
    let user = decode(url.username(), "user")?;
    let password = decode(url.password().unwrap_or(""), "password")?;
    if user.is_empty() && password.is_empty() {
        return Ok(None);
    }
    if user.is_empty() {
        return Err("the proxy credentials have a password but no user".into());
    }
    let socks = matches!(kind, ProxyKind::Socks5 | ProxyKind::Socks5h);
    if socks && (password.is_empty() || user.len() > 255 || password.len() > 255) {
        return Err("SOCKS5 credentials need a user and a password of 1 to 255 bytes each".into());
    }
    Ok(Some(Credentials {
        user,
        password: Secret::new(password),
    }))
}

/// `s` with the password of any `user:password@` replaced by `***`, for error messages.
fn masked(s: &str) -> String {
    let Some((before, after)) = s.rsplit_once('@') else {
        return s.to_owned();
    };
    let start = before.find("://").map_or(0, |i| i + 3);
    match before[start..].split_once(':') {
        Some((user, _)) => format!("{}{user}:***@{after}", &before[..start]),
        None => s.to_owned(),
    }
}

/// Connects to `proxy` and has it open a connection to `server` (`host:port`); returns the TCP
/// connection to the proxy, which from then on carries the server's bytes.
pub(crate) async fn dial(proxy: &Proxy, server: &str) -> Result<TcpStream, ConnectError> {
    let (host, port) = split_server(server)?;
    let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
        .await
        .map_err(|e| ConnectError::Retry(format!("cannot reach the proxy {proxy}: {e}")))?;
    match proxy.kind {
        ProxyKind::Http => {
            http_connect::handshake(&mut tcp, server, proxy.credentials.as_ref())
                .await
                .map_err(|e| e.context(proxy))?;
            Ok(tcp)
        }
        ProxyKind::Socks5 | ProxyKind::Socks5h => {
            let remote = proxy.kind == ProxyKind::Socks5h;
            socks::connect(tcp, host, port, remote, proxy.credentials.as_ref())
                .await
                .map_err(|e| e.context(proxy))
        }
    }
}

/// The host (IPv6 brackets removed) and port of `host:port`.
fn split_server(server: &str) -> Result<(&str, u16), ConnectError> {
    let port = server.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
    let port = port.ok_or_else(|| ConnectError::Fatal(format!("`{server}` has no port")))?;
    Ok((crate::connect::host_of(server), port))
}

impl ConnectError {
    /// The same error, its message prefixed with the proxy it came through.
    fn context(self, proxy: &Proxy) -> ConnectError {
        let with = |e: String| format!("through the proxy {proxy}: {e}");
        match self {
            ConnectError::Fatal(e) => ConnectError::Fatal(with(e)),
            ConnectError::Retry(e) => ConnectError::Retry(with(e)),
            ConnectError::ProxyAuth(e) => ConnectError::ProxyAuth(with(e)),
            ConnectError::Unusable(e) => ConnectError::Unusable(with(e)),
        }
    }
}

#[cfg(test)]
mod tests;
