//! The repository's upstreams: failover with per-upstream backoff, and the conditional GET of
//! each one's notification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::RepositoryConfig;
use crate::origin::client::{Client, FetchError};
use crate::rrdp::uri::BaseUri;
use crate::sync::error::PollError;
use crate::sync::MAX_BACKOFF;

/// A failed upstream is tried first again after this long, doubling up to [`MAX_BACKOFF`].
const UPSTREAM_BACKOFF: Duration = Duration::from_secs(30);

/// An upstream notification's ETag and Last-Modified.
pub(crate) type Validators = (Option<String>, Option<String>);

/// What one upstream answered: its validators, and the body unless it answered 304.
pub(crate) type Answer = (Validators, Option<Bytes>);

/// The configured upstreams of one repository and what the poller learnt of each.
pub(crate) struct Upstreams {
    pub client: Arc<Client>,
    bases: Vec<BaseUri>,
    /// Per upstream: its notification's validators, once a round with it completed.
    validators: Vec<Option<Validators>>,
    /// Per upstream: not tried first again before this instant (it failed), and the backoff.
    down_until: Vec<Option<(Instant, Duration)>>,
    /// The upstream that answered last.
    pub current: usize,
}

impl Upstreams {
    pub(crate) fn new(config: &RepositoryConfig) -> Upstreams {
        let n = config.upstreams.len();
        Upstreams {
            client: Client::for_repository(config),
            bases: config.upstreams.clone(),
            validators: vec![None; n],
            down_until: vec![None; n],
            current: 0,
        }
    }

    /// The upstreams in the order to try them: those not backing off in configured order,
    /// then the others, soonest retry first.
    pub(crate) fn order(&self) -> Vec<usize> {
        let now = Instant::now();
        let (mut up, mut down): (Vec<usize>, Vec<usize>) = (0..self.down_until.len())
            .partition(|i| self.down_until[*i].is_none_or(|(t, _)| t <= now));
        down.sort_by_key(|i| self.down_until[*i].map(|(t, _)| t));
        up.append(&mut down);
        up
    }

    /// Records whether upstream `i` answered usably.
    pub(crate) fn mark(&mut self, i: usize, ok: bool) {
        self.down_until[i] = if ok {
            None
        } else {
            let backoff =
                self.down_until[i].map_or(UPSTREAM_BACKOFF, |(_, b)| (b * 2).min(MAX_BACKOFF));
            Some((Instant::now() + backoff, backoff))
        };
    }

    /// Where files are fetched from after upstream `i` answered: `i` first, then the others.
    pub(crate) fn bases_from(&self, i: usize) -> Vec<BaseUri> {
        std::iter::once(self.bases[i].clone())
            .chain(self.bases.iter().filter(|b| **b != self.bases[i]).cloned())
            .collect()
    }

    /// Remembers upstream `i`'s validators once its notification was applied.
    pub(crate) fn applied(&mut self, i: usize, validators: Validators) {
        self.validators[i] = Some(validators);
    }

    /// Client `i`'s notification validators and body; no body if it answered 304.
    pub(crate) async fn fetch_notification(
        &self,
        cfg: &RepositoryConfig,
        i: usize,
    ) -> Result<Answer, PollError> {
        let mut headers = Vec::new();
        if let Some((etag, lm)) = &self.validators[i] {
            if let Some(e) = etag {
                headers.push(("If-None-Match", e.clone()));
            }
            if let Some(l) = lm {
                headers.push(("If-Modified-Since", l.clone()));
            }
        }
        let resp = self
            .client
            .get(&self.bases[i], &cfg.notification, &headers)
            .await
            .map_err(PollError::Notification)?;
        match resp.status() {
            304 if self.validators[i].is_some() => {
                return Ok((self.validators[i].clone().unwrap_or_default(), None));
            }
            200 => {}
            s => return Err(PollError::Notification(FetchError::Status(s))),
        }
        resp.check_identity_encoding()
            .map_err(PollError::Notification)?;
        if resp.is_html() {
            return Err(PollError::invalid("an HTML page, not a notification"));
        }
        let validators = (
            resp.header("ETag").map(str::to_string),
            resp.header("Last-Modified").map(str::to_string),
        );
        let body = resp
            .body(cfg.fetch.max_notification_size)
            .await
            .map_err(PollError::Notification)?;
        Ok((validators, Some(body)))
    }
}
