//! The Erik index and partition decoders (properties in rrdp_proxy::fuzz_checks::erik).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rrdp_proxy::fuzz_checks::erik(data));
