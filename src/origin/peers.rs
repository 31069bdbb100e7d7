//! Peer fill: the other nodes of a cluster as a source of last resort.
//!
//! Nodes behind one load balancer poll out of step, so a Relying Party can take notification
//! N+1 from node A and then ask node B, which has not caught up, for delta N+1. B asks the
//! origin first; if that fails (the origin is down, or deleted the file), B asks its peers:
//! their published notifications say which hash the path has, and their object endpoint
//! (`/.well-known/rrdp-proxy/object/<sha256>`, open only to the cluster token) serves the
//! bytes, which B verifies against that hash (and, when the notification says what the file
//! is, checks as a snapshot or delta) before storing or serving them. A node whose upstream
//! is down also catches up to the newest notification its peers publish.

use std::sync::Arc;
use std::time::Duration;

use log::debug;

use crate::config::{ClusterConfig, RepositoryConfig, PEER_LOOKUP_PATH, PEER_OBJECT_PATH};
use crate::metrics::Metrics;
use crate::origin::client::{within, Client, FetchError};
use crate::origin::fetch::fetch_object;
use crate::rrdp::content::{self, Expected};
use crate::rrdp::uri::BaseUri;
use crate::rrdp::{Hash, Notification};
use crate::store::{Store, Stored};

/// The peers of this node.
pub(crate) struct Peers {
    client: Arc<Client>,
    bases: Vec<BaseUri>,
    /// `cluster.publish_from_peers`.
    pub publish: bool,
}

impl Peers {
    /// `None` without a cluster or with no peers listed.
    pub(crate) fn new(cluster: Option<&ClusterConfig>) -> Option<Arc<Peers>> {
        let c = cluster.filter(|c| !c.peers.is_empty())?;
        Some(Arc::new(Peers {
            client: Client::for_peers(c),
            bases: c.peers.clone(),
            publish: c.publish_from_peers,
        }))
    }

    /// Fetches an object by its hash from the first peer that has it, into the store.
    pub(crate) async fn fetch(
        &self,
        store: &Arc<Store>,
        hash: Hash,
        content: Option<&Expected>,
        limit: u64,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Result<Stored, FetchError> {
        let rel = format!(
            "{}{}",
            PEER_OBJECT_PATH.trim_start_matches('/'),
            hash.to_hex()
        );
        let mut last = FetchError::Status(404);
        for base in &self.bases {
            metrics.count_peer_fetch();
            let fetched = within(
                timeout,
                fetch_object(&self.client, store, base, &rel, Some(hash), content, limit),
            )
            .await;
            match fetched {
                Ok(stored) => return Ok(stored),
                Err(e) => {
                    debug!("peer {base}: object {hash}: {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The notifications the peers publish for a repository (those that answer and parse).
    pub(crate) async fn notifications(&self, repo: &RepositoryConfig) -> Vec<Notification> {
        let rel = format!(
            "{}{}",
            repo.public.path().trim_start_matches('/'),
            repo.notification
        );
        let mut out = Vec::new();
        for base in &self.bases {
            let fetched = within(repo.fetch.fetch_timeout, async {
                let resp = self.client.get(base, &rel, &[]).await?;
                if resp.status() != 200 {
                    return Err(FetchError::Status(resp.status()));
                }
                resp.body(repo.fetch.max_notification_size).await
            })
            .await;
            match fetched.map(|b| Notification::parse(&b)) {
                Ok(Ok(n)) => out.push(n),
                Ok(Err(e)) => debug!("peer {base}: notification refused: {e}"),
                Err(e) => debug!("peer {base}: notification: {e}"),
            }
        }
        out
    }

    /// What a peer says `rel` is: its hash, and which file it must be. From the peers'
    /// notifications first; else from a peer that still serves it retained (a superseded
    /// snapshot or a delta no notification lists any more), by the lookup endpoint.
    pub(crate) async fn lookup(
        &self,
        repo: &RepositoryConfig,
        rel: &str,
    ) -> Option<(Hash, Expected)> {
        match self.lookup_current(repo, rel).await {
            Some(found) => Some(found),
            None => self.lookup_retained(repo, rel).await,
        }
    }

    /// What a peer's lookup endpoint says of a file it serves, current or retained. The
    /// peer is authenticated (token, and TLS where configured); the asking node then checks
    /// the bytes against the hash and the content against the kind, session and serial it
    /// gives, as for a file a peer's notification names. Only snapshots and deltas are asked
    /// for: a file whose content cannot be checked is not taken from a peer.
    async fn lookup_retained(
        &self,
        repo: &RepositoryConfig,
        rel: &str,
    ) -> Option<(Hash, Expected)> {
        let path = format!(
            "{}{}{}",
            PEER_LOOKUP_PATH.trim_start_matches('/'),
            repo.public.path().trim_start_matches('/'),
            rel
        );
        for base in &self.bases {
            let answer = within(repo.fetch.fetch_timeout, async {
                let resp = self.client.get(base, &path, &[]).await?;
                if resp.status() != 200 {
                    return Err(FetchError::Status(resp.status()));
                }
                resp.body(64 << 10).await
            })
            .await;
            let found = answer.ok().and_then(|body| {
                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                let hash = Hash::from_hex(v["sha256"].as_str()?)?;
                let kind = match v["kind"].as_str()? {
                    "snapshot" => content::Document::Snapshot,
                    "delta" => content::Document::Delta,
                    _ => return None,
                };
                let expected = repo.expected(kind, v["session"].as_str()?, v["serial"].as_u64()?);
                Some((hash, expected))
            });
            match found {
                Some(found) => return Some(found),
                None => debug!("peer {base}: no retained {rel}"),
            }
        }
        None
    }

    /// What a peer's notification says `rel` is.
    async fn lookup_current(&self, repo: &RepositoryConfig, rel: &str) -> Option<(Hash, Expected)> {
        for n in self.notifications(repo).await {
            let named = |uri: &str| repo.public.relative(uri) == Some(rel);
            if named(&n.snapshot.uri) {
                let e = repo.expected(content::Document::Snapshot, &n.session_id, n.serial);
                return Some((n.snapshot.hash, e));
            }
            if let Some(d) = n.deltas.iter().find(|d| named(&d.file.uri)) {
                let e = repo.expected(content::Document::Delta, &n.session_id, d.serial);
                return Some((d.file.hash, e));
            }
        }
        None
    }
}
