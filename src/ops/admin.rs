//! The admin listener: Prometheus `/metrics`, JSON `/status`, `/healthz` for load balancers,
//! and `POST /refresh` (poll every repository now, e.g. from a Publication Server's
//! post-publish hook). It is configured apart from the public listeners and never shares one.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::metrics::Exposition;
use crate::ops::{admin_access, page};
use crate::published::{Generation, RepoStatus, ValidationStatus};
use crate::shared::Shared;

/// The Prometheus text format, as the `prometheus` crate encodes it.
const METRICS_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

pub(crate) struct Admin {
    pub shared: Arc<Shared>,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What RPs lag, for `/status`: delta requests per lag bucket (cumulative, as in
/// `/metrics`) and snapshot downloads by whether the client had a delta path.
fn rp_lag_json(lag: &crate::metrics::RpLag) -> serde_json::Value {
    let c = lag.counts();
    json!({
        "delta_requests": c.count,
        "lag_sum": c.sum,
        "lag_at_most": c
            .cumulative
            .iter()
            .map(|(b, n)| (b.to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "snapshot_downloads": c.snapshots.iter().map(|(p, n)| (p.as_str().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Seconds since a repository's upstream last answered usably (since start if never).
fn seconds_stale(shared: &Shared, last_success: Option<SystemTime>) -> u64 {
    let since = last_success.unwrap_or(shared.started);
    shared
        .clock
        .system_now()
        .duration_since(since)
        .map_or(0, |d| d.as_secs())
}

impl Admin {
    /// 200 while every repository has something to serve that is no staler than
    /// `health.max_stale`; else 503 and why.
    pub(crate) fn health(&self) -> (u16, String) {
        let mut problems = Vec::new();
        for repo in &self.shared.repos {
            let status = repo.status();
            if repo.peek().is_none() {
                problems.push(format!("{}: nothing published yet", repo.name()));
                continue;
            }
            if let Some(max) = self.shared.config.health.max_stale {
                let stale = seconds_stale(&self.shared, status.last_success);
                if stale > max.as_secs() {
                    problems.push(format!(
                        "{}: upstream not reached for {stale}s (health.max_stale is {}s)",
                        repo.name(),
                        max.as_secs()
                    ));
                }
            }
        }
        if problems.is_empty() {
            (200, "ok\n".into())
        } else {
            (503, problems.join("\n") + "\n")
        }
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let now = self.shared.clock.unix_now();
        let repos: Vec<_> = self
            .shared
            .repos
            .iter()
            .map(|repo| {
                let s = repo.status();
                let g = repo.current();
                json!({
                    "public": repo.config.public.to_string(),
                    "upstream": match &repo.config.source_dir {
                        Some(d) => d.display().to_string(),
                        None => repo.config.upstream.to_string(),
                    },
                    "session_id": g.as_ref().map(|g| g.session_id.clone()),
                    "serial": g.as_ref().map(|g| g.serial),
                    "deltas": g.as_ref().map(|g| g.delta_count),
                    "servable_files": g.as_ref().map(|g| g.files.values().filter(|f| f.is_live(now)).count()),
                    "published_last_modified": g.as_ref().map(|g| g.last_modified_http()),
                    "polls_ok": s.polls_ok,
                    "polls_failed": s.polls_failed,
                    "last_success": s.last_success.map(secs),
                    "seconds_stale": seconds_stale(&self.shared, s.last_success),
                    "last_error": s.last_error,
                    "last_error_reason": s.last_error_reason,
                    "last_error_since": s.last_error_since.map(secs),
                    "last_publish_seconds": s.last_publish_seconds,
                    "last_round_seconds": s.last_round,
                    "compress_seconds": s.compress_seconds,
                    "snapshot_objects": g.as_ref().and_then(|g| g.snapshot_objects),
                    "exported_serial": s.exported_serial,
                    "erik_serial": s.erik_serial,
                    "erik_seconds": s.erik_seconds,
                    "compressed_serial": s.compressed_serial,
                    "delta_history": g.as_ref().map(|g| json!({
                        "entries": g.history.len(),
                        "oldest_serial": g.history.last().map(|h| h.serial),
                        "oldest_since": g.history.last().map(|h| h.since),
                    })),
                    "rp_lag": rp_lag_json(&repo.rp_lag),
                    "validation": validation_json(&repo.config, s.validation.as_deref(), now),
                })
            })
            .collect();
        let (health, _) = self.health();
        let (disk_bytes, disk_objects) = self.shared.store.usage();
        let (memory_bytes, memory_objects) = self.shared.store.memory_usage();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "healthy": health == 200,
            "cache": {
                "disk_bytes": disk_bytes,
                "disk_objects": disk_objects,
                "disk_limit": self.shared.config.cache.disk_limit,
                "memory_bytes": memory_bytes,
                "memory_objects": memory_objects,
            },
            "repositories": repos,
            "erik": self.erik_status(),
        })
    }

    /// The Erik relay's indexes (`server.erik`), or null when it is off.
    fn erik_status(&self) -> serde_json::Value {
        let Some(relay) = &self.shared.erik else {
            return serde_json::Value::Null;
        };
        let view = relay.view();
        let fqdns: Vec<_> = view
            .fqdns
            .iter()
            .map(|(fqdn, i)| {
                json!({
                    "fqdn": fqdn,
                    "index_time": i.time,
                    "partitions": i.partitions,
                    "manifests": i.manifests,
                })
            })
            .collect();
        json!({ "fqdns": fqdns, "objects": view.object_count() })
    }

    /// Serial and staleness samples per repository over the last hours (the page's plot).
    pub(crate) fn history(&self) -> serde_json::Value {
        let repos: Vec<_> = self
            .shared
            .repos
            .iter()
            .map(|r| json!({ "public": r.config.public.to_string(), "samples": r.samples() }))
            .collect();
        json!({ "repositories": repos })
    }

    /// `/metrics` in the Prometheus text format, each family one group.
    pub(crate) fn metrics(&self) -> String {
        let mut ex = Exposition::default();
        let encoded = self.collect(&mut ex).and_then(|()| ex.encode());
        encoded.unwrap_or_else(|e| {
            // Only a bug of ours (a bad name or label) gets here: say it where it is read.
            log::error!("cannot encode /metrics: {e}");
            format!("# cannot encode metrics: {e}\n")
        })
    }

    /// What `/metrics` shows, read now: the counters, the store's use, and each
    /// repository's serial, publish duration and staleness.
    fn collect(&self, ex: &mut Exposition) -> prometheus::Result<()> {
        let shared = &self.shared;
        shared.metrics.collect_into(ex)?;
        store_metrics(ex, shared)?;
        let repos: Vec<_> = shared
            .repos
            .iter()
            .map(|r| (r.name(), r.status(), r.current()))
            .collect();
        repository_metrics(ex, shared, &repos)?;
        rp_lag_metrics(ex, shared)?;
        erik_metrics(ex, shared)?;
        validation_metrics(ex, &repos)
    }
}

/// A repository's name, status and published generation, as a scrape reads them once.
type RepoRow = (String, RepoStatus, Option<Arc<Generation>>);

/// Per FQDN the Erik relay serves: its index's time and partition count.
fn erik_metrics(ex: &mut Exposition, shared: &Shared) -> prometheus::Result<()> {
    let Some(relay) = &shared.erik else {
        return Ok(());
    };
    let view = relay.view();
    ex.gauges(
        "rrdp_proxy_erik_index_time_seconds",
        "indexTime of the Erik index per FQDN (the newest thisUpdate of its manifests).",
        &["fqdn"],
        view.fqdns
            .iter()
            .map(|(f, i)| (vec![f.clone()], i.time as f64)),
    )?;
    ex.gauges(
        "rrdp_proxy_erik_partitions",
        "Partitions in the Erik index per FQDN.",
        &["fqdn"],
        view.fqdns
            .iter()
            .map(|(f, i)| (vec![f.clone()], i.partitions as f64)),
    )
}

/// The store's size on disk and in memory.
fn store_metrics(ex: &mut Exposition, shared: &Shared) -> prometheus::Result<()> {
    let (disk_bytes, disk_objects) = shared.store.usage();
    let (mem_bytes, mem_objects) = shared.store.memory_usage();
    for (name, help, v) in [
        (
            "rrdp_proxy_disk_bytes",
            "Bytes of objects in the cache directory.",
            disk_bytes,
        ),
        (
            "rrdp_proxy_disk_objects",
            "Objects in the cache directory.",
            disk_objects,
        ),
        (
            "rrdp_proxy_memory_bytes",
            "Bytes of objects in the memory tier.",
            mem_bytes,
        ),
        (
            "rrdp_proxy_memory_objects",
            "Objects in the memory tier.",
            mem_objects,
        ),
    ] {
        ex.gauges(name, help, &[], [(Vec::new(), v as f64)])?;
    }
    Ok(())
}

/// Per repository: the published serial, how long publishing took, staleness, the delta
/// history, the upstream's last answer.
fn repository_metrics(
    ex: &mut Exposition,
    shared: &Shared,
    repos: &[RepoRow],
) -> prometheus::Result<()> {
    ex.gauges(
        "rrdp_proxy_serial",
        "Published serial per repository.",
        &["repository", "session"],
        repos.iter().filter_map(|(name, _, g)| {
            let g = g.as_ref()?;
            Some((vec![name.clone(), g.session_id.clone()], g.serial as f64))
        }),
    )?;
    ex.gauges(
        "rrdp_proxy_publish_duration_seconds",
        "How long the last publishing round took (poll, fetch, verify, store, switch).",
        &["repository"],
        repos
            .iter()
            .filter_map(|(name, s, _)| Some((vec![name.clone()], s.last_publish_seconds?))),
    )?;
    ex.gauges(
        "rrdp_proxy_seconds_stale",
        "Seconds since the upstream last answered usably.",
        &["repository"],
        repos.iter().map(|(name, s, _)| {
            let stale = seconds_stale(shared, s.last_success);
            (vec![name.clone()], stale as f64)
        }),
    )?;
    ex.gauges(
        "rrdp_proxy_delta_history_entries",
        "Deltas the served notification lists.",
        &["repository"],
        repos.iter().filter_map(|(name, _, g)| {
            Some((vec![name.clone()], g.as_ref()?.history.len() as f64))
        }),
    )?;
    ex.gauges(
        "rrdp_proxy_last_success_timestamp_seconds",
        "When the upstream last answered usably.",
        &["repository"],
        repos
            .iter()
            .filter_map(|(name, s, _)| Some((vec![name.clone()], secs(s.last_success?) as f64))),
    )
}

/// What the RPs' requests say of how far behind they are.
fn rp_lag_metrics(ex: &mut Exposition, shared: &Shared) -> prometheus::Result<()> {
    ex.histograms(
        "rrdp_proxy_rp_lag_serials",
        "How many serials behind the current one the RPs asking for deltas are (a delta for serial N while S is current: S - N + 1).",
        &["repository"],
        shared
            .repos
            .iter()
            .map(|r| (vec![r.name()], r.rp_lag.counts())),
    );
    let snapshot_rows: Vec<_> = shared
        .repos
        .iter()
        .flat_map(|r| {
            let name = r.name();
            r.rp_lag
                .counts()
                .snapshots
                .into_iter()
                .map(move |(path, n)| (vec![name.clone(), path.as_str().to_string()], n))
        })
        .collect();
    ex.counters(
        "rrdp_proxy_snapshot_downloads_total",
        "Snapshot downloads, by whether the client had a delta path (it fetched a delta still listed before).",
        &["repository", "delta_path"],
        snapshot_rows,
    )?;
    Ok(())
}

/// A repository's validation settings and what its last validated round found.
fn validation_json(
    cfg: &crate::config::RepositoryConfig,
    v: Option<&ValidationStatus>,
    now: u64,
) -> serde_json::Value {
    let mode = cfg.validation.validate.as_str();
    let tals: Vec<_> = cfg
        .validation
        .tals
        .iter()
        .map(|t| t.path.display().to_string())
        .collect();
    let mut out = json!({
        "mode": mode,
        "tals": tals,
        "pre_validate": cfg.validation.pre_validate,
    });
    let Some(v) = v else {
        return out;
    };
    let due = |d: &Option<crate::objects::health::Due>| {
        d.as_ref()
            .map(|d| json!({ "uri": d.uri, "at": d.at, "seconds_left": d.at - now as i64 }))
    };
    out["last"] = json!({
        "session_id": v.session_id,
        "serial": v.serial,
        "at": v.at,
        "seconds": v.seconds,
        "refused": v.refused,
        "from_deltas": v.from_deltas,
        "verified": v.verified,
        "error": v.error,
        "pre_validate": v.pre_validate.as_ref().map(|p| json!({
            "ok": p.ok, "exit": p.exit, "detail": p.detail, "output": p.output,
        })),
    });
    if let Some(r) = &v.report {
        let by_check: serde_json::Map<String, serde_json::Value> = r
            .counts
            .iter()
            .map(|(c, n)| (c.label().to_string(), json!(n)))
            .collect();
        let h = &r.health;
        out["last"]["findings"] = json!(r.failed());
        out["last"]["by_check"] = serde_json::Value::Object(by_check);
        out["last"]["details"] = json!(r.findings);
        out["last"]["points"] = json!(r.points);
        out["last"]["points_from_anchor"] = json!(r.points_from_anchor);
        out["last"]["points_replayed"] = json!(r.points_replayed);
        out["health"] = json!({
            "objects": h.objects,
            "manifest_next_update": due(&h.manifest_next_update),
            "crl_next_update": due(&h.crl_next_update),
            "stale_manifests": h.stale_manifests,
            "missing_manifests": h.missing_manifests,
            "expiring_certificates": h.expiring,
            "expiry_window_seconds": h.expiry_window,
            "expiring_soonest": h.expiring_soonest,
        });
    }
    out
}

/// The repositories' validation and health gauges, from their last validated round.
fn validation_metrics(ex: &mut Exposition, repos: &[RepoRow]) -> prometheus::Result<()> {
    let reports: Vec<(&String, &ValidationStatus, Option<&crate::objects::Report>)> = repos
        .iter()
        .filter_map(|(name, s, _)| {
            let v = s.validation.as_deref()?;
            Some((name, v, v.report.as_ref()))
        })
        .collect();
    let with_report = || {
        reports
            .iter()
            .filter_map(|(name, _, r)| Some((*name, (*r)?)))
    };
    ex.gauges(
        "rrdp_proxy_validation_findings",
        "Checks that failed in the last validated round, by check.",
        &["repository", "check"],
        with_report().flat_map(|(name, r)| {
            crate::objects::Check::ALL.iter().map(move |c| {
                let n = r.counts.get(c).copied().unwrap_or(0);
                (vec![name.clone(), c.label().to_string()], n as f64)
            })
        }),
    )?;
    ex.gauges(
        "rrdp_proxy_validation_refused",
        "1 if the last validated round was refused (the previous generation is served).",
        &["repository"],
        reports
            .iter()
            .map(|(name, v, _)| (vec![(*name).clone()], f64::from(u8::from(v.refused)))),
    )?;
    ex.gauges(
        "rrdp_proxy_validation_duration_seconds",
        "How long validating the last validated round took (pre_validate included).",
        &["repository"],
        reports
            .iter()
            .map(|(name, v, _)| (vec![(*name).clone()], v.seconds)),
    )?;
    ex.gauges(
        "rrdp_proxy_rpki_objects",
        "RPKI objects in the last validated round, by kind.",
        &["repository", "kind"],
        with_report().flat_map(|(name, r)| {
            crate::objects::ObjectKind::ALL.iter().map(move |k| {
                let n = r.health.objects.get(k.label()).copied().unwrap_or(0);
                (vec![name.clone(), k.label().to_string()], n as f64)
            })
        }),
    )?;
    for (metric, help, figure) in HEALTH_GAUGES {
        ex.gauges(
            metric,
            help,
            &["repository"],
            with_report().filter_map(|(name, r)| Some((vec![name.clone()], figure(r)?))),
        )?;
    }
    Ok(())
}

/// A repository's health figure from its last validated round, if it has one.
type HealthFigure = fn(&crate::objects::Report) -> Option<f64>;

/// The health gauges with one value per repository: name, help, figure.
const HEALTH_GAUGES: [(&str, &str, HealthFigure); 5] = [
    (
        "rrdp_proxy_manifest_next_update_timestamp_seconds",
        "The earliest nextUpdate of any manifest: when it passes, RPs reject that publication point.",
        |r| Some(r.health.manifest_next_update.as_ref()?.at as f64),
    ),
    (
        "rrdp_proxy_crl_next_update_timestamp_seconds",
        "The earliest nextUpdate of any CRL.",
        |r| Some(r.health.crl_next_update.as_ref()?.at as f64),
    ),
    (
        "rrdp_proxy_stale_manifests",
        "Manifests not current (nextUpdate passed or thisUpdate ahead) in the last validated round.",
        |r| Some(r.health.stale_manifests as f64),
    ),
    (
        "rrdp_proxy_missing_manifests",
        "Publication points whose manifest a CA certificate names but that is not published.",
        |r| Some(r.health.missing_manifests as f64),
    ),
    (
        "rrdp_proxy_certificates_expiring",
        "Certificates (CA, router, EE of signed objects) expiring within expiry_window.",
        |r| Some(r.health.expiring as f64),
    ),
];

pub(crate) fn respond(status: u16, content_type: &str, body: String) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Cache-Control", "no-store")
        .header("Content-Length", body.len())
        .body(body.into_bytes())
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let access = admin_access::check(&self.shared.config.server, &method, &path, &req.headers);
        if let Err((status, why)) = access {
            let mut r = respond(status, "text/plain; charset=utf-8", format!("{why}\n"));
            if status == 401 {
                r.headers_mut()
                    .insert("WWW-Authenticate", http::HeaderValue::from_static("Bearer"));
            }
            return r;
        }
        match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/healthz") => {
                let (status, text) = self.health();
                respond(status, "text/plain; charset=utf-8", text)
            }
            ("GET" | "HEAD", "/status") => {
                let body = serde_json::to_string_pretty(&self.status()).unwrap_or_default() + "\n";
                respond(200, "application/json", body)
            }
            ("GET" | "HEAD", "/metrics") => respond(200, METRICS_CONTENT_TYPE, self.metrics()),
            ("GET" | "HEAD", "/history") => {
                let body = serde_json::to_string(&self.history()).unwrap_or_default() + "\n";
                respond(200, "application/json", body)
            }
            ("GET" | "HEAD", "/") => page::respond(page::Asset::Page),
            ("GET" | "HEAD", "/page.js") => page::respond(page::Asset::Script),
            ("GET" | "HEAD", "/page.css") => page::respond(page::Asset::Style),
            ("POST", "/refresh") => {
                for repo in &self.shared.repos {
                    repo.poll_now();
                }
                respond(
                    202,
                    "text/plain; charset=utf-8",
                    "refresh requested\n".into(),
                )
            }
            (_, "/healthz" | "/status" | "/metrics" | "/refresh" | "/history" | "/") => respond(
                405,
                "text/plain; charset=utf-8",
                "method not allowed\n".into(),
            ),
            _ => respond(404, "text/plain; charset=utf-8", "not found\n".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Config;
    use crate::objects::health::Due;

    /// A moment well before any date this test runs on (2023-11-14).
    const AT: u64 = 1_700_000_000;

    fn admin_at(cache: &Path, unix: u64) -> Admin {
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[cache]\ndir = \"{}\"\n\
             [[repository]]\npublic = \"http://127.0.0.1:8080/rrdp/\"\n\
             upstream = \"http://127.0.0.1:1/rrdp/\"\n",
            cache.display()
        );
        let config = Config::parse(&text, cache).unwrap();
        let clock = Clock::Manual(ManualClock::at_unix(unix));
        Admin {
            shared: Shared::open_with_clock(config, clock).unwrap(),
        }
    }

    /// Regression (issue 29): `/status` read the system clock for its health figures while
    /// validation read the node's, so a fixed clock gave answers that changed with the date.
    #[test]
    fn status_times_are_read_on_the_nodes_clock() {
        let cache = tempfile::tempdir().unwrap();
        let admin = admin_at(cache.path(), AT);
        let mut report = crate::objects::Report::default();
        report.health.manifest_next_update = Some(Due {
            uri: "rsync://x/a.mft".into(),
            at: AT as i64 + 3600,
        });
        let repo = &admin.shared.repos[0];
        repo.report(|s| {
            s.last_success = Some(UNIX_EPOCH + Duration::from_secs(AT - 30));
            s.validation = Some(Arc::new(ValidationStatus {
                at: AT,
                report: Some(report),
                ..ValidationStatus::default()
            }));
        });
        let v = &admin.status()["repositories"][0];
        assert_eq!(
            v["validation"]["health"]["manifest_next_update"]["seconds_left"],
            3600
        );
        assert_eq!(v["seconds_stale"], 30);
        assert!(admin
            .metrics()
            .contains("rrdp_proxy_seconds_stale{repository=\"http://127.0.0.1:8080/rrdp/\"} 30"));
    }
}
