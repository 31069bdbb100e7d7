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
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use log::warn;

use super::head::header_value;
use crate::clock::Clock;
use crate::erik::partition::Relay;
use crate::rrdp::Hash;
use crate::store::Store;

/// One repository's contribution: its current manifests (URI → hash and DER) and every
/// object of its state, all in the store.
#[derive(Clone, Debug, Default)]
pub(crate) struct Part {
    pub(crate) manifests: BTreeMap<String, (Hash, Bytes)>,
    pub(crate) objects: HashSet<Hash>,
}

/// One FQDN's index, ready to send.
#[derive(Clone, Debug)]
pub(crate) struct IndexView {
    pub(crate) der: Bytes,
    pub(crate) gzip: Option<Bytes>,
    pub(crate) etag: HeaderValue,
    pub(crate) etag_gzip: HeaderValue,
    /// When this node switched to this index (seconds since the epoch), as `Last-Modified`:
    /// later for every change, which `indexTime` is not (a manifest removed, or one merged
    /// in from another repository with an older `thisUpdate`, leave it as it was).
    pub(crate) changed: u64,
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
    /// Every object a current index reaches: partitions, and the objects of the states
    /// whose manifests they list.
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
}

/// The node's Erik relay: the view clients read, and what builds the next one.
pub(crate) struct ErikRelay {
    view: ArcSwap<ErikView>,
    building: tokio::sync::Mutex<Building>,
    /// Per repository, objects it is storing for a part not switched in yet: live for
    /// garbage collection from before they are written (a first walk of a large snapshot
    /// outlasts the store's grace period).
    pending: Mutex<HashMap<usize, HashSet<Hash>>>,
    retain: Duration,
}

#[derive(Default)]
struct Building {
    relay: Relay,
    /// Per repository (by its index in the config), its last part.
    parts: BTreeMap<usize, Part>,
    /// Per FQDN, the last `Last-Modified` its index had (kept when it leaves the view).
    changed: BTreeMap<String, u64>,
}

impl ErikRelay {
    pub(crate) fn new(retain: Duration) -> ErikRelay {
        ErikRelay {
            view: ArcSwap::from_pointee(ErikView::default()),
            building: tokio::sync::Mutex::new(Building::default()),
            pending: Mutex::new(HashMap::new()),
            retain,
        }
    }

    pub(crate) fn view(&self) -> Arc<ErikView> {
        self.view.load_full()
    }

    /// Repository `repo` is about to store `hash` for its next part.
    pub(crate) fn hold(&self, repo: usize, hash: Hash) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(repo).or_default().insert(hash);
    }

    /// Repository `repo`'s pending objects are no longer pending (its part was switched in,
    /// or given up).
    pub(crate) fn release(&self, repo: usize) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(&repo);
    }

    /// Every object the store must keep: what the view reaches or retains, and what
    /// repositories are storing for their next part.
    pub(crate) fn live(&self) -> HashSet<Hash> {
        let view = self.view();
        let mut live: HashSet<Hash> = view
            .objects
            .iter()
            .chain(view.retired.keys())
            .copied()
            .collect();
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        live.extend(pending.values().flatten().copied());
        live
    }

    /// Replaces repository `repo`'s part, writes the partitions that changed to the store,
    /// then switches the view. On an error the view and the parts stay as they were (and
    /// the next update rebuilds every partition).
    pub(crate) async fn update(
        &self,
        repo: usize,
        part: Part,
        store: &Arc<Store>,
        clock: &Clock,
    ) -> std::io::Result<()> {
        let mut guard = self.building.lock().await;
        let mut b = std::mem::take(&mut *guard);
        let previous = b.parts.insert(repo, part);
        // Decoding the manifests that changed and encoding their partitions: CPU work, off
        // the async threads. A panic in it costs the relay's build (made again from the
        // parts next time), never the parts.
        let (mut b, built) = tokio::task::spawn_blocking(move || {
            let Building { relay, parts, .. } = &mut b;
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let manifests = parts
                    .values()
                    .flat_map(|p| p.manifests.iter().map(|(u, (h, d))| (u.as_str(), *h, d)));
                for s in relay.update(manifests) {
                    warn!("erik: {} left out: {}", s.uri, s.reason);
                }
            }));
            (b, built)
        })
        .await
        .map_err(std::io::Error::other)?;
        let switched = match built {
            Ok(()) => self.switch(&mut b, store, clock).await,
            Err(_) => Err(std::io::Error::other("building the partitions panicked")),
        };
        match switched {
            Ok(()) => {
                *guard = b;
                Ok(())
            }
            Err(e) => {
                let mut b = b;
                b.relay = Relay::default();
                match previous {
                    Some(p) => b.parts.insert(repo, p),
                    None => b.parts.remove(&repo),
                };
                *guard = b;
                Err(e)
            }
        }
    }

    /// Stores the partitions the new build lists and the view does not, then swaps in the
    /// view of that build.
    async fn switch(
        &self,
        b: &mut Building,
        store: &Arc<Store>,
        clock: &Clock,
    ) -> std::io::Result<()> {
        let mut objects: HashSet<Hash> = b
            .parts
            .values()
            .flat_map(|p| p.objects.iter().copied())
            .collect();
        let old = self.view();
        for f in b.relay.fqdns.values() {
            for (hash, der) in f.partitions() {
                objects.insert(*hash);
                if old.objects.contains(hash) {
                    continue; // stored, and live while the current view lists it
                }
                // Touched when already there: garbage collection keeps it until the view
                // listing it is live (it may be an old partition listed again). Few and
                // asked for by every client, so through the memory tier (the bulk of a
                // walk goes around it: `store::Batch`).
                if !(store.contains(hash, Some(der.len() as u64)) && store.touch(hash)) {
                    store.put(der).await?;
                }
            }
        }
        // Read now, after the partitions are written, and rounded up: a client that fetched
        // the old index within this second and asks `If-Modified-Since` that second gets
        // the new one.
        let now = clock.unix_now() + 1;
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
        let fqdns = b
            .relay
            .fqdns
            .iter()
            .map(|(name, f)| {
                let view = match old.fqdns.get(name) {
                    Some(o) if o.der == f.index => o.clone(),
                    // Later than any Last-Modified this FQDN had in this process, even one
                    // from before it left the view.
                    _ => {
                        let last = b.changed.get(name).copied().unwrap_or(0);
                        index_view(f, now.max(last + 1))
                    }
                };
                (name.clone(), view)
            })
            .collect::<BTreeMap<_, _>>();
        for (name, v) in &fqdns {
            b.changed.insert(name.clone(), v.changed);
        }
        self.view.store(Arc::new(ErikView {
            fqdns,
            objects,
            retired,
        }));
        Ok(())
    }
}

fn index_view(f: &crate::erik::partition::Fqdn, changed: u64) -> IndexView {
    let etag = format!("\"{}\"", Hash::of(&f.index).to_hex());
    let lm = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(changed));
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
        changed,
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

    /// A clock at `unix` (seconds since the epoch).
    fn at(unix: u64) -> Clock {
        Clock::Manual(crate::clock::ManualClock::at_unix(unix))
    }

    fn part(objects: &BTreeMap<String, Vec<u8>>) -> Part {
        let manifests: BTreeMap<String, (Hash, Bytes)> = objects
            .iter()
            .filter(|(u, _)| u.ends_with(".mft"))
            .map(|(u, d)| (u.clone(), (Hash::of(d), Bytes::from(d.clone()))))
            .collect();
        Part {
            objects: manifests.values().map(|(h, _)| *h).collect(),
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
            .update(0, part(&demo.objects()), &store, &at(1000))
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
            .update(0, part(&demo.objects()), &store, &at(1010))
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
            assert!(v2.serves(h, 1011 + 99, 100), "kept for retain");
            assert!(!v2.serves(h, 1011 + 100, 100), "not after");
        }

        // Repositories naming one FQDN share its index: the demo's manifests in two parts.
        let (ta, cas): (BTreeMap<_, _>, BTreeMap<_, _>) = part(&demo.objects())
            .manifests
            .into_iter()
            .partition(|(u, _)| u.contains("/ta/"));
        let of = |manifests: BTreeMap<String, (Hash, Bytes)>| Part {
            objects: manifests.values().map(|(h, _)| *h).collect(),
            manifests,
        };
        relay.update(0, of(ta), &store, &at(1020)).await.unwrap();
        assert_eq!(relay.view().fqdns["demo.test"].manifests, 1);
        relay
            .update(1, of(cas.clone()), &store, &at(1020))
            .await
            .unwrap();
        assert_eq!(relay.view().fqdns["demo.test"].manifests, 3);

        // A manifest published where its signedObject URI does not point is left out.
        let moved = cas
            .into_iter()
            .map(|(u, m)| (u.replace("/repo/", "/elsewhere/"), m))
            .collect();
        relay.update(2, of(moved), &store, &at(1030)).await.unwrap();
        assert_eq!(relay.view().fqdns["demo.test"].manifests, 3);
        let index = &relay.view().fqdns["demo.test"];
        // Rounded up (1021) for the first index, one later for the next within that second,
        // and left alone by an update that changes nothing.
        assert_eq!(index.changed, 1022);
    }
}
