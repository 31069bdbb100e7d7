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

/// What a path under a repository's prefix names.
pub(super) enum RepoPath<'p> {
    Notification,
    /// A file the published generation lists.
    Published(Known),
    /// No file the published generation lists (a miss): the path under the prefix.
    Unpublished(&'p str),
    /// Not a path a file could have (404).
    Invalid,
}

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
        if let Some((i, named)) = self.repository_path(path) {
            let repo = &self.shared.repos[i];
            let kind = match named {
                RepoPath::Notification => RequestKind::Notification,
                _ => RequestKind::File,
            };
            if !is_get_or_head {
                return method_not_allowed(kind);
            }
            return match named {
                RepoPath::Notification => self.notification(repo, req),
                RepoPath::Invalid => Answer::text(404, kind, "not found\n"),
                RepoPath::Published(known) => {
                    let client = session
                        .client_addr()
                        .and_then(|a| a.as_inet())
                        .map(|a| a.ip());
                    self.published_file(repo, known, req, client).await
                }
                // Boxed, as every path that may wait on a download: the future of a request
                // is moved to the heap whole, and a hit, which waits on nothing when its file
                // is in memory, should not pay for copying the largest of them
                // (docs/benchmarks.md).
                RepoPath::Unpublished(rel) => {
                    let (upstream, gate) = (&self.forward[i], &self.misses[i]);
                    Box::pin(self.unpublished_file(repo, upstream, gate, rel, req)).await
                }
            };
        }
        if let Some(answer) = self.passthrough_route(path, is_get_or_head, req).await {
            return answer;
        }
        Answer::text(404, RequestKind::Other, "not found\n")
    }

    /// The repository whose prefix `path` is under (its index), and what the path names in it.
    /// The lean path routes with it too (`lean`).
    pub(super) fn repository_path<'p>(&self, path: &'p str) -> Option<(usize, RepoPath<'p>)> {
        let (i, repo) = self
            .shared
            .repos
            .iter()
            .enumerate()
            .find(|(_, repo)| path.starts_with(repo.config.public.path()))?;
        let rest = &path[repo.config.public.path().len()..];
        if rest == repo.config.notification {
            return Some((i, RepoPath::Notification));
        }
        let Some(rel) = repo.config.public.relative_path(path) else {
            return Some((i, RepoPath::Invalid));
        };
        let named = match Known::of(repo, rel) {
            Some(known) => RepoPath::Published(known),
            None => RepoPath::Unpublished(rel),
        };
        Some((i, named))
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
