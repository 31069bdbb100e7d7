//! The pure decisions of a round, before anything is fetched: which relative paths a
//! notification names (URI rebasing), and what its session and serial mean against what is
//! published (session policy).

use crate::config::RepositoryConfig;
use crate::published::Generation;
use crate::rrdp::content::Expected;
use crate::rrdp::{DeltaRef, Hash, Notification};
use crate::sync::error::PollError;

/// The files a notification names, as paths relative to the repository's base.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub snapshot_rel: String,
    /// The deltas in the notification's order (newest first), cut to `max_deltas`.
    pub deltas: Vec<(DeltaRef, String)>,
}

/// Rebases every URI of `n` onto the repository: each must lie under the public base or one
/// of the upstream bases (RFC 9674), so nothing is ever fetched from another host, scheme or
/// port. `max_deltas` cuts the list.
pub(crate) fn plan(
    cfg: &RepositoryConfig,
    n: &Notification,
    current: usize,
) -> Result<Plan, PollError> {
    let rel_of = |uri: &str| -> Result<String, PollError> {
        cfg.public
            .relative(uri)
            .or_else(|| cfg.upstreams.iter().find_map(|b| b.relative(uri)))
            .map(str::to_string)
            .ok_or_else(|| {
                PollError::invalid(format!(
                    "URI {uri} is not under {} or {}",
                    cfg.public, cfg.upstreams[current]
                ))
            })
    };
    let snapshot_rel = rel_of(&n.snapshot.uri)?;
    let mut deltas = n
        .deltas
        .iter()
        .map(|d| Ok((d.clone(), rel_of(&d.file.uri)?)))
        .collect::<Result<Vec<_>, PollError>>()?;
    if let Some(max) = cfg.history.max_deltas {
        deltas.truncate(max);
    }
    Ok(Plan {
        snapshot_rel,
        deltas,
    })
}

/// What a notification is against the published generation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The serial that is published: nothing new (its files are checked for repair).
    Same,
    /// Newer within the session, a new session, or nothing published yet.
    New,
}

/// The session policy: a serial that goes back within the session is refused, and so is a
/// return to a session left within `retain_secs` (two replicas out of step behind one name
/// make the session flip back and forth, and every flip would cost each RP a full snapshot;
/// after that long a return is taken as a reset).
pub(crate) fn step(
    published: Option<&Generation>,
    n: &Notification,
    retain_secs: u64,
    now: u64,
) -> Result<Step, PollError> {
    let Some(p) = published else {
        return Ok(Step::New);
    };
    if p.session_id == n.session_id {
        return match n.serial.cmp(&p.serial) {
            std::cmp::Ordering::Less => Err(PollError::Regression {
                published: p.serial,
                upstream: n.serial,
            }),
            std::cmp::Ordering::Equal => Ok(Step::Same),
            std::cmp::Ordering::Greater => Ok(Step::New),
        };
    }
    let left_recently = p
        .left_sessions
        .iter()
        .any(|(s, when)| *s == n.session_id && when + retain_secs > now);
    if left_recently {
        return Err(PollError::SessionReturn {
            session_id: n.session_id.clone(),
        });
    }
    Ok(Step::New)
}

/// Refuses a notification that lists, within the published session, a delta with another
/// hash than the one this node lists for that serial: serving two versions of one serial
/// would make RPs distrust it (RFC 9697), and quietly switching would change a listed file.
pub(crate) fn check_history(
    published: Option<&Generation>,
    n: &Notification,
) -> Result<(), PollError> {
    let Some(p) = published.filter(|p| p.session_id == n.session_id) else {
        return Ok(());
    };
    match n
        .deltas
        .iter()
        .find_map(|d| p.listed_with_other_hash(d.serial, &d.file.hash))
    {
        Some(h) => Err(PollError::DeltaChanged { serial: h.serial }),
        None => Ok(()),
    }
}

/// Files named by upstream notifications, by relative path: hash, what the file must be, and
/// when it was last named (seconds since the epoch).
pub(crate) type Pending = std::collections::HashMap<String, (Hash, Expected, u64)>;

/// The most files the pending map keeps. A notification lists at most 10,000 deltas; an
/// upstream that names fresh paths at every serial would otherwise grow the map by that much
/// a poll for `cache.retain` (7.2 million entries at a new serial every 10 s for 2 h).
pub(crate) const PENDING_KEPT: usize = 20_000;

/// The pending map after a notification named `named` at `now`: entries named within
/// `retain` stay, the notification's own are (re)stamped, and past `kept` entries the ones
/// named longest ago go first (never the notification's own: it may name more than `kept`).
pub(crate) fn remembered(
    previous: &Pending,
    named: impl IntoIterator<Item = (String, Hash, Expected)>,
    now: u64,
    retain: u64,
    kept: usize,
) -> Pending {
    let keep_since = now.saturating_sub(retain);
    let mut pending: Pending = previous
        .iter()
        .filter(|(_, (_, _, since))| *since >= keep_since)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut fresh = 0;
    for (rel, hash, expected) in named {
        pending.insert(rel, (hash, expected, now));
        fresh += 1;
    }
    if pending.len() > kept.max(fresh) {
        let mut by_age: Vec<(u64, String)> = pending
            .iter()
            .filter(|(_, (_, _, since))| *since < now)
            .map(|(k, (_, _, since))| (*since, k.clone()))
            .collect();
        by_age.sort_unstable();
        let excess = pending.len() - kept.max(fresh);
        for (_, rel) in by_age.into_iter().take(excess) {
            pending.remove(&rel);
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rrdp::{FileRef, Hash};

    fn config() -> RepositoryConfig {
        let text = "[server]\nlisten = [\"127.0.0.1:8080\"]\n[[repository]]\n\
                    public = \"https://rrdp.example/rrdp/\"\n\
                    upstream = \"https://origin.example:3000/rrdp/\"\nmax_deltas = 2\n";
        Config::parse(text, std::path::Path::new("/nonexistent"))
            .unwrap()
            .repositories
            .remove(0)
    }

    fn notification(uris: &[&str]) -> Notification {
        let file = |uri: &str| FileRef {
            uri: uri.to_string(),
            hash: Hash::of(uri.as_bytes()),
        };
        Notification {
            session_id: "9df4b597-af9e-4dca-bdda-719cce2c4e28".into(),
            serial: 10,
            snapshot: file(uris[0]),
            deltas: uris[1..]
                .iter()
                .enumerate()
                .map(|(i, u)| DeltaRef {
                    serial: 10 - i as u64,
                    file: file(u),
                })
                .collect(),
        }
    }

    #[test]
    fn uris_are_rebased_under_either_base_and_cut_to_max_deltas() {
        let n = notification(&[
            "https://rrdp.example/rrdp/s/10/snapshot.xml",
            "https://origin.example:3000/rrdp/s/10/delta.xml",
            "https://rrdp.example/rrdp/s/9/delta.xml",
            "https://rrdp.example/rrdp/s/8/delta.xml",
        ]);
        let p = plan(&config(), &n, 0).unwrap();
        assert_eq!(p.snapshot_rel, "s/10/snapshot.xml");
        let rels: Vec<_> = p
            .deltas
            .iter()
            .map(|(d, r)| (d.serial, r.as_str()))
            .collect();
        assert_eq!(rels, [(10, "s/10/delta.xml"), (9, "s/9/delta.xml")]);
    }

    #[test]
    fn a_uri_on_another_host_or_port_is_refused() {
        for foreign in [
            "https://elsewhere.example/rrdp/s/10/snapshot.xml",
            "https://rrdp.example:8443/rrdp/s/10/snapshot.xml",
            "http://rrdp.example/rrdp/s/10/snapshot.xml",
        ] {
            let err = plan(&config(), &notification(&[foreign]), 0).unwrap_err();
            assert_eq!(err.reason(), "invalid_notification", "{foreign}");
        }
    }

    /// Regression (issue 26, item 4): an upstream naming fresh delta paths at every serial
    /// grew the map by a notification's worth a poll for `cache.retain`. Bounded, and what
    /// the newest notification names is always kept.
    #[test]
    fn the_pending_map_is_bounded_and_keeps_the_newest() {
        use crate::rrdp::content::{Document, Expected};
        let mut pending = Pending::new();
        let retain = 7200;
        for poll in 0..400u64 {
            let now = 1_700_000_000 + poll * 10;
            let named: Vec<_> = (0..100)
                .map(|i| {
                    let rel = format!("s/{poll}/{i}/delta.xml");
                    (
                        rel,
                        Hash::of(&poll.to_be_bytes()),
                        Expected::new(Document::Delta, "s", poll),
                    )
                })
                .collect();
            pending = remembered(&pending, named, now, retain, 5_000);
            assert!(
                pending.len() <= 5_000,
                "poll {poll}: {} entries",
                pending.len()
            );
            for i in 0..100 {
                assert!(pending.contains_key(&format!("s/{poll}/{i}/delta.xml")));
            }
        }
        // The oldest went first: what is kept is the last 50 polls.
        assert!(pending.contains_key("s/350/0/delta.xml"));
        assert!(!pending.contains_key("s/349/0/delta.xml"));
        // A notification that names more than the bound keeps all of its own.
        let named: Vec<_> = (0..6_000)
            .map(|i| {
                (
                    format!("big/{i}"),
                    Hash::of(b"x"),
                    Expected::new(Document::Delta, "s", 1),
                )
            })
            .collect();
        let p = remembered(&pending, named, 1_800_000_000, retain, 5_000);
        assert_eq!(p.len(), 6_000);
        // Past `retain`, entries go whatever the bound.
        let p = remembered(&p, Vec::new(), 1_800_000_000 + retain + 1, retain, 5_000);
        assert!(p.is_empty());
    }
}
