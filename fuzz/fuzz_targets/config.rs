//! The config parser (properties in rrdp_proxy::fuzz_checks::config).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rrdp_proxy::fuzz_checks::config(data));
