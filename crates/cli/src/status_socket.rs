//! Where a client serves its status, and the socket file's life from bind to removal.
//!
//! By default each client serves its status on `<dir>/<name>.sock`, where `<dir>` is
//! `$XDG_RUNTIME_DIR/burrow`, else `/run/burrow` for root, else `burrow/status` under the
//! user's state directory (`~/.local/state`), and `<name>` is the config file's name without
//! its extension (`burrow client`) or the tunnel's name (`tcp-8080` for `burrow tcp 8080`).
//! `burrow status` looks in the same directory. The default directory is created with mode
//! 0700 and the socket is bound with mode 0600: the socket reveals the client's tunnels.
//!
//! A socket file nothing listens on (left by a client that was killed) is replaced. A live one
//! belongs to another client: on the default path the client warns and runs without a status
//! socket, on a path the user named it refuses to start, since the user asked for that path. The
//! file is removed when the client stops, unless another process replaced it meanwhile.

use anyhow::{Context, bail};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

/// How long a probe of an existing socket file may take before it counts as live.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// What a status socket's file name ends with.
pub(crate) const EXTENSION: &str = "sock";

/// Whether and where a client serves its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusSocket {
    /// No status socket.
    Off,
    /// `<name>.sock` in the default directory; trouble there is a warning.
    Default(String),
    /// This path, which the user named; trouble there is an error.
    At(PathBuf),
}

/// The default directory of status sockets, from the environment.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty());
    let state = dirs::state_dir().or_else(|| dirs::home_dir().map(|h| h.join(".local/state")));
    choose_dir(
        runtime.map(PathBuf::from),
        crate::server_config::is_root(),
        state,
    )
}

/// The default directory: the runtime directory, `/run/burrow` for root, or the state directory.
fn choose_dir(runtime: Option<PathBuf>, root: bool, state: Option<PathBuf>) -> Option<PathBuf> {
    match (runtime, root) {
        (Some(runtime), _) => Some(runtime.join("burrow")),
        (None, true) => Some(PathBuf::from("/run/burrow")),
        (None, false) => state.map(|s| s.join("burrow").join("status")),
    }
}

/// A bound status socket; dropping it removes the file.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    /// The file's inode, so a file that another process put at the path is left alone.
    inode: Option<u64>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if inode(&self.path).is_some() && inode(&self.path) == self.inode {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the status socket `choice` asks for; `None` when it is off, or when the default path
/// cannot be used (after a warning).
pub(crate) async fn bind(
    choice: &StatusSocket,
) -> anyhow::Result<Option<(UnixListener, SocketFile)>> {
    match choice {
        StatusSocket::Off => Ok(None),
        StatusSocket::At(path) => bind_at(path).await.map(Some),
        StatusSocket::Default(name) => match bind_default(name).await {
            Ok(bound) => Ok(Some(bound)),
            Err(e) => {
                warn!("running without a status socket: {e:#}");
                Ok(None)
            }
        },
    }
}

async fn bind_default(name: &str) -> anyhow::Result<(UnixListener, SocketFile)> {
    let Some(dir) = default_dir() else {
        bail!("no runtime or state directory found; set status_socket or --status-socket");
    };
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(builder.recursive(true), 0o700);
    builder
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    bind_at(&dir.join(format!("{name}.{EXTENSION}"))).await
}

/// Binds `path` with mode 0600, replacing a stale socket file there.
async fn bind_at(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    clear_stale(path).await?;
    let listener = bind_private(path)
        .with_context(|| format!("cannot listen for status requests at {}", path.display()))?;
    let file = SocketFile {
        path: path.to_owned(),
        inode: inode(path),
    };
    info!(socket = %path.display(), "serving status");
    Ok((listener, file))
}

/// Removes a socket file at `path` that nothing listens on; refuses anything else there.
async fn clear_stale(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; remove it or choose another status socket path",
            path.display()
        );
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            info!(socket = %path.display(), "replacing a stale status socket");
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))
        }
        Ok(Err(e)) => Err(e).with_context(|| format!("cannot probe {}", path.display())),
        Ok(Ok(_)) | Err(_) => bail!(
            "another running client serves its status at {} (stop it, or choose another path \
             with --status-socket or status_socket)",
            path.display()
        ),
    }
}

/// Binds with a umask that leaves the socket readable and writable by its owner alone, so it is
/// never reachable by others, not even between bind and chmod.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    use rustix::fs::Mode;
    use std::os::unix::fs::PermissionsExt;
    let old = rustix::process::umask(Mode::from_raw_mode(0o177));
    let bound = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_directory_follows_the_environment() {
        let run = Some(PathBuf::from("/run/user/1000"));
        let state = Some(PathBuf::from("/home/a/.local/state"));
        assert_eq!(
            choose_dir(run.clone(), false, state.clone()),
            Some(PathBuf::from("/run/user/1000/burrow"))
        );
        assert_eq!(
            choose_dir(run, true, state.clone()),
            Some(PathBuf::from("/run/user/1000/burrow"))
        );
        assert_eq!(
            choose_dir(None, true, state.clone()),
            Some(PathBuf::from("/run/burrow"))
        );
        assert_eq!(
            choose_dir(None, false, state),
            Some(PathBuf::from("/home/a/.local/state/burrow/status"))
        );
        assert_eq!(choose_dir(None, false, None), None);
    }

    #[tokio::test]
    async fn sockets_are_private_stale_ones_replaced_live_ones_kept() {
        let dir = crate::testing::scratch("status-socket");
        let path = dir.join("c.sock");
        let (listener, file) = bind_at(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let err = bind_at(&path).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("another running client"),
            "{err:#}"
        );

        // Closed without removing the file, as a killed client leaves it.
        drop(listener);
        std::mem::forget(file);
        let (_listener, file) = bind_at(&path).await.unwrap();
        drop(file);
        assert!(!path.exists(), "the socket file outlived its client");

        std::fs::write(&path, "not a socket").unwrap();
        let err = bind_at(&path).await.unwrap_err();
        assert!(format!("{err:#}").contains("not a socket"), "{err:#}");
        assert!(path.exists(), "a regular file was removed");
    }
}
