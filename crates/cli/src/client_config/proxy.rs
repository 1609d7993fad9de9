//! Which proxy, if any, a client reaches its server through: `--proxy URL` or `--no-proxy`, else
//! the file's `proxy` (`""` for none), else the conventional environment variables, which other
//! programs on the machine follow too.
//!
//! From the environment, the first of `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY`
//! that is set and not empty names the proxy (the carrier is TLS, so the HTTPS variables come
//! first, lowercase before uppercase as curl reads them), unless `no_proxy` (else `NO_PROXY`)
//! names the server's host. `NO_PROXY` only ever turns off a proxy from the environment: a proxy
//! given by flag or file is what the user asked for this client.

use crate::diag::{Item, Problems};
use burrow_client::Proxy;
use burrow_client::proxy::bypasses;

/// The variables that may name a proxy, in the order they are read.
pub(super) const PROXY_VARS: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
/// The variables that may list the hosts reached directly, in the order they are read.
pub(super) const NO_PROXY_VARS: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// The proxy flags shared by `burrow client`, `tcp`, `udp` and `http`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct ProxyArgs {
    /// Reach the server through this proxy: http://[USER:PASSWORD@]HOST[:PORT] (HTTP
    /// CONNECT), socks5://... (SOCKS5) or socks5h://... (SOCKS5, the proxy resolves the
    /// server's name) [default: https_proxy or all_proxy, unless no_proxy names the server].
    // Checked when the plan is built, not by clap, so no error message repeats a password.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    proxy: Option<String>,
    /// Reach the server directly, whatever the proxy variables say.
    #[arg(long)]
    no_proxy: bool,
}

impl ProxyArgs {
    /// The `proxy` setting these flags make, if they make one (`""` for none).
    pub(super) fn item(&self) -> Option<Item<String>> {
        if self.no_proxy {
            return Some(Item::flag("--no-proxy", String::new()));
        }
        (self.proxy.clone()).map(|url| Item::flag("--proxy", url))
    }
}

/// A proxy named by the environment, and the `NO_PROXY` list it comes with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EnvProxy {
    /// The URL, with the variable it came from as its origin.
    url: Item<String>,
    /// The hosts reached directly, if a list is set.
    no_proxy: Option<String>,
}

impl EnvProxy {
    /// What the variables `var` reads say, or `None` when none names a proxy.
    pub(super) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<EnvProxy> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let (name, url) = PROXY_VARS
            .iter()
            .find_map(|&name| set(name).map(|url| (name, url)))?;
        let no_proxy = NO_PROXY_VARS.iter().find_map(|&name| set(name));
        Some(EnvProxy {
            url: Item::flag(name, url),
            no_proxy,
        })
    }

    /// What the process's environment says.
    pub(super) fn from_env() -> Option<EnvProxy> {
        EnvProxy::from_vars(|name| std::env::var(name).ok())
    }
}

/// The proxy to use for `server` (`host:port`): the flag's or the file's `setting` (`""` for
/// none), else the environment's unless its `NO_PROXY` names the server's host. A malformed
/// URL is recorded in `p`, at its flag, key or variable.
pub(super) fn resolve(
    setting: Option<&Item<String>>,
    env: Option<&EnvProxy>,
    server: &str,
    p: &mut Problems,
) -> Option<Proxy> {
    let parse = |url: &str| url.parse::<Proxy>();
    match (setting, env) {
        (Some(item), _) if item.value.trim().is_empty() => None,
        (Some(item), _) => p.parse(Some(item), parse),
        (None, Some(env)) => {
            let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
            let direct = env.no_proxy.as_deref().is_some_and(|l| bypasses(l, host));
            if direct {
                None
            } else {
                p.parse(Some(&env.url), parse)
            }
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Option<EnvProxy> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EnvProxy::from_vars(|name| map.get(name).cloned())
    }

    fn chosen(setting: Option<&str>, vars: &[(&str, &str)], server: &str) -> Option<String> {
        let item = setting.map(|s| Item::flag("--proxy", s.to_owned()));
        let mut p = Problems::default();
        let proxy = resolve(item.as_ref(), env(vars).as_ref(), server, &mut p);
        let clean = p.finish((), &crate::diag::Source::default());
        assert!(clean.is_ok(), "{clean:?}");
        proxy.map(|p| p.to_string())
    }

    #[test]
    fn variables_are_read_in_the_documented_order() {
        let all = [
            ("ALL_PROXY", "http://d:1"),
            ("all_proxy", "http://c:1"),
            ("HTTPS_PROXY", "http://b:1"),
            ("https_proxy", "http://a:1"),
        ];
        assert_eq!(env(&all).unwrap().url.value, "http://a:1");
        assert_eq!(env(&all[..3]).unwrap().url.value, "http://b:1");
        assert_eq!(env(&all[..2]).unwrap().url.value, "http://c:1");
        assert_eq!(env(&all[..1]).unwrap().url.value, "http://d:1");
        // An empty variable is as good as unset.
        let empty = env(&[("https_proxy", " "), ("ALL_PROXY", "socks5h://s:1")]).unwrap();
        assert_eq!(empty.url, Item::flag("ALL_PROXY", "socks5h://s:1".into()));
        assert_eq!(env(&[("NO_PROXY", "*")]), None);
        let lists = env(&[("ALL_PROXY", "p:1"), ("NO_PROXY", "b"), ("no_proxy", "a")]);
        assert_eq!(lists.unwrap().no_proxy.as_deref(), Some("a"));
    }

    #[test]
    fn flag_or_file_beats_the_environment_and_no_proxy_only_turns_the_environment_off() {
        let vars = [("ALL_PROXY", "http://envproxy:3128"), ("NO_PROXY", ".corp")];
        let server = "burrow.corp:7777";
        assert_eq!(chosen(None, &vars, server), None);
        assert_eq!(
            chosen(None, &vars, "example.net:7777").as_deref(),
            Some("http://envproxy:3128")
        );
        assert_eq!(
            chosen(Some("socks5://mine:1"), &vars, server).as_deref(),
            Some("socks5://mine:1")
        );
        assert_eq!(chosen(Some(""), &vars, "example.net:7777"), None);
        assert_eq!(chosen(None, &[], "example.net:7777"), None);
        assert_eq!(
            chosen(
                None,
                &[("https_proxy", "http://e:1"), ("no_proxy", "::1")],
                "[::1]:7777"
            ),
            None
        );
    }

    #[test]
    fn a_bad_url_is_reported_at_its_variable_without_the_password() {
        let vars = [("HTTPS_PROXY", "ftp://u:hunter2@p:1")];
        let mut p = Problems::default();
        let proxy = resolve(None, env(&vars).as_ref(), "example.net:7777", &mut p);
        assert_eq!(proxy, None);
        let lines = p
            .finish((), &crate::diag::Source::default())
            .unwrap_err()
            .lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("HTTPS_PROXY: `ftp://u:***@p:1`"),
            "{lines:?}"
        );
    }
}
