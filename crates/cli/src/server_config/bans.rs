//! Banning addresses that keep failing their handshake: `ban_after`, `ban_window`, `ban_for`
//! and `ban_exempt` (and `--ban-after`, `--ban-for`), converted into a [`BanPolicy`].

use super::{RawServer, ServerArgs, set};
use crate::diag::{Item, Problems};
use crate::fields;
use burrow_server::BanPolicy;
use burrow_server::config::IpNet;
use std::net::IpAddr;

/// Largest `ban_after` accepted.
const MAX_BAN_AFTER: u32 = 1_000_000;

impl RawServer {
    /// Lays the ban flags over the file's values.
    pub(super) fn apply_ban_flags(&mut self, a: &ServerArgs) {
        let after = a.ban_after.map(|n| Item::flag("--ban-after", i64::from(n)));
        set(&mut self.ban_after, after);
        let ban_for = a.ban_for.clone().map(|d| Item::flag("--ban-for", d));
        set(&mut self.ban_for, ban_for);
    }

    /// Converts the ban settings; what is left out keeps its default.
    pub(super) fn bans(&self, p: &mut Problems) -> BanPolicy {
        let mut policy = BanPolicy::default();
        if let Some(after) = p.parse(self.ban_after.as_ref(), ban_after) {
            policy.after = after;
        }
        let timers = [
            (&self.ban_window, &mut policy.window, false),
            (&self.ban_for, &mut policy.duration, false),
        ];
        fields::durations(p, timers);
        policy.exempt = (self.ban_exempt.iter())
            .filter_map(|item| p.parse(Some(item), network))
            .collect();
        policy
    }
}

/// `ban_after`: a count of failures, 0 to turn banning off.
pub(crate) fn ban_after(n: &i64) -> Result<u32, String> {
    u32::try_from(*n)
        .ok()
        .filter(|n| *n <= MAX_BAN_AFTER)
        .ok_or_else(|| format!("{n} is out of range (0-{MAX_BAN_AFTER}; 0 turns banning off)"))
}

/// An exempt network: an address (`192.0.2.7`, `::1`) or a network (`10.0.0.0/8`,
/// `2001:db8::/48`).
pub(crate) fn network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let parsed = match s.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(ip)),
        Err(_) => s.parse::<IpNet>().map(|net| net.trunc()),
    };
    parsed.map_err(|_| {
        format!("`{s}` is not an IP address or network (write e.g. 192.0.2.7, 10.0.0.0/8 or 2001:db8::/48)")
    })
}

#[cfg(test)]
mod tests {
    use super::super::{ServerArgs, check, load};
    use crate::testing::{lines, source};
    use std::time::Duration;

    const BASE: &str = "token = \"t\"\nstate_dir = \"/s\"\n";

    #[test]
    fn ban_settings_convert_with_defaults() {
        let plan = check(&source("s.toml", BASE)).unwrap();
        assert_eq!(plan.config.bans, burrow_server::BanPolicy::default());
        assert_eq!(plan.config.bans.after, 10);
        let text = format!(
            "{BASE}ban_after = 3\nban_window = \"30s\"\nban_for = \"1h\"\n\
             ban_exempt = [\"127.0.0.1\", \"10.1.2.3/8\", \"2001:db8::/48\"]\n"
        );
        let bans = check(&source("s.toml", &text)).unwrap().config.bans;
        assert_eq!(bans.after, 3);
        assert_eq!(bans.window, Duration::from_secs(30));
        assert_eq!(bans.duration, Duration::from_secs(3600));
        let exempt: Vec<String> = bans.exempt.iter().map(|n| n.to_string()).collect();
        let proxies = format!("{BASE}ws_trusted_proxies = [\"127.0.0.1\", \"fd00::/8\"]\n");
        let config = check(&source("s.toml", &proxies)).unwrap().config;
        let trusted: Vec<String> = (config.ws_trusted_proxies.iter())
            .map(|n| n.to_string())
            .collect();
        assert_eq!(trusted, ["127.0.0.1/32", "fd00::/8"]);
        assert_eq!(exempt, ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::/48"]);
        assert!(bans.exempts("10.200.0.1".parse().unwrap()));
        assert!(bans.exempts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!bans.exempts("127.0.0.2".parse().unwrap()));
        let off = format!("{BASE}ban_after = 0\n");
        assert!(
            !check(&source("s.toml", &off))
                .unwrap()
                .config
                .bans
                .enabled()
        );
    }

    #[test]
    fn bad_ban_settings_are_reported_where_written() {
        let text = format!(
            "{BASE}ban_after = -1\nban_window = \"0s\"\nban_for = \"soon\"\nban_exempt = [\"10.0.0.0/33\", \"lan\"]\n"
        );
        assert_eq!(
            lines(check(&source("s.toml", &text))),
            [
                "s.toml:3:13: -1 is out of range (0-1000000; 0 turns banning off)",
                "s.toml:4:14: must be longer than 0",
                "s.toml:5:11: `soon` is not a duration (write e.g. 30s, 500ms, 2m)",
                "s.toml:6:15: `10.0.0.0/33` is not an IP address or network (write e.g. 192.0.2.7, 10.0.0.0/8 or 2001:db8::/48)",
                "s.toml:6:30: `lan` is not an IP address or network (write e.g. 192.0.2.7, 10.0.0.0/8 or 2001:db8::/48)",
            ]
        );
        let proxies = format!("{BASE}ws_trusted_proxies = [\"10.0.0.1\", \"proxy\"]\n");
        assert_eq!(
            lines(check(&source("s.toml", &proxies))),
            [
                "s.toml:3:35: `proxy` is not an IP address or network (write e.g. 192.0.2.7, 10.0.0.0/8 or 2001:db8::/48)"
            ]
        );
        let unknown = format!("{BASE}ban_exempted = []\n");
        assert!(check(&source("s.toml", &unknown)).is_err(), "unknown key");
    }

    #[test]
    fn ban_flags_win_over_the_file() {
        let args = ServerArgs {
            token: Some("t".into()),
            insecure_plain: true,
            ban_after: Some(3),
            ban_for: Some("2m".into()),
            ..Default::default()
        };
        let bans = load(&args).unwrap().config.bans;
        assert_eq!((bans.after, bans.duration), (3, Duration::from_secs(120)));
    }
}
