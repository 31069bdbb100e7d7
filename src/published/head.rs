//! A generation's response headers made once, when it is prepared: a file's ETags (identity
//! and gzip) and the notification's validators as ready header values, so a hit formats
//! nothing. (They live here, not in `serve/`, because the generation carries them: `serve`
//! is above `published`, and a cache of its own would cost a lookup per request.)

use http::HeaderValue;

use crate::rrdp::Hash;

/// A stored file's ETags (identity and gzip) as header values: made once per file and
/// generation, so serving a hit formats nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHead {
    pub etag: HeaderValue,
    pub etag_gzip: HeaderValue,
}

impl FileHead {
    pub fn of(hash: &Hash) -> FileHead {
        let etag = format!("\"{}\"", hash.to_hex());
        FileHead {
            etag_gzip: header_value(&gzip_etag(&etag)),
            etag: header_value(&etag),
        }
    }

    /// The identity ETag as text (always ASCII: quoted hex).
    pub fn etag_text(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }
}

impl Default for FileHead {
    fn default() -> FileHead {
        let empty = HeaderValue::from_static("");
        FileHead {
            etag: empty.clone(),
            etag_gzip: empty,
        }
    }
}

/// The ETag of a gzip variant: the identity ETag with `-gzip` (a representation's ETag must
/// differ per encoding).
pub(crate) fn gzip_etag(etag: &str) -> String {
    format!("{}-gzip\"", etag.trim_end_matches('"'))
}

/// Header values of a generation's notification, made when it is prepared.
#[derive(Debug, Clone)]
pub struct NotificationHeaders {
    pub etag: HeaderValue,
    pub etag_gzip: HeaderValue,
    pub last_modified: HeaderValue,
}

impl Default for NotificationHeaders {
    fn default() -> NotificationHeaders {
        let empty = HeaderValue::from_static("");
        NotificationHeaders {
            etag: empty.clone(),
            etag_gzip: empty.clone(),
            last_modified: empty,
        }
    }
}

/// A header value of text this program made (digits, dates, quoted hex): never invalid.
pub(crate) fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
