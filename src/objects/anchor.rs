//! Trust anchors: a TAL file (RFC 8630: the TA certificate's URIs and its public key) and the
//! certificate fetched for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use rpki::repository::tal::Tal;

/// A TAL file read at start.
#[derive(Clone, Debug)]
pub struct TalFile {
    pub path: PathBuf,
    pub tal: Arc<Tal>,
}

impl TalFile {
    /// Reads and parses the TAL at `path`.
    pub fn read(path: &Path) -> Result<TalFile, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tal".to_string());
        let tal = Tal::read_named(name, &mut data.as_slice())
            .map_err(|e| format!("{}: not a TAL: {e}", path.display()))?;
        if tal.uris().next().is_none() {
            return Err(format!("{}: the TAL lists no URI", path.display()));
        }
        Ok(TalFile {
            path: path.to_path_buf(),
            tal: Arc::new(tal),
        })
    }

    /// The TAL's URIs, HTTPS first (as RPs prefer them).
    pub fn uris(&self) -> Vec<String> {
        let mut uris: Vec<String> = self.tal.uris().map(|u| u.as_str().to_string()).collect();
        uris.sort_by_key(|u| !u.starts_with("https://"));
        uris
    }

    /// The TAL's name, for logs: its file name without the extension.
    pub fn name(&self) -> &str {
        self.tal.info().name()
    }
}

/// A TAL and the trust anchor certificate found for it (`None`: none could be fetched yet,
/// which validation reports).
#[derive(Clone, Debug)]
pub struct Anchor {
    pub tal: TalFile,
    pub cert: Option<Bytes>,
}
