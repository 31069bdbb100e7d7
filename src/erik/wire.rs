//! The two objects a relay makes, as DER (draft-ietf-sidrops-rpki-erik-protocol, its ASN.1
//! module): the ErikIndex of one FQDN and the ErikPartitions it lists, each in a ContentInfo
//! (`contentType`, then `[0] EXPLICIT` the object; no OCTET STRING). Encoded and decoded
//! with bcder (NLnet Labs' DER crate, the one the `rpki` crate is built on); no I/O.
//!
//! `version [0] INTEGER DEFAULT 0`: DER leaves a default out, so the encoder never writes
//! it and the decoder refuses it, 0 or not (only version 0 exists).

use bcder::decode::{self, Constructed, DecodeError};
use bcder::encode::{self, PrimitiveContent, Values};
use bcder::{ConstOid, Mode, OctetString, Oid, Tag};
use bytes::Bytes;
use rpki::repository::x509::Time;

use crate::rrdp::Hash;

/// `id-ct-rpkiErikIndex`, 1.2.840.113549.1.9.16.1.55.
const CT_INDEX: ConstOid = Oid(&[42, 134, 72, 134, 247, 13, 1, 9, 16, 1, 55]);
/// `id-ct-rpkiErikPartition`, 1.2.840.113549.1.9.16.1.56.
const CT_PARTITION: ConstOid = Oid(&[42, 134, 72, 134, 247, 13, 1, 9, 16, 1, 56]);
/// `id-sha256`, the one hash algorithm the draft allows.
const SHA256: ConstOid = rpki::oid::SHA256;
/// `id-ad-signedObject`: the access method of every location.
const AD_SIGNED_OBJECT: Oid<&[u8]> = rpki::oid::AD_SIGNED_OBJECT;

/// A partition as the index names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRef {
    pub hash: Hash,
    pub size: u64,
}

/// `ErikIndex`: the partitions of one FQDN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    /// `indexScope`: the FQDN.
    pub scope: String,
    /// `indexTime`, seconds since the epoch.
    pub time: i64,
    pub partitions: Vec<PartitionRef>,
}

/// One manifest as a partition names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestRef {
    pub hash: Hash,
    pub size: u64,
    /// The manifest EE certificate's authority key identifier: its issuer's key.
    pub aki: Bytes,
    /// `manifestNumber` (up to 20 octets, RFC 9286).
    pub number: bcder::Unsigned,
    /// `thisUpdate`, seconds since the epoch.
    pub this_update: i64,
    /// The rsync URIs the manifest is published at.
    pub locations: Vec<String>,
}

/// `ErikPartition`: a group of manifests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// `partitionTime`, seconds since the epoch.
    pub time: i64,
    pub manifests: Vec<ManifestRef>,
}

/// Why bytes are not an index or a partition.
#[derive(Debug, PartialEq, Eq)]
pub struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not an Erik object: {}", self.0)
    }
}

impl std::error::Error for WireError {}

impl<E: std::fmt::Display> From<DecodeError<E>> for WireError {
    fn from(e: DecodeError<E>) -> Self {
        WireError(e.to_string())
    }
}

impl Index {
    pub fn to_der(&self) -> Vec<u8> {
        let partitions = encode::sequence(encode::iter(self.partitions.iter().map(|p| {
            encode::sequence((
                OctetString::encode_slice(p.hash.0.as_slice()),
                p.size.encode(),
            ))
        })));
        let index = encode::sequence((
            OctetString::encode_slice_as(self.scope.as_bytes(), Tag::IA5_STRING),
            time(self.time).encode_generalized_time(),
            encode::sequence(SHA256.encode()),
            partitions,
        ));
        content_info(CT_INDEX, index)
    }

    pub fn from_der(der: &[u8]) -> Result<Index, WireError> {
        one_value(der)?;
        let source = Bytes::copy_from_slice(der);
        Ok(Mode::Der.decode(source, |cons| {
            take_content_info(cons, CT_INDEX, |cons| {
                take_version(cons)?;
                let scope = cons.take_primitive_if(Tag::IA5_STRING, |p| p.take_all())?;
                let scope = ia5(&scope).map_err(|e| cons.content_err(e))?;
                let time = take_generalized_time(cons)?;
                take_hash_alg(cons)?;
                let partitions = take_sequence_of(cons, |cons| {
                    Ok(PartitionRef {
                        hash: take_hash(cons)?,
                        size: cons.take_u64()?,
                    })
                })?;
                Ok(Index {
                    scope,
                    time,
                    partitions,
                })
            })
        })?)
    }
}

impl Partition {
    pub fn to_der(&self) -> Vec<u8> {
        let manifests = encode::sequence(encode::iter(self.manifests.iter().map(|m| {
            encode::sequence((
                OctetString::encode_slice(m.hash.0.as_slice()),
                m.size.encode(),
                OctetString::encode_slice(m.aki.as_ref()),
                (&m.number).encode(),
                time(m.this_update).encode_generalized_time(),
                encode::sequence(encode::iter(m.locations.iter().map(|uri| {
                    encode::sequence((
                        AD_SIGNED_OBJECT.encode(),
                        OctetString::encode_slice_as(uri.as_bytes(), Tag::CTX_6),
                    ))
                }))),
            ))
        })));
        let partition = encode::sequence((
            time(self.time).encode_generalized_time(),
            encode::sequence(SHA256.encode()),
            manifests,
        ));
        content_info(CT_PARTITION, partition)
    }

    pub fn from_der(der: &[u8]) -> Result<Partition, WireError> {
        one_value(der)?;
        let source = Bytes::copy_from_slice(der);
        Ok(Mode::Der.decode(source, |cons| {
            take_content_info(cons, CT_PARTITION, |cons| {
                take_version(cons)?;
                let time = take_generalized_time(cons)?;
                take_hash_alg(cons)?;
                let manifests = take_sequence_of(cons, take_manifest_ref)?;
                Ok(Partition { time, manifests })
            })
        })?)
    }
}

/// Whether `der` is one SEQUENCE and nothing after it (bcder reads the first value and
/// would take a stray octet after it for an end-of-contents marker).
fn one_value(der: &[u8]) -> Result<(), WireError> {
    let short = || WireError("shorter than its length".into());
    let (&tag, rest) = der.split_first().ok_or_else(short)?;
    let (&first, rest) = rest.split_first().ok_or_else(short)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(WireError("bad length".into()));
        }
        let len = rest[..n].iter().fold(0usize, |l, b| (l << 8) | *b as usize);
        (len, &rest[n..])
    };
    match (tag, rest.len().cmp(&len)) {
        (0x30, std::cmp::Ordering::Equal) => Ok(()),
        (0x30, std::cmp::Ordering::Less) => Err(short()),
        (0x30, std::cmp::Ordering::Greater) => Err(WireError("data after the object".into())),
        _ => Err(WireError("not a SEQUENCE".into())),
    }
}

fn take_manifest_ref<S: decode::Source>(
    cons: &mut Constructed<S>,
) -> Result<ManifestRef, DecodeError<S::Error>> {
    let hash = take_hash(cons)?;
    let size = cons.take_u64()?;
    let aki = OctetString::take_from(cons)?.into_bytes();
    let number = bcder::Unsigned::take_from(cons)?;
    let this_update = take_generalized_time(cons)?;
    let locations = take_sequence_of(cons, |cons| {
        AD_SIGNED_OBJECT.skip_if(cons)?;
        let uri = cons.take_primitive_if(Tag::CTX_6, |p| p.take_all())?;
        ia5(&uri).map_err(|e| cons.content_err(e))
    })?;
    Ok(ManifestRef {
        hash,
        size,
        aki,
        number,
        this_update,
        locations,
    })
}

/// `SEQUENCE OF SEQUENCE { … }`, each element read by `each`.
fn take_sequence_of<S: decode::Source, T>(
    cons: &mut Constructed<S>,
    mut each: impl FnMut(&mut Constructed<S>) -> Result<T, DecodeError<S::Error>>,
) -> Result<Vec<T>, DecodeError<S::Error>> {
    cons.take_sequence(|cons| {
        let mut list = Vec::new();
        while let Some(item) = cons.take_opt_sequence(&mut each)? {
            list.push(item);
        }
        Ok(list)
    })
}

/// `SEQUENCE { contentType, [0] EXPLICIT inner }`.
fn content_info<V: Values>(content_type: ConstOid, inner: V) -> Vec<u8> {
    let values = encode::sequence((
        content_type.encode(),
        encode::Constructed::new(Tag::CTX_0, inner),
    ));
    let mut out = Vec::with_capacity(values.encoded_len(Mode::Der));
    values
        .write_encoded(Mode::Der, &mut out)
        .expect("writing to a Vec");
    out
}

fn take_content_info<S: decode::Source, T>(
    cons: &mut Constructed<S>,
    content_type: ConstOid,
    op: impl FnOnce(&mut Constructed<S>) -> Result<T, DecodeError<S::Error>>,
) -> Result<T, DecodeError<S::Error>> {
    cons.take_sequence(|cons| {
        content_type.skip_if(cons)?;
        cons.take_constructed_if(Tag::CTX_0, |cons| cons.take_sequence(op))
    })
}

fn take_version<S: decode::Source>(cons: &mut Constructed<S>) -> Result<(), DecodeError<S::Error>> {
    match cons.take_opt_constructed_if(Tag::CTX_0, |c| c.take_u64())? {
        None => Ok(()),
        Some(v) => Err(cons.content_err(format!(
            "version {v} written out (DER leaves out the default, 0)"
        ))),
    }
}

fn take_hash_alg<S: decode::Source>(
    cons: &mut Constructed<S>,
) -> Result<(), DecodeError<S::Error>> {
    cons.take_sequence(|cons| {
        SHA256.skip_if(cons)?;
        // `parameters` absent, or NULL as some encoders write it.
        cons.take_opt_null()?;
        Ok(())
    })
}

fn take_hash<S: decode::Source>(cons: &mut Constructed<S>) -> Result<Hash, DecodeError<S::Error>> {
    let bytes = OctetString::take_from(cons)?.into_bytes();
    <[u8; 32]>::try_from(bytes.as_ref())
        .map(Hash)
        .map_err(|_| cons.content_err("a SHA-256 hash is 32 octets"))
}

/// `GeneralizedTime` as DER has it: `YYYYMMDDHHMMSSZ`, nothing else.
fn take_generalized_time<S: decode::Source>(
    cons: &mut Constructed<S>,
) -> Result<i64, DecodeError<S::Error>> {
    let raw = cons.take_primitive_if(Tag::GENERALIZED_TIME, |p| p.take_all())?;
    parse_time(&raw).ok_or_else(|| cons.content_err("malformed GeneralizedTime"))
}

fn parse_time(raw: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(raw).ok()?;
    if text.len() != 15 || !text.ends_with('Z') || !text[..14].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(&text[..14], "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

fn time(unix: i64) -> Time {
    Time::new(chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default())
}

fn ia5(bytes: &[u8]) -> Result<String, &'static str> {
    if bytes.is_ascii() {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    } else {
        Err("IA5String with a non-ASCII octet")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(name: &str) -> Option<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/erik")
            .join(name);
        let text = std::fs::read_to_string(path).ok()?;
        let text: String = text.split_whitespace().collect();
        use base64::Engine as _;
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
    }

    #[test]
    fn the_drafts_index_decodes_and_encodes_to_the_same_bytes() {
        let der = lab("rpki.ripe.net.b64").expect("tests/data/erik");
        let index = Index::from_der(&der).unwrap();
        assert_eq!(index.scope, "rpki.ripe.net");
        assert_eq!(index.time, 1767914454); // 2026-01-08 23:20:54 UTC
        assert_eq!(index.partitions.len(), 256);
        assert_eq!(index.to_der(), der);
    }

    #[test]
    fn the_drafts_partition_decodes_encodes_the_same_and_is_named_by_its_hash() {
        let name = "AZmwyRKvBFv4DPl2g5IAhM8BbDvVWzZvgBLjORCoXqM";
        let der = lab(&format!("{name}.b64")).expect("tests/data/erik");
        let partition = Partition::from_der(&der).unwrap();
        assert!(!partition.manifests.is_empty());
        let first = &partition.manifests[0];
        assert_eq!(first.aki.len(), 20);
        assert!(first.locations[0].starts_with("rsync://"), "{first:?}");
        assert!(partition.manifests.iter().all(|m| m.aki[0] == first.aki[0]));
        assert_eq!(partition.to_der(), der);
        use base64::Engine as _;
        let hash = Hash::of(&der);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.0),
            name
        );
    }

    #[test]
    fn a_partition_round_trips_and_numbers_keep_their_value() {
        let p = Partition {
            time: 1_700_000_000,
            manifests: vec![ManifestRef {
                hash: Hash([7; 32]),
                size: 1800,
                aki: Bytes::from_static(&[0x80; 20]),
                number: bcder::Unsigned::from_slice(&[0x80, 0x01]).unwrap(),
                this_update: 1_699_999_000,
                locations: vec!["rsync://a.example/repo/x.mft".into()],
            }],
        };
        let der = p.to_der();
        assert_eq!(Partition::from_der(&der).unwrap(), p);
        assert!(Index::from_der(&der).is_err(), "not an index");
    }

    #[test]
    fn what_is_not_an_erik_object_is_refused() {
        let index = Index {
            scope: "a.example".into(),
            time: 0,
            partitions: vec![PartitionRef {
                hash: Hash([1; 32]),
                size: 10,
            }],
        };
        let der = index.to_der();
        assert_eq!(Index::from_der(&der).unwrap(), index);
        for cut in [1, der.len() / 2, der.len() - 1] {
            assert!(Index::from_der(&der[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(Index::from_der(&trailing).is_err());
        assert!(Partition::from_der(&der).is_err(), "not a partition");
        assert!(Index::from_der(b"").is_err());
    }
}
