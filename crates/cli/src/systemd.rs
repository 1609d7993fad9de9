//! Running under systemd: socket activation for the server, and the `sd_notify` protocol for
//! the server and the clients.
//!
//! Both are driven by the environment systemd sets (`LISTEN_PID`/`LISTEN_FDS`/`LISTEN_FDNAMES`,
//! `NOTIFY_SOCKET`, `WATCHDOG_USEC`/`WATCHDOG_PID`); without it nothing here does anything, so
//! the same binary runs the same way from a shell, a container or a unit. The unit files that
//! use this live in `contrib/systemd/`, and docs/systemd.md explains them.

mod activation;
mod notify;

pub(crate) use activation::{Passed, Role, adopt};
pub(crate) use notify::{
    FirstReady, notify_ready, notify_reloaded, notify_reloading, notify_stopping, spawn_watchdog,
};
