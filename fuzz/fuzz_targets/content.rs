//! The snapshot/delta check (properties in rrdp_proxy::fuzz_checks::content), with the
//! session of the seed corpus (real Krill output).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rrdp_proxy::fuzz_checks::content(data, include_str!("../session.txt"))
});
