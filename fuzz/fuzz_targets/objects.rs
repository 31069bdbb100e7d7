//! RPKI objects (properties in rrdp_proxy::fuzz_checks::object): the input replaces one object
//! of a real Krill testbed repository (tests/data/krill-testbed), which is then validated
//! from its TAL at the time it was recorded.
#![no_main]

use std::sync::OnceLock;

use rrdp_proxy::fuzz_checks::Testbed;

fn repository() -> &'static Testbed {
    static REPO: OnceLock<Testbed> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/krill-testbed");
        Testbed::krill_testbed(std::path::Path::new(dir)).expect("the recorded repository")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rrdp_proxy::fuzz_checks::object(data, repository())
});
