//! End-to-end: reloading a running server's config file, on a file change (an editor that
//! replaces the file) and on SIGHUP.
//!
//! Identities come and go while clients are connected: an added identity can log in at once, a
//! removed one loses its session and its public port, a broken file changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::{assert_echo, echo_target};
use common::{Client, Server, TestDir, bounded, ports};

/// A server config listing `identities` as `(name, token)`, each allowed the whole range.
fn config_text(extra: &str, identities: &[(&str, &str)]) -> String {
    let mut toml = format!("{extra}\n");
    for (name, token) in identities {
        toml.push_str(&format!(
            "[[clients]]\nname = \"{name}\"\ntoken = \"{token}\"\n\n"
        ));
    }
    toml
}

/// Replaces `server.toml` the way editors save: write a new file, rename it over the old one.
fn replace(dir: &TestDir, text: &str) {
    let tmp = dir.write("server.toml.new", text);
    std::fs::rename(tmp, dir.join("server.toml")).unwrap();
}

/// Starts a client of identity `name` publishing `echo`, asking for `port` when given.
async fn client(
    dir: &TestDir,
    server: &Server,
    echo: u16,
    name: &str,
    token: &str,
    port: Option<u16>,
) -> Client {
    let port = port.map(|p| p.to_string());
    let mut extra = vec!["--name", name];
    if let Some(port) = &port {
        extra.extend(["--remote-port", port.as_str()]);
    }
    Client::start_tcp(dir, server, echo, token, &extra).await
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_added_and_removed_by_replacing_the_file_apply_at_once() {
    bounded(90, async {
        let dir = TestDir::new("reload-identities");
        let block = ports(4);
        let config = dir.write("server.toml", &config_text("", &[("alice", "alice-token")]));
        let server = Server::start(&dir, &["--config", &config, "--ports", &block.arg()]).await;
        let echo = echo_target().await;
        let alice = client(&dir, &server, echo, "alice", "alice-token", None).await;
        assert_echo(alice.port, b"alice before").await;

        // Added: bob can log in at once.
        let both = [("alice", "alice-token"), ("bob", "bob-token")];
        replace(&dir, &config_text("", &both));
        server
            .proc
            .wait_stderr("bob added", |l| l.contains("identity `bob` added"))
            .await;
        server
            .proc
            .wait_stdout("`config reloaded`", |l| {
                l.starts_with("config reloaded: 1 change applied")
            })
            .await;
        let bob = client(&dir, &server, echo, "bob", "bob-token", None).await;
        assert_echo(bob.port, b"bob is in").await;

        // Removed: alice's session ends, her port is closed and free for bob.
        replace(&dir, &config_text("", &[("bob", "bob-token")]));
        server
            .proc
            .wait_stderr("alice's session closed", |l| {
                l.contains("session closed: its identity was removed from the config")
            })
            .await;
        let closed = format!("port={}", alice.port);
        server
            .proc
            .wait_stderr("alice's listener closed", |l| {
                l.contains("listener closed") && l.contains(&closed)
            })
            .await;
        let visitor = tokio::net::TcpStream::connect(("127.0.0.1", alice.port)).await;
        assert_eq!(
            visitor.map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused,
            "alice's public port still accepts visitors"
        );
        let taken = client(&dir, &server, echo, "bob", "bob-token", Some(alice.port)).await;
        assert_eq!(taken.port, alice.port);
        assert_echo(taken.port, b"bob took the port").await;
        assert_echo(bob.port, b"bob kept his first tunnel").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_an_identitys_token_file() {
    bounded(90, async {
        let dir = TestDir::new("reload-sighup");
        let block = ports(3);
        let token = dir.write("alice.token", "old-token\n");
        let text = format!("[[clients]]\nname = \"alice\"\ntoken_file = \"{token}\"\n");
        let config = dir.write("server.toml", &text);
        let server = Server::start(&dir, &["--config", &config, "--ports", &block.arg()]).await;
        let echo = echo_target().await;
        let first = client(&dir, &server, echo, "alice", "old-token", None).await;

        // The token file is not watched: only SIGHUP picks up its new content.
        std::fs::write(&token, "new-token\n").unwrap();
        server.proc.signal("HUP");
        server
            .proc
            .wait_stdout("`config reloaded`", |l| {
                l == "config reloaded: 1 change applied"
            })
            .await;
        // Logged on stderr before the line above went to stdout; the two pipes are read apart.
        server
            .proc
            .wait_stderr("the reload naming SIGHUP", |l| {
                l.contains("reloading") && l.contains("SIGHUP")
            })
            .await;
        let second = client(&dir, &server, echo, "alice", "new-token", None).await;
        assert_echo(second.port, b"with the new token").await;
        // A session that logged in with the old token keeps running.
        assert_echo(first.port, b"with the old token").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_file_is_rejected_and_the_running_config_stays() {
    bounded(90, async {
        let dir = TestDir::new("reload-broken");
        let range = format!("ports = \"{}\"", ports(3).arg());
        let alice = [("alice", "alice-token")];
        let config = dir.write("server.toml", &config_text(&range, &alice));
        let server = Server::start(&dir, &["--config", &config]).await;
        let echo = echo_target().await;
        let first = client(&dir, &server, echo, "alice", "alice-token", None).await;

        let broken = config_text(
            &format!("lease_grace = \"soon\"\n{range}\nno_such_key = 1"),
            &alice,
        );
        replace(&dir, &broken);
        let line = server
            .proc
            .wait_stdout("`config rejected`", |l| l.starts_with("config rejected: "))
            .await;
        assert!(line.contains("server.toml:"), "{line}");
        server
            .proc
            .wait_stderr("the problem's position", |l| {
                l.contains("config rejected") && l.contains("server.toml:1:")
            })
            .await;

        // Still the old config: alice's tunnel works and alice can still log in.
        assert_echo(first.port, b"still serving").await;
        let again = client(&dir, &server, echo, "alice", "alice-token", None).await;
        assert_echo(again.port, b"still logging in").await;

        // A fixed file applies what it can and names what needs a restart.
        let other = ports(2).arg();
        replace(
            &dir,
            &config_text(
                &format!("ports = \"{other}\"\nlease_grace = \"5s\""),
                &alice,
            ),
        );
        server
            .proc
            .wait_stdout("`config reloaded`", |l| {
                l == "config reloaded: 1 change applied, 1 needs a restart (ports)"
            })
            .await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_cannot_remove_the_token_of_a_public_admin_api() {
    bounded(60, async {
        let dir = TestDir::new("reload-admin");
        let token = dir.write("admin.token", "adm1n\n");
        let range = format!("ports = \"{}\"", ports(2).arg());
        let public =
            format!("{range}\nadmin_listen = \"0.0.0.0:0\"\nadmin_token_file = \"{token}\"");
        let alice = [("alice", "alice-token")];
        let config = dir.write("server.toml", &config_text(&public, &alice));
        let server = Server::start(&dir, &["--config", &config]).await;
        server
            .proc
            .wait_stdout("`admin listening on`", |l| {
                l.starts_with("admin listening on ")
            })
            .await;
        // On loopback and without a token, the file alone would be fine; the running listener
        // is public, so the reload is refused as a whole.
        let loopback = format!("{range}\nadmin_listen = \"127.0.0.1:0\"");
        replace(&dir, &config_text(&loopback, &alice));
        let line = server
            .proc
            .wait_stdout("`config rejected`", |l| l.starts_with("config rejected: "))
            .await;
        assert!(line.contains("needs a token"), "{line}");
    })
    .await
}
