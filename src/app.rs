//! Wiring: the pingora server with its public listeners, the pollers and garbage collection,
//! the admin listener and the demo origin, all around one [`Shared`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{info, warn};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::clock::Clock;
use crate::config::Config;
use crate::shared::{Shared, StartError};
use crate::{demo, ops, serve, sync};

/// How often unreferenced objects are removed from disk.
const GC_INTERVAL: Duration = Duration::from_secs(300);

/// Runs one poller per repository, and garbage collection, until shutdown.
struct Pollers {
    shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for Pollers {
    async fn start(&self, shutdown: ShutdownWatch) {
        if let Some(demo) = &self.shared.config.demo {
            // The built-in demo origin starts beside the pollers: the first poll waits for it
            // to listen, so a newcomer's first minute shows no connection-refused warning.
            demo_listening(demo.listen).await;
        }
        let mut tasks = Vec::new();
        for (i, repo) in self.shared.repos.iter().enumerate() {
            let poller = sync::Poller::new(
                repo.clone(),
                self.shared.store.clone(),
                self.shared.metrics.clone(),
                self.shared.config.cache.retain,
            )
            .with_peers(self.shared.peers.clone())
            .with_clock(self.shared.clock.clone())
            .with_erik(self.shared.erik.clone(), i);
            tasks.push(tokio::spawn(poller.run(shutdown.clone())));
            if repo.config.export.export_rrdp.is_some() || repo.config.export.export_rsync.is_some()
            {
                tasks.push(tokio::spawn(ops::export::run(
                    repo.clone(),
                    self.shared.store.clone(),
                    self.shared.clock.clone(),
                    shutdown.clone(),
                )));
            }
        }
        let shared = self.shared.clone();
        let mut gc_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(GC_INTERVAL) => {}
                    _ = gc_shutdown.changed() => return,
                }
                match shared.collect_garbage().await {
                    Ok(0) => {}
                    Ok(n) => info!("removed {n} objects no longer servable"),
                    Err(e) => warn!("garbage collection failed: {e}"),
                }
            }
        }));
        for t in tasks {
            let _ = t.await;
        }
        // Every writer of the cache has stopped: a graceful upgrade's new process may take
        // the directory over while this one finishes its requests.
        self.shared.store.release();
    }
}

/// Returns once something accepts connections on `addr` (the demo origin, a service of this
/// same server), or after [`DEMO_START_WAIT`]. Another service gives no event to await, so
/// this tries to connect every few milliseconds.
async fn demo_listening(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + DEMO_START_WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            warn!("the demo origin is not listening on {addr} yet; polling it anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How long the first poll waits for the demo origin to listen.
const DEMO_START_WAIT: Duration = Duration::from_secs(10);

/// How long a new process of a graceful upgrade waits for the old one to let go of the cache.
const UPGRADE_LOCK_WAIT: Duration = Duration::from_secs(60);

/// Builds the pingora server: public listeners, the pollers, the admin listener, and the demo
/// origin if configured. Returns the shared state too (tests watch it).
pub fn build_server(config: Config) -> Result<(Server, Arc<Shared>), StartError> {
    build_server_upgrading(config, false)
}

/// [`build_server`]; with `upgrade`, the listening sockets are taken over from a running
/// process (which is then sent SIGQUIT) instead of bound anew: a zero-downtime upgrade.
pub fn build_server_upgrading(
    config: Config,
    upgrade: bool,
) -> Result<(Server, Arc<Shared>), StartError> {
    build(config, upgrade, Clock::System)
}

/// [`build_server`] with the configured delays (`publish_delay`, `notify_delay`) on `clock`:
/// tests pass a manual clock and move it instead of waiting.
pub fn build_server_with_clock(
    config: Config,
    clock: Clock,
) -> Result<(Server, Arc<Shared>), StartError> {
    build(config, false, clock)
}

fn build(config: Config, upgrade: bool, clock: Clock) -> Result<(Server, Arc<Shared>), StartError> {
    let conf = ServerConf {
        threads: config.server.threads,
        // SIGTERM: stop accepting, let requests in flight finish, then exit.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(10),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    if upgrade {
        // The listening sockets are ours now; the old process is stopping its writers and
        // lets go of the cache's lock when they have (pollers: at once; see Pollers::start).
        crate::store::owner::Owner::wait_free(&config.cache.dir, UPGRADE_LOCK_WAIT)
            .map_err(StartError::Store)?;
    }

    if let Some(demo) = &config.demo {
        add_demo(&mut server, demo.listen, demo.interval, None, 1);
    }

    let shared = Shared::open_with_clock(config, clock)?;
    let cfg = &shared.config;

    if cfg.log.access_file.is_some() {
        // logrotate's postrotate sends SIGUSR1: the writer reopens the file.
        serve::access_log::reopen_on_sigusr1();
    }
    server.add_service(public_service(&shared)?);

    let mut pollers = background_service(
        "rrdp-proxy pollers",
        Pollers {
            shared: shared.clone(),
        },
    );
    pollers.threads = Some(2);
    server.add_service(pollers);

    if let Some(addr) = cfg.server.admin_listen {
        server.add_service(admin_service(&shared, addr));
    }
    Ok((server, shared))
}

/// The public listeners (plain and TLS) and the app that answers on them.
fn public_service(shared: &Arc<Shared>) -> Result<Service<serve::guard::Guarded>, StartError> {
    let cfg = &shared.config;
    let mut proxy = Service::new(
        "rrdp-proxy public".to_string(),
        serve::guard::Guarded {
            app: Arc::new(serve::RrdpProxy::new(shared.clone()).map_err(StartError::AccessLog)?),
            request_timeout: cfg.server.request_timeout,
            coalesce: cfg.server.write_buffer,
            sendfile: cfg.server.sendfile,
        },
    );
    // Plain HTTP: no buffers under the connection. A response's header is held by the
    // connection stream and sent with the body in one vectored write (coalesce.rs); a write
    // buffer below it would only copy the body once more. pingora reads a request header
    // into its own buffer, so a read buffer below it (64 KiB by default) only copies it once
    // more, and is kept by every idle keep-alive connection (docs/benchmarks.md, idle
    // connections).
    let buffers = L4BufferSettings::unbuffered();
    for addr in &cfg.server.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers));
    }
    if let Some((cert, key)) = &cfg.server.tls {
        for addr in &cfg.server.tls_listen {
            let mut tls =
                TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
                    .map_err(StartError::Tls)?;
            // HTTP/2 for clients that offer it in ALPN, HTTP/1.1 for the rest.
            tls.enable_h2();
            // No read buffer below rustls either (its own buffer takes what the socket has),
            // so an idle connection does not keep 64 KiB; writes keep pingora's small buffer.
            let buffers = L4BufferSettings::default().read(0);
            proxy.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(tls)
                    .l4_buffer(buffers),
            );
        }
    }
    Ok(proxy)
}

/// The admin listener: /metrics, /status, /healthz, the page.
fn admin_service(shared: &Arc<Shared>, addr: std::net::SocketAddr) -> Service<ops::admin::Admin> {
    if !addr.ip().is_loopback() && shared.config.server.admin_token.is_none() {
        warn!(
            "server.admin_listen {addr} is not a loopback address and server.admin_token is not set: \
             anyone who reaches it can read /status and trigger /refresh"
        );
    }
    let mut admin = Service::new(
        "rrdp-proxy admin".to_string(),
        ops::admin::Admin {
            shared: shared.clone(),
        },
    );
    admin.add_tcp(&addr.to_string());
    admin.threads = Some(1);
    admin
}

/// Adds the demo Publication Server's listener and its publishing task to `server`.
pub fn add_demo(
    server: &mut Server,
    listen: std::net::SocketAddr,
    interval: Duration,
    large: Option<(u64, usize)>,
    repositories: usize,
) {
    let demo = demo::DemoServer::new(listen, interval, large, repositories);
    let ticker = demo::DemoTicker {
        repo: demo.repo.clone(),
        signed: demo.signed.clone(),
        more: demo.more.clone(),
        interval,
    };
    let mut svc = Service::new("demo publication server".to_string(), demo);
    svc.add_tcp(&listen.to_string());
    svc.threads = Some(1);
    server.add_service(svc);
    server.add_service(background_service("demo publisher", ticker));
    info!("demo Publication Server on http://{listen}/rrdp/notification.xml");
}

/// Raises this process's limit on open descriptors to the hard limit, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do: each connection holds one, each stored file
/// served from disk one while it is sent, and each published generation one or two (its
/// notification's in-memory files, for `sendfile`). The soft limit of an interactive shell
/// (often 1024) is far below what the service unit grants (`LimitNOFILE`), and a proxy
/// started by hand with it would refuse connections long before its memory ran out.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls with a valid pointer to a struct of the kernel's layout.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::debug!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

#[cfg(test)]
mod fd_limit_tests {
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let get = || {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: a valid pointer to a struct of the kernel's layout.
            assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
            lim
        };
        // Lowered first (as a login shell's 1024 would be), so that raising it is seen.
        let mut low = get();
        // Far above what any test here holds open at once (the limit is the process's).
        low.rlim_cur = low.rlim_max.min(4096);
        // SAFETY: a valid pointer to a struct of the kernel's layout.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        super::raise_fd_limit();
        let lim = get();
        assert_eq!(lim.rlim_cur, lim.rlim_max);
    }
}
