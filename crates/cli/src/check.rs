//! `burrow check FILE`: validates a server or client config without starting anything.
//!
//! The file is converted by exactly the code `burrow server --config` and `burrow client
//! --config` use, so a file that checks clean starts clean (short of a port in use or an
//! unreachable server). Each problem is printed to stdout as `FILE:LINE:COL: message`.

use crate::diag::{ConfigError, Source};
use crate::{client_config, server_config};
use std::io::Write;
use std::path::Path;

/// Which side a config file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A server config.
    Server,
    /// A client config: it names a `server` to dial or lists `[[tunnels]]`.
    Client,
}

impl Kind {
    /// Decides from the top-level keys.
    fn of(table: &toml::Table) -> Self {
        if table.contains_key("server") || table.contains_key("tunnels") {
            Kind::Client
        } else {
            Kind::Server
        }
    }
}

/// Checks a config text; on success returns the line to print.
pub(crate) fn check_source(source: &Source) -> Result<String, ConfigError> {
    let (table, _) = source.parse::<toml::Table>()?;
    match Kind::of(&table) {
        Kind::Server => server_config::check(source).map(|_| "ok: server config".to_owned()),
        Kind::Client => client_config::check(source)
            .map(|plan| format!("ok: client config ({} tunnels)", plan.config.tunnels.len())),
    }
}

/// Runs `burrow check FILE`: prints the verdict and fails when the file has problems.
pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
    run_to(path, &mut std::io::stdout().lock())
}

/// [`run`], printing to `out`.
fn run_to(path: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let source = Source::read(path)?;
    let (lines, problems) = match check_source(&source) {
        Ok(line) => (vec![line], 0),
        Err(err) => {
            let lines = err.lines();
            let n = lines.len();
            (lines, n)
        }
    };
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    match problems {
        0 => Ok(()),
        1 => anyhow::bail!("{} has 1 problem", path.display()),
        n => anyhow::bail!("{} has {n} problems", path.display()),
    }
}

#[cfg(test)]
mod tests;
