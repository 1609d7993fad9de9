//! Hostnames and DNS labels as the HTTP edge uses them: checked, lower-cased, without a port.

use crate::msg::MAX_HOSTNAME_LEN;

/// True for one DNS label as a hostname may use it: 1–63 of `a-z`, `0-9` and `-`, not starting
/// or ending with `-`. Callers lower-case first.
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A hostname in canonical form (lower case, no trailing dot), or `None` when it is not one.
/// A leading `*.` (a wildcard pattern) is not a hostname.
pub fn hostname(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let ok = s.len() <= MAX_HOSTNAME_LEN && s.split('.').all(is_label);
    ok.then_some(s)
}

/// True for a hostname that is an IPv4 address (its last label is all digits) or an IPv6 one.
pub fn is_ip_literal(host: &str) -> bool {
    host.contains(':')
        || host
            .rsplit('.')
            .next()
            .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
}

/// The host part of a `Host` header or URI authority, canonical: `Example.COM:8080` →
/// `example.com`, `[::1]:80` → `::1`. `None` when there is nothing usable.
pub fn host_of_authority(authority: &str) -> Option<String> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// True when `host` matches `pattern`: equal, or `*.example.com` matching any name with at least
/// one more label under `example.com`.
pub fn matches_pattern(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(base) => host
            .strip_suffix(base)
            .and_then(|h| h.strip_suffix('.'))
            .is_some_and(|sub| !sub.is_empty()),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "app", "my-app", "x1", "0abc"] {
            assert!(is_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_label(bad), "{bad}");
        }
    }

    #[test]
    fn hostnames_are_canonical() {
        assert_eq!(
            hostname("App.Example.COM.").as_deref(),
            Some("app.example.com")
        );
        assert_eq!(hostname("*.example.com"), None);
        assert_eq!(hostname("a..b"), None);
        assert_eq!(hostname(""), None);
    }

    #[test]
    fn authority_hosts() {
        assert_eq!(
            host_of_authority("Example.com:8080").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host_of_authority("example.com").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_of_authority("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_of_authority(":80"), None);
    }

    #[test]
    fn ip_literals() {
        assert!(is_ip_literal("203.0.113.5") && is_ip_literal("::1"));
        assert!(!is_ip_literal("example.com") && !is_ip_literal("1a.example.com"));
    }

    #[test]
    fn patterns() {
        assert!(matches_pattern("*.example.com", "a.example.com"));
        assert!(matches_pattern("*.example.com", "a.b.example.com"));
        assert!(!matches_pattern("*.example.com", "example.com"));
        assert!(!matches_pattern("*.example.com", "aexample.com"));
        assert!(matches_pattern("shop.example.org", "shop.example.org"));
        assert!(!matches_pattern("shop.example.org", "x.shop.example.org"));
    }
}
