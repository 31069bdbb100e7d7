//! The RPKI objects inside a repository, parsed and checked with NLnet Labs' `rpki` crate
//! (what Routinator and Krill are built on) before the generation carrying them is
//! published: what a Relying Party would reject is found here first.
//!
//! No I/O: the caller hands in the objects of one repository state (rsync URI → DER), the
//! trust anchor certificates it fetched, and the time.
//!
//! - [`kind`]: an object's kind by file name, and when it was made (rsync export times).
//! - [`check`]: the checks: publication points (manifest, CRL, listed files), top-down from
//!   the trust anchors where there are any, signed objects and certificates.
//! - [`index`]: what validation keeps between rounds, so that a serial costs what changed.
//! - [`health`]: what an operator watches: objects by kind, the earliest manifest and CRL
//!   nextUpdate, certificates about to expire.
//! - [`anchor`]: TAL files and the trust anchor certificates they name.

pub(crate) mod anchor;
pub(crate) mod check;
pub(crate) mod health;
pub(crate) mod index;
pub(crate) mod kind;
mod pipeline;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::Serialize;

pub(crate) use anchor::Anchor;
pub(crate) use anchor::TalFile;
pub use check::validate;
pub(crate) use check::validate_with;
pub(crate) use health::Health;
pub(crate) use index::Cache;
pub(crate) use index::ObjectIndex;
pub use kind::made_at;
pub(crate) use kind::ObjectKind;

/// One repository state: every published object, by rsync URI.
pub(crate) type Objects = BTreeMap<String, Bytes>;

/// Which check an object failed: a stable label for `/status` and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Not the object its name says: not DER, truncated, the wrong content type.
    Parse,
    /// A manifest that is not current (thisUpdate ≤ now < nextUpdate) or absent.
    Manifest,
    /// A file the manifest lists is not published.
    ManifestMissing,
    /// A published file's SHA-256 is not the one its manifest lists.
    ManifestHash,
    /// The publication point has no current CRL on its manifest signed by its CA.
    Crl,
    /// A certificate or signed object does not validate against its issuer: its signature,
    /// key identifiers, profile or resources.
    Signature,
    /// A certificate that is not valid now (expired, not yet valid).
    Expired,
    /// A certificate on its issuer's CRL.
    Revoked,
    /// The trust anchor certificate does not match or validate against its TAL.
    TrustAnchor,
}

impl Check {
    pub fn label(self) -> &'static str {
        match self {
            Check::Parse => "parse",
            Check::Manifest => "manifest",
            Check::ManifestMissing => "manifest_missing",
            Check::ManifestHash => "manifest_hash",
            Check::Crl => "crl",
            Check::Signature => "signature",
            Check::Expired => "expired",
            Check::Revoked => "revoked",
            Check::TrustAnchor => "trust_anchor",
        }
    }

    pub const ALL: [Check; 9] = [
        Check::Parse,
        Check::Manifest,
        Check::ManifestMissing,
        Check::ManifestHash,
        Check::Crl,
        Check::Signature,
        Check::Expired,
        Check::Revoked,
        Check::TrustAnchor,
    ];
}

/// One object that failed one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The object's rsync URI (or the TAL's path, for a trust anchor).
    pub uri: String,
    pub check: Check,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.uri, self.check.label(), self.detail)
    }
}

/// At most this many findings are kept with their detail (a manifest of 100,000 entries
/// that are all missing must not make a report of 100,000 lines); all are counted.
pub const MAX_FINDINGS: usize = 1000;

/// What validating one repository state found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The first [`MAX_FINDINGS`] failed checks, in URI order.
    pub findings: Vec<Finding>,
    /// Every failed check, counted by check.
    pub counts: BTreeMap<Check, u64>,
    pub health: Health,
    /// Publication points reached from a trust anchor (the rest had the checks that need
    /// none: manifests, hashes, CRLs, revocation, certificate signatures where the issuer is
    /// in the repository).
    pub points_from_anchor: u64,
    pub points: u64,
    /// Publication points whose checks were replayed from the last round (nothing they
    /// depend on changed).
    pub points_replayed: u64,
}

impl Report {
    /// Records one failed check.
    pub fn add(&mut self, finding: Finding) {
        *self.counts.entry(finding.check).or_insert(0) += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(finding);
        }
    }

    /// Adds a publication point's findings and health (see `check`).
    pub fn merge(&mut self, other: &Report) {
        for (check, n) in &other.counts {
            *self.counts.entry(*check).or_insert(0) += n;
        }
        let room = MAX_FINDINGS.saturating_sub(self.findings.len());
        self.findings
            .extend(other.findings.iter().take(room).cloned());
        self.health.merge(&other.health);
    }

    /// How many checks failed in all.
    pub fn failed(&self) -> u64 {
        self.counts.values().sum()
    }

    /// One line for logs and errors: how many findings, the first few.
    pub fn summary(&self, shown: usize) -> String {
        let mut s = format!("{} finding(s)", self.failed());
        for (i, f) in self.findings.iter().take(shown).enumerate() {
            s.push_str(if i == 0 { ": " } else { "; " });
            s.push_str(&f.to_string());
        }
        if self.failed() > shown as u64 {
            s.push_str("; …");
        }
        s
    }
}
