//! Reloading a running server's or client's configuration, on SIGHUP and when its config file
//! changes.
//!
//! Each time, the file and flags go through the same loader as at start-up. A file with
//! problems is rejected as a whole and the running configuration stays; otherwise the library
//! applies what changed (see `burrow_server::reload` and `burrow_client::reload`) and this
//! module adds what only the command line knows about: for a server its listeners and TLS
//! files, for a client ([`client`]) its TLS trust, status socket and trace exporter, which need
//! a restart. Every reload ends with one stdout line, `config reloaded: ...` or
//! `config rejected: ...`.

pub(crate) mod client;

use crate::server_config::{self, ServerArgs, ServerPlan, TlsSource};
use crate::signals::Hangups;
use crate::start::say;
use burrow_server::{Change, Reloader};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A change to the file is acted on once it has been quiet this long, so an editor's several
/// writes make one reload.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// A file that never stops changing is still reloaded this often.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// Where a reload stands; the service manager is told both (`RELOADING=1`, then `READY=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// A reload has begun.
    Reloading,
    /// The reload is over, applied or rejected; the server runs on.
    Ready,
}

/// Reports a reload's phase beyond the log; the one place a service manager hears of it.
fn announce(phase: Phase) {
    debug!(?phase, "reload phase");
    match phase {
        Phase::Reloading => crate::systemd::notify_reloading(),
        Phase::Ready => crate::systemd::notify_reloaded(),
    }
}

/// What asks for a reload: SIGHUP, and changes to the config file.
pub(crate) struct Triggers {
    hangups: Hangups,
    /// Kept alive while it watches; its events arrive on `changes`.
    _watcher: Option<RecommendedWatcher>,
    changes: mpsc::Receiver<()>,
}

impl Triggers {
    /// SIGHUP, and changes to `file` when given. The file's directory is watched, so editors
    /// that replace the file are seen too. A file that cannot be watched leaves SIGHUP working.
    pub(crate) fn new(hangups: Hangups, file: Option<&Path>) -> Self {
        let (tx, changes) = mpsc::channel(1);
        let watcher = file.and_then(|file| match watch(file, tx) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                warn!(file = %file.display(), "not watching the config file (SIGHUP still reloads): {e}");
                None
            }
        });
        Self {
            hangups,
            _watcher: watcher,
            changes,
        }
    }

    /// Waits for the next reason to reload; says which. Changes to the file are debounced.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            () = self.hangups.recv() => "SIGHUP",
            Some(()) = self.changes.recv() => {
                let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
                while tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + DEBOUNCE), self.changes.recv())
                    .await
                    .is_ok_and(|got| got.is_some())
                {}
                "config file changed"
            }
        }
    }
}

/// Watches `file`'s directory and sends on `tx` when an event names the file. The channel holds
/// one pending change; more while it is full add nothing.
fn watch(file: &Path, tx: mpsc::Sender<()>) -> notify::Result<RecommendedWatcher> {
    let name = file.file_name().map(ToOwned::to_owned);
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let writes = event.kind.is_create()
            || event.kind.is_modify()
            || matches!(
                event.kind,
                notify::EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write
                ))
            );
        if writes && event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// The settings only a restart applies: listeners and TLS files, as the plan names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fixed {
    listen: std::net::SocketAddr,
    tls: Option<TlsSource>,
    http: Option<std::net::SocketAddr>,
    https: Option<std::net::SocketAddr>,
    edge_tls: Option<(PathBuf, PathBuf)>,
    admin: Option<std::net::SocketAddr>,
    quic: Option<std::net::SocketAddr>,
    ws: Option<std::net::SocketAddr>,
}

impl Fixed {
    /// The plan's listeners and TLS files.
    pub(crate) fn of(plan: &ServerPlan) -> Self {
        Self {
            listen: plan.listen,
            tls: plan.tls.clone(),
            http: plan.edge.http,
            https: plan.edge.https,
            edge_tls: plan.edge.tls.clone(),
            admin: plan.admin,
            quic: plan.quic,
            ws: plan.ws,
        }
    }
}

/// Runs `reload_once` on every trigger until `shutdown`, telling the service manager when each
/// reload begins and ends.
pub(crate) async fn on_triggers(
    mut triggers: Triggers,
    shutdown: CancellationToken,
    mut reload_once: impl FnMut(),
) {
    loop {
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            why = triggers.next() => why,
        };
        info!("reloading the configuration ({why})");
        announce(Phase::Reloading);
        reload_once();
        announce(Phase::Ready);
    }
}

/// What a server started with that reloads are checked against.
pub(crate) struct Started {
    /// The settings only a restart changes.
    pub(crate) fixed: Fixed,
    /// The admin API listens off loopback: a reload may not remove its token.
    pub(crate) admin_public: bool,
}

/// Reloads the server on every trigger until `shutdown`. `started` is what the server started
/// with: what needs a restart is compared against it.
pub(crate) async fn serve(
    args: ServerArgs,
    started: Started,
    reloader: Reloader,
    triggers: Triggers,
    shutdown: CancellationToken,
) {
    on_triggers(triggers, shutdown, || match server_config::load(&args) {
        Ok(plan) => apply(&started, plan, &reloader),
        Err(e) => reject(&e),
    })
    .await
}

/// Applies a loaded plan and reports it.
fn apply(started: &Started, plan: ServerPlan, reloader: &Reloader) {
    if started.admin_public && plan.config.admin_token.is_none() {
        return reject(&anyhow::anyhow!(
            "the admin API listens off loopback and needs a token: a reload cannot remove it (restart with admin_listen on loopback to run without one)"
        ));
    }
    let restarts = restarts(&started.fixed, &Fixed::of(&plan));
    for what in &restarts {
        warn!("config reload: {}", Change::NeedsRestart(what));
    }
    let changes = reloader.reload(plan.config);
    conclude(&changes, restarts, |c| match c {
        Change::NeedsRestart(what) => Some(*what),
        _ => None,
    });
}

/// Reports a reload the library applied: its `changes` (of which `kept` names those that wait
/// for a restart) and the settings only the command line compares, `also_restart`.
pub(crate) fn conclude<C>(
    changes: &[C],
    also_restart: Vec<&'static str>,
    kept: impl Fn(&C) -> Option<&'static str>,
) {
    let mut restart: Vec<&str> = changes.iter().filter_map(kept).collect();
    let applied = changes.len() - restart.len();
    restart.extend(also_restart);
    reloaded(applied, &restart);
}

/// Logs and prints the summary of an applied reload.
pub(crate) fn reloaded(applied: usize, restart: &[&str]) {
    let summary = summary(applied, restart);
    info!("config reloaded: {summary}");
    say(&format!("config reloaded: {summary}"));
}

/// Logs every problem of a rejected file and says so on stdout.
pub(crate) fn reject(e: &anyhow::Error) {
    let lines = match e.downcast_ref::<crate::diag::ConfigError>() {
        Some(config) => config.lines(),
        None => vec![format!("{e:#}").replace('\n', " ")],
    };
    for line in &lines {
        warn!("config rejected: {line}");
    }
    let more = match lines.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let first = lines.first().map(String::as_str).unwrap_or("invalid");
    warn!("config rejected; the running configuration stays");
    say(&format!("config rejected: {first}{more}"));
}

/// What differs in the settings only the command line applies: listeners and TLS files.
fn restarts(started: &Fixed, new: &Fixed) -> Vec<&'static str> {
    let (s, n) = (started, new);
    [
        ("listen", s.listen != n.listen),
        ("TLS identity", s.tls != n.tls),
        ("http_listen", s.http != n.http),
        ("https_listen", s.https != n.https),
        ("edge TLS certificate", s.edge_tls != n.edge_tls),
        ("admin_listen", s.admin != n.admin),
        ("quic_listen", s.quic != n.quic),
        ("ws_listen", s.ws != n.ws),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(what, _)| what)
    .collect()
}

/// `3 changes applied, 1 needs a restart (listen)`, or `no changes`: `applied` changes took
/// effect, and the settings named in `restart` wait for one.
fn summary(applied: usize, restart: &[&str]) -> String {
    if applied == 0 && restart.is_empty() {
        return "no changes".into();
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut out = plural(applied, "change applied", "changes applied");
    if !restart.is_empty() {
        let needs = plural(restart.len(), "needs a restart", "need a restart");
        out.push_str(&format!(", {needs} ({})", restart.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_count_what_was_applied_and_what_waits() {
        assert_eq!(summary(0, &[]), "no changes");
        assert_eq!(summary(1, &[]), "1 change applied");
        assert_eq!(
            summary(3, &["listen"]),
            "3 changes applied, 1 needs a restart (listen)"
        );
        assert_eq!(
            summary(0, &["listen", "ports"]),
            "0 changes applied, 2 need a restart (listen, ports)"
        );
    }

    #[test]
    fn listeners_and_tls_files_need_a_restart() {
        let load = |text: &str| {
            Fixed::of(&server_config::check(&crate::testing::source("s.toml", text)).unwrap())
        };
        let base = "token = \"t\"\nstate_dir = \"/s\"\n";
        let started = load(base);
        assert_eq!(restarts(&started, &load(base)), Vec::<&str>::new());
        let moved = load(&format!(
            "{base}listen = \"127.0.0.1:1\"\nhttp_listen = \"127.0.0.1:2\"\nadmin_listen = \"127.0.0.1:3\"\n"
        ));
        assert_eq!(
            restarts(&started, &moved),
            vec!["listen", "http_listen", "admin_listen"]
        );
        let plain = load(&format!("{base}insecure_plain = true\n"));
        assert_eq!(restarts(&started, &plain), vec!["TLS identity"]);
    }
}
