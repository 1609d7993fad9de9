//! Unit tests of the proxy URL, `NO_PROXY` and the CONNECT and SOCKS5 exchanges, over in-memory
//! pipes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::http_connect::{MAX_HEAD, check_answer, handshake, read_head, request};
use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

fn parse(s: &str) -> Result<Proxy, String> {
    s.parse()
}

fn creds(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        user: user.into(),
        password: Secret::new(password),
    })
}

#[test]
fn urls_of_each_kind_parse() {
    let p = parse("http://proxy.corp:3128").unwrap();
    assert_eq!(
        p,
        Proxy {
            kind: ProxyKind::Http,
            host: "proxy.corp".into(),
            port: 3128,
            credentials: None,
        }
    );
    let p = parse("socks5://10.0.0.1:1081").unwrap();
    assert_eq!(
        (p.kind, p.host.as_str(), p.port),
        (ProxyKind::Socks5, "10.0.0.1", 1081)
    );
    let p = parse("socks5h://[::1]:9050").unwrap();
    assert_eq!(
        (p.kind, p.host.as_str(), p.port),
        (ProxyKind::Socks5h, "::1", 9050)
    );
    let p = parse("http://[fe80::1]:8080/").unwrap();
    assert_eq!((p.host.as_str(), p.port), ("fe80::1", 8080));
}

#[test]
fn ports_default_by_kind_and_a_bare_address_is_http() {
    assert_eq!(parse("http://proxy").unwrap().port, 80);
    assert_eq!(parse("http://proxy:80").unwrap().port, 80);
    assert_eq!(parse("socks5://proxy").unwrap().port, 1080);
    assert_eq!(parse("socks5h://proxy").unwrap().port, 1080);
    let bare = parse("proxy.corp:3128").unwrap();
    assert_eq!((bare.kind, bare.port), (ProxyKind::Http, 3128));
}

#[test]
fn credentials_are_percent_decoded_and_masked() {
    let p = parse("http://al%40ice:p%3Ass%2Fw%C3%B6rd@proxy:3128").unwrap();
    assert_eq!(p.credentials, creds("al@ice", "p:ss/wörd"));
    let shown = format!("{p} {p:?}");
    assert!(
        !shown.contains("wörd") && !shown.contains("p%3A"),
        "{shown}"
    );
    assert_eq!(p.to_string(), "http://al@ice:***@proxy:3128");
    assert_eq!(
        parse("socks5h://bob:x@[::1]:1").unwrap().to_string(),
        "socks5h://bob:***@[::1]:1"
    );
    // A user without a password is allowed for HTTP (Basic with an empty password).
    assert_eq!(
        parse("http://bob@p:1").unwrap().credentials,
        creds("bob", "")
    );
}

#[test]
fn bad_urls_are_explained_without_the_password() {
    let cases = [
        ("ftp://p:1", "unknown proxy scheme `ftp`"),
        ("https://p:1", "not supported"),
        ("http://p:1/path", "no path"),
        ("http://p:1?q", "no path"),
        ("http://:pw@p:1", "a password but no user"),
        ("socks5://bob@p:1", "1 to 255 bytes"),
        ("socks5://bob:secret%FF@p:1", "not UTF-8"),
        ("http://p:99999", "not a proxy URL"),
        ("http://p:0", "cannot be 0"),
        ("socks5://", "names no host"),
    ];
    for (url, why) in cases {
        let err = parse(url).unwrap_err();
        assert!(err.contains(why), "{url}: {err}");
        assert!(!err.contains("secret"), "{url}: {err}");
    }
    let err = parse("socks5://bob:secret@p:1/x").unwrap_err();
    assert!(!err.contains("secret"), "{err}");
}

#[test]
fn no_proxy_names_hosts_suffixes_addresses_and_everything() {
    let list = "localhost, .corp.example, intra.net:8080, 10.0.0.0/8,::1,[fd00::7], *.lab";
    for host in [
        "localhost",
        "LOCALHOST",
        "corp.example",
        "a.b.corp.example",
        "intra.net",
        "x.intra.net",
        "10.1.2.3",
        "::1",
        "[::1]",
        "fd00::7",
        "lab",
        "box.lab",
        "localhost.",
    ] {
        assert!(bypasses(list, host), "{host}");
    }
    for host in [
        "example.net",
        "badcorp.example",
        "xintra.net",
        "11.0.0.1",
        "::2",
        "labx",
    ] {
        assert!(!bypasses(list, host), "{host}");
    }
    assert!(bypasses("*", "anything.example"));
    assert!(bypasses(" , *", "10.0.0.1"));
    assert!(!bypasses("", "example.net"));
    assert!(!bypasses(",,", "example.net"));
}

#[test]
fn the_connect_request_names_the_target_and_the_credentials() {
    assert_eq!(
        request("example.net:7777", None),
        "CONNECT example.net:7777 HTTP/1.1\r\nHost: example.net:7777\r\n\r\n"
    );
    let with = request("[::1]:7777", creds("alice", "s3cret").as_ref());
    // base64("alice:s3cret")
    assert!(
        with.contains("\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"),
        "{with}"
    );
    assert!(with.starts_with("CONNECT [::1]:7777 HTTP/1.1\r\nHost: [::1]:7777\r\n"));
}

#[tokio::test]
async fn a_head_split_across_reads_is_read_to_its_blank_line_and_no_further() {
    // Each slice is one read's worth; the terminator straddles them.
    let parts: [&[u8]; 4] = [
        b"HTTP/1.1 200 Connection established\r",
        b"\nProxy-agent: test\r\n\r",
        b"\n",
        b"BURROW preface",
    ];
    let mut stream = parts[0].chain(parts[1]).chain(parts[2]).chain(parts[3]);
    let head = read_head(&mut stream).await.unwrap();
    assert_eq!(
        head,
        b"HTTP/1.1 200 Connection established\r\nProxy-agent: test\r\n\r\n"
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"BURROW preface");
}

#[tokio::test]
async fn the_server_bytes_that_follow_the_answer_at_once_are_kept() {
    let (mut client, mut proxy) = duplex(64 * 1024);
    let fake = tokio::spawn(async move {
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            proxy.read_exact(&mut byte).await.unwrap();
            request.push(byte[0]);
        }
        // The answer and the server's first bytes in one write, as one packet would bring them.
        proxy
            .write_all(b"HTTP/1.0 200 Connection established\r\n\r\nserver first")
            .await
            .unwrap();
        String::from_utf8(request).unwrap()
    });
    handshake(&mut client, "example.net:7777", creds("u", "p").as_ref())
        .await
        .unwrap();
    let mut first = [0u8; 12];
    client.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"server first");
    let request = fake.await.unwrap();
    assert!(request.starts_with("CONNECT example.net:7777 HTTP/1.1\r\n"));
    assert!(request.contains("Proxy-Authorization: Basic dTpw\r\n"));
}

#[tokio::test]
async fn an_oversized_head_is_refused() {
    let endless = vec![b'x'; MAX_HEAD + 100];
    let mut head = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
    head.extend_from_slice(&endless);
    let err = read_head(&mut head.as_slice()).await.unwrap_err();
    assert!(
        matches!(&err, ConnectError::Retry(m) if m.contains("longer than 16 KiB")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_proxy_that_hangs_up_before_answering_is_a_retry() {
    let err = read_head(&mut &b"HTTP/1.1 200 OK\r\n"[..])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Retry(m) if m.contains("closed the connection")),
        "{err:?}"
    );
}

#[test]
fn answers_are_judged_by_their_status() {
    assert!(check_answer(b"HTTP/1.1 200 Connection established\r\n\r\n", false).is_ok());
    assert!(check_answer(b"HTTP/1.0 200\r\n\r\n", false).is_ok());
    let err = check_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", false);
    assert!(
        matches!(&err, Err(ConnectError::ProxyAuth(m))
            if m.contains("wants credentials") && m.contains("407 Proxy Authentication Required")),
        "{err:?}"
    );
    let err = check_answer(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", true);
    assert!(
        matches!(&err, Err(ConnectError::ProxyAuth(m)) if m.contains("refused these credentials")),
        "{err:?}"
    );
    let err = check_answer(b"HTTP/1.0 401 Unauthorized\r\n\r\n", true);
    assert!(
        matches!(&err, Err(ConnectError::ProxyAuth(m))
            if m == "the proxy refused these credentials (401 Unauthorized)"),
        "{err:?}"
    );
    let err = check_answer(b"HTTP/1.1 403 Forbidden\r\nVia: x\r\n\r\n", false);
    assert!(
        matches!(&err, Err(ConnectError::Retry(m)) if m.ends_with("answered CONNECT with 403 Forbidden")),
        "{err:?}"
    );
    let err = check_answer(b"SSH-2.0-OpenSSH\r\n\r\n", false);
    assert!(
        matches!(&err, Err(ConnectError::Retry(m)) if m.contains("not HTTP")),
        "{err:?}"
    );
}

/// A SOCKS5 proxy that reads the greeting, picks `method`, checks a password exchange when it
/// is 2 (answering `auth_status`), then answers the request with `reply` and sends `after`.
async fn fake_socks(
    mut proxy: tokio::io::DuplexStream,
    method: u8,
    auth_status: u8,
    reply: u8,
    after: &'static [u8],
) -> Vec<u8> {
    let mut greeting = [0u8; 2];
    proxy.read_exact(&mut greeting).await.unwrap();
    let mut methods = vec![0u8; greeting[1] as usize];
    proxy.read_exact(&mut methods).await.unwrap();
    proxy.write_all(&[5, method]).await.unwrap();
    if method == 0xff {
        return Vec::new();
    }
    if method == 2 {
        let mut v_ulen = [0u8; 2];
        proxy.read_exact(&mut v_ulen).await.unwrap();
        let mut user = vec![0u8; v_ulen[1] as usize + 1];
        proxy.read_exact(&mut user).await.unwrap();
        let mut pass = vec![0u8; user.pop().unwrap() as usize];
        proxy.read_exact(&mut pass).await.unwrap();
        proxy.write_all(&[1, auth_status]).await.unwrap();
        if auth_status != 0 {
            return Vec::new();
        }
    }
    let mut head = [0u8; 5];
    proxy.read_exact(&mut head).await.unwrap();
    let mut request = head.to_vec();
    let rest = match head[3] {
        1 => 4 + 2 - 1,
        3 => head[4] as usize + 2,
        _ => 16 + 2 - 1,
    };
    let mut tail = vec![0u8; rest];
    proxy.read_exact(&mut tail).await.unwrap();
    request.extend_from_slice(&tail);
    proxy
        .write_all(&[5, reply, 0, 1, 127, 0, 0, 1, 0, 80])
        .await
        .unwrap();
    proxy.write_all(after).await.unwrap();
    request
}

#[tokio::test]
async fn socks5h_sends_the_name_and_keeps_what_follows() {
    let (client, proxy) = duplex(4096);
    let fake = tokio::spawn(fake_socks(proxy, 2, 0, 0, b"hello"));
    let creds = creds("alice", "pw");
    let mut stream = socks::connect(client, "example.net", 7777, true, creds.as_ref())
        .await
        .unwrap();
    let mut first = [0u8; 5];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"hello");
    let request = fake.await.unwrap();
    let mut expected = vec![5, 1, 0, 3, 11];
    expected.extend_from_slice(b"example.net");
    expected.extend_from_slice(&7777u16.to_be_bytes());
    assert_eq!(request, expected);
}

#[tokio::test]
async fn socks5_resolves_the_name_itself() {
    let (client, proxy) = duplex(4096);
    let fake = tokio::spawn(fake_socks(proxy, 0, 0, 0, b""));
    socks::connect(client, "127.0.0.1", 7777, false, None)
        .await
        .unwrap();
    let request = fake.await.unwrap();
    assert_eq!(request, [5, 1, 0, 1, 127, 0, 0, 1, 0x1e, 0x61]);
}

#[tokio::test]
async fn socks_refusals_are_worded_for_the_user() {
    let cases: [(u8, u8, u8, bool, &str); 7] = [
        (2, 1, 0, true, "refused these credentials"),
        (0xff, 0, 0, true, "wants credentials"),
        (0, 0, 1, false, "general failure"),
        (0, 0, 2, false, "rules do not allow"),
        (0, 0, 4, false, "cannot reach the server's host"),
        (0, 0, 5, false, "server refused"),
        (0, 0, 8, false, "kind of address"),
    ];
    for (method, auth_status, reply, auth, why) in cases {
        let (client, proxy) = duplex(4096);
        let fake = tokio::spawn(fake_socks(proxy, method, auth_status, reply, b""));
        let creds = if method == 2 { creds("u", "p") } else { None };
        let err = socks::connect(client, "example.net", 1, true, creds.as_ref())
            .await
            .unwrap_err();
        let _ = fake.await;
        let (is_auth, text) = match &err {
            ConnectError::ProxyAuth(m) => (true, m),
            ConnectError::Retry(m) => (false, m),
            ConnectError::Fatal(m) | ConnectError::Unusable(m) => panic!("not retried: {m}"),
        };
        assert_eq!(is_auth, auth, "{err:?}");
        assert!(text.contains(why), "{reply}: {text}");
    }
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_retry_naming_it_without_the_password() {
    // A port that was just free: nothing accepts there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = parse(&format!("http://u:hunter2@127.0.0.1:{port}")).unwrap();
    let err = dial(&proxy, "example.net:7777").await.unwrap_err();
    assert!(
        matches!(&err, ConnectError::Retry(m)
            if m.contains("cannot reach the proxy http://u:***@127.0.0.1") && !m.contains("hunter2")),
        "{err:?}"
    );
}
