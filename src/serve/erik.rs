//! The Erik relay's two endpoints (`server.erik`): an FQDN's index, and any object the
//! current view reaches by its SHA-256 (RFC 6920 `ni` names, base64url without padding).

use base64::Engine as _;
use http::HeaderValue;
use pingora::http::RequestHeader;

use super::answer::{
    accepts_gzip, method_not_allowed, not_modified, not_modified_answer, Answer, Body,
};
use super::RrdpProxy;
use crate::metrics::{RequestKind, RequestResult};
use crate::published::{ErikRelay, FileHead};
use crate::rrdp::Hash;

/// Where an FQDN's index is: followed by the FQDN.
const INDEX_PATH: &str = "/.well-known/erik/index/";
/// Where objects are, by hash: followed by the SHA-256 in base64url.
const OBJECT_PATH: &str = "/.well-known/ni/sha-256/";

/// The media types the draft registers; any other object is plain bytes.
const INDEX_TYPE: &str = "application/rpki-erikindex";
const OBJECT_TYPE: &str = "application/octet-stream";
/// Objects never change under their hash.
const IMMUTABLE: &str = "public, max-age=86400, immutable";

/// The hash a `ni` path segment names: 43 characters of base64url, no padding.
pub(super) fn hash_of_name(name: &str) -> Option<Hash> {
    if name.len() != 43 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(name)
        .ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok().map(Hash)
}

impl RrdpProxy {
    /// The answer to an Erik path when `server.erik` is on; `None` for any other request.
    pub(super) async fn erik_route(
        &self,
        path: &str,
        is_get_or_head: bool,
        req: &RequestHeader,
    ) -> Option<Answer> {
        let relay = self.shared.erik.as_ref()?;
        if let Some(fqdn) = path.strip_prefix(INDEX_PATH) {
            if !is_get_or_head {
                return Some(method_not_allowed(RequestKind::ErikIndex));
            }
            return Some(self.erik_index(relay, fqdn, req));
        }
        let name = path.strip_prefix(OBJECT_PATH)?;
        if !is_get_or_head {
            return Some(method_not_allowed(RequestKind::ErikObject));
        }
        Some(Box::pin(self.erik_object(relay, name, req)).await)
    }

    /// `GET /.well-known/erik/index/{fqdn}`.
    pub(super) fn erik_index(&self, relay: &ErikRelay, fqdn: &str, req: &RequestHeader) -> Answer {
        let view = relay.view();
        let Some(index) = view.fqdns.get(&fqdn.to_ascii_lowercase()) else {
            return Answer::text(404, RequestKind::ErikIndex, "no index for this FQDN\n");
        };
        let max_age = self
            .shared
            .repos
            .first()
            .map(|r| r.notification_cache_control.clone())
            .unwrap_or_else(|| HeaderValue::from_static("max-age=60"));
        let gzip = index.gzip.as_ref().filter(|_| accepts_gzip(req));
        let mut a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static(INDEX_TYPE)),
                ("Cache-Control", max_age),
                ("Last-Modified", index.last_modified.clone()),
                ("Vary", HeaderValue::from_static("Accept-Encoding")),
            ],
            body: Body::Bytes(index.der.clone()),
            kind: RequestKind::ErikIndex,
            outcome: RequestResult::Hit,
        };
        match gzip {
            Some(gz) => {
                a.headers.push(("ETag", index.etag_gzip.clone()));
                a.headers
                    .push(("Content-Encoding", HeaderValue::from_static("gzip")));
                a.body = Body::Bytes(gz.clone());
            }
            None => a.headers.push(("ETag", index.etag.clone())),
        }
        let etag = index.etag.to_str().unwrap_or_default();
        let lm = index.last_modified.to_str().ok();
        if not_modified(req, Some(etag), lm) {
            return not_modified_answer(a);
        }
        a
    }

    /// `GET /.well-known/ni/sha-256/{hash}`: from the store, if the view reaches it.
    pub(super) async fn erik_object(
        &self,
        relay: &ErikRelay,
        name: &str,
        req: &RequestHeader,
    ) -> Answer {
        let not_found = || Answer::text(404, RequestKind::ErikObject, "no such object\n");
        let Some(hash) = hash_of_name(name) else {
            return not_found();
        };
        let now = self.shared.clock.unix_now();
        let retain = self.shared.config.cache.retain.as_secs();
        if !relay.view().serves(&hash, now, retain) {
            return not_found();
        }
        let head = FileHead::of(&hash);
        let etag = head.etag_text();
        let mut a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static(OBJECT_TYPE)),
                ("Cache-Control", HeaderValue::from_static(IMMUTABLE)),
                ("ETag", head.etag.clone()),
            ],
            body: Body::Empty,
            kind: RequestKind::ErikObject,
            outcome: RequestResult::Hit,
        };
        if not_modified(req, Some(etag), None) {
            return not_modified_answer(a);
        }
        let store = &self.shared.store;
        let object = match store.get_in_memory(&hash, false) {
            Some(o) => Ok(o),
            None => Box::pin(store.get(&hash)).await,
        };
        match object {
            Ok(o) => {
                a.body = Body::from_object(o);
                a
            }
            Err(e) => {
                log::error!("erik: object {hash} not servable: {e}");
                Answer::text(503, RequestKind::ErikObject, "stored object unreadable\n")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ni_names_are_43_characters_of_unpadded_base64url() {
        let name = "AZmwyRKvBFv4DPl2g5IAhM8BbDvVWzZvgBLjORCoXqM";
        let hash = hash_of_name(name).unwrap();
        assert_eq!(hash.to_hex()[..8].to_uppercase(), "0199B0C9");
        assert_eq!(hash_of_name(&format!("{name}=")), None, "padded");
        assert_eq!(hash_of_name(&name[1..]), None);
        assert_eq!(hash_of_name(&name.replace('A', "+")), None, "not base64url");
        assert_eq!(hash_of_name(""), None);
    }
}
