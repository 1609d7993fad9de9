//! End-to-end: reloading a running client's config file, on a file change (an editor that
//! replaces the file) and on SIGHUP.
//!
//! Tunnels come and go while the client stays connected: an added one prints its ready line
//! and carries data, a removed one's public port is closed, a new local port is reached at
//! once through the same public port, a broken file changes nothing, a new server address
//! waits for a restart, and a tunnel the server refuses on a reload does not stop the client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::targets::target;
use common::{Proc, Server, TestDir, bounded, is_ready_line, parse_ready, ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A target that greets every visitor with `greeting` and closes: it tells targets apart.
async fn greeter(greeting: &'static str) -> u16 {
    target(move |mut conn| async move {
        let _ = conn.write_all(greeting.as_bytes()).await;
        let _ = conn.shutdown().await;
    })
    .await
}

/// What a visitor to public port `port` is told.
async fn greeting(port: u16) -> String {
    let mut conn = common::targets::visit(port).await;
    let mut got = String::new();
    conn.read_to_string(&mut got).await.unwrap();
    got
}

/// A client file for `server` publishing `tunnels` as `(name, local port)`.
fn client_file(server: &Server, tunnels: &[(&str, u16)]) -> String {
    let mut toml = format!(
        "server = \"{}\"\ntoken = \"t\"\nserver_fingerprint = \"{}\"\n\n",
        server.to(),
        server.fingerprint.as_deref().unwrap(),
    );
    for (name, local) in tunnels {
        toml.push_str(&format!(
            "[[tunnels]]\nname = \"{name}\"\nlocal_port = {local}\n\n"
        ));
    }
    toml
}

/// Replaces `client.toml` the way editors save: write a new file, rename it over the old one.
fn replace(dir: &TestDir, text: &str) {
    let tmp = dir.write("client.toml.new", text);
    std::fs::rename(tmp, dir.join("client.toml")).unwrap();
}

/// Waits for the ready line of tunnel `name` and returns its public port.
async fn ready_port(client: &Proc, name: &str) -> u16 {
    let line = client
        .wait_stdout(&format!("`tunnel {name} ready at`"), |l| {
            is_ready_line(l) && parse_ready(l).name == name
        })
        .await;
    parse_ready(&line).port
}

/// Waits for the `n`th `config reloaded` line and checks it says `summary`.
async fn reloaded(client: &Proc, n: usize, summary: &str) {
    let line = client
        .wait_stdout_nth("`config reloaded`", n, |l| {
            l.starts_with("config reloaded: ")
        })
        .await;
    assert_eq!(
        line,
        format!("config reloaded: {summary}"),
        "{}",
        client.dump()
    );
}

/// Waits until the server has closed public port `port`, then checks visitors are refused.
async fn assert_closed(server: &Server, port: u16) {
    let closed = format!("port={port}");
    server
        .proc
        .wait_stderr("the listener closed", |l| {
            l.contains("listener closed") && l.contains(&closed)
        })
        .await;
    let visitor = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert_eq!(
        visitor.map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the removed tunnel's public port still accepts visitors"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tunnels_added_removed_and_retargeted_by_replacing_the_file_apply_at_once() {
    bounded(90, async {
        let dir = TestDir::new("client-reload-file");
        let block = ports(4);
        let server = Server::start(&dir, &["--token", "t", "--ports", &block.arg()]).await;
        let (a, b, c, a2) = (
            greeter("a").await,
            greeter("b").await,
            greeter("c").await,
            greeter("a2").await,
        );
        let path = dir.write(
            "client.toml",
            &client_file(&server, &[("one", a), ("two", b)]),
        );
        let args = ["client", "--config", &path].map(str::to_owned);
        let client = Proc::spawn("client", &dir, &args);
        let (one, two) = (
            ready_port(&client, "one").await,
            ready_port(&client, "two").await,
        );
        assert_eq!(
            (greeting(one).await, greeting(two).await),
            ("a".into(), "b".into())
        );

        // Added: published at once, on the same session.
        let three_tunnels = [("one", a), ("two", b), ("three", c)];
        replace(&dir, &client_file(&server, &three_tunnels));
        reloaded(&client, 1, "1 change applied").await;
        let three = ready_port(&client, "three").await;
        assert_eq!(greeting(three).await, "c");

        // Removed: the server closes its public port.
        replace(&dir, &client_file(&server, &[("one", a), ("three", c)]));
        reloaded(&client, 2, "1 change applied").await;
        assert_closed(&server, two).await;

        // A new local port: the same public port now reaches the new target.
        replace(&dir, &client_file(&server, &[("one", a2), ("three", c)]));
        reloaded(&client, 3, "1 change applied").await;
        assert_eq!(greeting(one).await, "a2");

        // Broken: rejected with its position; the running tunnels stay.
        replace(&dir, "server = 5\n[[tunnels]]\nname = \"one\"\n");
        let line = client
            .wait_stdout("`config rejected`", |l| l.starts_with("config rejected: "))
            .await;
        assert!(line.contains("client.toml:"), "{line}");
        assert_eq!(
            (greeting(one).await, greeting(three).await),
            ("a2".into(), "c".into())
        );

        // Another server: named as needing a restart; the client stays where it is.
        let moved =
            client_file(&server, &[("one", a2), ("three", c)]).replace(&server.to(), "127.0.0.1:1");
        replace(&dir, &moved);
        reloaded(&client, 4, "0 changes applied, 1 needs a restart (server)").await;
        assert_eq!(greeting(three).await, "c");
        assert_eq!(
            client
                .output()
                .stdout
                .iter()
                .filter(|l| is_ready_line(l))
                .count(),
            3,
            "a reload published a tunnel again that did not change:\n{}",
            client.dump()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_file_and_a_refused_tunnel_does_not_stop_the_client() {
    bounded(90, async {
        let dir = TestDir::new("client-reload-sighup");
        let block = ports(3);
        let server = Server::start(&dir, &["--token", "t", "--ports", &block.arg()]).await;
        let (a, c) = (greeter("a").await, greeter("c").await);
        // The client is given a link to the file, elsewhere: its directory is watched, not the
        // file's, so only SIGHUP picks up the edits below.
        let real = dir.write("real.toml", &client_file(&server, &[("one", a)]));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        let link = dir.join("etc/client.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let args = ["client", "--config", &link].map(str::to_owned);
        let client = Proc::spawn("client", &dir, &args);
        let one = ready_port(&client, "one").await;

        // `denied` asks for a port outside the server's range: refused, logged, not fatal.
        let outside = block.high + 1;
        let denied =
            format!("[[tunnels]]\nname = \"denied\"\nlocal_port = {a}\nremote_port = {outside}\n");
        let text = client_file(&server, &[("one", a), ("three", c)]) + &denied;
        std::fs::write(&real, text).unwrap();
        client.signal("HUP");
        reloaded(&client, 1, "2 changes applied").await;
        // Logged on stderr before the reload's stdout line; the two pipes are read apart.
        client
            .wait_stderr("the reload naming SIGHUP", |l| {
                l.contains("reloading") && l.contains("SIGHUP")
            })
            .await;
        let three = ready_port(&client, "three").await;
        client
            .wait_stderr("the refusal", |l| {
                l.contains("tunnel denied refused") && l.contains(&outside.to_string())
            })
            .await;
        assert_eq!(
            (greeting(one).await, greeting(three).await),
            ("a".into(), "c".into())
        );

        // Another SIGHUP with nothing changed changes nothing.
        client.signal("HUP");
        reloaded(&client, 2, "no changes").await;
        assert_eq!(greeting(three).await, "c");
    })
    .await
}
