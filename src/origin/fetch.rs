//! One verified download into the store: each upstream base in turn, then the peers by hash.
//! The poller, a client's forwarded miss and peer fill all fetch through here.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::origin::client::{within, Client, FetchError};
use crate::origin::peers::Peers;
use crate::rrdp::content::Expected;
use crate::rrdp::uri::BaseUri;
use crate::rrdp::Hash;
use crate::store::{Store, Stored};

/// Downloads `base+rel` into the store, verifying `expected` and `content` if given. 404 and
/// 410 come back as `FetchError::Status`.
pub(crate) async fn fetch_object(
    upstream: &Arc<Client>,
    store: &Arc<Store>,
    base: &BaseUri,
    rel: &str,
    expected: Option<Hash>,
    content: Option<&Expected>,
    limit: u64,
) -> Result<Stored, FetchError> {
    let mut resp = upstream.get(base, rel, &[]).await?;
    match resp.status() {
        200 => {}
        s => return Err(FetchError::Status(s)),
    }
    resp.check_identity_encoding()?;
    if resp.is_html() {
        return Err(FetchError::Unusable(
            "an HTML page, not an RRDP file".into(),
        ));
    }
    if resp.content_length().is_some_and(|l| l > limit) {
        return Err(FetchError::TooLarge(limit));
    }
    let mut w = store.writer().await.map_err(FetchError::Store)?;
    if let Some(content) = content {
        w.check_while_writing(content);
    }
    while let Some(chunk) = resp.chunk().await? {
        if w.len() + chunk.len() as u64 > limit {
            return Err(FetchError::TooLarge(limit));
        }
        if w.is_empty() && !looks_like_xml(&chunk) {
            return Err(FetchError::Unusable("not an XML document".into()));
        }
        w.write(chunk).await.map_err(FetchError::Store)?;
    }
    if w.is_empty() {
        return Err(FetchError::Unusable("empty body".into()));
    }
    Ok(w.commit(expected).await?)
}

/// Whether a body's first bytes can start an XML document (an optional BOM and white space,
/// then `<`). An error page in text or JSON is refused before anything is stored.
fn looks_like_xml(start: &[u8]) -> bool {
    let start = start.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(start);
    match start.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b) => *b == b'<',
        // Only white space so far: let the hash decide.
        None => true,
    }
}

/// Where a missing object may come from, in order: the upstream bases (the same relative
/// path under each), then the peers (by hash).
pub(crate) struct Sources<'a> {
    pub upstream: &'a Arc<Client>,
    pub bases: &'a [BaseUri],
    pub peers: Option<&'a Peers>,
}

/// Fetches an object unless the store has it, each attempt within the whole-download
/// timeout. The error is the first source's (the origin's), which says most.
pub(crate) async fn ensure_object(
    src: &Sources<'_>,
    store: &Arc<Store>,
    rel: &str,
    hash: Hash,
    content: Option<&Expected>,
    (limit, timeout): (u64, Duration),
    metrics: &Metrics,
) -> Result<Stored, FetchError> {
    if let Some(stored) = store.stored(&hash) {
        return Ok(stored);
    }
    // One download per object: whoever waited here finds it stored by the first.
    let _flight = store
        .flights
        .enter(crate::store::flight::object_key(&hash))
        .await;
    if let Some(stored) = store.stored(&hash) {
        return Ok(stored);
    }
    // A client's forwarded miss may be downloading this very file (asked for before this
    // node read the notification naming it): wait for it rather than ask the origin twice.
    // Lock order is object, then path; a forwarded miss holds only the path key.
    drop(
        store
            .flights
            .enter(crate::store::flight::path_key(rel))
            .await,
    );
    if let Some(stored) = store.stored(&hash) {
        return Ok(stored);
    }
    let mut first_error = None;
    for base in src.bases {
        metrics.count_upstream_fetch();
        let fetched = within(
            timeout,
            fetch_object(src.upstream, store, base, rel, Some(hash), content, limit),
        )
        .await;
        match fetched {
            Ok(stored) => return Ok(stored),
            Err(e) => {
                match e {
                    FetchError::HashMismatch { .. } => metrics.count_hash_mismatch(),
                    FetchError::Invalid(_) => metrics.count_invalid_content(),
                    _ => {}
                }
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(peers) = src.peers {
        match peers
            .fetch(store, hash, content, limit, timeout, metrics)
            .await
        {
            Ok(size) => return Ok(size),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or(FetchError::Status(404)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_sniffing() {
        assert!(looks_like_xml(b"<?xml version=\"1.0\"?>"));
        assert!(looks_like_xml(b"\xEF\xBB\xBF\n  <snapshot"));
        assert!(!looks_like_xml(b"{\"error\": 1}"));
        assert!(!looks_like_xml(b"Service Unavailable"));
    }
}
