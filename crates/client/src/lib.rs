//! burrow client library: dials a server, keeps a session up and serves its tunnels.
pub mod config;

pub use config::{ClientConfig, TunnelConfig, Transport};

use tokio_util::sync::CancellationToken;

/// Something the user should see; the CLI prints these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tunnel is published (again, after a reconnect).
    TunnelReady {
        /// Tunnel name.
        name: String,
        /// Public address: the server's host and the granted port.
        public: String,
        /// The local target.
        local: String,
    },
}

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An error retrying cannot fix: authentication, version, trust, a refused tunnel.
    #[error("{0}")]
    Fatal(String),
    /// The carrier was lost and `exit_on_disconnect` is set.
    #[error("disconnected: {0}")]
    Disconnected(String),
}

/// Runs the client until `shutdown` is cancelled or a fatal error; `on_event` sees every
/// [`Event`].
pub async fn run(
    config: ClientConfig,
    shutdown: CancellationToken,
    on_event: impl Fn(Event) + Send + Sync + 'static,
) -> Result<(), ClientError> {
    let _ = (config, on_event);
    shutdown.cancelled().await;
    Ok(())
}
