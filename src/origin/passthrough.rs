//! Passthrough trees (e.g. `/ta/` with the TA certificate and TAL): proxied with ordinary HTTP
//! caching, and served stale while the upstream fails.
//!
//! Freshness follows the upstream's `Cache-Control` (`max-age`, `s-maxage`, `no-store`,
//! `no-cache`, `private`); with none, `default_max_age` applies (Krill sends none for
//! `/ta/ta.cer`, and nginx then does not cache it and answers 502 once Krill is down). Cached
//! bodies go to the store and an index, so a restart while the origin is down still serves
//! them. One fetch per path at a time: concurrent misses wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::config::PassthroughConfig;
use crate::metrics::RequestResult;
use crate::origin::client::{Client, FetchError};
use crate::rrdp::Hash;
use crate::store::flight::Flights;
use crate::store::Store;

/// The most responses a tree's cache keeps, and their bytes in all: a passthrough tree holds
/// a TA certificate and a TAL or two, and a client asking for made-up names under it must not
/// grow the cache (in memory and on disk) without end. Past either, the response that is
/// fresh for the shortest time goes first.
pub const ENTRIES_KEPT: usize = 256;
pub(crate) const BYTES_KEPT: u64 = 32 << 20;

/// A cached response.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    #[serde(skip)]
    body: Bytes,
    hash: String,
    content_type: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    /// The upstream's Cache-Control, passed on; `None` if it sent none.
    cache_control: Option<String>,
    /// Fresh until (seconds since the epoch).
    fresh_until: u64,
}

/// A response for a client.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub outcome: RequestResult,
}

/// One `[[passthrough]]` tree and its cache.
pub struct Passthrough {
    pub config: PassthroughConfig,
    upstream: Arc<Client>,
    store: Arc<Store>,
    entries: Mutex<HashMap<String, Entry>>,
    /// One fetch per path at a time serves every concurrent miss.
    inflight: Flights,
    index_name: String,
    /// The node's clock: freshness is counted on it.
    clock: Clock,
}

impl Passthrough {
    /// Creates the tree's cache and loads what a previous run stored.
    pub fn new(config: PassthroughConfig, store: Arc<Store>, clock: Clock) -> Arc<Passthrough> {
        let id = Hash::of(config.public.to_string().as_bytes()).to_hex();
        let p = Passthrough {
            upstream: Client::new(&config.tls),
            index_name: format!("passthrough-{}.json", &id[..16]),
            config,
            store,
            entries: Mutex::new(HashMap::new()),
            inflight: Flights::default(),
            clock,
        };
        p.load();
        Arc::new(p)
    }

    fn load(&self) {
        let Ok(Some(data)) = self.store.read_index(&self.index_name) else {
            return;
        };
        let Ok(mut entries) = serde_json::from_slice::<HashMap<String, Entry>>(&data) else {
            warn!(
                "{}: passthrough index is corrupt; starting empty",
                self.config.public
            );
            return;
        };
        entries.retain(|_, e| {
            let Some(hash) = Hash::from_hex(&e.hash) else {
                return false;
            };
            // Small files: read and verify now, so a damaged one is never served.
            match self.store.read_verified(&hash) {
                Some(body) => {
                    e.body = Bytes::from(body);
                    true
                }
                None => false,
            }
        });
        *self.entries.lock().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    /// Every object hash the cache uses (for garbage collection).
    pub fn live_hashes(&self) -> Vec<Hash> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|e| Hash::from_hex(&e.hash))
            .collect()
    }

    /// How many responses the cache holds.
    pub fn cached_count(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn cached(&self, rel: &str) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(rel)
            .cloned()
    }

    /// Answers a GET or HEAD for `rel`.
    pub async fn serve(&self, rel: &str) -> Reply {
        let fresh = |now: u64| self.cached(rel).filter(|e| e.fresh_until > now);
        if let Some(e) = fresh(self.clock.unix_now()) {
            return reply(&e, RequestResult::Hit, self.clock.unix_now());
        }
        let _flight = self.inflight.enter(rel.to_string()).await;
        // Someone else may have refreshed it while we waited.
        let now = self.clock.unix_now();
        if let Some(e) = fresh(now) {
            return reply(&e, RequestResult::Hit, now);
        }
        match self.fetch(rel).await {
            Ok(r) => r,
            Err(err) => match self.cached(rel) {
                Some(e) => {
                    info!(
                        "{}{rel}: upstream failed ({err}); serving stale",
                        self.config.public
                    );
                    reply(&e, RequestResult::Stale, self.clock.unix_now())
                }
                None => {
                    // The detail (the upstream's internal address, its error) is the
                    // operator's: the log has it, the public gets a plain 502.
                    warn!(
                        "{}{rel}: upstream failed ({err}), nothing cached to serve",
                        self.config.public
                    );
                    error_reply(502, "upstream unavailable\n".to_string())
                }
            },
        }
    }

    async fn fetch(&self, rel: &str) -> Result<Reply, FetchError> {
        let resp = self.upstream.get(&self.config.upstream, rel, &[]).await?;
        let status = resp.status();
        if status >= 500 {
            return Err(FetchError::Status(status));
        }
        resp.check_identity_encoding()?;
        let content_type = resp.header("Content-Type").map(str::to_string);
        let etag = resp.header("ETag").map(str::to_string);
        let last_modified = resp.header("Last-Modified").map(str::to_string);
        let cache_control = resp.header("Cache-Control").map(str::to_string);
        let body = resp.body(self.config.max_size).await?;
        if status != 200 {
            // Not cached, and marked so that nothing downstream caches it either.
            let mut r = error_reply(status, String::new());
            r.body = body;
            if let Some(ct) = content_type {
                r.headers.push(("Content-Type", ct));
            }
            return Ok(r);
        }
        let freshness = freshness(cache_control.as_deref(), self.config.default_max_age);
        let entry = Entry {
            hash: Hash::of(&body).to_hex(),
            body,
            content_type,
            etag,
            last_modified,
            cache_control,
            fresh_until: self.clock.unix_now() + freshness.map_or(0, |d| d.as_secs()),
        };
        if freshness.is_some() {
            self.remember(rel, entry.clone()).await;
        }
        Ok(reply(&entry, RequestResult::Miss, self.clock.unix_now()))
    }

    /// Keeps an entry in memory and on disk (so a restart with the upstream down serves it).
    async fn remember(&self, rel: &str, entry: Entry) {
        if let Err(e) = self.store.put(&entry.body).await {
            warn!("{}{rel}: cannot store: {e}", self.config.public);
        }
        let index = {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            map.insert(rel.to_string(), entry);
            bound(&mut map);
            serde_json::to_vec(&*map)
        };
        if let Ok(index) = index {
            if let Err(e) = self.store.write_index(&self.index_name, &index).await {
                warn!(
                    "{}: cannot write passthrough index: {e}",
                    self.config.public
                );
            }
        }
    }
}

/// Drops the entries fresh for the shortest time until [`ENTRIES_KEPT`] and [`BYTES_KEPT`]
/// hold.
fn bound(map: &mut HashMap<String, Entry>) {
    let mut bytes: u64 = map.values().map(|e| e.body.len() as u64).sum();
    while map.len() > ENTRIES_KEPT || (map.len() > 1 && bytes > BYTES_KEPT) {
        let Some(first) = map
            .iter()
            .min_by_key(|(_, e)| e.fresh_until)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(e) = map.remove(&first) {
            bytes -= e.body.len() as u64;
        }
    }
}

/// The cached response as of `now` (seconds since the epoch: its max-age counts down).
fn reply(e: &Entry, outcome: RequestResult, now: u64) -> Reply {
    let mut headers = Vec::new();
    if let Some(ct) = &e.content_type {
        headers.push(("Content-Type", ct.clone()));
    }
    if let Some(et) = &e.etag {
        headers.push(("ETag", et.clone()));
    }
    if let Some(lm) = &e.last_modified {
        headers.push(("Last-Modified", lm.clone()));
    }
    let cc = match &e.cache_control {
        Some(cc) => cc.clone(),
        None => format!("max-age={}", e.fresh_until.saturating_sub(now)),
    };
    headers.push(("Cache-Control", cc));
    Reply {
        status: 200,
        headers,
        body: e.body.clone(),
        outcome,
    }
}

/// A reply that no cache may keep.
pub(crate) fn error_reply(status: u16, text: String) -> Reply {
    Reply {
        status,
        headers: vec![
            ("Cache-Control", "no-store".to_string()),
            ("Content-Type", "text/plain; charset=utf-8".to_string()),
        ],
        body: Bytes::from(text),
        outcome: RequestResult::Pass,
    }
}

/// How long a 200 may be served from the cache without asking the upstream; `None` if it must
/// not be stored at all.
pub(crate) fn freshness(cache_control: Option<&str>, default: Duration) -> Option<Duration> {
    let Some(cc) = cache_control else {
        return Some(default);
    };
    let mut max_age = None;
    let mut s_maxage = None;
    for directive in cc.split(',') {
        let d = directive.trim().to_ascii_lowercase();
        let (name, value) = match d.split_once('=') {
            Some((n, v)) => (
                n.trim().to_string(),
                Some(v.trim().trim_matches('"').to_string()),
            ),
            None => (d.clone(), None),
        };
        match (name.as_str(), value) {
            ("no-store" | "private", _) => return None,
            ("no-cache", _) => return Some(Duration::ZERO),
            ("max-age", Some(v)) => max_age = v.parse().ok(),
            ("s-maxage", Some(v)) => s_maxage = v.parse().ok(),
            _ => {}
        }
    }
    match s_maxage.or(max_age) {
        Some(secs) => Some(Duration::from_secs(secs)),
        None => Some(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_freshness() {
        let d = Duration::from_secs(60);
        assert_eq!(freshness(None, d), Some(d));
        assert_eq!(
            freshness(Some("max-age=300"), d),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            freshness(Some("public, max-age=300, s-maxage=10"), d),
            Some(Duration::from_secs(10))
        );
        assert_eq!(freshness(Some("no-store"), d), None);
        assert_eq!(freshness(Some("private, max-age=5"), d), None);
        assert_eq!(freshness(Some("no-cache"), d), Some(Duration::ZERO));
        assert_eq!(freshness(Some("public"), d), Some(d));
    }
}
