//! The capture policy parser on any text: an error or a policy, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nri_sysflow::policy::Policy::parse(text, "policy.yaml");
    }
});
