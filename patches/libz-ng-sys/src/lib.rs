//! zlib under the name flate2's "zlib-ng" feature expects, built without cmake (see
//! Cargo.toml for why stock zlib).
//!
//! flate2 uses `libz_ng_sys::*` and `libz_sys::*` through the same code path, so re-exporting
//! libz-sys gives it every item it calls.
pub use libz_sys::*;
