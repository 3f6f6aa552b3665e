//! The agent's config parser and its checks on any text: an error naming the file (and line
//! and column, or field), or a config, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nri_sysflow::agent::config::AgentConfig::parse(text, "agent.yaml".as_ref());
    }
});
