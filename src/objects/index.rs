//! What validation keeps of a repository state between rounds, so that a new serial costs
//! what changed, not the whole repository again.
//!
//! - [`ObjectIndex`]: every object's SHA-256 by URI, and the DER of the few objects the tree walk
//!   reads each round (certificates, manifests, CRLs). Signed objects — most of a repository
//!   — are not kept: their DER is asked for only when the [`Cache`] has no result for them.
//! - [`Cache`]: the verification result of each signed object, by its hash and the hash of
//!   its issuer's chain: what stays true while neither changes. Time and revocation are
//!   checked again each round from what the result keeps (the EE certificate's validity and
//!   serial), so a cached result never hides an expiry or a new CRL entry.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use rpki::repository::x509::Serial;
use sha2::{Digest, Sha256};

use super::{Check, ObjectKind, Objects};

pub(crate) type Sha = [u8; 32];

pub(crate) fn sha(data: &[u8]) -> Sha {
    Sha256::digest(data).into()
}

/// One repository state as validation reads it.
#[derive(Clone, Debug, Default)]
pub(crate) struct ObjectIndex {
    hashes: BTreeMap<String, Sha>,
    kept: HashMap<String, Bytes>,
    /// Directories (URIs up to the last `/`) with an object published or withdrawn since
    /// [`ObjectIndex::clean`]: their publication points are checked again.
    dirty: HashSet<String>,
}

impl ObjectIndex {
    pub(crate) fn from_objects(objects: &Objects) -> ObjectIndex {
        let mut index = ObjectIndex::default();
        for (uri, der) in objects {
            index.publish(uri, der.clone());
        }
        index
    }

    /// Whether the tree walk reads an object of this kind each round.
    fn keeps(kind: ObjectKind) -> bool {
        matches!(
            kind,
            ObjectKind::Certificate | ObjectKind::Manifest | ObjectKind::Crl
        )
    }

    fn touch(&mut self, uri: &str) {
        let dir = &uri[..uri.rfind('/').map_or(0, |i| i + 1)];
        if !self.dirty.contains(dir) {
            self.dirty.insert(dir.to_string());
        }
    }

    /// Whether anything under the directory URI `dir` (not below it) changed since
    /// [`ObjectIndex::clean`].
    pub(crate) fn is_dirty(&self, dir: &str) -> bool {
        self.dirty.contains(dir)
    }

    /// Marks the state as validated: nothing is dirty.
    pub(crate) fn clean(&mut self) {
        self.dirty.clear();
    }

    /// Adds or replaces the object at `uri`.
    pub(crate) fn publish(&mut self, uri: &str, der: Bytes) {
        self.touch(uri);
        self.hashes.insert(uri.to_string(), sha(&der));
        if ObjectIndex::keeps(ObjectKind::of(uri)) {
            self.kept.insert(uri.to_string(), der);
        } else {
            self.kept.remove(uri);
        }
    }

    pub(crate) fn withdraw(&mut self, uri: &str) {
        self.touch(uri);
        self.hashes.remove(uri);
        self.kept.remove(uri);
    }

    pub(crate) fn hash(&self, uri: &str) -> Option<&Sha> {
        self.hashes.get(uri)
    }

    /// The object at `uri`: the index's own copy of the URI, and the hash.
    pub(crate) fn entry(&self, uri: &str) -> Option<(&str, &Sha)> {
        self.hashes.get_key_value(uri).map(|(k, v)| (k.as_str(), v))
    }

    /// The DER of a certificate, manifest or CRL.
    pub(crate) fn kept(&self, uri: &str) -> Option<&Bytes> {
        self.kept.get(uri)
    }

    pub(crate) fn uris(&self) -> impl Iterator<Item = &String> {
        self.hashes.keys()
    }

    /// Whether any object lies under the directory URI `dir`.
    pub(crate) fn has_under(&self, dir: &str) -> bool {
        self.hashes
            .range(dir.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(dir))
    }
}

/// A signed object's EE certificate, as far as the checks that depend on time and the CRL
/// need it.
#[derive(Clone, Debug)]
pub(crate) struct Ee {
    pub serial: Serial,
    pub not_before: i64,
    pub not_after: i64,
}

/// What checking a signed object against its issuer found.
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    /// `None`: the object did not parse.
    pub ee: Option<Ee>,
    /// Boxed: most objects are fine, and every cached result is one entry of a table sized
    /// for all of a point's signed objects (24 bytes each less).
    pub outcome: Result<(), Box<(Check, String)>>,
}

/// A point's signed-object results, sorted by hash. A hash table sized by powers of two held
/// about half empty buckets of a hundred bytes each, for every signed object of a repository
/// (docs/benchmarks.md, first validation's memory); this holds what it holds. A round's new
/// results go to `fresh` (room made for them before, [`Cache::expect`]) and are sorted in at
/// the next lookup or at [`Cache::prune`].
#[derive(Debug, Default)]
struct Results {
    sorted: Vec<(Sha, (Verified, u64))>,
    fresh: Vec<(Sha, (Verified, u64))>,
}

impl Results {
    fn reserve(&mut self, n: usize) {
        self.fresh.reserve_exact(n);
    }

    fn insert(&mut self, key: Sha, value: (Verified, u64)) {
        self.fresh.push((key, value));
    }

    fn get_mut(&mut self, key: &Sha) -> Option<&mut (Verified, u64)> {
        self.merge();
        let i = self.sorted.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(&mut self.sorted[i].1)
    }

    fn retain(&mut self, mut keep: impl FnMut(&(Verified, u64)) -> bool) {
        self.merge();
        // Room made by `reserve` that no result used (an object that did not verify is not
        // kept) goes too.
        self.fresh = Vec::new();
        self.sorted.retain(|(_, v)| keep(v));
        self.sorted.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.sorted.len() + self.fresh.len()
    }

    /// Sorts the fresh results in, into a vector of exactly their size; a fresh result
    /// replaces a sorted one with the same key (the later insert wins, as in a map). A
    /// round looks up before it inserts, so this runs once per point per round; lookups
    /// between inserts would each pay for a merge.
    fn merge(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let mut fresh = std::mem::take(&mut self.fresh);
        // Stable: of equal keys the later insert stays last, and is the one kept.
        fresh.sort_by_key(|r| r.0);
        fresh.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        if self.sorted.is_empty() {
            // A point's first results (a first validation): no second copy of them.
            fresh.shrink_to_fit();
            self.sorted = fresh;
            return;
        }
        let old = std::mem::take(&mut self.sorted);
        let mut all = Vec::with_capacity(old.len() + fresh.len());
        let mut old = old.into_iter().peekable();
        for f in fresh {
            while let Some(o) = old.next_if(|o| o.0 < f.0) {
                all.push(o);
            }
            old.next_if(|o| o.0 == f.0);
            all.push(f);
        }
        all.extend(old);
        all.shrink_to_fit();
        self.sorted = all;
    }
}

/// What a publication point's checks found, replayed while nothing they depend on changes.
#[derive(Clone, Debug)]
pub(crate) struct PointMemo {
    pub mft_hash: Sha,
    pub chain: Sha,
    /// The checks hold until this time (seconds since the epoch).
    pub until: i64,
    /// The point's findings and health (without object counts).
    pub report: super::Report,
    /// The CA certificates it validated, to walk into.
    pub children: Vec<super::check::Child>,
}

/// What the last rounds found per publication point (by manifest URI): the verification
/// result of each signed object (by its hash; they hold while the issuer's chain is the
/// same), and the memo of the point's checks. A point no round visited is dropped by
/// [`Cache::prune`], and so are the objects a point that was checked again no longer has;
/// a replayed point keeps all of its results.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    points: HashMap<String, PointCache>,
    round: u64,
    /// Findings held in memos, all points together (at most [`FINDINGS_KEPT`]).
    findings: usize,
}

/// Findings a point's memo keeps with their detail: a replayed point adds its counts in full,
/// and these as examples. 1,000 points failing 1,000 ways each held a million findings, each
/// repeating its URI, between rounds.
pub(crate) const FINDINGS_PER_POINT: usize = 8;

/// Findings all memos together keep; past it a memo keeps only its counts.
pub(crate) const FINDINGS_KEPT: usize = 10_000;

#[derive(Debug, Default)]
struct PointCache {
    chain: Sha,
    /// Result, and the round that last used it.
    objects: Results,
    memo: Option<PointMemo>,
    /// The round that last visited it, and whether its checks were made (not replayed).
    used: u64,
    checked: bool,
}

impl Cache {
    /// The point's entry for this round, emptied if the issuer's chain changed.
    fn entry(&mut self, mft_uri: &str, chain: &Sha) -> &mut PointCache {
        let round = self.round;
        let p = self.points.entry(mft_uri.to_string()).or_default();
        if p.chain != *chain {
            self.findings -= p.memo.as_ref().map_or(0, |m| m.report.findings.len());
            *p = PointCache {
                chain: *chain,
                ..PointCache::default()
            };
        }
        if p.used != round {
            p.used = round;
            p.checked = false;
        }
        p
    }

    /// The result for the signed object `object` of the point at `mft_uri`.
    pub(crate) fn get(&mut self, mft_uri: &str, chain: &Sha, object: &Sha) -> Option<&Verified> {
        let round = self.round;
        let p = self.entry(mft_uri, chain);
        p.checked = true;
        p.objects.get_mut(object).map(|(v, used)| {
            *used = round;
            &*v
        })
    }

    /// Room for `n` more results of the point at `mft_uri`, made at once (a first validation
    /// adds thousands; grown one by one, the table would double as it filled).
    pub(crate) fn expect(&mut self, mft_uri: &str, chain: &Sha, n: usize) {
        self.entry(mft_uri, chain).objects.reserve(n);
    }

    pub(crate) fn insert(&mut self, mft_uri: &str, chain: &Sha, object: Sha, v: Verified) {
        let round = self.round;
        let p = self.entry(mft_uri, chain);
        p.checked = true;
        p.objects.insert(object, (v, round));
    }

    /// The memo of the point at `mft_uri`, if it was made from this manifest and chain and
    /// holds at `now`.
    pub(crate) fn point(
        &mut self,
        mft_uri: &str,
        mft_hash: &Sha,
        chain: &Sha,
        now: i64,
    ) -> Option<&PointMemo> {
        let p = self.entry(mft_uri, chain);
        match &p.memo {
            Some(m) if m.mft_hash == *mft_hash && now < m.until => p.memo.as_ref(),
            _ => None,
        }
    }

    /// Keeps a point's memo, its findings cut to [`FINDINGS_PER_POINT`] and to what
    /// [`FINDINGS_KEPT`] leaves (the counts stay whole).
    pub(crate) fn remember_point(&mut self, mft_uri: &str, mut memo: PointMemo) {
        let chain = memo.chain;
        // The entry first: a changed chain empties it, and gives its findings back.
        let before = self
            .entry(mft_uri, &chain)
            .memo
            .as_ref()
            .map_or(0, |m| m.report.findings.len());
        let others = self.findings - before;
        let room = FINDINGS_KEPT.saturating_sub(others);
        memo.report.findings.truncate(FINDINGS_PER_POINT.min(room));
        memo.report.findings.shrink_to_fit();
        self.findings = others + memo.report.findings.len();
        self.entry(mft_uri, &chain).memo = Some(memo);
    }

    /// Findings held in memos, all points together.
    #[cfg(test)]
    pub(crate) fn findings_kept(&self) -> usize {
        self.findings
    }

    /// Forgets what this round did not use, and starts the next round.
    pub(crate) fn prune(&mut self) {
        let round = self.round;
        let findings = &mut self.findings;
        self.points.retain(|_, p| {
            let keep = p.used == round;
            if !keep {
                *findings -= p.memo.as_ref().map_or(0, |m| m.report.findings.len());
            }
            keep
        });
        for p in self.points.values_mut().filter(|p| p.checked) {
            p.objects.retain(|(_, used)| *used == round);
        }
        self.round += 1;
    }

    /// Signed-object results held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.values().map(|p| p.objects.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Check, Finding, Report};

    /// A result told apart by its round.
    fn result(round: u64) -> (Verified, u64) {
        let v = Verified {
            ee: None,
            outcome: Err(Box::new((Check::Parse, round.to_string()))),
        };
        (v, round)
    }

    #[test]
    fn results_stay_sorted_and_a_later_insert_replaces_an_earlier() {
        let mut r = Results::default();
        r.reserve(3);
        for k in [5u8, 1, 9] {
            r.insert([k; 32], result(u64::from(k)));
        }
        assert_eq!(r.get_mut(&[1; 32]).unwrap().1, 1);
        // Twice in one round, and over a sorted one: the last insert is what is found.
        r.insert([5; 32], result(50));
        r.insert([3; 32], result(3));
        r.insert([5; 32], result(51));
        r.insert([5; 32], result(52));
        assert_eq!(r.get_mut(&[5; 32]).unwrap().1, 52);
        assert_eq!(r.len(), 4);
        assert!(r.sorted.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(r.get_mut(&[7; 32]).is_none());
        r.retain(|(_, round)| *round != 3);
        assert!(r.get_mut(&[3; 32]).is_none());
        assert_eq!(r.get_mut(&[9; 32]).unwrap().1, 9);
        assert_eq!(r.len(), 3);
        // Room made for results that never came is given back.
        r.reserve(100);
        r.retain(|_| true);
        assert_eq!(r.fresh.capacity(), 0);
        assert_eq!(r.len(), 3);
    }

    fn failing_point(point: usize, ways: usize) -> PointMemo {
        let mut report = Report::default();
        for i in 0..ways {
            report.add(Finding {
                uri: format!(
                    "rsync://rpki.example.net/repository/ca-{point}/a-rather-long-name-{i}.roa"
                ),
                check: Check::Signature,
                detail: "the signature does not verify with the EE certificate's key".into(),
            });
        }
        PointMemo {
            mft_hash: [point as u8; 32],
            chain: [1; 32],
            until: i64::MAX,
            report,
            children: Vec::new(),
        }
    }

    /// Regression (issue 26, item 3): each point's memo kept up to 1,000 findings between
    /// rounds; 1,000 points failing 1,000 ways held a million. Bounded per point and in all,
    /// with the counts whole.
    #[test]
    fn memos_keep_a_bounded_number_of_findings() {
        let mut cache = Cache::default();
        for point in 0..2_000 {
            cache.remember_point(
                &format!("rsync://x/{point}.mft"),
                failing_point(point, 1_000),
            );
        }
        assert!(
            cache.findings_kept() <= FINDINGS_KEPT,
            "{}",
            cache.findings_kept()
        );
        let memo = cache
            .point("rsync://x/0.mft", &[0; 32], &[1; 32], 0)
            .unwrap();
        assert_eq!(memo.report.findings.len(), FINDINGS_PER_POINT);
        assert_eq!(memo.report.counts[&Check::Signature], 1_000);
        // Replacing, a changed chain and pruning give their findings back.
        cache.remember_point("rsync://x/0.mft", failing_point(0, 1));
        let expected = FINDINGS_KEPT - FINDINGS_PER_POINT + 1;
        assert_eq!(cache.findings_kept(), expected);
        let mut other_chain = failing_point(1, 3);
        other_chain.chain = [2; 32];
        cache.remember_point("rsync://x/1.mft", other_chain);
        assert_eq!(cache.findings_kept(), expected - FINDINGS_PER_POINT + 3);
        cache.prune();
        cache.prune();
        assert_eq!(cache.findings_kept(), 0);
    }
}
