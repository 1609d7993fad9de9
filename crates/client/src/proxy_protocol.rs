//! The PROXY protocol header a TCP tunnel may send to its target before the visitor's bytes, so
//! a target behind the tunnel (nginx, HAProxy, Postfix, ...) learns who the visitor is instead
//! of seeing every connection come from the client.
//!
//! Both versions of HAProxy's specification are supported: v1, one line of text
//! (`PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n`), and v2, a binary header with a 12-byte signature.
//! The bytes are built by the `ppp` crate; this module decides what goes into them.
//!
//! The **source** is the visitor's address as the server saw it (carried in the stream header).
//! The **destination** is the target's address as the client connected to it
//! (`TcpStream::peer_addr`), not the public address the visitor dialed: the client does not know
//! that one (the server may sit behind a load balancer or NAT, and a tunnel has no fixed public
//! address of its own), while the target's own address is always true and is what the target
//! would have seen as its local address had the visitor connected directly.
//!
//! A header names one address family, so when the visitor and the target differ (an IPv4
//! visitor, an IPv6 target) the IPv4 address is written IPv6-mapped (`::ffff:1.2.3.4`). A stream
//! without a visitor address gets `PROXY UNKNOWN` (v1) or the LOCAL command (v2), which tell the
//! target to use the connection's own addresses.

use ppp::{v1, v2};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Which PROXY protocol header a TCP tunnel writes to its target before relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// Version 1: one human-readable line, e.g. `PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n`.
    V1,
    /// Version 2: a binary header (12-byte signature, command, family, length, addresses).
    V2,
}

/// The header announcing a stream from `visitor` (if known) to `target`.
pub(crate) fn header(
    version: ProxyProtocol,
    visitor: Option<SocketAddr>,
    target: SocketAddr,
) -> io::Result<Vec<u8>> {
    match (version, visitor) {
        (ProxyProtocol::V1, None) => Ok(v1::Addresses::Unknown.to_string().into_bytes()),
        (ProxyProtocol::V1, Some(visitor)) => {
            let addresses = v1::Addresses::from(same_family(visitor, target));
            Ok(addresses.to_string().into_bytes())
        }
        // LOCAL: the receiver uses the connection's own addresses; no address block follows.
        (ProxyProtocol::V2, None) => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build(),
        (ProxyProtocol::V2, Some(visitor)) => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            same_family(visitor, target),
        )
        .build(),
    }
}

/// Puts both addresses in one family: IPv4-mapped IPv6 addresses are taken as the IPv4 address
/// they carry, and if one side is still IPv4 while the other is IPv6, the IPv4 one is mapped.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (source, destination) = (canonical(source), canonical(destination));
    let mapped = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (mapped(source), mapped(destination))
    }
}

/// Writes the header for a stream from `visitor` to the connected `target`, within `within`.
///
/// The destination is `target.peer_addr()` (see the module documentation for why). Nothing is
/// written before the header, and the caller relays only after it, so the target reads the
/// header first whatever the visitor sends.
pub(crate) async fn write_header(
    target: &mut TcpStream,
    version: ProxyProtocol,
    visitor: Option<SocketAddr>,
    within: Duration,
) -> io::Result<()> {
    let bytes = header(version, visitor, target.peer_addr()?)?;
    match timeout(within, target.write_all(&bytes)).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the PROXY header was not taken within {within:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The v2 signature, from the specification.
    const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn v1(visitor: Option<&str>, target: &str) -> String {
        let bytes = header(ProxyProtocol::V1, visitor.map(addr), addr(target)).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn v2(visitor: Option<&str>, target: &str) -> Vec<u8> {
        header(ProxyProtocol::V2, visitor.map(addr), addr(target)).unwrap()
    }

    /// A v2 header built by hand from the specification's layout.
    fn v2_by_hand(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut want = SIGNATURE.to_vec();
        want.extend([command, family]);
        want.extend((addresses.len() as u16).to_be_bytes());
        want.extend(addresses);
        want
    }

    #[test]
    fn v1_ipv4() {
        assert_eq!(
            v1(Some("1.2.3.4:1111"), "5.6.7.8:2222"),
            "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n"
        );
    }

    #[test]
    fn v1_ipv6() {
        assert_eq!(
            v1(Some("[2001:db8::1]:1111"), "[::1]:2222"),
            "PROXY TCP6 2001:db8::1 ::1 1111 2222\r\n"
        );
    }

    #[test]
    fn v1_mixed_families_become_ipv6() {
        assert_eq!(
            v1(Some("1.2.3.4:1111"), "[::1]:2222"),
            "PROXY TCP6 ::ffff:1.2.3.4 ::1 1111 2222\r\n"
        );
        assert_eq!(
            v1(Some("[2001:db8::1]:1111"), "127.0.0.1:2222"),
            "PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 1111 2222\r\n"
        );
        // A visitor seen through a dual-stack socket is the IPv4 address it carries.
        assert_eq!(
            v1(Some("[::ffff:1.2.3.4]:1111"), "127.0.0.1:2222"),
            "PROXY TCP4 1.2.3.4 127.0.0.1 1111 2222\r\n"
        );
    }

    #[test]
    fn v1_unknown_visitor() {
        assert_eq!(v1(None, "127.0.0.1:2222"), "PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_ipv4() {
        let addresses = [1, 2, 3, 4, 5, 6, 7, 8, 0x04, 0x57, 0x08, 0xae];
        let want = v2_by_hand(0x21, 0x11, &addresses);
        assert_eq!(v2(Some("1.2.3.4:1111"), "5.6.7.8:2222"), want);
        // 16 fixed bytes, then 12 of addresses and ports.
        assert_eq!(want.len(), 28);
        assert_eq!(&want[14..16], &[0, 12]);
    }

    #[test]
    fn v2_ipv6() {
        let source: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let destination = std::net::Ipv6Addr::LOCALHOST;
        let mut addresses = source.octets().to_vec();
        addresses.extend(destination.octets());
        addresses.extend(1111u16.to_be_bytes());
        addresses.extend(2222u16.to_be_bytes());
        let want = v2_by_hand(0x21, 0x21, &addresses);
        assert_eq!(v2(Some("[2001:db8::1]:1111"), "[::1]:2222"), want);
        assert_eq!(&want[14..16], &[0, 36]);
    }

    #[test]
    fn v2_mixed_families_become_ipv6() {
        let mut addresses = vec![0; 10];
        addresses.extend([0xff, 0xff, 1, 2, 3, 4]);
        addresses.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        addresses.extend(1111u16.to_be_bytes());
        addresses.extend(2222u16.to_be_bytes());
        let want = v2_by_hand(0x21, 0x21, &addresses);
        assert_eq!(v2(Some("1.2.3.4:1111"), "[::1]:2222"), want);
    }

    #[test]
    fn v2_unknown_visitor_is_local() {
        // LOCAL command (0x20), unspecified family and protocol (0x00), no addresses.
        let want = v2_by_hand(0x20, 0x00, &[]);
        assert_eq!(v2(None, "127.0.0.1:2222"), want);
        assert_eq!(want.len(), 16);
    }
}
