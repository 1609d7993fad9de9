//! The WebSocket transport through a real nginx, configured as the docs tell operators to:
//! `location /burrow { proxy_pass ...; proxy_http_version 1.1; proxy_set_header Upgrade ...;
//! proxy_set_header Connection "upgrade"; }`.
//!
//! Needs nginx (Debian: nginx-light). Without it the test is skipped with a notice, except under
//! CI (`CI` set), where it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use burrow_net::ws::{self, WsError, WsIo};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

const PATH: &str = "/burrow";
const LEN: usize = 4 << 20;

/// nginx, or `None` (skip) when it is missing outside CI.
fn nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file());
    if found.is_none() {
        let why =
            "`nginx` is not installed (Debian: apt-get install nginx-light; .ci/run installs it)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("skipping: {why}");
    }
    found
}

/// A temporary nginx prefix directory and the nginx process using it; both go when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Nginx {
    /// Starts nginx in front of `backend` and returns once it has opened its listening socket.
    fn start(program: &Path, backend: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("burrow-ws-nginx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        std::fs::write(dir.join("nginx.conf"), config(&dir, port, backend)).unwrap();
        let mut child = Command::new(program)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let nginx = Self { child, dir, port };
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("[notice]") && line.contains("nginx/") => break,
                Some(Ok(line)) => seen.push_str(&format!("{line}\n")),
                _ => panic!("nginx exited before it was ready:\n{seen}"),
            }
        }
        // Keep draining stderr so that nginx never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        nginx
    }
}

/// nginx's configuration: one process (no workers to outlive the test), everything under the
/// prefix directory `dir`, notices on stderr (the version line comes once the listening socket
/// is open), and burrow's location as operators write it.
fn config(dir: &Path, port: u16, backend: u16) -> String {
    let d = dir.display();
    format!(
        "master_process off;\n\
         error_log stderr notice;\n\
         pid {d}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {d}/body;\n\
           proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n\
           uwsgi_temp_path {d}/uwsgi;\n\
           scgi_temp_path {d}/scgi;\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location {PATH} {{\n\
               proxy_pass http://127.0.0.1:{backend};\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Upgrade $http_upgrade;\n\
               proxy_set_header Connection \"upgrade\";\n\
             }}\n\
           }}\n\
         }}\n"
    )
}

async fn connect(port: u16, path: &str) -> Result<WsIo, WsError> {
    let url = Url::parse(&format!("ws://127.0.0.1:{port}{path}")).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    ws::connect(tcp, &url, None).await
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

/// Sends `sent` while reading as many bytes; returns what was read.
async fn exchange(io: &mut WsIo, sent: &[u8]) -> Vec<u8> {
    let (mut reader, mut writer) = tokio::io::split(io);
    let mut received = vec![0u8; sent.len()];
    let write = async {
        for chunk in sent.chunks(5000) {
            writer.write_all(chunk).await.unwrap();
        }
        writer.flush().await.unwrap();
    };
    tokio::join!(write, async {
        reader.read_exact(&mut received).await.unwrap()
    });
    received
}

#[tokio::test]
async fn megabytes_both_ways_through_nginx() {
    let Some(program) = nginx() else { return };
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nginx = Nginx::start(&program, backend.local_addr().unwrap().port());
    let server = tokio::spawn(async move {
        let (tcp, _) = backend.accept().await.unwrap();
        ws::accept(tcp, PATH).await
    });
    let mut client = connect(nginx.port, PATH).await.unwrap();
    let mut server = server.await.unwrap().unwrap();

    let (up, down) = (pattern(1, LEN), pattern(2, LEN));
    let (at_server, at_client) =
        tokio::join!(exchange(&mut server, &down), exchange(&mut client, &up));
    assert!(at_server == up, "the client's bytes arrived changed");
    assert!(at_client == down, "the server's bytes arrived changed");

    client.shutdown().await.unwrap();
    assert_eq!(server.read(&mut [0u8; 16]).await.unwrap(), 0);
    server.shutdown().await.unwrap();
    assert_eq!(client.read(&mut [0u8; 16]).await.unwrap(), 0);

    // A path nginx does not route to burrow: nginx's own 404, reported as such.
    let err = connect(nginx.port, "/elsewhere").await.unwrap_err();
    assert!(
        matches!(err, WsError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("/elsewhere: is the path right?"),
        "{err}"
    );
}
