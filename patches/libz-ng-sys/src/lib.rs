//! The zlib C API under the name flate2's "zlib-ng" feature expects, implemented by zlib-rs
//! (pure Rust, from the same project family as flate2's own `zlib-rs` backend), so the build
//! needs neither cmake nor a C compiler, and compresses about as fast as zlib-ng (see
//! Cargo.toml for why not zlib-ng itself, and docs/benchmarks.md for the figures).
//!
//! flate2 reaches these items through `libz_ng_sys::*` (its `ffi/c.rs`): the stream type, the
//! constants, and the functions wrapped below. The stream has zlib's layout, the same as
//! zlib-rs's, whose allocator fields are `Option`s of the same function pointers (a null
//! pointer is `None`): the wrappers pass the pointer on as is.
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};

use libz_rs_sys as z;

pub type Bytef = u8;
pub type uInt = c_uint;
pub type uLong = c_ulong;
pub type uLongf = c_ulong;
pub type voidpf = *mut c_void;
pub type voidp = *mut c_void;
pub type voidpc = *const c_void;
pub type z_off_t = z::z_off_t;
pub type alloc_func = unsafe extern "C" fn(voidpf, uInt, uInt) -> voidpf;
pub type free_func = unsafe extern "C" fn(voidpf, voidpf);

/// zlib's internal state, opaque.
pub enum internal_state {}

/// zlib's stream, with the layout of `zlib_rs::c_api::z_stream` (checked by a test).
#[repr(C)]
pub struct z_stream {
    pub next_in: *mut Bytef,
    pub avail_in: uInt,
    pub total_in: uLong,
    pub next_out: *mut Bytef,
    pub avail_out: uInt,
    pub total_out: uLong,
    pub msg: *mut c_char,
    pub state: *mut internal_state,
    pub zalloc: alloc_func,
    pub zfree: free_func,
    pub opaque: voidpf,
    pub data_type: c_int,
    pub adler: uLong,
    pub reserved: uLong,
}

pub type z_streamp = *mut z_stream;

pub use z::{
    Z_ASCII, Z_BEST_COMPRESSION, Z_BEST_SPEED, Z_BINARY, Z_BLOCK, Z_BUF_ERROR, Z_DATA_ERROR,
    Z_DEFAULT_COMPRESSION, Z_DEFAULT_STRATEGY, Z_DEFLATED, Z_ERRNO, Z_FILTERED, Z_FINISH, Z_FIXED,
    Z_FULL_FLUSH, Z_HUFFMAN_ONLY, Z_MEM_ERROR, Z_NEED_DICT, Z_NO_COMPRESSION, Z_NO_FLUSH, Z_OK,
    Z_PARTIAL_FLUSH, Z_RLE, Z_STREAM_END, Z_STREAM_ERROR, Z_SYNC_FLUSH, Z_TEXT, Z_TREES, Z_UNKNOWN,
    Z_VERSION_ERROR,
};

fn s(strm: *mut z_stream) -> *mut z::z_stream {
    strm.cast()
}

pub unsafe extern "C" fn deflate(strm: *mut z_stream, flush: c_int) -> c_int {
    z::deflate(s(strm), flush)
}

pub unsafe extern "C" fn deflateEnd(strm: *mut z_stream) -> c_int {
    z::deflateEnd(s(strm))
}

pub unsafe extern "C" fn deflateReset(strm: *mut z_stream) -> c_int {
    z::deflateReset(s(strm))
}

pub unsafe extern "C" fn deflateParams(
    strm: *mut z_stream,
    level: c_int,
    strategy: c_int,
) -> c_int {
    z::deflateParams(s(strm), level, strategy)
}

pub unsafe extern "C" fn deflateSetDictionary(
    strm: *mut z_stream,
    dictionary: *const Bytef,
    dict_length: uInt,
) -> c_int {
    z::deflateSetDictionary(s(strm), dictionary, dict_length)
}

#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn deflateInit2_(
    strm: *mut z_stream,
    level: c_int,
    method: c_int,
    window_bits: c_int,
    mem_level: c_int,
    strategy: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    z::deflateInit2_(
        s(strm),
        level,
        method,
        window_bits,
        mem_level,
        strategy,
        version,
        stream_size,
    )
}

pub unsafe extern "C" fn inflate(strm: *mut z_stream, flush: c_int) -> c_int {
    z::inflate(s(strm), flush)
}

pub unsafe extern "C" fn inflateEnd(strm: *mut z_stream) -> c_int {
    z::inflateEnd(s(strm))
}

pub unsafe extern "C" fn inflateReset2(strm: *mut z_stream, window_bits: c_int) -> c_int {
    z::inflateReset2(s(strm), window_bits)
}

pub unsafe extern "C" fn inflateSetDictionary(
    strm: *mut z_stream,
    dictionary: *const Bytef,
    dict_length: uInt,
) -> c_int {
    z::inflateSetDictionary(s(strm), dictionary, dict_length)
}

pub unsafe extern "C" fn inflateInit2_(
    strm: *mut z_stream,
    window_bits: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    z::inflateInit2_(s(strm), window_bits, version, stream_size)
}

pub unsafe extern "C" fn zlibVersion() -> *const c_char {
    z::zlibVersion()
}

pub unsafe extern "C" fn crc32(crc: uLong, buf: *const Bytef, len: uInt) -> uLong {
    z::crc32(crc, buf, len)
}

pub unsafe extern "C" fn crc32_combine(crc1: uLong, crc2: uLong, len2: z_off_t) -> uLong {
    z::crc32_combine(crc1, crc2, len2)
}

pub unsafe extern "C" fn adler32(adler: uLong, buf: *const Bytef, len: uInt) -> uLong {
    z::adler32(adler, buf, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_has_zlib_rs_layout() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(size_of::<z_stream>(), size_of::<z::z_stream>());
        assert_eq!(align_of::<z_stream>(), align_of::<z::z_stream>());
        assert_eq!(
            offset_of!(z_stream, zalloc),
            offset_of!(z::z_stream, zalloc)
        );
        assert_eq!(offset_of!(z_stream, adler), offset_of!(z::z_stream, adler));
        assert_eq!(
            offset_of!(z_stream, reserved),
            offset_of!(z::z_stream, reserved)
        );
    }
}
