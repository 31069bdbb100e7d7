//! The checks, as a Relying Party makes them, over one repository state.
//!
//! From each trust anchor, top-down: the TA certificate against its TAL; for each CA, its
//! manifest (signature, EE certificate, currency), every file the manifest lists (published,
//! with the listed SHA-256), the publication point's CRL (on the manifest, current, signed by
//! the CA), and each listed object: CA certificates (then their own publication points),
//! router certificates, ROAs, ASPAs and other signed objects (signature, EE certificate
//! chain and resources, not revoked, a ROA's prefixes and an ASPA's customer covered).
//!
//! Publication points no trust anchor reaches — there is no TAL, or the CA's certificate sits
//! in another repository (a delegated CA under an RIR) — get the checks that need no anchor:
//! manifest currency and hashes, the CRL, revocation, certificate validity, and signatures
//! of certificates and CRLs where the issuing CA certificate is in this repository. (A signed
//! object's CMS signature is verified by the `rpki` crate only on a validated chain.)
//!
//! Objects outside this repository are out of scope: a CA whose publication point has
//! nothing here is not followed, and fails nothing. Files no manifest lists are ignored, as
//! RPs ignore them. Everything is bounded: each manifest is visited once, chains are at most
//! [`MAX_DEPTH`] deep, and the work is linear in the objects.
//!
//! Incremental: a publication point whose manifest, issuer chain and directory did not change
//! since the last round, and for which no time a check depends on has come (a nextUpdate, a
//! certificate's end, one entering the expiry window), replays its last findings. The others
//! are checked from the [`ObjectIndex`] (certificates, manifests, CRLs), their signed objects through
//! the [`Cache`]: the DER of a signed object is asked for only when it has no result.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use rpki::crypto::KeyIdentifier;
use rpki::repository::crl::Crl;
use rpki::repository::manifest::ManifestContent;
use rpki::repository::sigobj::SignedObject;
use rpki::repository::x509::{Time, Validity};
use rpki::repository::{Aspa, Cert, Manifest, ResourceCert, Roa};

use super::index::{sha, Cache, Ee, ObjectIndex, PointMemo, Sha, Verified};
use super::pipeline;
use super::{Anchor, Check, Finding, Health, ObjectKind, Objects, Report};

/// RPs validate leniently by default (Routinator's `strict = false`): so do we, so that what
/// is refused here is what they reject.
const STRICT: bool = false;

/// The longest CA chain followed below a trust anchor.
pub(crate) const MAX_DEPTH: usize = 32;

/// Validates `objects` at `now` (seconds since the epoch), from scratch; certificates
/// expiring within `expiry_window` seconds are counted in the health.
pub fn validate(objects: &Objects, anchors: &[Anchor], now: i64, expiry_window: i64) -> Report {
    let index = ObjectIndex::from_objects(objects);
    let mut cache = Cache::default();
    let mut fetch = |wanted: &Wanted<'_>, give: &mut dyn FnMut(&str, Bytes) -> bool| {
        for &uri in wanted.keys() {
            if let Some(der) = objects.get(uri) {
                give(uri, der.clone());
            }
        }
    };
    validate_with(&index, &mut cache, &mut fetch, anchors, now, expiry_window)
}

/// Hands the DER of the signed objects asked for (by URI) to the callback, one at a time, in
/// any order (a snapshot is read once, never held). The callback says whether it took the
/// object: `false` for one not wanted or already handed over.
pub(crate) type Fetch<'a> = dyn FnMut(&Wanted<'_>, &mut dyn FnMut(&str, Bytes) -> bool) + 'a;

/// The signed objects a round has no cached result for: URI (borrowed from the index, not
/// copied: a first validation wants every signed object of the repository) → the
/// publication point that lists it, and whether the object was handed over.
pub(crate) type Wanted<'a> = BTreeMap<&'a str, Want>;

/// A wanted signed object: the point that lists it, and whether `fetch` has handed it over
/// (marked in place, through the shared map, so that no second set of a round's URIs is
/// made: a first validation wants some 43,000; docs/benchmarks.md).
#[derive(Debug)]
pub(crate) struct Want {
    point: u32,
    taken: std::cell::Cell<bool>,
}

impl Want {
    fn new(point: usize) -> Want {
        Want {
            point: u32::try_from(point).expect("fewer than 2^32 publication points"),
            taken: std::cell::Cell::new(false),
        }
    }

    fn point(&self) -> usize {
        self.point as usize
    }

    /// Not handed over yet.
    pub(crate) fn is_open(&self) -> bool {
        !self.taken.get()
    }
}

/// Validates the state `index` describes, with the verification results in `cache` (kept up
/// to date for the next round); the DER of signed objects the cache has no result for comes
/// from `fetch`, in one call.
pub(crate) fn validate_with(
    index: &ObjectIndex,
    cache: &mut Cache,
    fetch: &mut Fetch<'_>,
    anchors: &[Anchor],
    now: i64,
    expiry_window: i64,
) -> Report {
    let mut v = Validator {
        index,
        cache,
        now,
        time: time_at(now),
        report: Report {
            health: Health::new(expiry_window),
            ..Report::default()
        },
        done: HashSet::new(),
        points: Arc::new(Vec::new()),
        wanted: BTreeMap::new(),
        window: expiry_window,
        until: i64::MAX,
    };
    for uri in index.uris() {
        v.report.health.count(ObjectKind::of(uri));
    }
    for a in anchors {
        v.anchor(a);
    }
    v.report.points_from_anchor = v.done.len() as u64;
    v.unanchored();
    v.fetched(fetch);
    v.cache.prune();
    let mut report = v.report;
    report.points = v.done.len() as u64;
    report
        .findings
        .sort_by(|a, b| (&a.uri, a.check).cmp(&(&b.uri, b.check)));
    report.findings.dedup();
    report
}

fn time_at(secs: i64) -> Time {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    Time::from(t)
}

/// Who issued the objects of a publication point.
#[derive(Clone, Copy)]
enum Issuer<'c> {
    /// A CA certificate validated from a trust anchor: everything can be checked.
    Anchored(&'c ResourceCert),
    /// No anchor reaches this point: the CA certificate, if it is in this repository.
    Local(Option<&'c Cert>),
}

impl Issuer<'_> {
    fn cert(&self) -> Option<&Cert> {
        match self {
            Issuer::Anchored(ca) => Some(ca.as_cert()),
            Issuer::Local(c) => *c,
        }
    }

    fn owned(&self) -> OwnedIssuer {
        match self {
            Issuer::Anchored(ca) => OwnedIssuer::Anchored(Box::new((*ca).clone())),
            Issuer::Local(c) => OwnedIssuer::Local(c.map(|c| Box::new(c.clone()))),
        }
    }
}

enum OwnedIssuer {
    Anchored(Box<ResourceCert>),
    Local(Option<Box<Cert>>),
}

impl OwnedIssuer {
    fn borrow(&self) -> Issuer<'_> {
        match self {
            OwnedIssuer::Anchored(ca) => Issuer::Anchored(ca),
            OwnedIssuer::Local(c) => Issuer::Local(c.as_deref()),
        }
    }
}

/// What the signed objects of a publication point are checked against.
struct PointContext {
    /// The point's manifest URI: its results are cached under it.
    mft: String,
    issuer: OwnedIssuer,
    /// The hash of the issuer's chain: a cached result holds while it is the same.
    chain: Sha,
    crl: Option<Crl>,
}

/// A publication point that passed far enough to check its objects.
struct Point {
    /// The listed files that are published (not the CRL).
    listed: Vec<String>,
    crl: Option<Crl>,
}

struct Validator<'a> {
    index: &'a ObjectIndex,
    cache: &'a mut Cache,
    now: i64,
    time: Time,
    report: Report,
    /// The manifests visited, by URI.
    done: HashSet<String>,
    /// Shared with the threads verifying signed objects (`fetched`); grown only before.
    points: Arc<Vec<PointContext>>,
    /// Signed objects without a cached result: URI → point.
    wanted: Wanted<'a>,
    /// `expiry_window`, in seconds.
    window: i64,
    /// The earliest time after `now` at which a check of the point being made would come out
    /// otherwise (a nextUpdate, a certificate's end, one entering the expiry window).
    until: i64,
}

/// A CA certificate validated in a publication point, its URI and chain hash: where the walk
/// goes next.
pub(crate) type Child = (String, ResourceCert, Sha);

impl<'a> Validator<'a> {
    fn finding(&mut self, uri: &str, check: Check, detail: impl Into<String>) {
        self.report.add(Finding {
            uri: uri.to_string(),
            check,
            detail: detail.into(),
        });
    }

    /// A trust anchor: its certificate against the TAL, then everything below it.
    fn anchor(&mut self, a: &Anchor) {
        let tal = a.tal.path.display().to_string();
        // The certificate fetched (or kept from an earlier fetch) first, then any copy the
        // repository publishes at one of the TAL's URIs: the first that would anchor the
        // walk now is used; when none would, the first one's findings say why.
        let mut candidates = Vec::new();
        if let Some(der) = &a.cert {
            let uri = a.tal.uris().into_iter().next().unwrap_or_default();
            candidates.push((uri, der.clone()));
        }
        candidates.extend(self.published_anchors(a));
        let usable = candidates
            .iter()
            .position(|(_, der)| self.would_anchor(der, a))
            .unwrap_or(0);
        let Some((uri, der)) = candidates.into_iter().nth(usable) else {
            self.finding(
                &tal,
                Check::TrustAnchor,
                format!(
                    "no trust anchor certificate could be fetched from, or found in this \
                     repository at, {}",
                    a.tal.uris().join(", ")
                ),
            );
            return;
        };
        let chain = sha(&der);
        let cert = match Cert::decode(der) {
            Ok(c) => c,
            Err(e) => {
                self.finding(&uri, Check::TrustAnchor, format!("not a certificate: {e}"));
                return;
            }
        };
        if cert.subject_public_key_info() != a.tal.tal.key_info() {
            self.finding(
                &uri,
                Check::TrustAnchor,
                format!("its public key is not the one in {tal}"),
            );
            return;
        }
        if !self.current(&uri, &cert) {
            return;
        }
        match cert.validate_ta_at(a.tal.tal.info().clone(), STRICT, self.time) {
            Ok(ta) => self.walk(&ta, &uri, chain, 0),
            Err(e) => self.finding(&uri, Check::TrustAnchor, e.to_string()),
        }
    }

    /// The trust anchor certificates the repository itself publishes, at the TAL's rsync
    /// URIs (as ARIN's and APNIC's do): then no fetch is needed. A copy is trusted only if it
    /// carries the TAL's key, which [`Self::anchor`] checks.
    fn published_anchors(&self, a: &Anchor) -> Vec<(String, Bytes)> {
        a.tal
            .uris()
            .into_iter()
            .filter_map(|uri| {
                let der = self.index.kept(&uri)?.clone();
                Some((uri, der))
            })
            .collect()
    }

    /// Whether `der` would anchor the walk now: a certificate with the TAL's key, current,
    /// and valid as a trust anchor (self-signed). Records nothing.
    fn would_anchor(&self, der: &Bytes, a: &Anchor) -> bool {
        let Ok(cert) = Cert::decode(der.clone()) else {
            return false;
        };
        let v = cert.validity();
        cert.subject_public_key_info() == a.tal.tal.key_info()
            && v.not_before().timestamp() <= self.now
            && self.now <= v.not_after().timestamp()
            && cert
                .validate_ta_at(a.tal.tal.info().clone(), STRICT, self.time)
                .is_ok()
    }

    /// A validated CA: its publication point, then the CAs below it.
    fn walk(&mut self, ca: &ResourceCert, ca_uri: &str, chain: Sha, depth: usize) {
        let Some(mft_uri) = ca.rpki_manifest().map(|u| u.to_string()) else {
            self.finding(
                ca_uri,
                Check::Manifest,
                "the CA certificate names no manifest",
            );
            return;
        };
        if depth > MAX_DEPTH || !self.done.insert(mft_uri.clone()) {
            return;
        }
        if self.index.kept(&mft_uri).is_none() {
            // In scope only if the CA publishes anything here.
            let dir = ca.ca_repository().map(|u| u.to_string());
            if dir.is_some_and(|d| self.index.has_under(&d)) {
                self.report.health.missing_manifests += 1;
                self.finding(
                    &mft_uri,
                    Check::ManifestMissing,
                    format!("the manifest that {ca_uri} names is not published"),
                );
            }
            return;
        }
        for (uri, child, chain) in self.point_memoized(&mft_uri, Issuer::Anchored(ca), chain) {
            self.walk(&child, &uri, chain, depth + 1);
        }
    }

    /// A publication point's checks: replayed from the last round when nothing they depend
    /// on changed (the manifest, the issuer's chain, any file in the point's directory) and
    /// no time they depend on has come; else made, and remembered if every signed object had
    /// a cached result. Returns the validated CA certificates to walk into.
    fn point_memoized(&mut self, mft_uri: &str, issuer: Issuer<'_>, chain: Sha) -> Vec<Child> {
        let mft_hash = *self
            .index
            .hash(mft_uri)
            .expect("a kept manifest is indexed");
        let dir = &mft_uri[..mft_uri.rfind('/').map_or(0, |i| i + 1)];
        if !self.index.is_dirty(dir) {
            if let Some(m) = self.cache.point(mft_uri, &mft_hash, &chain, self.now) {
                self.report.merge(&m.report);
                self.report.points_replayed += 1;
                return m.children.clone();
            }
        }
        let fresh = Report {
            health: Health::new(self.window),
            ..Report::default()
        };
        let outer = std::mem::replace(&mut self.report, fresh);
        let outer_until = std::mem::replace(&mut self.until, i64::MAX);
        let wanted_before = self.wanted.len();
        let children = self.point_objects(mft_uri, issuer, chain);
        let sub = std::mem::replace(&mut self.report, outer);
        let until = std::mem::replace(&mut self.until, outer_until);
        self.until = self.until.min(until);
        self.report.merge(&sub);
        if self.wanted.len() == wanted_before {
            self.cache.remember_point(
                mft_uri,
                PointMemo {
                    mft_hash,
                    chain,
                    until,
                    report: sub,
                    children: children.clone(),
                },
            );
        }
        children
    }

    /// The manifest, CRL and listed objects of one publication point.
    fn point_objects(&mut self, mft_uri: &str, issuer: Issuer<'_>, chain: Sha) -> Vec<Child> {
        let Some(point) = self.point(mft_uri, issuer) else {
            return Vec::new();
        };
        let p = self.context(mft_uri, issuer, chain, point.crl);
        let mut children = Vec::new();
        for uri in &point.listed {
            match ObjectKind::of(uri) {
                ObjectKind::Certificate => {
                    let Some(der) = self.index.kept(uri).cloned() else {
                        continue;
                    };
                    if let Some(child) = self.certificate(uri, &der, p) {
                        let chain = sha(&[chain, sha(&der)].concat());
                        children.push((uri.clone(), child, chain));
                    }
                }
                ObjectKind::Roa | ObjectKind::Aspa | ObjectKind::Signed => self.signed(uri, p),
                ObjectKind::Crl | ObjectKind::Manifest | ObjectKind::Other => {}
            }
        }
        children
    }

    fn context(&mut self, mft: &str, issuer: Issuer<'_>, chain: Sha, crl: Option<Crl>) -> usize {
        let points = Arc::get_mut(&mut self.points)
            .expect("points are shared only while signed objects are verified, after the walk");
        points.push(PointContext {
            mft: mft.to_string(),
            issuer: issuer.owned(),
            chain,
            crl,
        });
        points.len() - 1
    }

    /// The manifests no anchor reached, each with the issuing CA certificate if it is here.
    fn unanchored(&mut self) {
        let mut cas: HashMap<KeyIdentifier, (Sha, Cert)> = HashMap::new();
        let mut manifests = Vec::new();
        for uri in self.index.uris() {
            match ObjectKind::of(uri) {
                ObjectKind::Certificate => {
                    let der = self.index.kept(uri).expect("certificates are kept");
                    if let Ok(c) = Cert::decode(der.clone()) {
                        if c.is_ca() {
                            cas.insert(c.subject_key_identifier(), (sha(der), c));
                        }
                    }
                }
                ObjectKind::Manifest if !self.done.contains(uri) => manifests.push(uri.clone()),
                _ => {}
            }
        }
        for mft_uri in manifests {
            self.done.insert(mft_uri.clone());
            let der = self.index.kept(&mft_uri).expect("manifests are kept");
            let aki = Manifest::decode(der.clone(), STRICT)
                .ok()
                .and_then(|m| m.cert().authority_key_identifier());
            let ca = aki.and_then(|k| cas.get(&k));
            let issuer = Issuer::Local(ca.map(|(_, c)| c));
            let chain = sha(&[b"local".as_slice(), ca.map_or(&[0u8; 32], |(h, _)| h)].concat());
            // Local issuers validate no CA certificate to walk into.
            self.point_memoized(&mft_uri, issuer, chain);
        }
    }

    /// A publication point's manifest, the files it lists, and its CRL.
    fn point(&mut self, mft_uri: &str, issuer: Issuer<'_>) -> Option<Point> {
        let der = self
            .index
            .kept(mft_uri)
            .expect("manifests are kept")
            .clone();
        let mft = match Manifest::decode(der, STRICT) {
            Ok(m) => m,
            Err(e) => {
                self.finding(mft_uri, Check::Parse, format!("not a manifest: {e}"));
                return None;
            }
        };
        let ee = mft.cert().clone();
        let content = mft.content().clone();
        let (this_update, next_update) = (
            content.this_update().timestamp(),
            content.next_update().timestamp(),
        );
        self.report.health.manifest(mft_uri, next_update);
        self.changes_at(this_update);
        self.changes_at(next_update);
        if this_update > self.now || next_update <= self.now {
            self.report.health.stale_manifests += 1;
            self.finding(
                mft_uri,
                Check::Manifest,
                format!(
                    "not current: thisUpdate {}, nextUpdate {}",
                    content.this_update().to_rfc3339(),
                    content.next_update().to_rfc3339()
                ),
            );
        }
        if self.current(mft_uri, &ee) {
            let verified = match issuer {
                Issuer::Anchored(ca) => mft
                    .validate_at(ca, STRICT, self.time)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Issuer::Local(Some(ca)) => {
                    ee.verify_signature(ca, STRICT).map_err(|e| e.to_string())
                }
                Issuer::Local(None) => Ok(()),
            };
            if let Err(e) = verified {
                self.finding(mft_uri, Check::Signature, e);
            }
        }
        let (listed, crls) = self.listed(mft_uri, &content);
        let crl = self.crl(mft_uri, &ee, &crls, issuer);
        if crl.as_ref().is_some_and(|c| c.contains(ee.serial_number())) {
            self.finding(mft_uri, Check::Revoked, "its EE certificate is on the CRL");
        }
        Some(Point { listed, crl })
    }

    /// The files a manifest lists, checked against what is published: (the files, its CRLs).
    fn listed(&mut self, mft_uri: &str, content: &ManifestContent) -> (Vec<String>, Vec<String>) {
        let dir = &mft_uri[..mft_uri.rfind('/').map_or(0, |i| i + 1)];
        let mut listed = Vec::new();
        let mut crls = Vec::new();
        for entry in content.iter() {
            let uri = format!("{dir}{}", String::from_utf8_lossy(entry.file()));
            let Some(hash) = self.index.hash(&uri) else {
                self.finding(
                    &uri,
                    Check::ManifestMissing,
                    format!("listed on {mft_uri}, not published"),
                );
                continue;
            };
            if hash.as_slice() != entry.hash().as_ref() {
                let detail = format!(
                    "SHA-256 {} is not {} that {mft_uri} lists",
                    hex::encode(hash),
                    hex::encode(entry.hash())
                );
                self.finding(&uri, Check::ManifestHash, detail);
                // Checked on all the same: what else is wrong with it helps the operator.
            }
            if ObjectKind::of(&uri) == ObjectKind::Crl {
                crls.push(uri);
            } else {
                listed.push(uri);
            }
        }
        (listed, crls)
    }

    /// The publication point's CRL: the one the manifest's EE certificate names, listed on
    /// the manifest (as RFC 9286 asks), current, signed by the CA.
    fn crl(&mut self, mft_uri: &str, ee: &Cert, crls: &[String], issuer: Issuer) -> Option<Crl> {
        let named = ee.crl_uri().map(|u| u.to_string());
        let Some(uri) = named.filter(|n| crls.contains(n)).or(crls.first().cloned()) else {
            self.finding(mft_uri, Check::Crl, "the manifest lists no usable CRL");
            return None;
        };
        if crls.len() > 1 {
            self.finding(
                mft_uri,
                Check::Crl,
                format!("the manifest lists {} CRLs, not one", crls.len()),
            );
        }
        let der = self.index.kept(&uri).expect("CRLs are kept").clone();
        let mut crl = match Crl::decode(der) {
            Ok(c) => c,
            Err(e) => {
                self.finding(&uri, Check::Parse, format!("not a CRL: {e}"));
                return None;
            }
        };
        if let Some(ca) = issuer.cert() {
            if let Err(e) = crl.verify_signature(ca.subject_public_key_info()) {
                self.finding(&uri, Check::Crl, format!("not signed by its CA: {e}"));
            }
        }
        let next_update = crl.next_update().timestamp();
        self.report.health.crl(&uri, next_update);
        self.changes_at(next_update);
        if next_update <= self.now {
            self.finding(&uri, Check::Crl, "not current: its nextUpdate has passed");
        }
        crl.cache_serials();
        Some(crl)
    }

    /// Whether a certificate is valid now (and its expiry noted in the health, unless it is
    /// a manifest's, which lives as long as its manifest by design).
    fn current(&mut self, uri: &str, cert: &Cert) -> bool {
        let v: Validity = cert.validity();
        self.valid_between(uri, v.not_before().timestamp(), v.not_after().timestamp())
    }

    /// Notes a time at which some check would come out otherwise.
    fn changes_at(&mut self, t: i64) {
        if t > self.now {
            self.until = self.until.min(t);
        }
    }

    fn valid_between(&mut self, uri: &str, not_before: i64, not_after: i64) -> bool {
        self.changes_at(not_before);
        self.changes_at(not_after.saturating_add(1));
        if ObjectKind::of(uri) != ObjectKind::Manifest {
            self.report.health.certificate(uri, not_after, self.now);
            self.changes_at(not_after.saturating_sub(self.window));
        }
        if not_before <= self.now && self.now <= not_after {
            return true;
        }
        let at = |t: i64| time_at(t).to_rfc3339();
        let detail = format!(
            "certificate valid from {} to {}",
            at(not_before),
            at(not_after)
        );
        self.finding(uri, Check::Expired, detail);
        false
    }

    fn revoked(&mut self, uri: &str, serial: rpki::repository::x509::Serial, p: usize) -> bool {
        let revoked = self.points[p]
            .crl
            .as_ref()
            .is_some_and(|c| c.contains(serial));
        if revoked {
            self.finding(
                uri,
                Check::Revoked,
                format!("serial {serial} is on its issuer's CRL"),
            );
        }
        revoked
    }

    /// A listed certificate: a CA certificate (returned validated, to be walked, when the
    /// issuer is anchored) or a router certificate.
    fn certificate(&mut self, uri: &str, der: &Bytes, p: usize) -> Option<ResourceCert> {
        let cert = match Cert::decode(der.clone()) {
            Ok(c) => c,
            Err(e) => {
                self.finding(uri, Check::Parse, format!("not a certificate: {e}"));
                return None;
            }
        };
        let current = self.current(uri, &cert);
        if self.revoked(uri, cert.serial_number(), p) || !current {
            return None;
        }
        let result = match self.points[p].issuer.borrow() {
            Issuer::Anchored(ca) if cert.is_ca() => {
                return match cert.validate_ca_at(ca, STRICT, self.time) {
                    Ok(child) => Some(child),
                    Err(e) => {
                        self.finding(uri, Check::Signature, e.to_string());
                        None
                    }
                };
            }
            Issuer::Anchored(ca) => cert
                .validate_router_at(ca, STRICT, self.time)
                .map_err(|e| e.to_string()),
            Issuer::Local(Some(ca)) => cert.verify_signature(ca, STRICT).map_err(|e| e.to_string()),
            Issuer::Local(None) => Ok(()),
        };
        if let Err(e) = result {
            self.finding(uri, Check::Signature, e);
        }
        None
    }

    /// A listed ROA, ASPA or other signed object: its cached result, or wanted.
    fn signed(&mut self, uri: &str, p: usize) {
        let index: &'a ObjectIndex = self.index;
        let Some((listed, hash)) = index.entry(uri) else {
            return;
        };
        let (hash, point) = (*hash, &self.points[p]);
        match self.cache.get(&point.mft, &point.chain, &hash).cloned() {
            Some(v) => self.apply(uri, &v, p),
            None => {
                self.wanted.insert(listed, Want::new(p));
            }
        }
    }

    /// Checks the wanted signed objects as `fetch` hands them over. Beyond a batch of them
    /// (the first round of a repository, not a serial's few new objects), threads beside
    /// this one verify while it reads on (`pipeline`), one per core, at a lower priority so
    /// that serving (`warn` validates after publishing, as RPs fetch) comes first. Verifying
    /// needs only the points and the time, which nothing changes meanwhile; results are
    /// applied in the order read.
    fn fetched(&mut self, fetch: &mut Fetch<'_>) {
        if self.wanted.is_empty() {
            return;
        }
        let wanted = std::mem::take(&mut self.wanted);
        // Room in each point's results for what it may keep, made once.
        let mut per_point = vec![0usize; self.points.len()];
        for w in wanted.values() {
            per_point[w.point()] += 1;
        }
        for (point, &n) in self.points.iter().zip(&per_point).filter(|(_, &n)| n > 0) {
            self.cache.expect(&point.mft, &point.chain, n);
        }
        let workers = if wanted.len() <= pipeline::BATCH_OBJECTS {
            0
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        let (points, time) = (Arc::clone(&self.points), self.time);
        let read = |give: &mut dyn FnMut((String, Bytes, usize), usize)| {
            fetch(&wanted, &mut |uri, der| {
                let Some((&uri, want)) = wanted.get_key_value(uri) else {
                    return false;
                };
                // Once: a snapshot may publish a URI twice.
                if want.taken.replace(true) {
                    return false;
                }
                let size = der.len();
                give((uri.to_string(), der, want.point()), size);
                true
            });
        };
        // The DER is dropped where it is verified.
        let verify_one = |(uri, der, p): (String, Bytes, usize)| {
            let v = verify(&points, time, &uri, &der, p);
            (uri, p, v)
        };
        pipeline::verify_in_order(workers, read, verify_one, &mut |(uri, p, v)| {
            self.verified(&uri, p, v);
        });
        for (uri, _) in wanted.iter().filter(|(_, w)| w.is_open()) {
            self.finding(uri, Check::Parse, "could not be read from the snapshot");
        }
    }

    /// Caches and reports a signed object just verified.
    fn verified(&mut self, uri: &str, p: usize, v: Verified) {
        // A result found at a time the EE certificate was not valid says nothing about
        // later rounds: only a valid one is kept. Under the object's hash, which the index
        // holds (it is what `signed` looked the object up by, and `fetch` hands over only
        // bytes with that hash).
        let valid =
            v.ee.as_ref()
                .is_some_and(|e| e.not_before <= self.now && self.now <= e.not_after);
        if let (true, Some(&hash)) = (valid, self.index.hash(uri)) {
            let point = &self.points[p];
            self.cache.insert(&point.mft, &point.chain, hash, v.clone());
        }
        self.apply(uri, &v, p);
    }

    /// Reports a signed object's result, with validity and revocation checked now.
    fn apply(&mut self, uri: &str, v: &Verified, p: usize) {
        let Some(ee) = &v.ee else {
            if let Err(e) = &v.outcome {
                let (check, detail) = &**e;
                self.finding(uri, *check, detail.clone());
            }
            return;
        };
        let current = self.valid_between(uri, ee.not_before, ee.not_after);
        if self.revoked(uri, ee.serial, p) || !current {
            return;
        }
        if let Err(e) = &v.outcome {
            let (check, detail) = &**e;
            self.finding(uri, *check, detail.clone());
        }
    }
}

/// Parses a signed object and verifies it against its point's issuer (not time, not the CRL).
fn verify(points: &[PointContext], time: Time, uri: &str, der: &Bytes, p: usize) -> Verified {
    let parse_error = |detail: String| Verified {
        ee: None,
        outcome: Err(Box::new((Check::Parse, detail))),
    };
    let object = match SignedObject::decode(der.clone(), STRICT) {
        Ok(o) => o,
        Err(e) => return parse_error(format!("not a signed object: {e}")),
    };
    // The content, parsed as its kind (this also checks the content type).
    let content = match ObjectKind::of(uri) {
        ObjectKind::Roa => Roa::decode(der.clone(), STRICT).map(|r| Content::Roa(Box::new(r))),
        ObjectKind::Aspa => Aspa::decode(der.clone(), STRICT).map(|a| Content::Aspa(Box::new(a))),
        _ => Ok(Content::Other),
    };
    let content = match content {
        Ok(c) => c,
        Err(e) => return parse_error(e.to_string()),
    };
    let validity = object.cert().validity();
    let ee = Ee {
        serial: object.cert().serial_number(),
        not_before: validity.not_before().timestamp(),
        not_after: validity.not_after().timestamp(),
    };
    let outcome = match points[p].issuer.borrow() {
        Issuer::Anchored(ca) => object
            .validate_at(ca, STRICT, time)
            .map_err(|e| e.to_string())
            .and_then(|ee| content.covered_by(&ee)),
        Issuer::Local(Some(ca)) => object
            .cert()
            .verify_signature(ca, STRICT)
            .map_err(|e| e.to_string()),
        Issuer::Local(None) => Ok(()),
    };
    Verified {
        ee: Some(ee),
        outcome: outcome.map_err(|e| Box::new((Check::Signature, e))),
    }
}

/// A signed object's content, where its resources must be covered by its EE certificate.
enum Content {
    Roa(Box<Roa>),
    Aspa(Box<Aspa>),
    Other,
}

impl Content {
    /// A ROA's prefixes and an ASPA's customer AS must be the EE certificate's resources
    /// (RFC 9582, the ASPA profile), as RPs check after the signature.
    fn covered_by(&self, ee: &ResourceCert) -> Result<(), String> {
        match self {
            Content::Roa(roa) => {
                let c = roa.content();
                let v4 = c
                    .v4_addrs()
                    .iter()
                    .all(|a| ee.v4_resources().contains_roa(&a));
                let v6 = c
                    .v6_addrs()
                    .iter()
                    .all(|a| ee.v6_resources().contains_roa(&a));
                if v4 && v6 {
                    Ok(())
                } else {
                    Err("a ROA prefix is not covered by its EE certificate".to_string())
                }
            }
            Content::Aspa(aspa) => {
                let customer = aspa.content().customer_as();
                if ee.as_resources().contains_asn(customer) {
                    Ok(())
                } else {
                    Err(format!(
                        "customer {customer} is not covered by its EE certificate"
                    ))
                }
            }
            Content::Other => Ok(()),
        }
    }
}
