//! Getting a round's files into the store: the snapshot, then the deltas concurrently, each
//! through the one verified fetch (`origin::fetch`), with the tail cut when an old delta is
//! gone upstream.

use std::sync::Arc;

use log::info;
use tokio::sync::Semaphore;

use crate::config::RepositoryConfig;
use crate::metrics::Metrics;
use crate::origin::client::{FetchError, Upstream};
use crate::origin::fetch::{ensure_object, Sources};
use crate::origin::peers::Peers;
use crate::rrdp::content::{Expected, Kind};
use crate::rrdp::uri::BaseUri;
use crate::rrdp::{DeltaRef, Hash};
use crate::store::{Store, Stored};
use crate::sync::error::PollError;

/// Where a round fetches its files and with which limits.
#[derive(Clone)]
pub struct Fetcher {
    pub upstream: Arc<Upstream>,
    /// The upstream bases in the order to try (empty while catching up from peers).
    pub bases: Vec<BaseUri>,
    pub peers: Option<Arc<Peers>>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// `max_file_size` and `fetch_timeout`.
    pub limits: (u64, std::time::Duration),
}

impl Fetcher {
    pub fn new(
        cfg: &RepositoryConfig,
        upstream: Arc<Upstream>,
        bases: Vec<BaseUri>,
        peers: Option<Arc<Peers>>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> Fetcher {
        Fetcher {
            upstream,
            bases,
            peers,
            store,
            metrics,
            limits: (cfg.max_file_size, cfg.fetch_timeout),
        }
    }

    /// Makes sure the object is in the store, fetching it if needed.
    pub async fn ensure(
        &self,
        rel: &str,
        hash: Hash,
        content: Option<&Expected>,
        uri: &str,
    ) -> Result<Stored, PollError> {
        let src = Sources {
            upstream: &self.upstream,
            bases: &self.bases,
            peers: self.peers.as_deref(),
        };
        ensure_object(
            &src,
            &self.store,
            rel,
            hash,
            content,
            self.limits,
            &self.metrics,
        )
        .await
        .map_err(|error| PollError::File {
            uri: uri.to_string(),
            error,
        })
    }

    /// Fetches the listed deltas (at most `concurrency` at a time) and returns the contiguous
    /// newest part that is stored: a delta gone upstream (404/410) cuts the list there. Any
    /// other failure fails the round.
    pub async fn deltas(
        &self,
        name: &str,
        session_id: &str,
        deltas: &[(DeltaRef, String)],
        concurrency: usize,
    ) -> Result<Vec<(u64, String, Stored)>, PollError> {
        let sem = Arc::new(Semaphore::new(concurrency));
        let tasks: Vec<_> = deltas
            .iter()
            .map(|(d, rel)| {
                let (me, sem, d, rel) = (self.clone(), sem.clone(), d.clone(), rel.clone());
                let content = Expected {
                    kind: Kind::Delta,
                    session_id: session_id.to_string(),
                    serial: d.serial,
                };
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    me.ensure(&rel, d.file.hash, Some(&content), &d.file.uri)
                        .await
                })
            })
            .collect();
        let mut stored = Vec::with_capacity(tasks.len());
        for ((d, rel), task) in deltas.iter().zip(tasks) {
            let result = task
                .await
                .map_err(|e| PollError::Store(std::io::Error::other(e)))?;
            match result {
                Ok(s) => stored.push((d.serial, rel.clone(), s)),
                Err(PollError::File {
                    error: FetchError::Status(404 | 410),
                    uri,
                }) => {
                    info!(
                        "{name}: delta {} is gone upstream ({uri}); serving the {} newer deltas",
                        d.serial,
                        stored.len()
                    );
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(stored)
    }
}
