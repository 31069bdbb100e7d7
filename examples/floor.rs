//! The floors under rrdp-proxy's small-file hit path (issue 31): how fast can a server on this
//! stack answer one fixed HTTP/1.1 response, when it does nothing else? For
//! docs/benchmarks.md, driven by `bench/floor.sh`:
//!
//!     cargo run --release --example floor -- tokio ADDR RESPONSE
//!     cargo run --release --example floor -- pingora ADDR RESPONSE
//!
//! RESPONSE is a file holding a whole response (status line, header, body) as rrdp-proxy sent
//! it. Every request read on a connection is answered with it, whatever it asks.
//! - `tokio`: one thread, a task per connection, a read and one write of the prebuilt bytes
//!   per request. Below this there is only the kernel: no HTTP stack can do less.
//! - `pingora`: a stock pingora `HttpServerApp` on one thread (pingora's default listener
//!   buffers), reading each request with pingora's session and answering with the response's
//!   header (built once, cloned per request) and body (shared). pingora's own per-request
//!   cost, with none of rrdp-proxy's.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::listening::Service;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: floor tokio|pingora ADDR RESPONSE";
    let mode = args.next().expect(usage);
    let addr = args.next().expect(usage);
    let response = std::fs::read(args.next().expect(usage)).expect("read RESPONSE");
    match mode.as_str() {
        "tokio" => tokio_floor(&addr, response),
        "pingora" => pingora_floor(&addr, &response),
        _ => panic!("{usage}"),
    }
}

fn tokio_floor(addr: &str, response: Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let response: Arc<[u8]> = response.into();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        loop {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let _ = conn.set_nodelay(true);
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut filled = 0;
                loop {
                    let n = match conn.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    filled += n;
                    // Every complete request header in the buffer gets the response.
                    while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                        if conn.write_all(&response).await.is_err() {
                            return;
                        }
                        buf.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                    }
                    if filled == buf.len() {
                        return;
                    }
                }
            });
        }
    });
}

/// The response split into pingora's header and the body.
struct Fixed {
    header: ResponseHeader,
    body: Bytes,
}

fn split(response: &[u8]) -> Fixed {
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response header");
    let head = std::str::from_utf8(&response[..end]).expect("an ASCII header");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut header = ResponseHeader::build(status, None).unwrap();
    for line in lines {
        let (name, value) = line.split_once(':').expect("a header field");
        header
            .append_header(name.trim().to_string(), value.trim())
            .unwrap();
    }
    Fixed {
        header,
        body: Bytes::copy_from_slice(&response[end + 4..]),
    }
}

#[async_trait]
impl HttpServerApp for Fixed {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.read_request().await.ok()? {
            return None;
        }
        session.set_keepalive(Some(60));
        session
            .write_response_header(Box::new(self.header.clone()))
            .await
            .ok()?;
        session
            .write_response_body(self.body.clone(), true)
            .await
            .ok()?;
        let settings = HttpPersistentSettings::for_session(&session);
        let reusable = session.finish().await.ok()??;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }
}

fn pingora_floor(addr: &str, response: &[u8]) {
    // Stopped by the script between paths: at once (pingora's default grace is 5 minutes).
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = Service::new("floor".to_string(), split(response));
    service.add_tcp(addr);
    service.threads = Some(1);
    server.add_service(service);
    server.run_forever();
}
