//! burrow server library: accepts sessions from clients and publishes their tunnels.
pub mod config;

pub use config::{Auth, Identity, PortSet, ServerConfig, Transport};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs a server on an already-bound control listener until `shutdown` is cancelled, then lets
/// open streams finish within the configured grace period.
pub async fn run(config: ServerConfig, control: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _ = (config, control);
    shutdown.cancelled().await;
    Ok(())
}
