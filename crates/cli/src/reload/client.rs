//! Reloading `burrow client --config FILE`: its tunnels change live (see
//! `burrow_client::reload`); the settings only the command line uses need a restart.
//!
//! The loader leaves a plan's transport plain until the TLS settings are built from its trust,
//! so a reloaded plan runs with the transport the client started with, and a change of trust is
//! reported here instead.

use super::{conclude, on_triggers, reject};
use crate::client_config::{self, ClientArgs, ClientPlan};
use crate::status_socket::StatusSocket;
use crate::traces::Endpoint;
use burrow_client::{Change, Reloader, Transport};
use burrow_net::tls::Trust;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The settings a client applies only at start: TLS trust, status socket, trace exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fixed {
    trust: Option<Trust>,
    status_socket: StatusSocket,
    otlp: Option<Endpoint>,
}

impl Fixed {
    /// The plan's TLS trust, status socket and trace exporter.
    pub(crate) fn of(plan: &ClientPlan) -> Self {
        Self {
            trust: plan.trust.clone(),
            status_socket: plan.status_socket.clone(),
            otlp: plan.otlp.clone(),
        }
    }
}

/// What a running client was started with, that reloads compare against or keep.
pub(crate) struct Started {
    /// The settings only a restart applies.
    pub(crate) fixed: Fixed,
    /// The transport built from the trust at start.
    pub(crate) transport: Transport,
    /// systemd's start-up readiness, which waits only for tunnels still configured.
    pub(crate) first: std::sync::Arc<crate::systemd::FirstReady>,
}

/// Reloads the client's file on every trigger until `shutdown`.
pub(crate) async fn serve(
    args: ClientArgs,
    started: Started,
    reloader: Reloader,
    triggers: super::Triggers,
    shutdown: CancellationToken,
) {
    on_triggers(triggers, shutdown, || match client_config::load(&args) {
        Ok(plan) => apply(&started, plan, &reloader),
        Err(e) => reject(&e),
    })
    .await
}

/// Applies a loaded plan and reports it.
fn apply(started: &Started, mut plan: ClientPlan, reloader: &Reloader) {
    let restarts = restarts(&started.fixed, &Fixed::of(&plan));
    for what in &restarts {
        warn!("config reload: {}", Change::NeedsRestart(what));
    }
    plan.config.transport = started.transport.clone();
    let names = plan.config.tunnels.iter().map(|t| t.name.as_str());
    started.first.keep_only(names);
    let changes = reloader.reload(plan.config);
    conclude(&changes, restarts, |c| match c {
        Change::NeedsRestart(what) => Some(*what),
        _ => None,
    });
}

/// What differs in the settings only the command line applies.
fn restarts(started: &Fixed, new: &Fixed) -> Vec<&'static str> {
    let (s, n) = (started, new);
    [
        ("TLS trust", s.trust != n.trust),
        ("status_socket", s.status_socket != n.status_socket),
        ("otlp_endpoint", s.otlp != n.otlp),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(what, _)| what)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_status_socket_and_traces_need_a_restart() {
        let tunnel = "[[tunnels]]\nname = \"web\"\nlocal_port = 80\n";
        let load = |text: &str| {
            let source = crate::testing::source("c.toml", text);
            Fixed::of(&client_config::check(&source).unwrap())
        };
        let base = concat!(
            "server = \"example.net\"\ntoken = \"t\"\nserver_fingerprint = ",
            "\"sha256:abababababababababababababababababababababababababababababababab\"\n",
        );
        let started = load(&format!("{base}{tunnel}"));
        assert_eq!(
            restarts(&started, &load(&format!("{base}{tunnel}"))),
            Vec::<&str>::new()
        );
        let other = "[[tunnels]]\nname = \"ssh\"\nlocal_port = 22\n";
        let more = load(&format!("{base}{tunnel}{other}"));
        assert_eq!(restarts(&started, &more), Vec::<&str>::new());
        let moved = load(&format!(
            "{}{}{tunnel}",
            "server = \"example.net\"\ntoken = \"t\"\ninsecure_plain = true\n",
            "status_socket = \"/run/c.sock\"\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
        ));
        assert_eq!(
            restarts(&started, &moved),
            vec!["TLS trust", "status_socket", "otlp_endpoint"]
        );
    }
}
