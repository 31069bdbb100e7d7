//! The notification parser (properties in rrdp_proxy::fuzz_checks::notification).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rrdp_proxy::fuzz_checks::notification(data));
