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
    /// for all of a repository's signed objects (24 bytes each less).
    pub outcome: Result<(), Box<(Check, String)>>,
}

/// SHA-256 values are uniformly random: their first eight bytes are as good a hash as any,
/// and much cheaper than SipHash over 64 bytes (the cache is probed once per signed object
/// per round).
#[derive(Clone, Copy, Default)]
pub(crate) struct ShaHasher(u64);

impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // The first write of a key is its first 32-byte hash.
        if self.0 == 0 && bytes.len() >= 8 {
            self.0 = u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"));
        } else {
            for b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*b);
            }
        }
    }
}

type ShaMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<ShaHasher>>;

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
    objects: ShaMap<Sha, (Verified, u64)>,
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
            p.objects.retain(|_, (_, used)| *used == round);
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
