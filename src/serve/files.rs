//! Answers from the published generation: the notification (with its validators and gzip
//! variant), and snapshots and deltas from the store (304, Range, gzip), counting what each
//! RP's request says of how far behind it is.

use std::sync::Arc;

use http::HeaderValue;
use log::error;

use super::answer::{
    accepts_gzip, not_modified, not_modified_answer, requested_range, Answer, Body, ByteRange,
    RequestView,
};
use super::RrdpProxy;
use crate::metrics::{RequestKind, RequestResult};
use crate::published::{header_value, FileHead, FileKind, Generation, Repo};
use crate::rrdp::Hash;
use crate::store::Object;

/// Content type of RRDP files (what Krill and RIPE NCC send).
const RRDP_CONTENT_TYPE: &str = "application/xml";

/// A file the published generation lists, as a request found it.
pub(super) struct Known {
    pub(super) hash: Hash,
    pub(super) kind: FileKind,
    pub(super) serial: Option<u64>,
    pub(super) head: FileHead,
    pub(super) generation: Arc<Generation>,
}

impl Known {
    pub(super) fn of(repo: &Repo, rel: &str) -> Option<Known> {
        let g = repo.peek();
        let g = g.as_ref()?;
        let f = g.file(rel, repo.clock().unix_now())?;
        Some(Known {
            hash: f.hash,
            kind: f.kind,
            serial: f.serial,
            head: f.head.clone(),
            generation: g.clone(),
        })
    }
}

/// Counts what an RP's request for a published snapshot or delta says of how far behind it is.
pub(super) fn note_rp(
    repo: &Repo,
    g: &Generation,
    kind: FileKind,
    serial: Option<u64>,
    client: Option<std::net::IpAddr>,
) {
    match (kind, serial) {
        (FileKind::Delta, Some(n)) => repo.rp_lag.delta(client, &g.session_id, g.serial, n),
        (FileKind::Snapshot, _) => {
            let oldest = g.history.last().map(|h| h.serial);
            repo.rp_lag.snapshot(client, &g.session_id, oldest);
        }
        _ => {}
    }
}

impl RrdpProxy {
    /// The published notification, with validators.
    pub(super) fn notification(&self, repo: &Repo, req: &impl RequestView) -> Answer {
        let Some(generation) = repo.current() else {
            let mut a = Answer::text(
                503,
                RequestKind::Notification,
                "no repository state fetched from the upstream yet\n",
            );
            let retry = repo.config.poll_interval.as_secs().max(1);
            a.headers.push(("Retry-After", HeaderValue::from(retry)));
            return a;
        };
        let lm = generation.last_modified_http();
        let gzip = generation
            .notification_gz
            .as_ref()
            .filter(|_| accepts_gzip(req));
        let values = &generation.header_values;
        let etag = match gzip {
            Some(_) => values.etag_gzip.clone(),
            None => values.etag.clone(),
        };
        let mut a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static(RRDP_CONTENT_TYPE)),
                ("Cache-Control", repo.notification_cache_control.clone()),
                ("ETag", etag),
                ("Last-Modified", values.last_modified.clone()),
                ("Vary", HeaderValue::from_static("Accept-Encoding")),
            ],
            body: Body::resident(
                &generation.notification,
                generation.notification_files.plain.as_ref(),
            ),
            kind: RequestKind::Notification,
            outcome: RequestResult::Hit,
        };
        if let Some(gz) = gzip {
            a.body = Body::resident(gz, generation.notification_files.gzip.as_ref());
            a.headers
                .push(("Content-Encoding", HeaderValue::from_static("gzip")));
        }
        if not_modified(req, Some(&generation.etag), Some(lm)) {
            return not_modified_answer(a);
        }
        a
    }

    /// A snapshot or delta the published generation lists: from the store.
    pub(super) async fn published_file(
        &self,
        repo: &Repo,
        known: Known,
        req: &impl RequestView,
        client: Option<std::net::IpAddr>,
    ) -> Answer {
        let mut a = self
            .object(repo, known.hash, &known.head, true, RequestResult::Hit, req)
            .await;
        if a.status < 500 {
            a.kind = match known.kind {
                FileKind::Snapshot => RequestKind::Snapshot,
                FileKind::Delta => RequestKind::Delta,
                FileKind::Other => RequestKind::File,
            };
        }
        // Whole downloads only: a client fetching ranges would count once per range.
        if a.status == 200 && req.is_get() {
            note_rp(repo, &known.generation, known.kind, known.serial, client);
        }
        a
    }

    /// Serves a stored object, with `head` its validators. `verified`: its hash came from a
    /// notification, so it is immutable under its URI. Clients that accept gzip get the gzip
    /// variant if there is one; a Range request gets part of the identity body.
    pub(super) async fn object(
        &self,
        repo: &Repo,
        hash: Hash,
        head: &FileHead,
        verified: bool,
        outcome: RequestResult,
        req: &impl RequestView,
    ) -> Answer {
        let etag = head.etag_text();
        let cache_control = if verified {
            repo.file_cache_control.clone()
        } else {
            // Forwarded, but named by no notification we know: do not let caches pin it.
            HeaderValue::from_static("max-age=60")
        };
        let mut a = Answer {
            status: 200,
            headers: vec![
                ("Content-Type", HeaderValue::from_static(RRDP_CONTENT_TYPE)),
                ("Cache-Control", cache_control),
                ("Accept-Ranges", HeaderValue::from_static("bytes")),
                ("Vary", HeaderValue::from_static("Accept-Encoding")),
            ],
            body: Body::Empty,
            kind: RequestKind::File,
            outcome,
        };
        if not_modified(req, Some(etag), None) {
            a.headers.push(("ETag", head.etag.clone()));
            return not_modified_answer(a);
        }
        let range = requested_range(req, etag);
        if range.is_none() && accepts_gzip(req) {
            let store = &self.shared.store;
            let gz = match store.get_in_memory(&hash, true) {
                Some(gz) => Some(gz),
                None => Box::pin(store.get_gzip(&hash)).await,
            };
            if let Some(gz) = gz {
                a.headers.push(("ETag", head.etag_gzip.clone()));
                a.headers
                    .push(("Content-Encoding", HeaderValue::from_static("gzip")));
                a.body = Body::from_object(gz);
                return a;
            }
        }
        a.headers.push(("ETag", head.etag.clone()));
        let object = match self.stored(repo, hash).await {
            Ok(o) => o,
            Err(damaged) => return damaged,
        };
        with_range(a, object, range)
    }

    /// A stored object: from memory without waiting; the disk path (which may verify the file
    /// or read it into memory) is boxed, so a memory hit does not carry its future. A damaged
    /// or unreadable object gives the answer to send instead.
    async fn stored(&self, repo: &Repo, hash: Hash) -> Result<Object, Answer> {
        let in_memory = self.shared.store.get_in_memory(&hash, false).map(Ok);
        let object = match in_memory {
            Some(o) => o,
            None => Box::pin(self.shared.store.get(&hash)).await,
        };
        object.map_err(|e| {
            // Damaged on disk (now removed) or unreadable: say so loudly, let no cache keep
            // the error, and have the poller fetch it again if still referenced.
            error!("{}: object {hash} not servable: {e}", repo.config.public);
            repo.poll_now();
            let mut a = Answer::text(
                503,
                RequestKind::File,
                "stored file damaged; fetching it again\n",
            );
            a.headers.push(("Retry-After", HeaderValue::from(5u32)));
            a
        })
    }
}

/// `a` with the object as its body: whole, or the part a satisfiable range asks for (206), or
/// 416 for one that is not.
fn with_range(mut a: Answer, object: Object, range: Option<ByteRange>) -> Answer {
    let total = object.len();
    match range.map(|r| r.resolve(total)) {
        None => a.body = Body::from_object(object),
        Some(Some((start, len))) => {
            a.status = 206;
            a.headers.push((
                "Content-Range",
                header_value(&format!("bytes {start}-{}/{total}", start + len - 1)),
            ));
            a.body = Body::slice(object, start, len);
        }
        Some(None) => {
            let mut e = Answer::text(416, RequestKind::File, "range not satisfiable\n");
            e.headers
                .push(("Content-Range", header_value(&format!("bytes */{total}"))));
            return e;
        }
    }
    a
}
