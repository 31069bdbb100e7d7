//! From a repository state's manifests to what a relay serves per FQDN: the ManifestRefs,
//! their partitions and the index. No I/O.
//!
//! - A manifest belongs to the FQDN of its EE certificate's signedObject URI, and to the
//!   partition of the first octet of its authority key identifier: at most 256 partitions
//!   per FQDN, and a CA's manifests always land in the same one.
//! - Inside a partition the ManifestRefs are in the order of their hashes; the index lists
//!   its partitions in the order of that first AKI octet. The draft's text asks for the
//!   partition list sorted by hash, while its own example index (a live relay's) and
//!   APNIC's reference relay order by AKI: we follow the example, byte for byte
//!   (`tests/data/erik/`, the test below).
//! - `partitionTime` is the newest `thisUpdate` of its manifests, `indexTime` the newest
//!   `partitionTime`, as the draft says. (Neither need move when a manifest goes away: the
//!   relay's `Last-Modified` is its own switch time, not these.)
//!
//! [`Relay`] keeps the last build, so a state that changes one manifest re-encodes one
//! partition and its index, not every partition of every FQDN.

use std::collections::{BTreeMap, HashMap};

use bcder::encode::PrimitiveContent;
use bcder::Mode;
use bytes::Bytes;
use rpki::repository::manifest::Manifest;

use super::wire::{Index, ManifestRef, Partition, PartitionRef};
use crate::rrdp::Hash;

/// The relay's objects of one FQDN.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fqdn {
    /// Partition by the first octet of the AKI.
    partitions: BTreeMap<u8, Built>,
    /// The index, DER.
    pub(crate) index: Bytes,
    /// `indexTime`, seconds since the epoch.
    pub(crate) time: i64,
}

/// One partition: its manifests by hash, and its DER.
#[derive(Clone, Debug)]
struct Built {
    /// By hash (the order the partition lists them in), then URI.
    manifests: BTreeMap<(Hash, String), ManifestRef>,
    der: Bytes,
    hash: Hash,
    time: i64,
}

impl Fqdn {
    /// Each partition's hash and DER.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = (&Hash, &Bytes)> {
        self.partitions.values().map(|b| (&b.hash, &b.der))
    }

    /// Every manifest the partitions name: its URI and hash.
    pub(crate) fn manifests(&self) -> impl Iterator<Item = &ManifestRef> {
        self.partitions.values().flat_map(|b| b.manifests.values())
    }
}

/// The relay's objects of every FQDN, built from the current manifests and kept between
/// builds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Relay {
    pub(crate) fqdns: BTreeMap<String, Fqdn>,
    /// What each manifest URI contributed at the last build (FQDN, AKI octet, hash).
    placed: HashMap<String, (String, u8, Hash)>,
}

/// Why a manifest is left out of the relay's objects.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub(crate) uri: String,
    pub(crate) reason: String,
}

/// What one manifest contributes: its FQDN and its ManifestRef.
pub(crate) fn manifest_ref(uri: &str, der: &Bytes) -> Result<(String, ManifestRef), String> {
    let manifest = Manifest::decode(der.clone(), false).map_err(|e| e.to_string())?;
    let cert = manifest.cert();
    let aki = cert
        .authority_key_identifier()
        .ok_or("EE certificate without an authority key identifier")?;
    let signed_object = cert
        .signed_object()
        .ok_or("EE certificate without a signedObject URI")?;
    // The FQDN is the signedObject URI's host: a manifest published elsewhere would put
    // itself into another FQDN's index (another repository's, even).
    // Compared as the rpki crate compares rsync URIs (scheme and host case-insensitive).
    let published: Result<rpki::uri::Rsync, _> = uri.parse();
    if published.as_ref().ok() != Some(signed_object) {
        return Err(format!(
            "its signedObject URI {signed_object} is not where it is published"
        ));
    }
    let fqdn = signed_object.authority().to_ascii_lowercase();
    let content = manifest.content();
    // The serial's INTEGER content octets; `Unsigned` drops the leading zeros.
    let octets = content.manifest_number().to_encoded_bytes(Mode::Der);
    let number = bcder::Unsigned::from_bytes(octets).map_err(|_| "empty manifestNumber")?;
    Ok((
        fqdn,
        ManifestRef {
            hash: Hash::of(der),
            size: der.len() as u64,
            aki: Bytes::copy_from_slice(aki.as_slice()),
            number,
            this_update: content.this_update().timestamp(),
            locations: vec![uri.to_string()],
        },
    ))
}

impl Relay {
    /// Brings the relay to the state whose manifests are `manifests` (URI, SHA-256 and DER
    /// of every `.mft` of the state), re-encoding only the partitions whose manifests
    /// changed. Returns the manifests left out, and why.
    pub(crate) fn update<'a>(
        &mut self,
        manifests: impl IntoIterator<Item = (&'a str, Hash, &'a Bytes)>,
    ) -> Vec<Skipped> {
        let mut skipped = Vec::new();
        let mut now: HashMap<String, (String, u8, Hash, Option<ManifestRef>)> = HashMap::new();
        for (uri, hash, der) in manifests {
            match self.placed.get(uri) {
                Some((fqdn, octet, h)) if *h == hash => {
                    now.insert(uri.to_string(), (fqdn.clone(), *octet, hash, None));
                }
                _ => match manifest_ref(uri, der) {
                    Ok((fqdn, r)) => {
                        let octet = r.aki.first().copied().unwrap_or(0);
                        now.insert(uri.to_string(), (fqdn, octet, hash, Some(r)));
                    }
                    Err(reason) => skipped.push(Skipped {
                        uri: uri.to_string(),
                        reason,
                    }),
                },
            }
        }
        let mut dirty: BTreeMap<(String, u8), ()> = BTreeMap::new();
        // Out: what was placed and is gone or changed.
        for (uri, (fqdn, octet, hash)) in &self.placed {
            if now.get(uri).is_none_or(|n| n.3.is_some()) {
                if let Some(b) = self
                    .fqdns
                    .get_mut(fqdn)
                    .and_then(|f| f.partitions.get_mut(octet))
                {
                    b.manifests.remove(&(*hash, uri.clone()));
                }
                dirty.insert((fqdn.clone(), *octet), ());
            }
        }
        // In: what is new or changed.
        self.placed.clear();
        for (uri, (fqdn, octet, hash, r)) in now {
            if let Some(r) = r {
                let f = self.fqdns.entry(fqdn.clone()).or_default();
                let key = (hash, uri.clone());
                f.partitions
                    .entry(octet)
                    .or_default()
                    .manifests
                    .insert(key, r);
                dirty.insert((fqdn.clone(), octet), ());
            }
            self.placed.insert(uri, (fqdn, octet, hash));
        }
        self.rebuild(dirty.into_keys());
        skipped
    }

    fn rebuild(&mut self, dirty: impl Iterator<Item = (String, u8)>) {
        let mut touched = Vec::new();
        for (fqdn, octet) in dirty {
            let Some(f) = self.fqdns.get_mut(&fqdn) else {
                continue;
            };
            let empty = f
                .partitions
                .get(&octet)
                .is_none_or(|b| b.manifests.is_empty());
            if empty {
                f.partitions.remove(&octet);
            } else if let Some(b) = f.partitions.get_mut(&octet) {
                b.encode();
            }
            if touched.last() != Some(&fqdn) {
                touched.push(fqdn);
            }
        }
        for fqdn in touched {
            let Some(f) = self.fqdns.get_mut(&fqdn) else {
                continue;
            };
            if f.partitions.is_empty() {
                self.fqdns.remove(&fqdn);
                continue;
            }
            f.time = f.partitions.values().map(|b| b.time).max().unwrap_or(0);
            f.index = Bytes::from(
                Index {
                    scope: fqdn.clone(),
                    time: f.time,
                    partitions: f
                        .partitions
                        .values()
                        .map(|b| PartitionRef {
                            hash: b.hash,
                            size: b.der.len() as u64,
                        })
                        .collect(),
                }
                .to_der(),
            );
        }
    }
}

impl Default for Built {
    fn default() -> Self {
        Built {
            manifests: BTreeMap::new(),
            der: Bytes::new(),
            hash: Hash([0; 32]),
            time: 0,
        }
    }
}

impl Built {
    fn encode(&mut self) {
        let partition = Partition {
            time: self
                .manifests
                .values()
                .map(|m| m.this_update)
                .max()
                .unwrap_or(0),
            manifests: self.manifests.values().cloned().collect(),
        };
        self.time = partition.time;
        self.der = Bytes::from(partition.to_der());
        self.hash = Hash::of(&self.der);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::signed::SignedDemo;

    fn as_bytes(objects: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Bytes> {
        objects
            .into_iter()
            .map(|(u, d)| (u, Bytes::from(d)))
            .collect()
    }

    fn manifests(objects: &BTreeMap<String, Bytes>) -> Vec<(&str, Hash, &Bytes)> {
        objects
            .iter()
            .filter(|(u, _)| u.ends_with(".mft"))
            .map(|(u, d)| (u.as_str(), Hash::of(d), d))
            .collect()
    }

    #[test]
    fn the_drafts_partition_is_rebuilt_from_its_own_manifest_refs() {
        // The example partition re-encoded from its decoded refs, in hash order, is the same
        // object: the order inside a partition is the hash order.
        let text =
            include_str!("../../tests/data/erik/AZmwyRKvBFv4DPl2g5IAhM8BbDvVWzZvgBLjORCoXqM.b64");
        use base64::Engine as _;
        let text: String = text.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let example = Partition::from_der(&der).unwrap();
        let mut built = Built::default();
        for m in example.manifests.iter().rev() {
            built
                .manifests
                .insert((m.hash, m.locations[0].clone()), m.clone());
        }
        built.encode();
        assert_eq!(built.der.as_ref(), der.as_slice());
        assert_eq!(built.time, example.time);
    }

    #[test]
    fn the_demo_repository_makes_one_index_and_a_serial_rebuilds_one_partition() {
        let mut demo = SignedDemo::new(std::time::Duration::from_secs(60));
        let objects = as_bytes(demo.objects());
        let mut relay = Relay::default();
        assert_eq!(relay.update(manifests(&objects)), vec![]);
        assert_eq!(relay.fqdns.keys().collect::<Vec<_>>(), vec!["demo.test"]);
        let f = &relay.fqdns["demo.test"];
        let index = Index::from_der(&f.index).unwrap();
        assert_eq!(index.scope, "demo.test");
        assert_eq!(f.manifests().count(), 3, "a TA and two CAs");
        let before: Vec<Hash> = f.partitions().map(|(h, _)| *h).collect();
        assert_eq!(
            index.partitions.iter().map(|p| p.hash).collect::<Vec<_>>(),
            before
        );
        for (hash, der) in f.partitions() {
            assert_eq!(Hash::of(der), *hash);
            for m in Partition::from_der(der).unwrap().manifests {
                assert_eq!(m.locations.len(), 1);
                assert_eq!(
                    Some(&m.hash),
                    objects.get(&m.locations[0]).map(|d| Hash::of(d)).as_ref()
                );
            }
        }

        // The next serial re-signs one CA's manifest: one partition changes.
        demo.advance();
        let objects = as_bytes(demo.objects());
        relay.update(manifests(&objects));
        let f = &relay.fqdns["demo.test"];
        let after: Vec<Hash> = f.partitions().map(|(h, _)| *h).collect();
        let changed = before.iter().filter(|h| !after.contains(h)).count();
        assert_eq!(changed, 1, "{before:?} {after:?}");

        // A state with no manifests leaves nothing to serve.
        relay.update(Vec::new());
        assert!(relay.fqdns.is_empty());
    }

    #[test]
    fn a_manifest_that_does_not_decode_is_skipped_with_its_uri() {
        let mut relay = Relay::default();
        let junk = Bytes::from_static(b"not a manifest");
        let skipped = relay.update(vec![("rsync://x.example/a.mft", Hash::of(&junk), &junk)]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].uri, "rsync://x.example/a.mft");
        assert!(relay.fqdns.is_empty());
    }
}
