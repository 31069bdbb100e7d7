//! A repository's health as an operator watches it, gathered while validating: what it
//! holds, and what runs out first. Times are absolute (seconds since the epoch), so "seconds
//! until" is worked out when asked and stays right between rounds.

use std::collections::BTreeMap;

use serde::Serialize;

/// How many of the soonest-expiring certificates `/status` names.
const EXPIRING_SHOWN: usize = 20;

/// Something that runs out at `at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Due {
    /// The object (a manifest or CRL: its publication point's).
    pub uri: String,
    pub at: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    /// Objects by kind label.
    pub objects: BTreeMap<&'static str, u64>,
    /// The manifest whose nextUpdate comes first: when it passes, RPs reject that point.
    pub manifest_next_update: Option<Due>,
    /// The same for CRLs.
    pub crl_next_update: Option<Due>,
    /// Manifests not current now (nextUpdate passed, or thisUpdate ahead).
    pub stale_manifests: u64,
    /// Publication points whose manifest is missing (a CA certificate names it).
    pub missing_manifests: u64,
    /// Certificates (CA, router and EE) whose notAfter is within the window.
    pub expiring: u64,
    /// The soonest of them, soonest first.
    pub expiring_soonest: Vec<Due>,
    /// The window, in seconds (`validate_expiry_window`).
    pub expiry_window: i64,
}

impl Health {
    pub fn new(expiry_window: i64) -> Health {
        Health {
            expiry_window,
            ..Health::default()
        }
    }

    /// Adds another part's health (object counts excepted: they are made over the whole
    /// repository).
    pub fn merge(&mut self, other: &Health) {
        if let Some(d) = &other.manifest_next_update {
            self.manifest(&d.uri, d.at);
        }
        if let Some(d) = &other.crl_next_update {
            self.crl(&d.uri, d.at);
        }
        self.stale_manifests += other.stale_manifests;
        self.missing_manifests += other.missing_manifests;
        self.expiring += other.expiring;
        for d in &other.expiring_soonest {
            self.soonest(d.clone());
        }
    }

    pub fn count(&mut self, kind: super::ObjectKind) {
        *self.objects.entry(kind.label()).or_insert(0) += 1;
    }

    pub fn manifest(&mut self, uri: &str, next_update: i64) {
        earliest(&mut self.manifest_next_update, uri, next_update);
    }

    pub fn crl(&mut self, uri: &str, next_update: i64) {
        earliest(&mut self.crl_next_update, uri, next_update);
    }

    /// A certificate valid until `not_after`, seen at `now`.
    pub fn certificate(&mut self, uri: &str, not_after: i64, now: i64) {
        if not_after > now.saturating_add(self.expiry_window) {
            return;
        }
        self.expiring += 1;
        self.soonest(Due {
            uri: uri.to_string(),
            at: not_after,
        });
    }

    fn soonest(&mut self, due: Due) {
        let at = self.expiring_soonest.partition_point(|d| d.at <= due.at);
        if at < EXPIRING_SHOWN {
            self.expiring_soonest.insert(at, due);
            self.expiring_soonest.truncate(EXPIRING_SHOWN);
        }
    }
}

fn earliest(slot: &mut Option<Due>, uri: &str, at: i64) {
    if slot.as_ref().is_none_or(|d| at < d.at) {
        *slot = Some(Due {
            uri: uri.to_string(),
            at,
        });
    }
}
