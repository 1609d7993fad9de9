//! Publishing a client's tunnels: public ports (TCP, UDP), names on the HTTP edge, and UDP
//! sinks, each admitted against the session's and the server's limits first.

use super::{Session, about, printable};
use crate::ports::Endpoint;
use crate::registry::{Route, TunnelAbout};
use crate::{tunnel, udp};
use burrow_proto::msg::{HttpOptions, MAX_NAME_LEN, Refusal, ServerMsg, TunnelKind, TunnelRequest};
use tracing::{Instrument, info, warn};

/// Attempts at finding a bindable port when the client lets the server choose.
const BIND_ATTEMPTS: usize = 32;
/// A port found in use is bound again this many times, this far apart, before it counts as
/// taken by another process.
const REBIND_TRIES: u32 = 5;
const REBIND_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

impl Session {
    pub(super) async fn open_tunnel(&mut self, req: TunnelRequest) -> ServerMsg {
        let id = req.id;
        if let TunnelKind::Http(options) = &req.kind {
            return self.open_http(&req, options);
        }
        let opened = match self.admit(&req) {
            Err(reason) => Err(reason),
            Ok(()) if req.kind == TunnelKind::UdpToSink => self.open_sink(&req).map(|()| None),
            Ok(()) => self.try_open_tunnel(&req).await.map(Some),
        };
        let name = printable(&req.name);
        match opened {
            Ok(Some((protocol, port))) => {
                self.tunnels.insert(id, (protocol, port));
                let about = TunnelAbout {
                    name: name.clone(),
                    target: about(&req.target),
                };
                self.shared.registry.describe((protocol, port), about);
                info!(tunnel = id, %name, %protocol, port, "tunnel published");
                ServerMsg::TunnelOpened { id, port }
            }
            Ok(None) => {
                info!(tunnel = id, sink = %name, "events tunnel to a UDP sink published");
                ServerMsg::TunnelOpened { id, port: 0 }
            }
            Err(reason) => {
                warn!(tunnel = id, %name, "tunnel refused: {reason}");
                ServerMsg::TunnelRefused { id, reason }
            }
        }
    }

    /// Checks what every tunnel request must satisfy, whatever its kind.
    fn admit(&self, req: &TunnelRequest) -> Result<(), Refusal> {
        if req.name.len() > MAX_NAME_LEN {
            return Err(Refusal::Invalid(format!(
                "tunnel name longer than {MAX_NAME_LEN} bytes"
            )));
        }
        if self.tunnels.contains_key(&req.id)
            || self.sinks.contains_key(&req.id)
            || self.http.contains_key(&req.id)
        {
            return Err(Refusal::DuplicateId(req.id));
        }
        let limit = self.shared.config().max_tunnels_per_session;
        if self.tunnels.len() + self.sinks.len() + self.http.len() >= limit as usize {
            return Err(Refusal::TooManyTunnels(limit));
        }
        Ok(())
    }

    /// Publishes an HTTP tunnel on the edge and answers with its name and addresses.
    fn open_http(&mut self, req: &TunnelRequest, options: &HttpOptions) -> ServerMsg {
        let id = req.id;
        let opened = self
            .admit(req)
            .and_then(|()| self.shared.edge.check(options))
            .and_then(|options| {
                let name = self.shared.registry.http_claim(
                    &self.handle,
                    id,
                    &options,
                    &about(&req.target),
                )?;
                Ok((name, options))
            });
        match opened {
            Ok((name, options)) => {
                let urls = self
                    .shared
                    .edge
                    .urls(&self.shared.config().http, &name, &options);
                info!(tunnel = id, %name, urls = %urls.join(" "), "HTTP tunnel published");
                self.http.insert(id, name.clone());
                ServerMsg::HttpOpened { id, name, urls }
            }
            Err(reason) => {
                warn!(tunnel = id, name = %printable(&req.name), "HTTP tunnel refused: {reason}");
                ServerMsg::TunnelRefused { id, reason }
            }
        }
    }

    /// Starts delivering a client's events to the server-side sink named like the tunnel.
    fn open_sink(&mut self, req: &TunnelRequest) -> Result<(), Refusal> {
        let Some(sink) = self
            .shared
            .config()
            .udp_sinks
            .iter()
            .find(|s| s.name == req.name)
            .cloned()
        else {
            return Err(Refusal::Invalid(format!(
                "this server has no UDP sink named `{}`",
                printable(&req.name)
            )));
        };
        let socket = udp::sink::udp_sender(sink.deliver_to, false).map_err(|e| {
            Refusal::Invalid(format!(
                "the server cannot open a socket toward its sink: {e}"
            ))
        })?;
        let closed = self.handle.closed.child_token();
        self.sinks.insert(req.id, closed.clone());
        let task = udp::sink::deliver(
            self.shared.clone(),
            self.handle.clone(),
            req.id,
            sink,
            socket,
            closed,
        );
        self.shared
            .tracker
            .spawn(task.instrument(tracing::Span::current()));
        Ok(())
    }

    async fn try_open_tunnel(&mut self, req: &TunnelRequest) -> Result<Endpoint, Refusal> {
        let protocol = req.kind.protocol();
        let registry = &self.shared.registry;
        let route: Route = Some((self.handle.clone(), req.id));
        let mut busy = Vec::new();
        for _ in 0..BIND_ATTEMPTS {
            let claim = registry.claim(&self.handle, protocol, req.remote_port, &busy)?;
            let endpoint = (protocol, claim.port);
            if claim.taken_over && registry.reroute(endpoint, route.clone()) {
                return Ok(endpoint);
            }
            // A port the client asked for by number is worth a short wait; any other is not.
            let patient = req.remote_port.is_some();
            match self
                .bind_fresh(&req.kind, claim.port, route.clone(), patient)
                .await
            {
                Ok(()) => return Ok(endpoint),
                Err(e) => {
                    registry.unclaim(endpoint);
                    if req.remote_port.is_some() || e.kind() != std::io::ErrorKind::AddrInUse {
                        return Err(tunnel::bind_refusal(claim.port, &e));
                    }
                    busy.push(claim.port);
                }
            }
        }
        Err(Refusal::NoFreePort)
    }

    /// [`Self::bind_and_publish`], retried briefly when the port is in use: a port the table
    /// holds free may still have the socket of a tunnel closed a moment ago (its task closes it
    /// on its next turn), as when a client's reload moves a tunnel to a port another just left.
    async fn bind_fresh(
        &self,
        kind: &TunnelKind,
        port: u16,
        route: Route,
        patient: bool,
    ) -> std::io::Result<()> {
        let mut tries = if patient { 0 } else { REBIND_TRIES };
        loop {
            match self.bind_and_publish(kind, port, route.clone()) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < REBIND_TRIES => {
                    tries += 1;
                    tokio::time::sleep(REBIND_PAUSE).await;
                }
                done => return done,
            }
        }
    }

    /// Binds the tunnel's public socket and starts serving it.
    fn bind_and_publish(&self, kind: &TunnelKind, port: u16, route: Route) -> std::io::Result<()> {
        match kind {
            TunnelKind::Tcp => {
                let listener = tunnel::bind(&self.shared, port)?;
                tunnel::publish(&self.shared, listener, port, route);
            }
            TunnelKind::Udp(options) => {
                let socket = udp::bind(&self.shared, port)?;
                udp::publish(&self.shared, socket, port, route, *options);
            }
            // Sinks and HTTP tunnels claim no public port; they never reach this point.
            TunnelKind::UdpToSink | TunnelKind::Http(_) => {
                return Err(std::io::ErrorKind::Unsupported.into());
            }
        }
        Ok(())
    }
}
