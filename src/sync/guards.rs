//! Content guards (`min_objects`, `max_shrink`): a snapshot that lost its objects is not
//! published (RIPE NCC's publication server refuses a collapsing snapshot the same way).

use std::sync::Arc;

use crate::config::RepositoryConfig;
use crate::published::Generation;
use crate::rrdp::content::{self, Expected};
use crate::rrdp::{Hash, Notification};
use crate::store::Store;
use crate::sync::error::PollError;

/// How many objects a stored snapshot publishes: known if it is the published one, else read
/// from the store.
pub(crate) async fn count_objects(
    store: &Arc<Store>,
    hash: Hash,
    expected: &Expected,
    published: Option<&Generation>,
) -> Result<u64, PollError> {
    let known = published
        .filter(|p| p.snapshot().is_some_and(|(_, f)| f.hash == hash))
        .and_then(|p| p.snapshot_objects);
    if let Some(n) = known {
        return Ok(n);
    }
    let (path, expected) = (store.object_path(&hash), expected.clone());
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(PollError::Store)?;
        content::check(
            std::io::BufReader::with_capacity(256 << 10, file),
            &expected,
        )
        .map(|s| s.publishes)
        .map_err(|e| {
            PollError::Store(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("stored snapshot {hash}: {e}"),
            ))
        })
    })
    .await
    .map_err(|e| PollError::Store(std::io::Error::other(e)))?
}

/// Refuses a snapshot with fewer than `min_objects` objects, or one that shrank by more than
/// `max_shrink` percent against the published snapshot of the same session (a declared
/// session reset may shrink).
pub(crate) async fn check(
    cfg: &RepositoryConfig,
    store: &Arc<Store>,
    n: &Notification,
    count: u64,
    published: Option<&Generation>,
) -> Result<(), PollError> {
    if let Some(min) = cfg.guards.min_objects {
        if count < min {
            return Err(PollError::Guard(format!(
                "the snapshot of serial {} has {count} objects, fewer than min_objects = {min}",
                n.serial
            )));
        }
    }
    let (Some(max), Some(p)) = (cfg.guards.max_shrink, published) else {
        return Ok(());
    };
    let Some((_, entry)) = p.snapshot().filter(|_| p.session_id == n.session_id) else {
        return Ok(());
    };
    // Stored, so checked against max_object_size when it came: not held to it again (a limit
    // lowered since would fail this guard at every round).
    let before = cfg
        .expected(content::Document::Snapshot, &p.session_id, p.serial)
        .with_max_object_size(u64::MAX);
    let prev = count_objects(store, entry.hash, &before, Some(p)).await?;
    if count < prev && (prev - count) * 100 > prev * u64::from(max) {
        return Err(PollError::Guard(format!(
            "the snapshot shrank from {prev} objects (serial {}) to {count} (serial {}), more than max_shrink = {max}%",
            p.serial, n.serial
        )));
    }
    Ok(())
}
