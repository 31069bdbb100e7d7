//! The fault suite: every way an upstream can break or lie, one after the other against one
//! proxy. For each: the proxy keeps serving the last good repository, stores no bad byte,
//! says what happened in one line (the status's `last_error`, which is what it logs), counts
//! it in a metric, and publishes the origin's repository by itself once the origin heals.

use std::path::Path;

use bytes::Bytes;
use rrdp_proxy::demo::Publisher;
use rrdp_proxy::rrdp::Hash;

use crate::support::{fetch_consistent, Fault, Origin, OriginState, Proxy};

const NOTIFICATION: &str = "/rrdp/notification.xml";

/// Breaks the origin; gets the new serial's notification text.
type Inject = Box<dyn Fn(&mut OriginState, &str)>;

/// One fault: how to break the origin after it published a new serial, and what the proxy
/// must report.
struct Case {
    name: &'static str,
    /// Breaks the origin; gets the new serial's notification text.
    inject: Inject,
    /// The metric label (`rrdp_proxy_poll_errors_total{reason=...}`).
    reason: &'static str,
    /// A piece of the one-line error.
    message: &'static str,
}

fn case(
    name: &'static str,
    reason: &'static str,
    message: &'static str,
    inject: impl Fn(&mut OriginState, &str) + 'static,
) -> Case {
    Case {
        name,
        inject: Box::new(inject),
        reason,
        message,
    }
}

/// Serves `body` as the notification.
fn notification(body: impl Into<Bytes>) -> impl Fn(&mut OriginState, &str) {
    let body = body.into();
    move |s, _| s.notification_override = Some(body.clone())
}

/// Edits the new notification's text.
fn edit(f: impl Fn(&str) -> String + 'static) -> impl Fn(&mut OriginState, &str) {
    move |s, text| s.notification_override = Some(Bytes::from(f(text)))
}

/// Breaks the transfer of the new snapshot.
fn snapshot_fault(fault: Fault) -> impl Fn(&mut OriginState, &str) {
    move |s, _| {
        let path = format!("/rrdp/{}", s.repo.snapshot_path());
        s.faults.insert(path, fault);
    }
}

/// Answers the new snapshot's path with this instead.
fn snapshot_answer(
    status: u16,
    ctype: &'static str,
    body: &'static str,
) -> impl Fn(&mut OriginState, &str) {
    move |s, _| {
        let path = format!("/rrdp/{}", s.repo.snapshot_path());
        s.extra
            .insert(path, (status, ctype, Bytes::from_static(body.as_bytes())));
    }
}

/// Replaces the new snapshot by `body` and announces it with the matching hash: only the
/// content check can tell.
fn snapshot_with_right_hash(
    f: impl Fn(&str) -> String + 'static,
) -> impl Fn(&mut OriginState, &str) {
    move |s, text| {
        let rel = s.repo.snapshot_path().to_string();
        let good = s.repo.file(&rel).unwrap();
        let bad = Bytes::from(f(std::str::from_utf8(&good).unwrap()));
        let text = text.replace(&Hash::of(&good).to_hex(), &Hash::of(&bad).to_hex());
        s.repo.corrupt(&rel, bad);
        s.notification_override = Some(Bytes::from(text));
    }
}

fn cases() -> Vec<Case> {
    let billion_laughs = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">{}]>\n<notification>&lol9;</notification>",
        (1..10)
            .map(|i| format!("<!ENTITY lol{i} \"{}\">", format!("&lol{};", i - 1).repeat(10)))
            .collect::<String>()
    );
    let many_deltas = |text: &str| {
        let line = text
            .lines()
            .find(|l| l.contains("<delta "))
            .unwrap()
            .to_string();
        let extra = line.repeat(20_000);
        text.replacen(&line, &extra, 1)
    };
    vec![
        case("5xx", "status", "HTTP status 503", |s, _| {
            s.extra.insert(
                NOTIFICATION.into(),
                (503, "text/plain", Bytes::from_static(b"busy\n")),
            );
        }),
        case("404", "status", "HTTP status 404", |s, _| {
            s.extra.insert(
                NOTIFICATION.into(),
                (404, "text/plain", Bytes::from_static(b"gone\n")),
            );
        }),
        case(
            "200 with an HTML error page",
            "invalid_notification",
            "HTML",
            |s, _| {
                s.extra.insert(
                    NOTIFICATION.into(),
                    (
                        200,
                        "text/html",
                        Bytes::from_static(b"<html><body>Oops</body></html>"),
                    ),
                );
            },
        ),
        case(
            "notification reset mid-body",
            "transport",
            "notification",
            |s, _| {
                s.faults.insert(NOTIFICATION.into(), Fault::Reset);
            },
        ),
        case(
            "notification truncated",
            "transport",
            "notification",
            |s, _| {
                s.faults.insert(NOTIFICATION.into(), Fault::Truncate);
            },
        ),
        case("notification stalled", "timeout", "timed out", |s, _| {
            s.faults.insert(NOTIFICATION.into(), Fault::Stall);
        }),
        case(
            "oversized notification",
            "too_large",
            "larger than the limit",
            edit(|t| {
                t.replacen(
                    "<snapshot",
                    &format!("<!-- {} -->\n<snapshot", "x".repeat(5 << 20)),
                    1,
                )
            }),
        ),
        case(
            "DTD / entity expansion",
            "invalid_notification",
            "DOCTYPE",
            notification(billion_laughs),
        ),
        case(
            "invalid UTF-8",
            "invalid_notification",
            "UTF-8",
            edit(|t| t.replacen("<snapshot", "<snapshot\u{0}", 1)).then_bytes(|b| {
                let mut b = b.to_vec();
                let at = b.iter().position(|c| *c == 0).unwrap();
                b[at] = 0xff;
                Bytes::from(b)
            }),
        ),
        case(
            "wrong namespace",
            "invalid_notification",
            "namespace",
            edit(|t| {
                t.replace(
                    "http://www.ripe.net/rpki/rrdp",
                    "http://www.ripe.net/rpki/rrdp2",
                )
            }),
        ),
        case(
            "wrong version",
            "invalid_notification",
            "version",
            edit(|t| t.replace("version=\"1\"", "version=\"2\"")),
        ),
        case(
            "session_id not a UUID",
            "invalid_notification",
            "not a UUID",
            edit(|t| {
                let at = t.find("session_id=\"").unwrap() + 12;
                format!("{}not-a-uuid{}", &t[..at], &t[at + 36..])
            }),
        ),
        case(
            "delta list with a hole",
            "invalid_notification",
            "hole",
            edit(|t| {
                let lines: Vec<&str> = t.lines().collect();
                let deltas: Vec<usize> = (0..lines.len())
                    .filter(|i| lines[*i].contains("<delta "))
                    .collect();
                let drop = deltas[1];
                lines
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != drop)
                    .map(|(_, l)| format!("{l}\n"))
                    .collect()
            }),
        ),
        case(
            "delta listed twice",
            "invalid_notification",
            "twice",
            edit(|t| {
                let line = t.lines().find(|l| l.contains("<delta ")).unwrap();
                t.replacen(line, &format!("{line}\n{line}"), 1)
            }),
        ),
        case(
            "delta beyond the notification's serial",
            "invalid_notification",
            "newest delta",
            edit(|t| {
                let at = t.find(" serial=\"").unwrap() + 9;
                let end = at + t[at..].find('"').unwrap();
                let serial: u64 = t[at..end].parse().unwrap();
                format!("{}{}{}", &t[..at], serial - 1, &t[end..])
            }),
        ),
        case(
            "thousands of deltas",
            "invalid_notification",
            "more than",
            edit(many_deltas),
        ),
        case(
            "URI on another host",
            "invalid_notification",
            "is not under",
            |s, t| {
                let base = s.repo.base_uri().to_string();
                s.notification_override = Some(Bytes::from(
                    t.replace(&base, "http://169.254.169.254/rrdp/"),
                ));
            },
        ),
        case(
            "file:// URI",
            "invalid_notification",
            "is not under",
            |s, t| {
                let base = s.repo.base_uri().to_string();
                s.notification_override = Some(Bytes::from(t.replace(&base, "file:///etc/")));
            },
        ),
        case(
            "URI on another port of the same host",
            "invalid_notification",
            "is not under",
            |s, t| {
                let base = s.repo.base_uri().to_string();
                let other = base.replacen("127.0.0.1:", "127.0.0.1:1", 1);
                s.notification_override = Some(Bytes::from(t.replace(&base, &other)));
            },
        ),
        case(
            "snapshot 500",
            "status",
            "HTTP status 500",
            snapshot_answer(500, "text/plain", "oops\n"),
        ),
        case(
            "snapshot 404",
            "status",
            "HTTP status 404",
            snapshot_answer(404, "text/plain", "no\n"),
        ),
        case(
            "snapshot as an HTML page",
            "unusable",
            "HTML",
            snapshot_answer(200, "text/html", "<html>login</html>"),
        ),
        case(
            "snapshot reset mid-body",
            "transport",
            "snapshot",
            snapshot_fault(Fault::Reset),
        ),
        case(
            "snapshot truncated",
            "transport",
            "snapshot",
            snapshot_fault(Fault::Truncate),
        ),
        case(
            "snapshot stalled",
            "timeout",
            "timed out",
            snapshot_fault(Fault::Stall),
        ),
        case(
            "snapshot with a wrong hash",
            "hash_mismatch",
            "mismatch",
            |s, _| {
                let rel = s.repo.snapshot_path().to_string();
                s.repo
                    .corrupt(&rel, Bytes::from_static(b"<snapshot>forged</snapshot>"));
            },
        ),
        case(
            "oversized snapshot",
            "too_large",
            "larger than the limit",
            |s, _| {
                let rel = s.repo.snapshot_path().to_string();
                s.repo
                    .corrupt(&rel, Bytes::from(format!("<{}", "x".repeat(300 << 10))));
            },
        ),
        case(
            "snapshot of another serial (right hash)",
            "invalid_content",
            "serial",
            snapshot_with_right_hash(|good| {
                let at = good.find(" serial=\"").unwrap() + 9;
                let end = at + good[at..].find('"').unwrap();
                format!("{}1{}", &good[..at], &good[end..])
            }),
        ),
        case(
            "snapshot that is not RRDP (right hash)",
            "invalid_content",
            "root element",
            snapshot_with_right_hash(|_| "<html><body>maintenance</body></html>".to_string()),
        ),
        case(
            "snapshot with a DTD (right hash)",
            "invalid_content",
            "DOCTYPE",
            snapshot_with_right_hash(|good| format!("<!DOCTYPE x [<!ENTITY a \"b\">]>\n{good}")),
        ),
    ]
}

/// Lets a notification fault be given as text and then turned into bytes (invalid UTF-8).
trait ThenBytes {
    fn then_bytes(self, f: impl Fn(&[u8]) -> Bytes + 'static) -> Inject;
}

impl<F: Fn(&mut OriginState, &str) + 'static> ThenBytes for F {
    fn then_bytes(self, f: impl Fn(&[u8]) -> Bytes + 'static) -> Inject {
        Box::new(move |s, t| {
            self(s, t);
            let b = s.notification_override.take().unwrap();
            s.notification_override = Some(f(&b));
        })
    }
}

/// Every object in the store has the hash it is named by, and no temporary file is left.
fn store_is_clean(cache: &Path) {
    let objects = cache.join("objects");
    for sub in std::fs::read_dir(&objects).unwrap() {
        for entry in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".gz") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            assert_eq!(
                Hash::of(&data).to_hex(),
                name,
                "{} holds other bytes",
                path.display()
            );
        }
    }
    let tmp: Vec<_> = std::fs::read_dir(cache.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_upstream_fault_keeps_the_last_good_repository_and_heals() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        cache.path(),
        &origin.base(),
        "fetch_timeout = \"2s\"\nmax_notification_size = \"4MiB\"\nmax_file_size = \"256KiB\"",
    );
    proxy.wait_serial(1).await;
    let metrics = &proxy.shared.metrics;

    for case in cases() {
        let good = fetch_consistent(proxy.port).await;
        let serial = good.0.serial;
        origin.advance();
        let new_snapshot = origin.with(|s| {
            let text = String::from_utf8(s.repo.notification().to_vec()).unwrap();
            (case.inject)(s, &text);
            Hash::of(&s.repo.file(s.repo.snapshot_path()).unwrap())
        });
        let before = metrics.poll_errors(case.reason);

        let st = proxy.poll().await;
        let name = case.name;
        let error = st
            .last_error
            .unwrap_or_else(|| panic!("{name}: not refused"));
        assert!(
            error.contains(case.message),
            "{name}: error {error:?} lacks {:?}",
            case.message
        );
        assert!(!error.contains('\n'), "{name}: one line, not {error:?}");
        assert_eq!(
            metrics.poll_errors(case.reason),
            before + 1,
            "{name}: counted as {}",
            case.reason
        );
        let served = fetch_consistent(proxy.port).await;
        assert_eq!(
            served.0.serial, serial,
            "{name}: still serving the last good serial"
        );
        assert_eq!(served.1, good.1, "{name}: the same bytes as before");
        assert!(
            !proxy.shared.store.contains(&new_snapshot, None) || !name.contains("snapshot"),
            "{name}: nothing stored under the bad snapshot's hash"
        );
        // The gzip variants of the served serial are made in the background after it was
        // published; their temporary files are not left over from the refused round.
        proxy
            .wait("the served serial's gzip variants", |s| {
                s.compressed_serial == Some(serial)
            })
            .await;
        store_is_clean(cache.path());

        // The origin heals: the next round publishes its repository.
        origin.with(|s| {
            s.extra.clear();
            s.faults.clear();
            s.notification_override = None;
            s.repo.advance();
        });
        let st = proxy.poll().await;
        assert_eq!(st.last_error, None, "{name}: healed");
        assert_eq!(
            fetch_consistent(proxy.port).await.0.serial,
            serial + 2,
            "{name}: caught up"
        );
    }
    // The last healed serial's gzip variants are made in the background too: their
    // temporary file is not a leftover while they are being made.
    let last = proxy.status().serial;
    proxy
        .wait("the last serial's gzip variants", |s| {
            s.compressed_serial == last
        })
        .await;
    store_is_clean(cache.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_keeps_serving_and_heals() {
    let mut origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    origin.stop();
    let st = proxy.poll().await;
    assert!(st.last_error.unwrap().contains("notification"));
    assert_eq!(proxy.shared.metrics.poll_errors("transport"), 1);
    assert_eq!(fetch_consistent(proxy.port).await.0.serial, 1);
    origin.advance();
    origin.restart().await;
    let st = proxy.poll().await;
    assert_eq!(st.last_error, None);
    assert_eq!(fetch_consistent(proxy.port).await.0.serial, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_flipping_back_and_forth_is_not_followed_back() {
    let origin = Origin::start().await;
    let cache = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(cache.path(), &origin.base(), "");
    proxy.wait_serial(1).await;
    let first = origin.with(|s| s.repo.session_id().to_string());

    // A second replica, a new session: published once its snapshot is stored.
    let mut other = Publisher::new(&origin.base());
    other.advance();
    let second = other.session_id().to_string();
    let mut first_repo = origin.with(|s| std::mem::replace(&mut s.repo, other));
    proxy.poll().await;
    assert_eq!(proxy.status().session_id.as_deref(), Some(second.as_str()));

    // The first replica answers again (it even moved on): refused, the second session stays.
    first_repo.advance();
    let mut second_repo = origin.with(|s| std::mem::replace(&mut s.repo, first_repo));
    let st = proxy.poll().await;
    assert!(st.last_error.unwrap().contains(&first), "names the session");
    assert_eq!(proxy.shared.metrics.poll_errors("session_return"), 1);
    let (n, _) = fetch_consistent(proxy.port).await;
    assert_eq!(n.session_id, second);

    // And the second replica again: it carries on where it was, with no reset for clients.
    second_repo.advance();
    origin.with(|s| s.repo = second_repo);
    let st = proxy.poll().await;
    assert_eq!(st.last_error, None);
    let (n, _) = fetch_consistent(proxy.port).await;
    assert_eq!((n.session_id, n.serial), (second, 3));
}
