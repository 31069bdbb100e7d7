//! Getting a round's files into the store: the snapshot, then the deltas concurrently, each
//! through the one verified fetch (`origin::fetch`), with the tail cut when an old delta is
//! gone upstream.

use std::sync::Arc;

use log::info;
use tokio::task::JoinSet;

use crate::config::RepositoryConfig;
use crate::metrics::Metrics;
use crate::origin::client::{Client, FetchError};
use crate::origin::fetch::{ensure_object, Sources};
use crate::origin::peers::Peers;
use crate::rrdp::content::{Document, Expected};
use crate::rrdp::uri::BaseUri;
use crate::rrdp::{DeltaRef, Hash};
use crate::store::{Store, Stored};
use crate::sync::error::PollError;

/// Where a round fetches its files and with which limits.
#[derive(Clone)]
pub(crate) struct Fetcher {
    pub upstream: Arc<Client>,
    /// The upstream bases in the order to try (empty while catching up from peers).
    pub bases: Vec<BaseUri>,
    pub peers: Option<Arc<Peers>>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// `max_file_size` and `fetch_timeout`.
    pub limits: (u64, std::time::Duration),
    /// `max_object_size`, which the content check of every snapshot and delta applies.
    pub max_object_size: u64,
}

impl Fetcher {
    pub(crate) fn new(
        cfg: &RepositoryConfig,
        upstream: Arc<Client>,
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
            limits: (cfg.fetch.max_file_size, cfg.fetch.fetch_timeout),
            max_object_size: cfg.fetch.max_object_size,
        }
    }

    /// Makes sure the object is in the store, fetching it if needed.
    pub(crate) async fn ensure(
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
    ///
    /// Every download this starts ends with it: at most `concurrency` tasks exist at once,
    /// they live in a `JoinSet`, and the set aborts whatever still runs when this returns (a
    /// cut list, an error) or is dropped (the round was cancelled), closing their
    /// connections. An upstream that lists 10,000 deltas, answers one with 404 and trickles
    /// the rest leaves nothing behind.
    pub(crate) async fn deltas(
        &self,
        name: &str,
        session_id: &str,
        deltas: &[(DeltaRef, String)],
        concurrency: usize,
    ) -> Result<Vec<(u64, String, Stored)>, PollError> {
        let concurrency = concurrency.max(1);
        let mut running = JoinSet::new();
        let mut next = 0;
        // Results by list position, taken in list order: the first gap decides.
        let mut done: Vec<Option<Result<Stored, PollError>>> = Vec::new();
        done.resize_with(deltas.len(), || None);
        let mut stored = Vec::with_capacity(deltas.len());
        while stored.len() < deltas.len() {
            while next < deltas.len() && running.len() < concurrency {
                let (d, rel) = &deltas[next];
                let (me, d, rel) = (self.clone(), d.clone(), rel.clone());
                let content = Expected::new(Document::Delta, session_id, d.serial)
                    .with_max_object_size(self.max_object_size);
                let i = next;
                running.spawn(async move {
                    let r = me
                        .ensure(&rel, d.file.hash, Some(&content), &d.file.uri)
                        .await;
                    (i, r)
                });
                next += 1;
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (i, result) = joined.map_err(|e| PollError::Store(std::io::Error::other(e)))?;
            done[i] = Some(result);
            // Take what is now contiguous from the newest.
            while let Some(result) = done.get_mut(stored.len()).and_then(Option::take) {
                let (d, rel) = &deltas[stored.len()];
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
                        // Dropping `running` aborts the downloads still under way.
                        return Ok(stored);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(stored)
    }
}
