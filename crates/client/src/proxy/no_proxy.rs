//! `NO_PROXY`: the servers a proxy from the environment is not used for.

use std::net::IpAddr;

/// True when `no_proxy` (a comma-separated list, as in `NO_PROXY`) names `host`, the server's
/// host name or IP address (IPv6 with or without brackets). Entries are matched without regard
/// to case:
///
/// - `*` names every host;
/// - a name names itself and every name under it: `example.net` and `.example.net` (or
///   `*.example.net`) both name `example.net` and `a.example.net`, not `badexample.net`;
/// - an IP address names itself, and an IP network (`10.0.0.0/8`, `fd00::/8`) every address
///   in it;
/// - an entry's `:port`, if any, is ignored; empty entries are skipped.
pub fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| matches(entry, &host, ip))
}

/// Whether one `NO_PROXY` entry names `host` (lowercase), which is the address `ip` if one.
fn matches(entry: &str, host: &str, ip: Option<IpAddr>) -> bool {
    if entry == "*" {
        return true;
    }
    let entry = without_port(entry).to_ascii_lowercase();
    if let Some(ip) = ip {
        if let Ok(net) = entry.parse::<ipnet::IpNet>() {
            return net.contains(&ip);
        }
        if let Ok(addr) = entry.parse::<IpAddr>() {
            return addr == ip;
        }
    }
    let name = entry.trim_start_matches("*.").trim_start_matches('.');
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && (host == name
            || host
                .strip_suffix(name)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// `entry` without a trailing `:port` (IPv6 addresses and networks keep their colons).
fn without_port(entry: &str) -> &str {
    if let Some(inner) = entry.strip_prefix('[') {
        return inner.split_once(']').map_or(inner, |(addr, _)| addr);
    }
    match entry.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => entry,
    }
}
