//! What validation keeps of a repository state between rounds, so that a new serial costs
//! what changed, not the whole repository again.
//!
//! - [`Index`]: every object's SHA-256 by URI, and the DER of the few objects the tree walk
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

use super::{Check, Kind, Objects};

pub type Sha = [u8; 32];

pub fn sha(data: &[u8]) -> Sha {
    Sha256::digest(data).into()
}

/// One repository state as validation reads it.
#[derive(Clone, Debug, Default)]
pub struct Index {
    hashes: BTreeMap<String, Sha>,
    kept: HashMap<String, Bytes>,
}

impl Index {
    pub fn from_objects(objects: &Objects) -> Index {
        let mut index = Index::default();
        for (uri, der) in objects {
            index.publish(uri, der.clone());
        }
        index
    }

    /// Whether the tree walk reads an object of this kind each round.
    fn keeps(kind: Kind) -> bool {
        matches!(kind, Kind::Certificate | Kind::Manifest | Kind::Crl)
    }

    /// Adds or replaces the object at `uri`.
    pub fn publish(&mut self, uri: &str, der: Bytes) {
        self.hashes.insert(uri.to_string(), sha(&der));
        if Index::keeps(Kind::of(uri)) {
            self.kept.insert(uri.to_string(), der);
        } else {
            self.kept.remove(uri);
        }
    }

    pub fn withdraw(&mut self, uri: &str) {
        self.hashes.remove(uri);
        self.kept.remove(uri);
    }

    pub fn hash(&self, uri: &str) -> Option<&Sha> {
        self.hashes.get(uri)
    }

    /// The DER of a certificate, manifest or CRL.
    pub fn kept(&self, uri: &str) -> Option<&Bytes> {
        self.kept.get(uri)
    }

    pub fn uris(&self) -> impl Iterator<Item = &String> {
        self.hashes.keys()
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether any object lies under the directory URI `dir`.
    pub fn has_under(&self, dir: &str) -> bool {
        self.hashes
            .range(dir.to_string()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(dir))
    }
}

/// A signed object's EE certificate, as far as the checks that depend on time and the CRL
/// need it.
#[derive(Clone, Debug)]
pub struct Ee {
    pub serial: Serial,
    pub not_before: i64,
    pub not_after: i64,
}

/// What checking a signed object against its issuer found.
#[derive(Clone, Debug)]
pub struct Verified {
    /// `None`: the object did not parse.
    pub ee: Option<Ee>,
    pub outcome: Result<(), (Check, String)>,
}

/// Verification results by (object hash, issuer chain hash).
#[derive(Debug, Default)]
pub struct Cache {
    map: HashMap<(Sha, Sha), Verified>,
    used: HashSet<(Sha, Sha)>,
}

impl Cache {
    pub fn get(&mut self, key: &(Sha, Sha)) -> Option<&Verified> {
        let hit = self.map.get(key);
        if hit.is_some() {
            self.used.insert(*key);
        }
        hit
    }

    pub fn insert(&mut self, key: (Sha, Sha), v: Verified) {
        self.used.insert(key);
        self.map.insert(key, v);
    }

    /// Forgets what the last round did not use: the cache holds one repository state.
    pub fn prune(&mut self) {
        let used = std::mem::take(&mut self.used);
        self.map.retain(|k, _| used.contains(k));
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
