//! The state one node shares between its listeners and its pollers: the validated config,
//! the store, every repository's published state, the passthrough caches, the metrics and
//! the peers. Built once at start ([`Shared::open`]), read by every other part.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use log::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::heap;
use crate::metrics::Metrics;
use crate::origin::passthrough::Passthrough;
use crate::origin::peers;
use crate::published::{ErikRelay, Repo};
use crate::rrdp;
use crate::store::Store;

/// State shared by the listeners and the pollers.
pub struct Shared {
    pub(crate) config: Config,
    pub store: Arc<Store>,
    pub repos: Vec<Arc<Repo>>,
    pub passthroughs: Vec<Arc<Passthrough>>,
    pub metrics: Arc<Metrics>,
    /// When this process started (staleness before the first successful poll).
    pub(crate) started: SystemTime,
    /// The node's one clock: the configured delays (`publish_delay`, `notify_delay`) run on
    /// it, and every time the node reports or compares (status, health, history, file
    /// lifetimes, validation) is read from it.
    pub(crate) clock: Clock,
    /// The cluster's other nodes, for peer fill.
    pub(crate) peers: Option<Arc<peers::Peers>>,
    /// What the node serves over Erik (`server.erik`).
    pub(crate) erik: Option<Arc<ErikRelay>>,
}

impl Shared {
    /// Opens the store and loads every repository's last published generation, so the node
    /// serves at once, even with the upstream down.
    pub fn open(config: Config) -> Result<Arc<Shared>, StartError> {
        Shared::open_with_clock(config, Clock::System)
    }

    /// [`Shared::open`] with the delays on `clock` (tests pass a manual one).
    pub fn open_with_clock(config: Config, clock: Clock) -> Result<Arc<Shared>, StartError> {
        let store = Store::open(
            &config.cache.dir,
            config.cache.memory_limit,
            config.cache.memory_object_max,
            config.cache.disk_limit,
        )
        .map_err(StartError::Store)?;
        let mut repos = Vec::new();
        for rc in &config.repositories {
            let repo = Repo::new(rc.clone(), clock.clone());
            match repo.restore(&store) {
                Ok(Some(g)) => info!(
                    "{}: serving stored session {} serial {} until the upstream is polled",
                    repo.name(),
                    g.session_id,
                    g.serial
                ),
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
            .map(|p| Passthrough::new(p.clone(), store.clone(), clock.clone()))
            .collect();
        Ok(Arc::new(Shared {
            peers: peers::Peers::new(config.cluster.as_ref()),
            erik: config
                .server
                .erik
                .then(|| Arc::new(ErikRelay::new(config.cache.retain))),
            started: clock.system_now(),
            clock,
            config,
            store,
            repos,
            passthroughs,
            metrics: Arc::new(Metrics::default()),
        }))
    }

    /// The validated configuration the node runs on.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The node's clock (see the field).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Removes the stored objects nothing may serve any more (past the store's grace period).
    /// Which files are live is the node's clock's question; how old an unreferenced object
    /// is, the file system's: its modification time against the system clock, the one the
    /// kernel stamped it with.
    pub async fn collect_garbage(&self) -> std::io::Result<usize> {
        let live = self.live_objects(self.clock.unix_now());
        self.store.collect_garbage(live, SystemTime::now()).await
    }

    /// Every object something may still serve at `now` (seconds since the epoch; a parameter
    /// so that tests can move time on).
    pub fn live_objects(&self, now: u64) -> HashSet<rrdp::Hash> {
        let mut live = HashSet::new();
        for repo in &self.repos {
            if let Some(g) = repo.peek().as_ref() {
                live.extend(g.files.values().filter(|f| f.is_live(now)).map(|f| f.hash));
            }
            // Files upstream notifications named within `cache.retain` (see `Repo::pending`).
            let retain = self.config.cache.retain.as_secs();
            live.extend(
                repo.pending()
                    .values()
                    .filter(|(_, _, since)| since + retain > now)
                    .map(|(h, _, _)| *h),
            );
        }
        for p in &self.passthroughs {
            live.extend(p.live_hashes());
        }
        if let Some(erik) = &self.erik {
            live.extend(erik.live());
        }
        live
    }
}

/// Why a node could not start with a config that passed validation.
#[derive(Debug)]
pub enum StartError {
    /// The cache directory cannot be opened or created.
    Store(std::io::Error),
    /// The TLS certificate or key cannot be loaded.
    Tls(Box<pingora::Error>),
    /// The access-log file cannot be opened.
    AccessLog(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "cache.dir: {e}"),
            StartError::Tls(e) => write!(f, "server.tls_cert / server.tls_key: {e}"),
            StartError::AccessLog(e) => write!(f, "log.access_file: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Store(e) => Some(e),
            StartError::Tls(e) => Some(e.as_ref()),
            StartError::AccessLog(e) => Some(e),
        }
    }
}
