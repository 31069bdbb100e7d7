//! The pure decisions of a round, before anything is fetched: which relative paths a
//! notification names (URI rebasing), and what its session and serial mean against what is
//! published (session policy).

use crate::config::RepositoryConfig;
use crate::published::Generation;
use crate::rrdp::{DeltaRef, Notification};
use crate::sync::error::PollError;

/// The files a notification names, as paths relative to the repository's base.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub snapshot_rel: String,
    /// The deltas in the notification's order (newest first), cut to `max_deltas`.
    pub deltas: Vec<(DeltaRef, String)>,
}

/// Rebases every URI of `n` onto the repository: each must lie under the public base or one
/// of the upstream bases (RFC 9674), so nothing is ever fetched from another host, scheme or
/// port. `max_deltas` cuts the list.
pub fn plan(cfg: &RepositoryConfig, n: &Notification, current: usize) -> Result<Plan, PollError> {
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
    if let Some(max) = cfg.max_deltas {
        deltas.truncate(max);
    }
    Ok(Plan {
        snapshot_rel,
        deltas,
    })
}

/// What a notification is against the published generation.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The serial that is published: nothing new (its files are checked for repair).
    Same,
    /// Newer within the session, a new session, or nothing published yet.
    New,
}

/// The session policy: a serial that goes back within the session is refused, and so is a
/// return to a session left within `retain_secs` (two replicas out of step behind one name
/// make the session flip back and forth, and every flip would cost each RP a full snapshot;
/// after that long a return is taken as a reset).
pub fn step(
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
pub fn check_history(published: Option<&Generation>, n: &Notification) -> Result<(), PollError> {
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
}
