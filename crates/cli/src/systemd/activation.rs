//! Socket activation: the server takes its listeners from the sockets systemd passed instead of
//! binding them itself.
//!
//! systemd (or `systemd-socket-activate`) opens the sockets, starts burrow when the first
//! connection arrives and hands the sockets over as descriptors 3, 4, ... with `LISTEN_FDS`,
//! `LISTEN_PID` (which must be this process) and, optionally, `LISTEN_FDNAMES`. A socket's name
//! (`FileDescriptorName=` in the `.socket` unit) says which listener it is: `control`, `http`,
//! `https` or `admin`. A lone socket without a name is the control listener. Connections that
//! arrive before burrow is up wait in the socket's backlog, so none is lost during a start or a
//! restart.
//!
//! Every passed socket must find its listener, and a listener whose address is also configured
//! must agree with the socket's address: anything else stops the server at startup with an
//! error that says what to change.

use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener as StdListener};

/// Which of the server's listeners a passed socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Where clients connect.
    Control,
    /// The HTTP edge's plain listener.
    Http,
    /// The HTTP edge's TLS listener.
    Https,
    /// The admin API's listener.
    Admin,
}

impl Role {
    /// Every role, in the order sockets are reported.
    const ALL: [Role; 4] = [Role::Control, Role::Http, Role::Https, Role::Admin];

    /// The `FileDescriptorName=` that selects this role.
    fn name(self) -> &'static str {
        match self {
            Role::Control => "control",
            Role::Http => "http",
            Role::Https => "https",
            Role::Admin => "admin",
        }
    }

    /// The role a socket name selects, if any.
    fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Its slot in [`Assignment`] and [`Passed`].
    fn index(self) -> usize {
        self as usize
    }
}

/// True for the names systemd gives a socket nobody named: none at all (`LISTEN_FDNAMES`
/// unset reads as `unknown`), an empty one, or the `.socket` unit's own name (systemd's default
/// `FileDescriptorName=`).
fn is_unnamed(name: &str) -> bool {
    name.is_empty() || name == "unknown" || name.ends_with(".socket")
}

/// Which passed socket (by position: 0 is descriptor 3) serves which role.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Assignment([Option<usize>; 4]);

impl Assignment {
    /// The position of the socket for `role`, if one was passed.
    pub(crate) fn get(&self, role: Role) -> Option<usize> {
        self.0[role.index()]
    }
}

/// Matches the names of the passed sockets, in order, to the server's listeners. A lone unnamed
/// socket is the control listener; otherwise every socket needs one of the four names, each
/// used once.
pub(crate) fn assign(names: &[&str]) -> Result<Assignment, String> {
    let mut assignment = Assignment::default();
    if let [only] = names
        && is_unnamed(only)
    {
        assignment.0[Role::Control.index()] = Some(0);
        return Ok(assignment);
    }
    for (i, &name) in names.iter().enumerate() {
        let fd = i + 3;
        let Some(role) = Role::from_name(name) else {
            return Err(if is_unnamed(name) {
                format!(
                    "systemd passed {} sockets and socket {fd} has no name; give each one a \
                     FileDescriptorName= of control, http, https or admin",
                    names.len()
                )
            } else {
                format!(
                    "systemd passed socket {fd} named `{name}`, which is none of burrow's \
                     listeners; name it control, http, https or admin"
                )
            });
        };
        let slot = &mut assignment.0[role.index()];
        if slot.is_some() {
            return Err(format!(
                "systemd passed two sockets named `{name}`; burrow has one {name} listener"
            ));
        }
        *slot = Some(i);
    }
    Ok(assignment)
}

/// Whether an address from the config describes a socket bound to `actual`: the same port
/// (any, if the configured port is 0), and the same IP unless the configured one is a wildcard
/// (`0.0.0.0` or `::`).
pub(crate) fn agrees(configured: SocketAddr, actual: SocketAddr) -> bool {
    let port = configured.port() == 0 || configured.port() == actual.port();
    let ip = configured.ip().is_unspecified() || configured.ip() == actual.ip();
    port && ip
}

/// The listening sockets systemd passed to this process, by role.
#[derive(Debug, Default)]
pub(crate) struct Passed([Option<StdListener>; 4]);

impl Passed {
    /// Takes the sockets systemd passed to this process, if any (none unless `LISTEN_PID` is
    /// this process). Call it before the runtime starts any thread: taking the sockets removes
    /// `LISTEN_PID` and `LISTEN_FDS` from the environment, so no child inherits them.
    pub(crate) fn from_env() -> anyhow::Result<Passed> {
        let names: Vec<String> = sd_notify::listen_fds_with_names()
            .context("cannot read the sockets systemd passed (LISTEN_FDS, LISTEN_FDNAMES)")?
            .map(|(_, name)| name)
            .collect();
        if names.is_empty() {
            return Ok(Passed::default());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let assignment = assign(&refs).map_err(anyhow::Error::msg)?;
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() != names.len() {
            bail!(
                "systemd passed {} sockets but {} could be taken",
                names.len(),
                fds.len()
            );
        }
        let mut passed = Passed::default();
        for role in Role::ALL {
            let Some(i) = assignment.get(role) else {
                continue;
            };
            let name = role.name();
            let listener = fds
                .take_tcp_listener(i)
                .with_context(|| format!("the `{name}` socket systemd passed (descriptor {}) is not a listening TCP socket", i + 3))?
                .with_context(|| format!("the `{name}` socket systemd passed was already taken"))?;
            passed.0[role.index()] = Some(listener);
        }
        Ok(passed)
    }

    /// The socket passed for `role`, once.
    pub(crate) fn take(&mut self, role: Role) -> Option<StdListener> {
        self.0[role.index()].take()
    }
}

/// Turns a socket systemd passed into the listener for `what`, after checking it agrees with
/// the address configured for that listener, if one is.
pub(crate) fn adopt(
    what: &str,
    socket: StdListener,
    configured: Option<SocketAddr>,
) -> anyhow::Result<tokio::net::TcpListener> {
    let actual = socket
        .local_addr()
        .with_context(|| format!("cannot read the address of the {what} socket systemd passed"))?;
    if let Some(configured) = configured
        && !agrees(configured, actual)
    {
        bail!(
            "the {what} listener is configured on {configured} but systemd passed a socket on \
             {actual}; make the two agree or leave the address out of the config"
        );
    }
    socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(socket))
        .with_context(|| format!("cannot use the {what} socket systemd passed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(a: &Assignment) -> Vec<(Role, usize)> {
        Role::ALL
            .into_iter()
            .filter_map(|r| a.get(r).map(|i| (r, i)))
            .collect()
    }

    #[test]
    fn a_lone_unnamed_socket_is_the_control_listener() {
        for name in ["unknown", "", "burrow-server.socket"] {
            let a = assign(&[name]).unwrap();
            assert_eq!(roles(&a), [(Role::Control, 0)], "{name:?}");
        }
    }

    #[test]
    fn named_sockets_find_their_listeners_in_any_order() {
        let a = assign(&["admin", "control", "https", "http"]).unwrap();
        assert_eq!(
            roles(&a),
            [
                (Role::Control, 1),
                (Role::Http, 3),
                (Role::Https, 2),
                (Role::Admin, 0)
            ]
        );
        let a = assign(&["admin"]).unwrap();
        assert_eq!(roles(&a), [(Role::Admin, 0)]);
        assert_eq!(assign(&[]).unwrap(), Assignment::default());
    }

    #[test]
    fn sockets_that_match_no_listener_are_errors() {
        let err = assign(&["web"]).unwrap_err();
        assert!(err.contains("socket 3 named `web`"), "{err}");
        let err = assign(&["control", "web"]).unwrap_err();
        assert!(err.contains("socket 4 named `web`"), "{err}");
        let err = assign(&["control", "unknown"]).unwrap_err();
        assert!(err.contains("socket 4 has no name"), "{err}");
        let err = assign(&["burrow.socket", "burrow.socket"]).unwrap_err();
        assert!(err.contains("socket 3 has no name"), "{err}");
        let err = assign(&["http", "http"]).unwrap_err();
        assert!(err.contains("two sockets named `http`"), "{err}");
        // Names are matched exactly, as systemd passes them.
        assert!(assign(&["Control"]).is_err());
    }

    #[test]
    fn configured_addresses_agree_with_the_socket_or_conflict() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(agrees(a("127.0.0.1:7777"), a("127.0.0.1:7777")));
        assert!(agrees(a("0.0.0.0:7777"), a("[::]:7777")));
        assert!(agrees(a("[::]:7777"), a("10.0.0.1:7777")));
        assert!(agrees(a("127.0.0.1:0"), a("127.0.0.1:40000")));
        assert!(!agrees(a("127.0.0.1:7777"), a("127.0.0.1:7778")));
        assert!(!agrees(a("127.0.0.1:7777"), a("10.0.0.1:7777")));
        assert!(!agrees(a("127.0.0.1:7777"), a("0.0.0.0:7777")));
        assert!(!agrees(a("0.0.0.0:80"), a("0.0.0.0:8080")));
    }

    #[tokio::test]
    async fn adopting_checks_the_configured_address() {
        let socket = StdListener::bind("127.0.0.1:0").unwrap();
        let actual = socket.local_addr().unwrap();
        let listener = adopt("admin", socket, Some(actual)).unwrap();
        assert_eq!(listener.local_addr().unwrap(), actual);
        let socket = StdListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let other = SocketAddr::from(([127, 0, 0, 2], port));
        let err = adopt("admin", socket, Some(other)).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "configured on {other} but systemd passed a socket on 127.0.0.1:{port}"
            )),
            "{err}"
        );
    }
}
