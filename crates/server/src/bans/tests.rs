//! The ban table driven by explicit instants: counting, banning, expiry, success, exemption,
//! IPv6 grouping, the bound and reloads.
//!
//! This module is compiled only under #[cfg(test)] (declared so in its parent).

use super::*;

fn policy(after: u32) -> BanPolicy {
    BanPolicy {
        after,
        window: Duration::from_secs(60),
        duration: Duration::from_secs(600),
        exempt: Vec::new(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// One step of a scenario: at `t` seconds, something happens to an address.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A failed handshake; what the table answers.
    Fail(u64, &'static str, Failed),
    /// A successful login.
    Succeed(u64, &'static str),
    /// Whether connections are refused now.
    Check(u64, &'static str, bool),
}

#[test]
fn scenarios() {
    let t0 = Instant::now();
    let banned = |at: u64, failures| {
        Failed::Banned(Ban {
            since: t0 + secs(at),
            until: t0 + secs(at + 600),
            failures,
        })
    };
    use Failed::{Counted, Ignored};
    use Step::{Check, Fail, Succeed};
    let table: Vec<(&str, u32, Vec<Step>)> = vec![
        (
            "three failures within the window ban, and the ban expires",
            3,
            vec![
                Fail(0, "192.0.2.1", Counted(1)),
                Fail(10, "192.0.2.1", Counted(2)),
                Check(11, "192.0.2.1", false),
                Fail(20, "192.0.2.1", banned(20, 3)),
                Check(21, "192.0.2.1", true),
                Check(21, "192.0.2.2", false),
                Fail(30, "192.0.2.1", Ignored),
                Check(619, "192.0.2.1", true),
                Check(620, "192.0.2.1", false),
                Fail(621, "192.0.2.1", Counted(1)),
            ],
        ),
        (
            "failures spread wider than the window start over",
            3,
            vec![
                Fail(0, "192.0.2.1", Counted(1)),
                Fail(50, "192.0.2.1", Counted(2)),
                Fail(60, "192.0.2.1", Counted(1)),
                Fail(70, "192.0.2.1", Counted(2)),
                Check(71, "192.0.2.1", false),
            ],
        ),
        (
            "a success resets the count",
            3,
            vec![
                Fail(0, "192.0.2.1", Counted(1)),
                Fail(1, "192.0.2.1", Counted(2)),
                Succeed(2, "192.0.2.1"),
                Fail(3, "192.0.2.1", Counted(1)),
            ],
        ),
        (
            "a success does not lift an active ban",
            2,
            vec![
                Fail(0, "192.0.2.1", Counted(1)),
                Fail(1, "192.0.2.1", banned(1, 2)),
                Succeed(2, "192.0.2.1"),
                Check(3, "192.0.2.1", true),
                Check(601, "192.0.2.1", false),
                Fail(602, "192.0.2.1", Counted(1)),
            ],
        ),
        (
            "IPv6 addresses of one /64 count together, IPv4-mapped ones as IPv4",
            2,
            vec![
                Fail(0, "2001:db8:1:2::1", Counted(1)),
                Fail(1, "2001:db8:1:2:ffff::9", banned(1, 2)),
                Check(2, "2001:db8:1:2::77", true),
                Check(2, "2001:db8:1:3::1", false),
                Fail(3, "::ffff:192.0.2.9", Counted(1)),
                Fail(4, "192.0.2.9", banned(4, 2)),
                Check(5, "::ffff:192.0.2.9", true),
            ],
        ),
        (
            "ban_after 0 turns banning off",
            0,
            vec![
                Fail(0, "192.0.2.1", Ignored),
                Fail(1, "192.0.2.1", Ignored),
                Check(2, "192.0.2.1", false),
            ],
        ),
        (
            "ban_after 1 bans at the first failure",
            1,
            vec![
                Fail(0, "192.0.2.1", banned(0, 1)),
                Check(0, "192.0.2.1", true),
            ],
        ),
    ];
    for (what, after, steps) in table {
        let mut bans = BanTable::new(policy(after), DEFAULT_CAP);
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Fail(t, a, want) => {
                    assert_eq!(bans.failed(ip(a), t0 + secs(t)), want, "{what}: step {i}")
                }
                Succeed(t, a) => bans.succeeded(ip(a), t0 + secs(t)),
                Check(t, a, want) => {
                    assert_eq!(
                        bans.is_banned(ip(a), t0 + secs(t)),
                        want,
                        "{what}: step {i}"
                    )
                }
            }
        }
    }
}

#[test]
fn exempt_networks_are_never_counted_nor_refused() {
    let t0 = Instant::now();
    let mut p = policy(1);
    p.exempt = vec![
        "127.0.0.0/8".parse().unwrap(),
        "2001:db8::7/128".parse().unwrap(),
    ];
    let mut bans = BanTable::new(p, DEFAULT_CAP);
    assert_eq!(bans.failed(ip("127.0.0.1"), t0), Failed::Ignored);
    assert!(!bans.is_banned(ip("127.0.0.1"), t0));
    // The /64 of an exempt host can be banned; the exempt host itself still gets in.
    assert!(matches!(
        bans.failed(ip("2001:db8::8"), t0),
        Failed::Banned(_)
    ));
    assert!(bans.is_banned(ip("2001:db8::9"), t0));
    assert!(!bans.is_banned(ip("2001:db8::7"), t0));
    assert_eq!(bans.failed(ip("2001:db8::7"), t0), Failed::Ignored);
}

#[test]
fn the_table_is_bounded_and_forgets_the_oldest_first() {
    let t0 = Instant::now();
    let mut bans = BanTable::new(policy(2), 3);
    // One ban, then a flood of single failures from new sources.
    bans.failed(ip("198.51.100.1"), t0);
    assert!(matches!(
        bans.failed(ip("198.51.100.1"), t0),
        Failed::Banned(_)
    ));
    for i in 0..1000u32 {
        let flood = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        bans.failed(flood, t0 + secs(1));
        assert!(bans.len() <= 3);
    }
    // The ban outlived the flood: entries without a ban go first.
    assert!(bans.is_banned(ip("198.51.100.1"), t0 + secs(2)));
    // Among entries without a ban, the one that failed longest ago goes first.
    let mut bans = BanTable::new(policy(5), 2);
    bans.failed(ip("192.0.2.1"), t0);
    bans.failed(ip("192.0.2.2"), t0 + secs(1));
    bans.failed(ip("192.0.2.1"), t0 + secs(2));
    bans.failed(ip("192.0.2.3"), t0 + secs(3));
    assert_eq!(
        bans.failed(ip("192.0.2.1"), t0 + secs(4)),
        Failed::Counted(3)
    );
    assert_eq!(
        bans.failed(ip("192.0.2.2"), t0 + secs(4)),
        Failed::Counted(1)
    );
    // When only bans are left, the oldest ban goes.
    let mut bans = BanTable::new(policy(1), 2);
    for (t, a) in [(0, "192.0.2.1"), (1, "192.0.2.2"), (2, "192.0.2.3")] {
        bans.failed(ip(a), t0 + secs(t));
    }
    let listed: Vec<String> = (bans.active(t0 + secs(3)).iter())
        .map(|(s, _)| s.to_string())
        .collect();
    assert_eq!(listed, ["192.0.2.2", "192.0.2.3"]);
}

#[test]
fn bans_are_listed_lifted_and_expire_from_the_list() {
    let t0 = Instant::now();
    let mut bans = BanTable::new(policy(1), DEFAULT_CAP);
    bans.failed(ip("2001:db8:aa:bb::1"), t0);
    bans.failed(ip("192.0.2.1"), t0 + secs(1));
    bans.failed(ip("192.0.2.2"), t0 + secs(700));
    let now = t0 + secs(2);
    let listed: Vec<String> = bans
        .active(now)
        .iter()
        .map(|(s, _)| s.to_string())
        .collect();
    assert_eq!(listed, ["2001:db8:aa:bb::/64", "192.0.2.1", "192.0.2.2"]);
    let v6 = Source::parse("2001:db8:aa:bb::/64").unwrap();
    assert_eq!(Source::parse("2001:db8:aa:bb:1:2:3:4"), Some(v6));
    assert!(bans.lift(v6, now));
    assert!(!bans.lift(v6, now), "lifted twice");
    assert!(!bans.is_banned(ip("2001:db8:aa:bb::1"), now));
    // At 620 s the first IPv4 ban has expired and is dropped from the table.
    let later: Vec<String> = (bans.active(t0 + secs(620)).iter())
        .map(|(s, _)| s.to_string())
        .collect();
    assert_eq!(later, ["192.0.2.2"]);
    assert_eq!(bans.len(), 1);
}

#[test]
fn sources_parse_as_the_admin_api_is_given_them() {
    assert_eq!(
        Source::parse("192.0.2.1/32"),
        Some(Source::V4([192, 0, 2, 1].into()))
    );
    assert_eq!(
        Source::parse("::ffff:192.0.2.1"),
        Some(Source::V4([192, 0, 2, 1].into()))
    );
    for bad in [
        "",
        "banned",
        "192.0.2.1/24",
        "2001:db8::/48",
        "192.0.2.1:80",
        "2001:db8::/",
    ] {
        assert_eq!(Source::parse(bad), None, "{bad}");
    }
}

#[test]
fn a_reload_applies_the_new_policy() {
    let t0 = Instant::now();
    let mut bans = BanTable::new(policy(1), DEFAULT_CAP);
    bans.failed(ip("127.0.0.1"), t0);
    bans.failed(ip("192.0.2.1"), t0);
    let mut p = policy(1);
    p.exempt = vec!["127.0.0.0/8".parse().unwrap()];
    bans.set_policy(p);
    assert!(!bans.is_banned(ip("127.0.0.1"), t0));
    assert!(bans.is_banned(ip("192.0.2.1"), t0), "other bans stay");
    bans.set_policy(policy(0));
    assert!(!bans.is_banned(ip("192.0.2.1"), t0));
    assert_eq!(bans.len(), 0);
}
