//! `burrow status`: asks running clients for their state over their status sockets and prints a
//! short summary, or the raw JSON of `GET /status`.
//!
//! Without `--socket` it reads every socket in the default directory (see [`status_socket`]);
//! `--socket` names one socket, or a directory of them. Every wait is bounded by [`DEADLINE`].
//!
//! [`status_socket`]: crate::status_socket

use crate::status_socket::{EXTENSION, default_dir};
use anyhow::{Context, anyhow, bail};
use burrow_client::status::{Kind, Snapshot, State, TunnelSnapshot, TunnelState};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest a whole request to one client may take.
const DEADLINE: Duration = Duration::from_secs(5);
/// Largest answer read from a client.
const MAX_ANSWER: usize = 4 << 20;

/// Arguments of `burrow status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// A client's status socket, or a directory of them [default: every socket in
    /// $XDG_RUNTIME_DIR/burrow, /run/burrow for root, else ~/.local/state/burrow/status].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the client's answer to GET /status as it is (JSON).
    #[arg(long)]
    json: bool,
}

/// Runs `burrow status`.
pub(crate) fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let sockets = sockets(args.socket.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let [socket] = sockets.as_slice() {
        let body = runtime
            .block_on(fetch(socket))
            .map_err(|e| anyhow!("no running client at {} ({e:#})", socket.display()))?;
        return print(&body, args.json);
    }
    if args.json {
        let list: Vec<String> = sockets.iter().map(|s| s.display().to_string()).collect();
        bail!(
            "several clients run here ({}); choose one with --socket",
            list.join(", ")
        );
    }
    let mut answered = false;
    for socket in &sockets {
        println!("{}:", socket.display());
        match runtime.block_on(fetch(socket)) {
            Ok(body) => {
                print(&body, false)?;
                answered = true;
            }
            Err(e) => println!("  not answering ({e:#})"),
        }
    }
    if !answered {
        bail!("no running client answers in {}", parent_of(&sockets));
    }
    Ok(())
}

/// The sockets to ask: `given` itself, the sockets in `given` when it is a directory, or those
/// of the default directory.
fn sockets(given: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let dir = match given {
        Some(path) if !path.is_dir() => return Ok(vec![path.to_owned()]),
        Some(dir) => dir.to_owned(),
        None => default_dir().ok_or_else(|| {
            anyhow!("no runtime or state directory to look in; give --socket PATH")
        })?,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => bail!("no running client at {} ({e})", dir.display()),
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            use std::os::unix::fs::FileTypeExt;
            e.file_type().is_ok_and(|t| t.is_socket())
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
        .collect();
    found.sort();
    if found.is_empty() {
        bail!(
            "no running client at {} (no status socket there)",
            dir.display()
        );
    }
    Ok(found)
}

fn parent_of(sockets: &[PathBuf]) -> String {
    let parent = sockets.first().and_then(|s| s.parent());
    parent.map_or_else(String::new, |p| p.display().to_string())
}

/// `GET /status` on the socket at `path`: the body of a 200 answer.
async fn fetch(path: &Path) -> anyhow::Result<Bytes> {
    tokio::time::timeout(DEADLINE, fetch_now(path))
        .await
        .unwrap_or_else(|_| Err(anyhow!("no answer within {DEADLINE:?}")))
}

async fn fetch_now(path: &Path) -> anyhow::Result<Bytes> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = http::Request::get("/status")
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let code = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?
        .to_bytes();
    if !code.is_success() {
        bail!("answered {code}: {}", String::from_utf8_lossy(&body).trim());
    }
    Ok(body)
}

/// Prints an answer: as it came with `json`, else as a summary.
fn print(body: &[u8], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", String::from_utf8_lossy(body).trim_end());
        return Ok(());
    }
    let snapshot: Snapshot =
        serde_json::from_slice(body).context("the client's answer is not a status")?;
    print!("{}", summary(&snapshot, SystemTime::now()));
    Ok(())
}

/// A few lines for people: the session, then one line per tunnel.
fn summary(s: &Snapshot, now: SystemTime) -> String {
    let mut out = String::new();
    let session = s.session.as_deref().unwrap_or("none");
    let _ = match s.state {
        State::Connected => write!(out, "connected to {}, session {session}", s.server),
        State::Connecting => write!(out, "connecting to {}", s.server),
        State::Reconnecting => write!(out, "reconnecting to {} (last session {session})", s.server),
    };
    if let (Some(carrier), State::Connected) = (&s.carrier, s.state) {
        if carrier != "tcp" {
            let _ = write!(out, " over {carrier}");
        }
    }
    if let Some(since) = s.connected_since_unix {
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let up = Duration::from_secs(now.saturating_sub(since));
        let _ = write!(out, ", up {}", humantime::format_duration(up));
    }
    if let Some(rtt) = s.rtt_ms {
        let _ = write!(out, ", rtt {rtt:.1} ms");
    }
    let _ = writeln!(out, ", {} reconnects", s.reconnects);
    if let (Some(error), false) = (&s.last_error, s.state == State::Connected) {
        let _ = writeln!(out, "  last error: {error}");
    }
    for tunnel in &s.tunnels {
        let _ = writeln!(out, "  {}", tunnel_line(tunnel));
    }
    out
}

/// `NAME (kind) STATE PUBLIC -> LOCAL, streams A open / T total, IN in / OUT out`.
fn tunnel_line(t: &TunnelSnapshot) -> String {
    let kind = serde_json::to_value(t.kind).ok();
    let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("?");
    let public = match (&t.public, t.urls.is_empty()) {
        (_, false) => t.urls.join(" "),
        (Some(public), true) => public.clone(),
        (None, true) => "(not granted yet)".into(),
    };
    let state = match (t.state, &t.refused) {
        (TunnelState::Refused, Some(why)) => format!("refused ({why})"),
        (TunnelState::Refused, None) => "refused".into(),
        (TunnelState::Pending, _) => "pending".into(),
        (TunnelState::Ready, _) => "ready".into(),
    };
    // Events flow from the local address to the sink; everything else toward the target.
    let (from, to) = match t.kind {
        Kind::Sink => (t.local.as_str(), public.as_str()),
        _ => (public.as_str(), t.local.as_str()),
    };
    format!(
        "{} ({kind}) {state}: {from} -> {to}, streams {} open / {} total, {} in / {} out",
        t.name,
        t.streams_active,
        t.streams_total,
        bytes(t.bytes_in),
        bytes(t.bytes_out)
    )
}

/// A byte count for people: `512 B`, `1.5 KiB`, `3.2 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn web() -> TunnelSnapshot {
        TunnelSnapshot {
            name: "web".into(),
            kind: Kind::Tcp,
            local: "127.0.0.1:8080".into(),
            state: TunnelState::Ready,
            public: Some("example.net:20001".into()),
            urls: Vec::new(),
            refused: None,
            streams_active: 1,
            streams_total: 7,
            bytes_in: 1536,
            bytes_out: 3 << 20,
        }
    }

    #[test]
    fn the_summary_names_the_session_and_each_tunnel() {
        let snapshot = Snapshot {
            server: "example.net:7777".into(),
            state: State::Connected,
            last_error: None,
            session: Some("5f0c2a91d3e4b7aa".into()),
            carrier: Some("tcp".into()),
            connected_since_unix: Some(1000),
            reconnects: 2,
            rtt_ms: Some(1.25),
            tunnels: vec![web()],
        };
        let now = UNIX_EPOCH + Duration::from_secs(1090);
        assert_eq!(
            summary(&snapshot, now),
            "connected to example.net:7777, session 5f0c2a91d3e4b7aa, up 1m 30s, rtt 1.2 ms, \
             2 reconnects\n  web (tcp) ready: example.net:20001 -> 127.0.0.1:8080, streams 1 \
             open / 7 total, 1.5 KiB in / 3.0 MiB out\n"
        );
    }

    #[test]
    fn the_summary_names_a_carrier_other_than_tcp() {
        let snapshot = Snapshot {
            server: "example.net:7777".into(),
            state: State::Connected,
            last_error: None,
            session: Some("5f0c2a91d3e4b7aa".into()),
            carrier: Some("mux".into()),
            connected_since_unix: None,
            reconnects: 0,
            rtt_ms: None,
            tunnels: Vec::new(),
        };
        let text = summary(&snapshot, UNIX_EPOCH);
        assert!(
            text.starts_with(
                "connected to example.net:7777, session 5f0c2a91d3e4b7aa over mux, 0 reconnects"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_client_without_a_session_shows_its_last_error() {
        let refused = TunnelSnapshot {
            state: TunnelState::Refused,
            refused: Some("port 20001 is taken".into()),
            public: None,
            ..web()
        };
        let snapshot = Snapshot {
            server: "example.net:7777".into(),
            state: State::Reconnecting,
            last_error: Some("carrier lost".into()),
            session: Some("0000000000000001".into()),
            carrier: Some("mux".into()),
            connected_since_unix: None,
            reconnects: 0,
            rtt_ms: None,
            tunnels: vec![refused],
        };
        let text = summary(&snapshot, UNIX_EPOCH);
        assert!(text.starts_with("reconnecting to example.net:7777 (last session 0000000000000001), 0 reconnects\n  last error: carrier lost\n"), "{text}");
        assert!(
            text.contains(
                "web (tcp) refused (port 20001 is taken): (not granted yet) -> 127.0.0.1:8080"
            ),
            "{text}"
        );
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn a_directory_without_sockets_is_no_running_client() {
        let dir = crate::testing::scratch("status-empty");
        std::fs::write(dir.join("x.sock"), "").unwrap();
        let err = sockets(Some(&dir)).unwrap_err().to_string();
        assert!(err.starts_with("no running client at "), "{err}");
    }
}
