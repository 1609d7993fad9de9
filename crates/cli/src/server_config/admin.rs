//! The admin API's settings: `admin_listen` and its bearer token (`admin_token` or
//! `admin_token_file`, or `--admin-token-file`). A listener off loopback without a token is an
//! error: the API can disconnect clients.

use super::{RawServer, ServerArgs, set};
use crate::diag::{Item, Problems, Source};
use crate::fields;
use burrow_server::ServerConfig;
use std::net::SocketAddr;

impl RawServer {
    /// Lays the admin flags over the file's values.
    pub(super) fn apply_admin_flags(&mut self, a: &ServerArgs) {
        let text = |name, v: &Option<String>| v.clone().map(|v| Item::flag(name, v));
        set(
            &mut self.admin_listen,
            text("--admin-listen", &a.admin_listen),
        );
        if let Some(file) = &a.admin_token_file {
            self.admin_token = None;
            self.admin_token_file = Some(Item::flag("--admin-token-file", file.clone()));
        }
    }

    /// Converts the admin settings into the listener address and the config's token.
    pub(super) fn admin(
        &self,
        source: &Source,
        config: &mut ServerConfig,
        p: &mut Problems,
    ) -> Option<SocketAddr> {
        let token = fields::token(
            self.admin_token.as_ref(),
            self.admin_token_file.as_ref(),
            source,
            p,
        );
        let listen = p.parse(self.admin_listen.as_ref(), fields::listen_addr);
        if let (Some(addr), Some(item)) = (listen, &self.admin_listen)
            && !addr.ip().is_loopback()
            && token.is_none()
        {
            p.push(item.problem(
                "the admin API off loopback needs a token (admin_token, admin_token_file or --admin-token-file)",
            ));
        }
        config.admin_token = token;
        listen
    }
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use crate::testing::{lines, source};

    #[test]
    fn admin_settings_convert_and_off_loopback_needs_a_token() {
        let ok = "token = \"t\"\nstate_dir = \"/s\"\nadmin_listen = \"127.0.0.1:7780\"\n";
        let plan = check(&source("s.toml", ok)).unwrap();
        assert_eq!(plan.admin, Some("127.0.0.1:7780".parse().unwrap()));
        assert!(plan.config.admin_token.is_none());
        let with_token = "token = \"t\"\nstate_dir = \"/s\"\nadmin_listen = \"0.0.0.0:7780\"\n\
                          admin_token = \"a\"\n";
        let plan = check(&source("s.toml", with_token)).unwrap();
        assert_eq!(plan.config.admin_token.unwrap().expose(), b"a");
        let open = "token = \"t\"\nstate_dir = \"/s\"\nadmin_listen = \"0.0.0.0:7780\"\n";
        assert_eq!(
            lines(check(&source("s.toml", open))),
            [
                "s.toml:3:16: the admin API off loopback needs a token (admin_token, admin_token_file or --admin-token-file)"
            ]
        );
    }
}
