//! The published generation on disk: written as the store's index file at each publish,
//! read back at start. What is read is a [`Persisted`], private to this folder; it becomes a
//! [`Generation`] only after every file it names is found in the store, whole.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;

use super::generation::{bytes_text, FileEntry, FileKind, Generation, HistoryDelta};
use super::Repo;
use crate::store::Store;

/// A generation as [`Repo::publish`] writes it (the fields `Generation` serializes).
#[derive(Deserialize)]
pub(super) struct Persisted {
    pub(super) session_id: String,
    pub(super) serial: u64,
    #[serde(with = "bytes_text")]
    pub(super) notification: Bytes,
    pub(super) etag: String,
    pub(super) last_modified: u64,
    pub(super) files: HashMap<String, FileEntry>,
    pub(super) delta_count: usize,
    #[serde(default)]
    pub(super) left_sessions: Vec<(String, u64)>,
    #[serde(default)]
    pub(super) snapshot_objects: Option<u64>,
    #[serde(default)]
    pub(super) history: Vec<HistoryDelta>,
}

impl Repo {
    /// Loads the persisted generation at start (see `Repo::load`) and serves it.
    pub fn restore(&self, store: &Store) -> Result<Option<Arc<Generation>>, LoadError> {
        Ok(self.load(store)?.map(|g| self.install(g)))
    }

    /// Loads the persisted generation at start, if every file it references is in the store
    /// whole: the right size, and the right hash (checked here, before anything is served;
    /// a damaged object is removed so the poller fetches it again). Files of superseded
    /// generations only have their size checked here; they are hashed before their first
    /// byte is served, and dropped from the generation if gone.
    fn load(&self, store: &Store) -> Result<Option<Generation>, LoadError> {
        let index = || self.index_name.clone();
        let Some(data) = store
            .read_index(&self.index_name)
            .map_err(|source| LoadError::Read {
                index: index(),
                source,
            })?
        else {
            return Ok(None);
        };
        let mut persisted: Persisted =
            serde_json::from_slice(&data).map_err(|source| LoadError::Corrupt {
                index: index(),
                source,
            })?;
        let now = self.clock.unix_now();
        let mut missing = Vec::new();
        let mut damaged_delta = None;
        persisted.files.retain(|rel, f| {
            let present = f.is_live(now) && store.contains(&f.hash, Some(f.size));
            let ok =
                present && (f.expires.is_some() || store.verify_blocking(&f.hash).unwrap_or(false));
            if !ok && f.expires.is_none() {
                match (f.kind, f.serial) {
                    // A listed delta: the history is cut there (below).
                    (FileKind::Delta, Some(serial)) => {
                        damaged_delta = damaged_delta.max(Some(serial));
                    }
                    _ => missing.push(rel.clone()),
                }
            }
            ok
        });
        if !missing.is_empty() {
            return Err(LoadError::Missing {
                index: index(),
                files: missing,
            });
        }
        let mut generation = Generation::restored(persisted);
        if let Some(serial) = damaged_delta {
            log::warn!(
                "{}: the delta of serial {serial} is missing or damaged in the store; the delta list is cut above it",
                self.name()
            );
            generation =
                generation.cut_history(serial, &self.config.public, self.clock.system_now());
        }
        Ok(Some(generation.prepared()))
    }
}

/// Why a stored generation was not served at start (the poller then starts afresh).
#[derive(Debug)]
pub enum LoadError {
    Read {
        index: String,
        source: std::io::Error,
    },
    Corrupt {
        index: String,
        source: serde_json::Error,
    },
    /// Files the generation references are missing or damaged in the store.
    Missing { index: String, files: Vec<String> },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Read { index, source } => write!(f, "cannot read index {index}: {source}"),
            LoadError::Corrupt { index, source } => write!(f, "index {index} is corrupt: {source}"),
            LoadError::Missing { index, files } => write!(
                f,
                "index {index}: referenced files missing or damaged in the store: {}",
                files.join(", ")
            ),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { source, .. } => Some(source),
            LoadError::Corrupt { source, .. } => Some(source),
            LoadError::Missing { .. } => None,
        }
    }
}
