//! Signals: the first SIGINT or SIGTERM asks for a clean shutdown (exit 0 once open streams
//! finish or the grace period ends); a second one stops the process at once. SIGHUP asks for a
//! config reload ([`Hangups`]); commands that cannot reload ignore it.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// SIGINT and SIGTERM, registered with the OS as soon as this exists.
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

/// SIGHUP, registered with the OS as soon as this exists (from then on a SIGHUP no longer ends
/// the process).
pub(crate) struct Hangups {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Hangups {
    /// Waits for the next SIGHUP (forever where there is none). Cancel-safe.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if self.hangup.recv().await.is_some() {
            return;
        }
        std::future::pending::<()>().await;
    }
}

impl Signals {
    /// Registers the handlers, SIGHUP's included.
    #[cfg(unix)]
    pub(crate) fn install() -> std::io::Result<(Self, Hangups)> {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt())?;
        let terminate = signal(SignalKind::terminate())?;
        let hangup = signal(SignalKind::hangup())?;
        let signals = Self {
            interrupt,
            terminate,
        };
        Ok((signals, Hangups { hangup }))
    }

    /// Registers the handlers.
    #[cfg(not(unix))]
    pub(crate) fn install() -> std::io::Result<(Self, Hangups)> {
        Ok((Self {}, Hangups {}))
    }

    /// Waits for the next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Cancels `shutdown` on the first signal (telling systemd, if it watches, that burrow is
    /// stopping); a second one stops the process at once.
    pub(crate) async fn cancel_on_signal(mut self, shutdown: CancellationToken) {
        self.next().await;
        info!("shutting down (signal again to stop at once)");
        crate::systemd::notify_stopping();
        shutdown.cancel();
        self.next().await;
        eprintln!("burrow: error: stopped by a second signal before shutdown finished");
        std::process::exit(1);
    }
}
