//! One repository's side of the Erik relay (`server.erik`): its object state brought to
//! the round about to be published (from the last state and the round's deltas when they
//! connect, else from its snapshot), every object put in the store under its SHA-256, then
//! handed to the node's relay as that repository's [`Part`].
//!
//! Runs only for a round that is being published (after validation let it through), so an
//! object only a refused round carries is never stored or served as an Erik object.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::validation::{walk_objects, RoundFiles};
use crate::published::{ErikRelay, Part};
use crate::rrdp::Hash;
use crate::store::Store;

/// The repository state as Erik needs it.
#[derive(Default)]
pub(crate) struct ErikSource {
    /// Session and serial of the state.
    at: Option<(String, u64)>,
    /// Every object's hash, by rsync URI.
    hashes: HashMap<String, Hash>,
    /// The manifests' hash and DER, by URI.
    manifests: BTreeMap<String, (Hash, Bytes)>,
}

/// Where a source's objects go: the store, and the relay that holds them live meanwhile.
pub(crate) struct Sink {
    pub(crate) store: Arc<Store>,
    pub(crate) relay: Arc<ErikRelay>,
    /// The repository's index in the config: its part in the relay.
    pub(crate) repo: usize,
}

impl ErikSource {
    /// Whether the state is that of `session_id` at `serial`.
    pub(crate) fn is_at(&self, session_id: &str, serial: u64) -> bool {
        self.at
            .as_ref()
            .is_some_and(|(s, n)| s == session_id && *n == serial)
    }

    /// The serial of the state, if it has one.
    pub(crate) fn serial(&self) -> Option<u64> {
        self.at.as_ref().map(|(_, n)| *n)
    }

    /// Brings the state to the round's serial, stores its objects, and returns the
    /// repository's part. On an error the state starts from the next snapshot.
    pub(crate) async fn advance(
        &mut self,
        files: &RoundFiles,
        sink: &Arc<Sink>,
    ) -> io::Result<Part> {
        let from = self.connecting_serial(files);
        let mut state = std::mem::take(self);
        let (files, sink) = (files.clone(), sink.clone());
        // The walk hands over one object at a time, each stored before the next is read:
        // memory holds the hashes and the manifests, never the repository.
        let (state, result) = tokio::task::spawn_blocking(move || {
            let result = state.apply(&files, from, &sink);
            (state, result)
        })
        .await
        .map_err(io::Error::other)?;
        result?;
        *self = state;
        Ok(Part {
            manifests: self.manifests.clone(),
            objects: self.hashes.values().copied().collect(),
        })
    }

    fn apply(&mut self, files: &RoundFiles, from: Option<u64>, sink: &Sink) -> io::Result<()> {
        if from.is_none() {
            self.hashes.clear();
            self.manifests.clear();
        }
        let mut failed = None;
        let mut batch = sink.store.batch();
        let mut each = |uri: &str, der: Option<Bytes>| {
            if failed.is_some() {
                return;
            }
            let Some(der) = der else {
                self.hashes.remove(uri);
                self.manifests.remove(uri);
                return;
            };
            let hash = Hash::of(&der);
            sink.relay.hold(sink.repo, hash);
            if let Err(e) = batch.put(&hash, &der) {
                failed = Some(e);
                return;
            }
            if uri.ends_with(".mft") {
                self.manifests.insert(uri.to_string(), (hash, der));
            }
            self.hashes.insert(uri.to_string(), hash);
        };
        let walked = match from {
            Some(from) => (from + 1..=files.serial).try_for_each(|serial| {
                let path = files.delta(serial).expect("connecting_serial checked it");
                walk_objects(path, &files.session_id, serial, false, &mut each)
            }),
            None => walk_objects(
                &files.snapshot.1,
                &files.session_id,
                files.serial,
                true,
                &mut each,
            ),
        };
        let finished = match walked.err().or(failed) {
            None => batch.finish(),
            Some(e) => Err(e),
        };
        if let Err(e) = finished {
            *self = ErikSource::default();
            return Err(e);
        }
        self.at = Some((files.session_id.clone(), files.serial));
        Ok(())
    }

    /// Whether the round's deltas continue this state (else it takes a whole snapshot walk).
    pub(crate) fn connects(&self, files: &RoundFiles) -> bool {
        self.connecting_serial(files).is_some()
    }

    /// The serial the round's deltas continue from, if they connect to this state.
    fn connecting_serial(&self, files: &RoundFiles) -> Option<u64> {
        match &self.at {
            Some((session, serial))
                if *session == files.session_id
                    && *serial <= files.serial
                    && (serial + 1..=files.serial).all(|s| files.delta(s).is_some()) =>
            {
                Some(*serial)
            }
            _ => None,
        }
    }
}
