//! TLS both ways: a proxy serving HTTPS, and a second proxy (an edge node) polling it over
//! HTTPS, trusting it through `upstream_ca` — and refusing it without.

use std::path::Path;
use std::process::Command;

use rrdp_proxy::rrdp::Hash;

use crate::support::{free_port, path_of, wait_listening, Origin, Proxy};

/// A lab CA and a server certificate for localhost / 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

fn edge_config(port: u16, admin: u16, cache: &Path, parent_tls: u16, tls_line: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{admin}"
threads = 1
[cache]
dir = "{}"
[[repository]]
public = "http://127.0.0.1:{port}/rrdp/"
upstream = "https://localhost:{parent_tls}/rrdp/"
poll_interval = "1h"
{tls_line}
"#,
        cache.display()
    )
}

/// A proxy serving HTTPS on `tls` (and plain HTTP on `port`) in front of `origin_base`, its
/// public URIs https://localhost:TLS/rrdp/; `server_extra` goes into `[server]`.
struct TlsProxy<'a> {
    port: u16,
    admin: u16,
    tls: u16,
    cache: &'a Path,
    certs: &'a Path,
}

impl TlsProxy<'_> {
    fn config(&self, origin_base: &str, server_extra: &str) -> String {
        format!(
            r#"
[server]
listen = ["127.0.0.1:{port}"]
tls_listen = ["127.0.0.1:{tls}"]
tls_cert = "{c}/server.crt"
tls_key = "{c}/server.key"
admin_listen = "127.0.0.1:{admin}"
threads = 1
{server_extra}
[cache]
dir = "{cache}"
[[repository]]
public = "https://localhost:{tls}/rrdp/"
upstream = "{origin_base}"
poll_interval = "1h"
"#,
            port = self.port,
            tls = self.tls,
            admin = self.admin,
            c = self.certs.display(),
            cache = self.cache.display(),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_polls_its_parent_over_verified_tls() {
    let origin = Origin::start().await;
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());

    // The parent serves HTTPS; its public URIs are https://localhost:TLS/rrdp/.
    let (port, admin, tls) = (free_port(), free_port(), free_port());
    let parent_cache = tempfile::tempdir().unwrap();
    let parent_text = TlsProxy {
        port,
        admin,
        tls,
        cache: parent_cache.path(),
        certs: certs.path(),
    }
    .config(&origin.base(), "");
    let parent = Proxy::start_with(parent_text, port, admin);
    wait_listening(tls);
    parent.wait_serial(1).await;

    // Without the lab CA the edge must refuse the parent's certificate.
    let (eport, eadmin) = (free_port(), free_port());
    let untrusting_cache = tempfile::tempdir().unwrap();
    let untrusting = Proxy::start_with(
        edge_config(eport, eadmin, untrusting_cache.path(), tls, ""),
        eport,
        eadmin,
    );
    let st = untrusting.wait_first_poll().await;
    assert_eq!(st.serial, None, "an unverified certificate is not trusted");
    assert!(st.last_error.is_some());
    drop(untrusting);

    let (eport, eadmin) = (free_port(), free_port());
    let edge_cache = tempfile::tempdir().unwrap();
    let ca_line = format!("upstream_ca = \"{}/ca.crt\"", certs.path().display());
    let edge = Proxy::start_with(
        edge_config(eport, eadmin, edge_cache.path(), tls, &ca_line),
        eport,
        eadmin,
    );
    edge.wait_serial(1).await;
    let r = edge.get("/rrdp/notification.xml").await;
    assert_eq!(r.status, 200);
    let n = rrdp_proxy::rrdp::Notification::parse(&r.body).unwrap();
    assert!(n
        .snapshot
        .uri
        .starts_with(&format!("http://127.0.0.1:{eport}/rrdp/")));
    let s = edge.get(&path_of(&n.snapshot.uri)).await;
    assert_eq!(Hash::of(&s.body), n.snapshot.hash);

    // The parent's snapshot came from the origin exactly once, the edge's from the parent.
    assert_eq!(origin.requests_for("snapshot.xml"), 1);

    // With nothing new, the edge's next poll costs the parent a 304 (its ETag and
    // Last-Modified), and the edge keeps serial 1.
    use rrdp_proxy::RequestKind;
    let notmod = |p: &Proxy| {
        p.shared
            .metrics
            .requests_with_status(&[RequestKind::Notification], 304)
    };
    let before = notmod(&parent);
    let st = edge.poll().await;
    assert_eq!(st.serial, Some(1));
    // The parent counts a request once the response is sent, which may be just after the
    // edge has read it: wait (bounded) for the count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while notmod(&parent) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the parent never answered the poll with 304"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(notmod(&parent), before + 1, "one poll, one 304");

    // A real HTTP/2 client (curl with nghttp2) negotiates h2 by ALPN and gets the same bytes.
    let published = parent.shared.repos[0].current().unwrap();
    let n = rrdp_proxy::rrdp::Notification::parse(&published.notification).unwrap();
    let out = Command::new("curl")
        .args(["-s", "--http2", "--cacert"])
        .arg(certs.path().join("ca.crt"))
        .args(["--resolve", &format!("localhost:{tls}:127.0.0.1")])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!(
            "https://localhost:{tls}{}",
            path_of(&n.snapshot.uri)
        ))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap();
    assert_eq!(status, "2 200", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(Hash::of(body.as_bytes()), n.snapshot.hash);
}

/// An HTTP/2 client as `openssl s_client` makes it: TLS with ALPN `h2`, then `send`, then
/// nothing, holding the connection open; it exits when the server closes it.
async fn h2_client(tls: u16, send: &[u8]) -> tokio::process::Child {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-alpn", "h2", "-connect"])
        .arg(format!("127.0.0.1:{tls}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl");
    c.stdin.as_mut().unwrap().write_all(send).await.unwrap();
    c
}

/// Whether the server closed the client's connection (which ends the client) within the
/// tests' event timeout.
async fn closed_by_server(mut c: tokio::process::Child) -> bool {
    tokio::time::timeout(crate::support::EVENT_TIMEOUT, c.wait())
        .await
        .is_ok()
}

/// Regression (issue 26, item 6): a TLS client that negotiated `h2` and then sent nothing
/// was still connected after 150 s; HTTP/2 had no deadline at all. Now its preface must come
/// within `request_timeout`, and a connection with no stream open is closed after it.
#[tokio::test(flavor = "multi_thread")]
async fn http2_connections_get_the_same_deadlines_as_http1() {
    let origin = Origin::start().await;
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let (port, admin, tls) = (free_port(), free_port(), free_port());
    let cache = tempfile::tempdir().unwrap();
    let text = TlsProxy {
        port,
        admin,
        tls,
        cache: cache.path(),
        certs: certs.path(),
    }
    .config(&origin.base(), "request_timeout = \"1s\"");
    let proxy = Proxy::start_with(text, port, admin);
    wait_listening(tls);
    proxy.wait_serial(1).await;
    // Nothing after the handshake: closed for want of a preface.
    assert!(
        closed_by_server(h2_client(tls, b"").await).await,
        "silent h2 client kept"
    );
    // The preface and an empty SETTINGS frame, then no stream: closed when idle.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert!(
        closed_by_server(h2_client(tls, &hello).await).await,
        "idle h2 client kept"
    );
    // A stream whose header block never ends (HEADERS without END_HEADERS): it never opens,
    // so the connection is idle and closed as well.
    let mut partial = hello.clone();
    partial.extend_from_slice(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 0x82]);
    assert!(
        closed_by_server(h2_client(tls, &partial).await).await,
        "half a header kept"
    );
}
