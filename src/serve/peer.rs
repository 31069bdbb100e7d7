//! The cluster's endpoints on the public listener: a stored object by its SHA-256
//! (`/.well-known/rrdp-proxy/object/`) and what a public path is (`…/lookup/`), both only for
//! a request that presents the cluster token; anyone else gets the same 404 as for a path
//! that does not exist. (The paths are `config::PEER_*_PATH`: the client side in
//! `origin::peers` uses them too, and `config` keeps public prefixes off them.)

use http::HeaderValue;
use pingora::http::RequestHeader;

use super::answer::{Answer, Body};
use super::RrdpProxy;
use crate::metrics::{RequestKind, RequestResult};
use crate::rrdp::Hash;

impl RrdpProxy {
    /// A stored object by its SHA-256, for a peer that presents the cluster token. Anyone else
    /// gets the same 404 as for a path that does not exist.
    pub(super) async fn peer_object(&self, req: &RequestHeader, hex: &str) -> Answer {
        let not_found = || Answer::text(404, RequestKind::Other, "not found\n");
        if !self.is_peer(req) {
            return not_found();
        }
        let Some(hash) = Hash::from_hex(hex).filter(|_| hex.len() == 64) else {
            return not_found();
        };
        if !self.shared.store.contains(&hash, None) {
            return not_found();
        }
        match self.shared.store.get(&hash).await {
            Ok(object) => {
                self.shared.metrics.count_peer_request();
                Answer {
                    status: 200,
                    headers: vec![
                        (
                            "Content-Type",
                            HeaderValue::from_static("application/octet-stream"),
                        ),
                        ("Cache-Control", HeaderValue::from_static("no-store")),
                    ],
                    body: Body::from_object(object),
                    kind: RequestKind::Other,
                    outcome: RequestResult::Hit,
                }
            }
            Err(_) => not_found(),
        }
    }

    /// Whether the request carries the cluster token (constant-time compare).
    pub(super) fn is_peer(&self, req: &RequestHeader) -> bool {
        let Some(cluster) = &self.shared.config.cluster else {
            return false;
        };
        let presented = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(presented.as_bytes(), cluster.token.as_bytes())
    }

    /// For a peer (cluster token): what the file at a public path is, if this node still
    /// serves it, current or retained: its SHA-256 and, for a snapshot or delta, its kind,
    /// session and serial. The peer then fetches the bytes by hash and checks them against
    /// both. Anyone else gets the same 404 as for a path that does not exist.
    pub(super) fn peer_lookup(&self, req: &RequestHeader, public: &str) -> Answer {
        let not_found = || Answer::text(404, RequestKind::Other, "not found\n");
        if !self.is_peer(req) {
            return not_found();
        }
        let path = format!("/{public}");
        let found = self.shared.repos.iter().find_map(|repo| {
            let rel = repo.config.public.relative_path(&path)?;
            let g = repo.current()?;
            g.file(rel, repo.clock().unix_now()).cloned()
        });
        let Some(f) = found else {
            return not_found();
        };
        let body = serde_json::json!({
            "sha256": f.hash.to_hex(),
            "kind": f.kind,
            "session": f.session,
            "serial": f.serial,
        })
        .to_string();
        self.shared.metrics.count_peer_request();
        Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static("application/json")),
                ("Cache-Control", HeaderValue::from_static("no-store")),
            ],
            body: Body::Bytes(body.into()),
            kind: RequestKind::Other,
            outcome: RequestResult::Hit,
        }
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
