//! Asking the server for tunnels and withdrawing them: all of them when a session starts,
//! and the difference after a reload.
//!
//! The shared table ([`crate::tunnels`]) says which tunnels should run; the session's
//! `published` map says which it asked for. [`Session::reconcile`] withdraws what the table no
//! longer has before publishing what it gained, so a tunnel moved to a port another one just
//! left finds it free. A tunnel whose id stayed but whose configuration was replaced was
//! retargeted: only its health checker changes; streams look their target up when they start.

use super::{End, Published, Session};
use crate::TunnelConfig;
use crate::tunnels::Entry;
use burrow_proto::msg::{ClientMsg, Refusal, TunnelKind, TunnelRequest};
use std::sync::Arc;
use tracing::{info, warn};

impl Session<'_> {
    /// Asks for every tunnel of the table.
    pub(super) async fn publish_all(&mut self) -> Result<(), End> {
        self.send(ClientMsg::Host(crate::host::info())).await?;
        for (id, entry) in self.ctx.tunnels.all() {
            self.open(id, &entry).await?;
        }
        Ok(())
    }

    /// Withdraws, publishes and retargets tunnels until this session matches the table.
    pub(super) async fn reconcile(&mut self) -> Result<(), End> {
        let current = self.ctx.tunnels.all();
        let gone: Vec<u32> = (self.published.keys())
            .filter(|id| !current.iter().any(|(c, _)| c == *id))
            .copied()
            .collect();
        for id in gone {
            self.close(id).await?;
        }
        for (id, entry) in current {
            match self.published.get(&id) {
                None => self.open(id, &entry).await?,
                Some(p) if !Arc::ptr_eq(&p.config, &entry.config) => {
                    self.retarget(id, &entry).await?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Asks for tunnel `id`, with the port or name it held before when its configuration
    /// leaves the choice to the server.
    async fn open(&mut self, id: u32, entry: &Entry) -> Result<(), End> {
        let tunnel = &entry.config;
        let (port, kind, remembered) = match &tunnel.kind {
            TunnelKind::Http(options) if options.subdomain.is_none() && entry.named.is_some() => {
                let mut options = options.clone();
                options.subdomain = entry.named.clone();
                (None, TunnelKind::Http(options), true)
            }
            kind => {
                let remembered = tunnel.remote_port.is_none() && entry.granted.is_some();
                (
                    tunnel.remote_port.or(entry.granted),
                    kind.clone(),
                    remembered,
                )
            }
        };
        let health = self.start_health(id, tunnel);
        let published = Published {
            config: tunnel.clone(),
            remembered,
            fatal: self.first && entry.initial,
            health,
            unhealthy: false,
        };
        self.published.insert(id, published);
        self.request(id, tunnel, port, kind).await
    }

    async fn request(
        &mut self,
        id: u32,
        tunnel: &TunnelConfig,
        remote_port: Option<u16>,
        kind: TunnelKind,
    ) -> Result<(), End> {
        let req = TunnelRequest {
            id,
            name: tunnel.name.clone(),
            kind,
            remote_port,
            target: tunnel.local.clone(),
        };
        self.send(ClientMsg::OpenTunnel(req)).await
    }

    /// Withdraws tunnel `id`: the server releases its port or name at once.
    async fn close(&mut self, id: u32) -> Result<(), End> {
        if let Some(published) = self.published.remove(&id) {
            info!(tunnel = %published.config.name, "tunnel withdrawn");
        }
        self.send(ClientMsg::CloseTunnel { id }).await
    }

    /// Tunnel `id` keeps its endpoint with a new target: its health checker starts over, so a
    /// target reported unhealthy is reported healthy until the new checker says otherwise.
    async fn retarget(&mut self, id: u32, entry: &Entry) -> Result<(), End> {
        let health = self.start_health(id, &entry.config);
        let Some(published) = self.published.get_mut(&id) else {
            return Ok(());
        };
        published.config = entry.config.clone();
        published.health = health;
        let tunnel = &entry.config;
        info!(tunnel = %tunnel.name, local = %tunnel.local, "tunnel retargeted");
        if std::mem::take(&mut published.unhealthy) {
            return self
                .send(ClientMsg::TunnelHealth { id, healthy: true })
                .await;
        }
        Ok(())
    }

    /// The server refused tunnel `id`: ask again for any port or name if a remembered one was
    /// taken meanwhile, else report it (fatal only for a tunnel configured at start, on the
    /// first session).
    pub(super) async fn on_refused(&mut self, id: u32, reason: Refusal) -> Result<(), End> {
        let Some(published) = self.published.get_mut(&id) else {
            return Ok(());
        };
        let tunnel = published.config.clone();
        if std::mem::take(&mut published.remembered) {
            info!(tunnel = %tunnel.name, "previous port or name unavailable ({reason}); asking for any");
            return self.request(id, &tunnel, None, tunnel.kind.clone()).await;
        }
        let fatal = published.fatal;
        let msg = format!("tunnel {} refused: {reason}", tunnel.name);
        (self.ctx.config.status).refused(&tunnel.name, reason.to_string());
        if fatal {
            return Err(End::Fatal(msg));
        }
        warn!("{msg}");
        Ok(())
    }
}
