//! rrdp-proxy: a caching reverse proxy for RPKI RRDP repositories, on pingora.
//!
//! A tour of the crate:
//! - [`config`]: the TOML file, validated into [`config::Config`].
//! - [`uri`]: base URIs and the safe relative paths under them.
//! - [`rrdp`]: notification parsing with limits, and rendering the served notification.
//! - [`store`]: content-addressed objects on disk (atomic, fsynced) with a memory tier.
//! - [`upstream`]: a small HTTP client over pingora's `Connector`.
//! - [`flight`]: single flight, so concurrent misses for one file make one upstream request.
//! - [`repo`]: a repository's published [`repo::Generation`] and its persistence.
//! - [`sync`]: the poller that fetches, verifies, stores and then publishes.
//! - [`serve`]: the public listener (a pingora `HttpServerApp`).
//! - [`passthrough`]: other paths (e.g. `/ta/`), cached by HTTP rules and served stale.
//! - [`admin`]: `/metrics`, `/status`, `/healthz`, `POST /refresh`.
//! - [`demo`]: the built-in demo Publication Server.
//! - [`heap`]: bounding what glibc's malloc keeps of freed memory.
//!
//! The one invariant: every file that a notification a client can receive references is
//! servable by this node, with the hash the notification gives. [`build_server`] is what both
//! the binary and the tests call.

pub mod admin;
pub mod coalesce;
pub mod config;
pub mod demo;
pub mod export;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod guard;
pub mod heap;
pub mod metrics;
pub mod origin;
pub mod oneshot;
pub mod repo;
pub mod rrdp;
pub mod serve;
pub mod store;
pub mod sync;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use log::{info, warn};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::origin::passthrough::Passthrough;
use crate::repo::{unix_now, Repo};
use crate::store::Store;

/// How often unreferenced objects are removed from disk.
const GC_INTERVAL: Duration = Duration::from_secs(300);

/// State shared by the listeners and the pollers.
pub struct Shared {
    pub config: Config,
    pub store: Arc<Store>,
    pub repos: Vec<Arc<Repo>>,
    pub passthroughs: Vec<Arc<Passthrough>>,
    pub metrics: Arc<Metrics>,
    /// When this process started (staleness before the first successful poll).
    pub started: SystemTime,
    /// The cluster's other nodes, for peer fill.
    pub peers: Option<Arc<origin::peers::Peers>>,
}

impl Shared {
    /// Opens the store and loads every repository's last published generation, so the node
    /// serves at once, even with the upstream down.
    pub fn open(config: Config) -> Result<Arc<Shared>, String> {
        let store = Store::open(
            &config.cache.dir,
            config.cache.memory_limit,
            config.cache.memory_object_max,
            config.cache.disk_limit,
        )
        .map_err(|e| format!("cache.dir: {e}"))?;
        let mut repos = Vec::new();
        for rc in &config.repositories {
            let repo = Repo::new(rc.clone());
            match repo.load(&store) {
                Ok(Some(g)) => {
                    info!(
                        "{}: serving stored session {} serial {} until the upstream is polled",
                        repo.name(),
                        g.session_id,
                        g.serial
                    );
                    repo.install(g);
                }
                Ok(None) => {}
                // Not fatal: the stored state is not served, the poller starts afresh.
                Err(e) => warn!("{}: {e}; not serving it", repo.name()),
            }
            repos.push(repo);
        }
        // Loading hashed the referenced files in large buffers.
        heap::release_free();
        let passthroughs = config
            .passthroughs
            .iter()
            .map(|p| Passthrough::new(p.clone(), store.clone()))
            .collect();
        Ok(Arc::new(Shared {
            peers: origin::peers::Peers::new(config.cluster.as_ref()),
            config,
            store,
            repos,
            passthroughs,
            metrics: Arc::new(Metrics::default()),
            started: SystemTime::now(),
        }))
    }

    /// Every object something may still serve at `now` (seconds since the epoch; a parameter
    /// so that tests can move time on).
    pub fn live_objects(&self, now: u64) -> HashSet<rrdp::Hash> {
        let mut live = HashSet::new();
        for repo in &self.repos {
            if let Some(g) = repo.published.load().as_ref() {
                live.extend(g.files.values().filter(|f| f.is_live(now)).map(|f| f.hash));
            }
            // Files upstream notifications named within `cache.retain` (see `Repo::pending`).
            let retain = self.config.cache.retain.as_secs();
            live.extend(
                repo.pending
                    .load()
                    .values()
                    .filter(|(_, _, since)| since + retain > now)
                    .map(|(h, _, _)| *h),
            );
        }
        for p in &self.passthroughs {
            live.extend(p.live_hashes());
        }
        live
    }
}

/// Runs one poller per repository, and garbage collection, until shutdown.
struct Pollers {
    shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for Pollers {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut tasks = Vec::new();
        for repo in &self.shared.repos {
            let poller = sync::Poller::new(
                repo.clone(),
                self.shared.store.clone(),
                self.shared.metrics.clone(),
                self.shared.config.cache.retain,
            )
            .with_peers(self.shared.peers.clone());
            tasks.push(tokio::spawn(poller.run(shutdown.clone())));
            if repo.config.export_rrdp.is_some() || repo.config.export_rsync.is_some() {
                tasks.push(tokio::spawn(export::run(
                    repo.clone(),
                    self.shared.store.clone(),
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
                let live = shared.live_objects(unix_now());
                match shared.store.collect_garbage(live, SystemTime::now()).await {
                    Ok(0) => {}
                    Ok(n) => info!("removed {n} objects no longer servable"),
                    Err(e) => warn!("garbage collection failed: {e}"),
                }
            }
        }));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Builds the pingora server: public listeners, the pollers, the admin listener, and the demo
/// origin if configured. Returns the shared state too (tests watch it).
pub fn build_server(config: Config) -> Result<(Server, Arc<Shared>), String> {
    build_server_upgrading(config, false)
}

/// [`build_server`]; with `upgrade`, the listening sockets are taken over from a running
/// process (which is then sent SIGQUIT) instead of bound anew: a zero-downtime upgrade.
pub fn build_server_upgrading(
    config: Config,
    upgrade: bool,
) -> Result<(Server, Arc<Shared>), String> {
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

    if let Some(demo) = &config.demo {
        add_demo(&mut server, demo.listen, demo.interval, None);
    }

    let shared = Shared::open(config)?;
    let cfg = &shared.config;

    let mut proxy = Service::new(
        "rrdp-proxy public".to_string(),
        guard::Guarded {
            app: Arc::new(serve::RrdpProxy::new(shared.clone())),
            request_timeout: cfg.server.request_timeout,
            coalesce: cfg.server.write_buffer,
        },
    );
    // Plain HTTP: no write buffer under the connection. A response's header is held by the
    // connection stream and sent with the body in one vectored write (coalesce.rs); a buffer
    // below it would only copy the body once more.
    let buffers = L4BufferSettings::default().write(0);
    for addr in &cfg.server.listen {
        proxy.add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(buffers));
    }
    if let Some((cert, key)) = &cfg.server.tls {
        for addr in &cfg.server.tls_listen {
            let mut tls =
                TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
                    .map_err(|e| format!("server.tls_cert / server.tls_key: {e}"))?;
            // HTTP/2 for clients that offer it in ALPN, HTTP/1.1 for the rest.
            tls.enable_h2();
            proxy.add_tls_with_settings(&addr.to_string(), None, tls);
        }
    }
    server.add_service(proxy);

    let mut pollers = background_service(
        "rrdp-proxy pollers",
        Pollers {
            shared: shared.clone(),
        },
    );
    pollers.threads = Some(2);
    server.add_service(pollers);

    if let Some(addr) = cfg.server.admin_listen {
        let mut admin = Service::new(
            "rrdp-proxy admin".to_string(),
            admin::Admin {
                shared: shared.clone(),
            },
        );
        admin.add_tcp(&addr.to_string());
        admin.threads = Some(1);
        server.add_service(admin);
    }
    Ok((server, shared))
}

/// Adds the demo Publication Server's listener and its publishing task to `server`.
pub fn add_demo(
    server: &mut Server,
    listen: std::net::SocketAddr,
    interval: Duration,
    large: Option<(u64, usize)>,
) {
    let demo = demo::DemoServer::new(listen, large);
    let ticker = demo::DemoTicker {
        repo: demo.repo.clone(),
        interval,
    };
    let mut svc = Service::new("demo publication server".to_string(), demo);
    svc.add_tcp(&listen.to_string());
    svc.threads = Some(1);
    server.add_service(svc);
    server.add_service(background_service("demo publisher", ticker));
    info!("demo Publication Server on http://{listen}/rrdp/notification.xml");
}
