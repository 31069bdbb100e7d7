//! What the node publishes over Erik (`server.erik`), switched as a whole like a
//! generation: per FQDN its index, and the set of objects (partitions, manifests, the files
//! they list) a client may ask for by hash.
//!
//! Each repository's poller hands in its part ([`Part`]: the manifests and objects of the
//! state it is about to publish, every object already in the store); the node merges the
//! parts, so one FQDN's index covers every repository whose manifests name it. The
//! partitions that changed are written to the store first, and only then is the new
//! [`ErikView`] swapped in: an index never names a partition, nor a partition a manifest,
//! that this node cannot serve at that moment. Objects a view drops stay servable (and
//! live for the store's garbage collection) for `cache.retain`, as superseded RRDP files do,
//! for clients that are part way through the previous index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use log::warn;

use super::head::header_value;
use crate::erik::partition::Relay;
use crate::rrdp::Hash;
use crate::store::Store;

/// One repository's contribution: its current manifests (URI → DER) and every object of
/// its state a manifest lists (manifests included), all in the store.
#[derive(Clone, Debug, Default)]
pub(crate) struct Part {
    pub(crate) manifests: BTreeMap<String, Bytes>,
    pub(crate) objects: HashSet<Hash>,
}

/// One FQDN's index, ready to send.
#[derive(Clone, Debug)]
pub(crate) struct IndexView {
    pub(crate) der: Bytes,
    pub(crate) gzip: Option<Bytes>,
    pub(crate) etag: HeaderValue,
    pub(crate) etag_gzip: HeaderValue,
    pub(crate) last_modified: HeaderValue,
    /// `indexTime`, seconds since the epoch.
    pub(crate) time: i64,
    pub(crate) partitions: usize,
    pub(crate) manifests: usize,
}

/// What the node serves over Erik at one moment.
#[derive(Debug, Default)]
pub(crate) struct ErikView {
    pub(crate) fqdns: BTreeMap<String, IndexView>,
    /// Every object a current index reaches: partitions, manifests, the files they list.
    objects: HashSet<Hash>,
    /// Objects earlier views reached, with when they left (seconds since the epoch).
    retired: HashMap<Hash, u64>,
}

impl ErikView {
    /// Whether a client may be given this object at `now`.
    pub(crate) fn serves(&self, hash: &Hash, now: u64, retain: u64) -> bool {
        self.objects.contains(hash) || self.retired.get(hash).is_some_and(|t| t + retain > now)
    }

    /// Objects the current indexes reach.
    pub(crate) fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Every object the store must keep for this view.
    pub(crate) fn live(&self) -> impl Iterator<Item = &Hash> {
        self.objects.iter().chain(self.retired.keys())
    }
}

/// The node's Erik relay: the view clients read, and what builds the next one.
pub(crate) struct ErikRelay {
    view: ArcSwap<ErikView>,
    building: tokio::sync::Mutex<Building>,
    retain: Duration,
}

#[derive(Default)]
struct Building {
    relay: Relay,
    /// Per repository (by its index in the config), its last part.
    parts: BTreeMap<usize, Part>,
}

impl ErikRelay {
    pub(crate) fn new(retain: Duration) -> ErikRelay {
        ErikRelay {
            view: ArcSwap::from_pointee(ErikView::default()),
            building: tokio::sync::Mutex::new(Building::default()),
            retain,
        }
    }

    pub(crate) fn view(&self) -> Arc<ErikView> {
        self.view.load_full()
    }

    /// Replaces repository `repo`'s part, writes the partitions that changed to the store,
    /// then switches the view. On a store error the view stays as it was.
    pub(crate) async fn update(
        &self,
        repo: usize,
        part: Part,
        store: &Arc<Store>,
        now: u64,
    ) -> std::io::Result<()> {
        let mut b = self.building.lock().await;
        b.parts.insert(repo, part);
        let manifests: Vec<(String, Bytes)> = b
            .parts
            .values()
            .flat_map(|p| p.manifests.iter().map(|(u, d)| (u.clone(), d.clone())))
            .collect();
        let mut relay = b.relay.clone();
        for s in relay.update(manifests.iter().map(|(u, d)| (u.as_str(), d))) {
            warn!("erik: {} left out: {}", s.uri, s.reason);
        }
        let mut objects: HashSet<Hash> = b
            .parts
            .values()
            .flat_map(|p| p.objects.iter().copied())
            .collect();
        for f in relay.fqdns.values() {
            for (hash, der) in f.partitions() {
                if !store.contains(hash, Some(der.len() as u64)) {
                    store.put(der).await?;
                }
                objects.insert(*hash);
            }
        }
        let old = self.view();
        let retain = self.retain.as_secs();
        let mut retired: HashMap<Hash, u64> = old
            .retired
            .iter()
            .filter(|(h, t)| **t + retain > now && !objects.contains(h))
            .map(|(h, t)| (*h, *t))
            .collect();
        for h in old.objects.iter().filter(|h| !objects.contains(h)) {
            retired.insert(*h, now);
        }
        let fqdns = relay
            .fqdns
            .iter()
            .map(|(name, f)| {
                let old = old.fqdns.get(name).filter(|o| o.der == f.index);
                (name.clone(), old.cloned().unwrap_or_else(|| index_view(f)))
            })
            .collect();
        b.relay = relay;
        self.view.store(Arc::new(ErikView {
            fqdns,
            objects,
            retired,
        }));
        Ok(())
    }
}

fn index_view(f: &crate::erik::partition::Fqdn) -> IndexView {
    let etag = format!("\"{}\"", Hash::of(&f.index).to_hex());
    let secs = u64::try_from(f.time).unwrap_or(0);
    let lm = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gzip = enc
        .write_all(&f.index)
        .and_then(|_| enc.finish())
        .ok()
        .filter(|g| g.len() < f.index.len())
        .map(Bytes::from);
    IndexView {
        der: f.index.clone(),
        gzip,
        etag_gzip: header_value(&super::head::gzip_etag(&etag)),
        etag: header_value(&etag),
        last_modified: header_value(&lm),
        time: f.time,
        partitions: f.partitions().count(),
        manifests: f.manifests().count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::signed::SignedDemo;

    fn part(objects: &BTreeMap<String, Vec<u8>>) -> Part {
        let manifests: BTreeMap<String, Bytes> = objects
            .iter()
            .filter(|(u, _)| u.ends_with(".mft"))
            .map(|(u, d)| (u.clone(), Bytes::from(d.clone())))
            .collect();
        Part {
            objects: manifests.values().map(|d| Hash::of(d)).collect(),
            manifests,
        }
    }

    #[tokio::test]
    async fn a_view_serves_what_its_index_names_and_keeps_what_it_dropped_for_retain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), 1 << 20, 1 << 16, None).unwrap());
        let relay = ErikRelay::new(Duration::from_secs(100));
        let mut demo = SignedDemo::new(Duration::from_secs(60));
        relay
            .update(0, part(&demo.objects()), &store, 1000)
            .await
            .unwrap();
        let v1 = relay.view();
        let index = &v1.fqdns["demo.test"];
        let parsed = crate::erik::wire::Index::from_der(&index.der).unwrap();
        for p in &parsed.partitions {
            assert!(
                v1.serves(&p.hash, 1000, 100),
                "a listed partition is served"
            );
            assert!(store.contains(&p.hash, Some(p.size)), "and stored first");
        }
        assert_eq!(index.partitions, parsed.partitions.len());
        assert!(!v1.serves(&Hash([9; 32]), 1000, 100));

        demo.advance();
        relay
            .update(0, part(&demo.objects()), &store, 1010)
            .await
            .unwrap();
        let v2 = relay.view();
        let gone: Vec<&Hash> = v1
            .objects
            .iter()
            .filter(|h| !v2.objects.contains(h))
            .collect();
        assert!(!gone.is_empty(), "a manifest and its partition changed");
        for h in &gone {
            assert!(v2.serves(h, 1010 + 99, 100), "kept for retain");
            assert!(!v2.serves(h, 1010 + 100, 100), "not after");
        }

        // A second repository naming the same FQDN joins its index.
        let mut other = part(&SignedDemo::new(Duration::from_secs(60)).objects());
        other.manifests = other
            .manifests
            .into_iter()
            .map(|(u, d)| (u.replace("/repo/", "/other/"), d))
            .collect();
        relay.update(1, other, &store, 1020).await.unwrap();
        assert_eq!(relay.view().fqdns["demo.test"].manifests, 6);
    }
}
