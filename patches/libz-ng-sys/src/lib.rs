//! zlib-ng under the name flate2's "zlib-ng" feature expects, built without cmake.
//!
//! flate2 uses `libz_ng_sys::*` and `libz_sys::*` through the same code path, so re-exporting
//! libz-sys (built as zlib-ng in compat mode) gives it every item it calls.
pub use libz_sys::*;
