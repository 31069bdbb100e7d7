//! RPKI validation before publishing (`validate`, `tal`, `pre_validate`), with the real
//! objects of a Krill testbed (tests/data/krill-testbed) served by the fake origin, and the
//! trust anchor certificate fetched through a passthrough, as Krill's `/ta/ta.cer` is. The
//! proxy's clock is set to the capture's time, so the recorded manifests are current.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rrdp_proxy::demo::Publisher;
use rrdp_proxy::rrdp::content::{self, Document, Expected};
use rrdp_proxy::rrdp::Notification;
use rrdp_proxy::{Clock, ManualClock};
use serde_json::Value;

use crate::support::*;

pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/krill-testbed")
}

pub(crate) const TESTBED: &str = "rsync://rrdp.test/repo/testbed/0/";
pub(crate) const R1: &str = "31302e302e302e302f32342d3234203d3e203634343936.roa";

/// The objects of the recorded snapshot `which`, and a minute after it was made.
pub(crate) fn recorded(which: &str) -> (BTreeMap<String, Vec<u8>>, u64) {
    let dir = fixture_dir().join(which);
    let n = Notification::parse(&std::fs::read(dir.join("notification.xml")).unwrap()).unwrap();
    let expected = Expected {
        kind: Document::Snapshot,
        session_id: n.session_id,
        serial: n.serial,
        max_object_size: rrdp_proxy::rrdp::content::DEFAULT_MAX_OBJECT_SIZE,
    };
    let text = std::fs::read(dir.join("snapshot.xml")).unwrap();
    let objects = content::read_objects(text.as_slice(), &expected).unwrap();
    let made = objects
        .iter()
        .filter(|(u, _)| u.ends_with(".mft"))
        .filter_map(|(u, d)| rrdp_proxy::testing::made_at(u, d))
        .max()
        .unwrap();
    let objects = objects.into_iter().map(|(u, d)| (u, d.to_vec())).collect();
    (objects, made as u64 + 60)
}

/// An origin serving the recorded repository `a` and the TA certificate; a proxy in front
/// with `settings` in its repository table, validating at the capture's time.
async fn setup(cache: &Path, settings: &str) -> (Origin, Proxy) {
    let (origin, proxy, _) = setup_with_clock(cache, settings).await;
    (origin, proxy)
}

/// [`setup`], and the proxy's clock.
async fn setup_with_clock(cache: &Path, settings: &str) -> (Origin, Proxy, Arc<ManualClock>) {
    setup_with_server(cache, settings, "").await
}

/// [`setup_with_clock`] with `server` added to the `[server]` table.
pub(crate) async fn setup_with_server(
    cache: &Path,
    settings: &str,
    server: &str,
) -> (Origin, Proxy, Arc<ManualClock>) {
    let (objects, at) = recorded("a");
    let origin = Origin::start().await;
    let base = origin.base();
    let ta = Bytes::from(std::fs::read(fixture_dir().join("ta.cer")).unwrap());
    origin.with(|s| {
        s.repo = Publisher::with_objects(&base, objects);
        s.extra
            .insert("/ta/ta.cer".into(), (200, "application/pkix-cert", ta));
    });
    let (port, admin_port) = (free_port(), free_port());
    let extra = format!(
        "poll_interval = \"1h\"\n{settings}\n\
         [[passthrough]]\npublic = \"https://rrdp.test/ta/\"\nupstream = \"http://{}/ta/\"\n",
        origin.addr
    );
    let text = config_text(port, admin_port, cache, &base, &extra).replacen(
        "threads = 2\n",
        &format!("threads = 2\n{server}\n"),
        1,
    );
    let manual = ManualClock::at_unix(at);
    let proxy = Proxy::start_with_clock(text, port, admin_port, Clock::Manual(manual.clone()));
    proxy.wait_first_poll().await;
    (origin, proxy, manual)
}

pub(crate) fn tal() -> String {
    format!("tal = \"{}\"", fixture_dir().join("ta.tal").display())
}

async fn status(proxy: &Proxy) -> Value {
    let body = http(proxy.admin_port, "GET", "/status", &[]).await.body;
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["repositories"][0]["validation"].clone()
}

async fn metrics(proxy: &Proxy) -> String {
    http(proxy.admin_port, "GET", "/metrics", &[]).await.text()
}

/// The next serial at the origin with R1's signature broken (one flipped byte at its end).
pub(crate) fn break_r1(origin: &Origin) -> u64 {
    let uri = format!("{TESTBED}{R1}");
    origin.with(|s| {
        let mut der = s.repo.objects()[&uri].clone();
        *der.last_mut().unwrap() ^= 1;
        s.repo.apply([(uri.clone(), Some(der))]);
        s.repo.serial()
    })
}

#[tokio::test]
async fn a_krill_repository_passes_refuse_with_its_tal() {
    let cache = tempfile::tempdir().unwrap();
    let (origin, proxy) = setup(cache.path(), &format!("validate = \"refuse\"\n{}", tal())).await;
    proxy.wait_serial(1).await;
    let v = status(&proxy).await;
    assert_eq!(v["mode"], "refuse");
    assert_eq!(v["last"]["findings"], 0, "{v:#}");
    assert_eq!(v["last"]["points_from_anchor"], 3, "{v:#}");
    assert_eq!(v["last"]["refused"], false);
    assert_eq!(v["health"]["objects"]["roa"], 3);
    assert!(
        v["health"]["manifest_next_update"]["seconds_left"]
            .as_i64()
            .unwrap()
            > 0
    );
    // The TA certificate came through the passthrough's upstream.
    assert!(origin.requests_for("/ta/ta.cer") >= 1);
    let m = metrics(&proxy).await;
    assert!(m.contains("rrdp_proxy_rpki_objects{kind=\"roa\""), "{m}");
    assert!(
        m.contains("rrdp_proxy_validation_refused{repository="),
        "{m}"
    );

    // A new serial republishing two ROAs unchanged: brought up to date from its delta, and
    // nothing read and verified again (their results are cached).
    let r2 = format!("{TESTBED}31302e302e312e302f32342d3234203d3e203634343937.roa");
    let republish = |origin: &Origin| {
        origin.with(|s| {
            let again: Vec<_> = [format!("{TESTBED}{R1}"), r2.clone()]
                .into_iter()
                .map(|u| (u.clone(), Some(s.repo.objects()[&u].clone())))
                .collect();
            s.repo.apply(again);
            s.repo.serial()
        })
    };
    let serial = republish(&origin);
    proxy.poll().await;
    proxy.wait_serial(serial).await;
    let v = status(&proxy).await;
    assert_eq!(v["last"]["findings"], 0, "{v:#}");
    assert_eq!(v["last"]["from_deltas"], true, "{v:#}");
    assert_eq!(v["last"]["verified"], 0, "{v:#}");

    // Restarted while the TA certificate cannot be fetched: the one kept in the store
    // validates the next serial.
    let text = proxy.config_text.clone();
    let (port, admin_port) = (proxy.port, proxy.admin_port);
    let at = proxy.shared.clock().unix_now();
    drop(proxy);
    origin.with(|s| s.extra.clear());
    let serial = republish(&origin);
    let clock = Clock::Manual(ManualClock::at_unix(at));
    let proxy = Proxy::start_with_clock(text, port, admin_port, clock);
    proxy.wait_serial(serial).await;
    let v = status(&proxy).await;
    assert_eq!(v["last"]["findings"], 0, "{v:#}");
    assert_eq!(v["last"]["points_from_anchor"], 3, "{v:#}");
    assert_eq!(
        v["last"]["from_deltas"], false,
        "a new process starts from the snapshot"
    );
}

#[tokio::test]
async fn refuse_keeps_the_previous_generation_and_says_why() {
    let cache = tempfile::tempdir().unwrap();
    let (origin, proxy) = setup(cache.path(), &format!("validate = \"refuse\"\n{}", tal())).await;
    proxy.wait_serial(1).await;
    let serial = break_r1(&origin);
    let s = proxy.poll().await;
    assert_eq!(
        s.serial,
        Some(1),
        "the broken serial {serial} was published"
    );
    assert_eq!(s.last_error_reason, Some("rpki_validation"));
    assert!(
        s.last_error.as_ref().unwrap().contains(R1),
        "{:?}",
        s.last_error
    );
    let v = status(&proxy).await;
    assert_eq!(v["last"]["refused"], true);
    assert_eq!(v["last"]["serial"], serial);
    assert_eq!(v["last"]["from_deltas"], true);
    assert_eq!(v["last"]["verified"], 1, "{v:#}");
    let details = v["last"]["details"].as_array().unwrap();
    let r1: Vec<_> = details
        .iter()
        .filter(|d| d["uri"].as_str().unwrap().ends_with(R1))
        .map(|d| d["check"].as_str().unwrap())
        .collect();
    assert_eq!(r1, ["manifest_hash", "signature"], "{v:#}");
    let m = metrics(&proxy).await;
    assert!(
        m.contains("rrdp_proxy_validation_refusals_total{reason=\"signature\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("rrdp_proxy_validation_refused{repository="),
        "{m}"
    );
    // The refused serial's snapshot is not served, even to a client that knows its path.
    let path = origin.with(|s| s.repo.snapshot_path().to_string());
    assert_eq!(proxy.get(&format!("/rrdp/{path}")).await.status, 404);
    let served = proxy.get("/rrdp/notification.xml").await.text();
    assert!(served.contains("serial=\"1\""), "{served}");
}

#[tokio::test]
async fn warn_publishes_and_reports() {
    let cache = tempfile::tempdir().unwrap();
    let (origin, proxy) = setup(cache.path(), &format!("validate = \"warn\"\n{}", tal())).await;
    proxy.wait_serial(1).await;
    let serial = break_r1(&origin);
    proxy.poll().await;
    proxy.wait_serial(serial).await;
    // `warn` validates after publishing: wait for its report.
    proxy
        .wait("the serial validated", |s| {
            s.validation.as_ref().is_some_and(|v| v.serial == serial)
        })
        .await;
    let v = status(&proxy).await;
    assert_eq!(v["last"]["refused"], false);
    assert_eq!(v["last"]["by_check"]["signature"], 1, "{v:#}");
    let m = metrics(&proxy).await;
    assert!(
        m.contains("rrdp_proxy_validation_findings{check=\"signature\","),
        "{m}"
    );
    assert!(!m.contains("rrdp_proxy_validation_refusals_total{"), "{m}");
}

#[tokio::test]
async fn without_a_tal_the_anchor_free_checks_still_refuse() {
    // A listed file withdrawn: no TAL is needed to see it.
    let cache = tempfile::tempdir().unwrap();
    let (origin, proxy) = setup(cache.path(), "validate = \"refuse\"").await;
    proxy.wait_serial(1).await;
    assert_eq!(status(&proxy).await["last"]["points_from_anchor"], 0);
    origin.with(|s| s.repo.apply([(format!("{TESTBED}{R1}"), None)]));
    let s = proxy.poll().await;
    assert_eq!(s.serial, Some(1));
    let v = status(&proxy).await;
    assert_eq!(v["last"]["by_check"]["manifest_missing"], 1, "{v:#}");
}

#[tokio::test]
async fn pre_validate_sees_the_candidate_tree_and_can_refuse() {
    let cache = tempfile::tempdir().unwrap();
    // Passes while the tree holds R1 (in the rsync layout under the directory it is given).
    let script = format!(
        "test -f \"$1/rrdp.test/repo/testbed/0/{R1}\" && echo tree ok || {{ echo R1 missing; exit 3; }}"
    );
    let settings = format!(
        "validate = \"off\"\npre_validate = [\"sh\", \"-c\", {script:?}, \"sh\"]\npre_validate_timeout = \"20s\""
    );
    let (origin, proxy) = setup(cache.path(), &settings).await;
    proxy.wait_serial(1).await;
    let v = status(&proxy).await;
    assert_eq!(v["last"]["pre_validate"]["ok"], true, "{v:#}");
    assert!(v["last"]["pre_validate"]["output"]
        .as_str()
        .unwrap()
        .contains("tree ok"));
    assert!(v["last"]["findings"].is_null(), "validate = off: no report");
    origin.with(|s| s.repo.apply([(format!("{TESTBED}{R1}"), None)]));
    let s = proxy.poll().await;
    assert_eq!(s.serial, Some(1));
    assert_eq!(s.last_error_reason, Some("pre_validate"));
    let v = status(&proxy).await;
    assert_eq!(v["last"]["pre_validate"]["exit"], 3, "{v:#}");
    assert!(v["last"]["pre_validate"]["output"]
        .as_str()
        .unwrap()
        .contains("R1 missing"));
    // Its temporary tree, in the cache's tmp/, is gone.
    let left = std::fs::read_dir(cache.path().join("tmp"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("pre-validate-")
        })
        .count();
    assert_eq!(left, 0);
}

/// Objects published (`Some`) or withdrawn at a serial.
type Changes = Vec<(String, Option<Vec<u8>>)>;

/// One bad input: a change to the recorded repository at the next serial (and how far the
/// clock moves), and the object and check the report must name.
struct Bad {
    name: &'static str,
    change: fn(&BTreeMap<String, Vec<u8>>) -> Changes,
    advance: Duration,
    uri: String,
    check: &'static str,
}

const R1_URI: &str =
    "rsync://rrdp.test/repo/testbed/0/31302e302e302e302f32342d3234203d3e203634343936.roa";
const R2_URI: &str =
    "rsync://rrdp.test/repo/testbed/0/31302e302e312e302f32342d3234203d3e203634343937.roa";
const MFT_URI: &str =
    "rsync://rrdp.test/repo/testbed/0/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.mft";
const CRL_URI: &str =
    "rsync://rrdp.test/repo/testbed/0/2FB275FEE62EAEB2959A8EEC2A0036ACB5C8E84C.crl";
const CHILD_CER: &str =
    "rsync://rrdp.test/repo/testbed/0/B9A7EAF6DA3047FEF6370F8F39631EBBC5F47241.cer";
const CHILD_ROA: &str =
    "rsync://rrdp.test/repo/child/0/31302e312e302e302f32342d3234203d3e203634353030.roa";

/// The recorded object at `uri`, changed by `f`.
fn changed(
    o: &BTreeMap<String, Vec<u8>>,
    uri: &str,
    f: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> Changes {
    vec![(uri.to_string(), Some(f(o[uri].clone())))]
}

fn bad_inputs() -> Vec<Bad> {
    let bad = |name, change, advance, uri: &str, check| Bad {
        name,
        change,
        advance,
        uri: uri.to_string(),
        check,
    };
    let now = Duration::ZERO;
    vec![
        bad(
            "a manifest hash that does not match",
            |o| changed(o, R1_URI, |_| o[R2_URI].clone()),
            now,
            R1_URI,
            "manifest_hash",
        ),
        bad(
            "a listed file withdrawn",
            |_| vec![(R2_URI.to_string(), None)],
            now,
            R2_URI,
            "manifest_missing",
        ),
        bad(
            "an expired manifest (the same repository two days on)",
            |o| changed(o, R1_URI, |d| d),
            Duration::from_secs(2 * 86400),
            MFT_URI,
            "manifest",
        ),
        bad(
            "a CRL that revokes a listed ROA",
            |o| changed(o, CRL_URI, |_| recorded("b").0[CRL_URI].clone()),
            now,
            R2_URI,
            "revoked",
        ),
        bad(
            "a broken signature",
            |o| {
                changed(o, R1_URI, |mut d| {
                    *d.last_mut().unwrap() ^= 1;
                    d
                })
            },
            now,
            R1_URI,
            "signature",
        ),
        bad(
            "a truncated certificate",
            |o| changed(o, CHILD_CER, |d| d[..d.len() / 2].to_vec()),
            now,
            CHILD_CER,
            "parse",
        ),
        bad(
            "an object that is not DER",
            |o| changed(o, CHILD_ROA, |_| b"<html>not found</html>".to_vec()),
            now,
            CHILD_ROA,
            "parse",
        ),
        bad(
            "a manifest of 100,000 entries",
            |o| {
                changed(o, MFT_URI, |d| {
                    rrdp_proxy::fuzz_checks::manifest_with_entries(&d, 100_000)
                })
            },
            now,
            MFT_URI,
            "signature",
        ),
    ]
}

#[tokio::test]
async fn every_bad_input_is_refused_under_refuse_and_reported_under_warn() {
    for bad in bad_inputs() {
        for mode in ["refuse", "warn"] {
            let case = format!("{} ({mode})", bad.name);
            let cache = tempfile::tempdir().unwrap();
            let settings = format!("validate = \"{mode}\"\n{}", tal());
            let (origin, proxy, clock) = setup_with_clock(cache.path(), &settings).await;
            proxy.wait_serial(1).await;
            let serial = origin.with(|s| {
                let changes = (bad.change)(s.repo.objects());
                s.repo.apply(changes);
                s.repo.serial()
            });
            clock.advance(bad.advance);
            let st = proxy.poll().await;
            if mode == "refuse" {
                assert_eq!(st.serial, Some(1), "{case}: published");
                assert_eq!(st.last_error_reason, Some("rpki_validation"), "{case}");
                let served = proxy.get("/rrdp/notification.xml").await.text();
                assert!(served.contains("serial=\"1\""), "{case}: {served}");
            } else {
                proxy.wait_serial(serial).await;
            }
            proxy
                .wait(&case, |s| {
                    s.validation.as_ref().is_some_and(|v| v.serial == serial)
                })
                .await;
            let v = status(&proxy).await;
            assert_eq!(v["last"]["refused"], mode == "refuse", "{case}: {v:#}");
            let named = v["last"]["details"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["uri"] == bad.uri.as_str() && d["check"] == bad.check);
            assert!(named, "{case}: no {} for {}: {v:#}", bad.check, bad.uri);
        }
    }
}

#[test]
fn a_manifest_of_100000_entries_is_reported_within_bounds() {
    use rrdp_proxy::testing::{validate, Check, MAX_FINDINGS};
    let repo = rrdp_proxy::fuzz_checks::Testbed::krill_testbed(&fixture_dir()).unwrap();
    let mut objects = repo.objects.clone();
    let big = rrdp_proxy::fuzz_checks::manifest_with_entries(&objects[MFT_URI], 100_000);
    assert!(big.len() > 2_000_000);
    objects.insert(MFT_URI.to_string(), Bytes::from(big));
    let report = validate(&objects, &repo.anchors, repo.now, 0);
    // Its signature no longer covers its content; its 100,000 files are not published: all
    // counted, the first MAX_FINDINGS kept with their detail.
    assert_eq!(report.counts.get(&Check::ManifestMissing), Some(&100_000));
    assert!(report.findings.len() <= MAX_FINDINGS);
    let own = report.findings.iter().find(|f| f.uri == MFT_URI).unwrap();
    assert_eq!(own.check, Check::Signature, "{own:?}");
}

/// Regression (issue 26, item 12): a hook that wrote 200 KB to stderr stalled the round past
/// its timeout (stdout was read to its end first, while the hook blocked on a full stderr
/// pipe). Both are read at once; the status keeps the last 8 KiB of each.
#[tokio::test]
async fn a_chatty_pre_validate_hook_neither_stalls_nor_floods() {
    let cache = tempfile::tempdir().unwrap();
    let script =
        "head -c 200000 /dev/zero | tr '\\0' x >&2; head -c 100000 /dev/zero | tr '\\0' y; exit 0";
    let settings = format!(
        "validate = \"off\"\npre_validate = [\"sh\", \"-c\", {script:?}]\npre_validate_timeout = \"20s\""
    );
    let (_origin, proxy) = setup(cache.path(), &settings).await;
    proxy.wait_serial(1).await;
    let v = status(&proxy).await;
    assert_eq!(v["last"]["pre_validate"]["ok"], true, "{v:#}");
    let output = v["last"]["pre_validate"]["output"].as_str().unwrap();
    assert!(
        output.len() <= 2 * (8 << 10) + 8,
        "{} bytes kept",
        output.len()
    );
    assert!(output.contains("yyyy") && output.ends_with("xxxx"));
}

/// A hook that outlives its timeout, with a background process of its own: the round is
/// refused at the timeout, and the whole process group goes with it.
#[tokio::test]
async fn a_pre_validate_hook_past_its_timeout_is_killed_with_its_children() {
    let cache = tempfile::tempdir().unwrap();
    let pid_file = cache.path().join("background.pid");
    let script = format!(
        "sleep 600 & echo $! > {:?}; sleep 600",
        pid_file.display().to_string()
    );
    let settings = format!(
        "validate = \"off\"\npre_validate = [\"sh\", \"-c\", {script:?}]\npre_validate_timeout = \"1s\""
    );
    let (_origin, proxy) = setup(cache.path().join("cache").as_path(), &settings).await;
    let s = proxy.wait_first_poll().await;
    assert_eq!(s.serial, None);
    assert_eq!(s.last_error_reason, Some("pre_validate"), "{s:?}");
    let v = status(&proxy).await;
    assert!(
        v["last"]["pre_validate"]["detail"]
            .as_str()
            .unwrap()
            .contains("pre_validate_timeout"),
        "{v:#}"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    // Gone, or a zombie waiting for its new parent to reap it: not running either way.
    assert!(
        stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z"),
        "the hook's background process still runs: {stat}"
    );
}
