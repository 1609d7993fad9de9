//! Parsers for the kinds of values burrow's configs hold: durations, port sets, addresses,
//! names, fingerprints and tokens.
//!
//! Each takes the text as written and returns the runtime value or a message that says what was
//! expected. The same functions check flags (as clap value parsers, so a malformed flag is a
//! command-line error) and TOML values (where the message gets the value's position).

use crate::diag::{Item, Origin, Problems, Source};
use burrow_proto::auth::Secret;
use burrow_proto::msg::Protocol;
use burrow_server::PortSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Longest identity or tunnel name, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 64;

/// A humantime duration such as `30s`, `500ms` or `2m`.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration (write e.g. 30s, 500ms, 2m)"))
}

/// A UDP flow's idle timeout: a duration of whole seconds, at least one (flows are expired
/// with one-second resolution, so a fraction would only pretend to be precise).
pub(crate) fn idle_timeout(s: &str) -> Result<u32, String> {
    let d = duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("idle timeout `{s}` is shorter than 1s"));
    }
    if d.subsec_nanos() != 0 {
        return Err(format!(
            "idle timeout `{s}` is not a whole number of seconds (write e.g. 30s or 2m)"
        ));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("idle timeout `{s}` is too long"))
}

/// A tunnel's protocol: `tcp` or `udp`.
pub(crate) fn protocol(s: &str) -> Result<Protocol, String> {
    match s {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!(
            "`{s}` is not a tunnel protocol (write \"tcp\", \"udp\" or \"http\")"
        )),
    }
}

/// A port set such as `20000-29999` or `8080,9000-9100`.
pub(crate) fn ports(s: &str) -> Result<PortSet, String> {
    s.parse()
}

/// An `IP:PORT` to listen on; port 0 asks the system for a free port.
pub(crate) fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        format!("`{s}` is not an IP:PORT address (write e.g. 0.0.0.0:7777 or [::]:7777)")
    })
}

/// An IP address to bind public ports to.
pub(crate) fn ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address (write e.g. 0.0.0.0 or ::)"))
}

/// A host name or IP without a port; IPv6 may be written with or without brackets.
/// Returns the host ready to put in front of `:PORT` (IPv6 in brackets).
pub(crate) fn host(s: &str) -> Result<String, String> {
    let s = s.trim();
    let inner = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    if let Ok(v6) = inner.unwrap_or(s).parse::<Ipv6Addr>() {
        return Ok(format!("[{v6}]"));
    }
    if s.contains("://") {
        return Err(format!("`{s}` is a URL; write only the host name or IP"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if s.is_empty() || !s.chars().all(ok) {
        return Err(format!("`{s}` is not a host name or IP address"));
    }
    Ok(s.to_owned())
}

/// A server address `HOST[:PORT]` (IPv6 in brackets), `default_port` when the port is left
/// out. Returns `host:port`.
pub(crate) fn host_port(s: &str, default_port: u16) -> Result<String, String> {
    let t = s.trim();
    let (host_part, port_part) = if t.starts_with('[') {
        match t.find(']') {
            Some(end) => (&t[..=end], t[end + 1..].strip_prefix(':')),
            None => return Err(format!("`{s}` has `[` without `]`")),
        }
    } else if t.parse::<Ipv6Addr>().is_ok() {
        (t, None)
    } else {
        match t.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (t, None),
        }
    };
    if t.starts_with('[') && port_part.is_none() && host_part.len() != t.len() {
        return Err(format!("`{s}`: expected `:PORT` after `]`"));
    }
    let host =
        host(host_part).map_err(|e| format!("{e} (write HOST[:PORT], e.g. example.net:7777)"))?;
    let port = match port_part {
        Some(p) => port(p)?,
        None => default_port,
    };
    Ok(format!("{host}:{port}"))
}

/// A server's control address, `HOST[:PORT]` with burrow's default port.
pub(crate) fn server_addr(s: &str) -> Result<String, String> {
    host_port(s, burrow_server::config::DEFAULT_CONTROL_PORT)
}

/// A port number, 1-65535.
pub(crate) fn port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("`{s}` is not a port number (1-65535)"))
}

/// A port number from a TOML integer, 1-65535.
pub(crate) fn port_number(n: &i64) -> Result<u16, String> {
    u16::try_from(*n)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{n} is not a port number (1-65535)"))
}

/// A count between `low` and `high`, inclusive.
pub(crate) fn count_in(low: usize, high: usize) -> impl Fn(&i64) -> Result<usize, String> {
    move |n| {
        usize::try_from(*n)
            .ok()
            .filter(|c| (low..=high).contains(c))
            .ok_or_else(|| format!("{n} is out of range ({low}-{high})"))
    }
}

/// Where a server-side UDP sink delivers: `IP:PORT`, a unicast or broadcast address (never
/// the unspecified address) and a port other than 0.
pub(crate) fn sink_addr(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.trim().parse().map_err(|_| {
        format!("`{s}` is not an IP:PORT address (write e.g. 127.0.0.1:9999 or 10.0.0.255:9999)")
    })?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "`{s}` names no host; write the address to deliver to"
        ));
    }
    if addr.port() == 0 {
        return Err(format!("`{s}` has port 0; write the port to deliver to"));
    }
    Ok(addr)
}

/// The name of a server-side UDP sink: a tunnel name that is not empty.
pub(crate) fn sink_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("a UDP sink needs a name".into());
    }
    name(s)
}

/// A `--udp-sink` flag, `NAME=IP:PORT`.
pub(crate) fn udp_sink(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=IP:PORT (write e.g. events=127.0.0.1:9999)"))?;
    Ok((sink_name(name)?, sink_addr(addr)?))
}

/// An identity or tunnel name: at most 64 bytes of `A-Z a-z 0-9 . _ -`. Empty is allowed here;
/// callers that need a name check for that.
pub(crate) fn name(s: &str) -> Result<String, String> {
    if s.len() > MAX_NAME_LEN {
        return Err(format!("name `{s}` is longer than {MAX_NAME_LEN} bytes"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if let Some(bad) = s.chars().find(|&c| !ok(c)) {
        return Err(format!(
            "name `{s}` has `{bad}`; names use only A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(s.to_owned())
}

/// A server certificate fingerprint, `sha256:` and 64 hex digits (any case, colons allowed, the
/// prefix may be left out). Returns the form the server prints: `sha256:` and lowercase hex.
pub(crate) fn fingerprint(s: &str) -> Result<String, String> {
    let bytes = burrow_net::tls::parse_fingerprint(s).map_err(|e| e.to_string())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// A duration setting, the field it sets, and whether zero is allowed.
pub(crate) type DurationSetting<'a> = (&'a Option<Item<String>>, &'a mut Duration, bool);

/// Parses each given duration into its field.
pub(crate) fn durations<'a>(
    p: &mut Problems,
    settings: impl IntoIterator<Item = DurationSetting<'a>>,
) {
    for (item, slot, zero_ok) in settings {
        let Some(item) = item else { continue };
        if let Some(d) = p.parse(Some(item), duration) {
            if !zero_ok && d.is_zero() {
                p.push(item.problem("must be longer than 0"));
            }
            *slot = d;
        }
    }
}

/// A carrier is declared dead only after at least one heartbeat interval of silence.
pub(crate) fn liveness(
    p: &mut Problems,
    (heartbeat, interval): (&Option<Item<String>>, Duration),
    (dead_after, silence): (&Option<Item<String>>, Duration),
) {
    if silence <= interval {
        let msg = "dead_after must be longer than heartbeat_interval";
        match dead_after.as_ref().or(heartbeat.as_ref()) {
            Some(item) => p.push(item.problem(msg)),
            None => p.whole(msg),
        }
    }
}

/// Makes a clap value parser out of one of the parsers above: it checks the flag and keeps the
/// text, which then goes through the same conversion as a config file's value.
pub(crate) fn checked<T: 'static>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<String, String> + Clone + Send + Sync + 'static {
    move |s| parse(s).map(|_| s.to_owned())
}

/// The secret from `token` or `token_file` (read, with its trailing newline dropped). Giving
/// both is an error; giving neither returns `None`.
pub(crate) fn token(
    token: Option<&Item<String>>,
    token_file: Option<&Item<PathBuf>>,
    source: &Source,
    problems: &mut Problems,
) -> Option<Secret> {
    let value = match (token, token_file) {
        (Some(_), Some(file)) => {
            problems.push(file.problem("give `token` or `token_file`, not both"));
            return None;
        }
        (Some(t), None) => Item {
            value: t.value.clone(),
            origin: t.origin.clone(),
        },
        (None, Some(file)) => {
            let path = source.path(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => Item {
                    value: text,
                    origin: file.origin.clone(),
                },
                Err(e) => {
                    problems.push(file.problem(format!("cannot read {}: {e}", path.display())));
                    return None;
                }
            }
        }
        (None, None) => return None,
    };
    let secret = value.value.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        problems.push(value.problem("the token is empty"));
        return None;
    }
    Some(Secret::new(secret.as_bytes()))
}

/// A path from the config that must name an existing file, resolved like every config path.
pub(crate) fn existing_file(item: &Item<PathBuf>, source: &Source, p: &mut Problems) -> PathBuf {
    let path = source.path(item);
    if let Err(e) = std::fs::metadata(&path) {
        p.push(item.problem(format!("cannot read {}: {e}", path.display())));
    }
    path
}

/// Reads an environment variable as a flag-like setting; unset or empty means absent.
pub(crate) fn env_item(var: &'static str) -> Option<Item<String>> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    Some(Item {
        value,
        origin: Origin::Flag(var),
    })
}

/// A DNS name such as a base domain or a custom hostname, returned in canonical form.
pub(crate) fn hostname(s: &str) -> Result<String, String> {
    burrow_proto::names::hostname(s.trim()).ok_or_else(|| {
        format!("`{s}` is not a hostname (labels of a-z, 0-9 and -, joined by dots)")
    })
}

/// A hostname an identity may claim: a hostname, or `*.` and a hostname for every name under it.
pub(crate) fn hostname_pattern(s: &str) -> Result<String, String> {
    match s.trim().strip_prefix("*.") {
        Some(base) => hostname(base).map(|b| format!("*.{b}")),
        None => hostname(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_defaults_and_brackets() {
        let ok = |s| host_port(s, 7777).unwrap();
        assert_eq!(ok("example.net"), "example.net:7777");
        assert_eq!(ok("example.net:9000"), "example.net:9000");
        assert_eq!(ok("10.0.0.1"), "10.0.0.1:7777");
        assert_eq!(ok("[::1]"), "[::1]:7777");
        assert_eq!(ok("[::1]:9000"), "[::1]:9000");
        assert_eq!(ok("::1"), "[::1]:7777");
        for bad in [
            "",
            "host:0",
            "host:99999",
            "host:",
            "[::1",
            "[::1]x",
            "http://x",
            "a b:1",
            "[nope]",
        ] {
            assert!(host_port(bad, 7777).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(name("alice.home_1-x").is_ok());
        assert!(name("").is_ok());
        assert!(name(&"a".repeat(64)).is_ok());
        assert!(name(&"a".repeat(65)).is_err());
        assert!(name("al ice").is_err());
        assert!(name("café").is_err());
    }

    #[test]
    fn fingerprints_normalise() {
        let hex = "AB".repeat(32);
        let want = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(fingerprint(&format!("sha256:{hex}")).unwrap(), want);
        assert_eq!(fingerprint(&hex).unwrap(), want);
        let colons = vec!["Ab"; 32].join(":");
        assert_eq!(fingerprint(&colons).unwrap(), want);
        assert!(fingerprint("sha256:abc").is_err());
        assert!(fingerprint(&format!("sha256:{}", "zz".repeat(32))).is_err());
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert!(duration("soon").is_err());
        assert_eq!(count_in(1, 8)(&8).unwrap(), 8);
        assert!(count_in(1, 8)(&0).is_err());
        assert!(count_in(1, 8)(&-1).is_err());
        assert_eq!(port_number(&80).unwrap(), 80);
        assert!(port_number(&0).is_err() && port_number(&65536).is_err());
    }

    #[test]
    fn idle_timeouts_are_whole_seconds() {
        assert_eq!(idle_timeout("60s").unwrap(), 60);
        assert_eq!(idle_timeout("2m").unwrap(), 120);
        assert_eq!(idle_timeout("1000ms").unwrap(), 1);
        for bad in ["0s", "500ms", "1500ms", "soon", "200years"] {
            assert!(idle_timeout(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn udp_sinks_name_an_address_to_deliver_to() {
        let (name, addr) = udp_sink("events=10.0.0.255:9999").unwrap();
        assert_eq!(
            (name.as_str(), addr.to_string().as_str()),
            ("events", "10.0.0.255:9999")
        );
        assert_eq!(udp_sink("v6=[::1]:5").unwrap().1.to_string(), "[::1]:5");
        for bad in [
            "events",
            "=127.0.0.1:9",
            "a b=127.0.0.1:9",
            "e=host:9",
            "e=127.0.0.1",
            "e=127.0.0.1:0",
            "e=0.0.0.0:9",
        ] {
            assert!(udp_sink(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn protocols_are_tcp_or_udp() {
        assert_eq!(protocol("tcp").unwrap(), Protocol::Tcp);
        assert_eq!(protocol("udp").unwrap(), Protocol::Udp);
        assert!(protocol("UDP").is_err() && protocol("").is_err() && protocol("quic").is_err());
    }
}
