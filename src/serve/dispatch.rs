//! Routing: the cluster endpoints, the Erik endpoints (`server.erik`), then each repository's
//! prefix (the notification, a published file, or a miss), then each passthrough's;
//! everything else is 404.

use http::HeaderValue;

use super::answer::{
    header, method_not_allowed, not_modified, not_modified_answer, refuse, Answer, Body,
};
use super::files::Known;
use super::RrdpProxy;
use crate::metrics::RequestKind;
use pingora::protocols::http::ServerSession;

impl RrdpProxy {
    pub(super) async fn route(&self, session: &ServerSession) -> Answer {
        let req = session.req_header();
        if let Some(refused) = refuse(req) {
            return refused;
        }
        let path = req.uri.path();
        let method = &req.method;
        let is_get_or_head = method == http::Method::GET || method == http::Method::HEAD;
        if let Some(hex) = path.strip_prefix(crate::config::PEER_OBJECT_PATH) {
            if is_get_or_head {
                return Box::pin(self.peer_object(req, hex)).await;
            }
        }
        if let Some(public) = path.strip_prefix(crate::config::PEER_LOOKUP_PATH) {
            if is_get_or_head {
                return self.peer_lookup(req, public);
            }
        }

        if let Some(answer) = self.erik_route(path, is_get_or_head, req).await {
            return answer;
        }
        for (i, repo) in self.shared.repos.iter().enumerate() {
            let Some(rest) = path.strip_prefix(repo.config.public.path()) else {
                continue;
            };
            let kind = if rest == repo.config.notification {
                RequestKind::Notification
            } else {
                RequestKind::File
            };
            if !is_get_or_head {
                return method_not_allowed(kind);
            }
            let Some(rel) = repo.config.public.relative_path(path) else {
                return Answer::text(404, kind, "not found\n");
            };
            if kind == RequestKind::Notification {
                return self.notification(repo, req);
            }
            let client = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if let Some(known) = Known::of(repo, rel) {
                return self.published_file(repo, known, req, client).await;
            }
            // Boxed, as every path that may wait on a download: the future of a request is
            // moved to the heap whole, and a hit, which waits on nothing when its file is in
            // memory, should not pay for copying the largest of them (docs/benchmarks.md).
            let (upstream, gate) = (&self.forward[i], &self.misses[i]);
            return Box::pin(self.unpublished_file(repo, upstream, gate, rel, req)).await;
        }
        if let Some(answer) = self.passthrough_route(path, is_get_or_head, req).await {
            return answer;
        }
        Answer::text(404, RequestKind::Other, "not found\n")
    }

    /// The answer of the passthrough whose prefix `path` is under, if any.
    async fn passthrough_route(
        &self,
        path: &str,
        is_get_or_head: bool,
        req: &pingora::http::RequestHeader,
    ) -> Option<Answer> {
        for pass in &self.shared.passthroughs {
            if !path.starts_with(pass.config.public.path()) {
                continue;
            }
            if !is_get_or_head {
                return Some(method_not_allowed(RequestKind::Passthrough));
            }
            let Some(rel) = pass.config.public.relative_path(path) else {
                return Some(Answer::text(404, RequestKind::Passthrough, "not found\n"));
            };
            let r = Box::pin(pass.serve(rel)).await;
            let mut a = Answer {
                status: r.status,
                headers: r
                    .headers
                    .into_iter()
                    .filter_map(|(k, v)| HeaderValue::try_from(v).ok().map(|v| (k, v)))
                    .collect(),
                body: Body::Bytes(r.body),
                kind: RequestKind::Passthrough,
                outcome: r.outcome,
            };
            if a.status == 200 && not_modified(req, header(&a, "ETag"), header(&a, "Last-Modified"))
            {
                a = not_modified_answer(a);
            }
            return Some(a);
        }
        None
    }
}
