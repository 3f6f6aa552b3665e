//! Any text as a policy file: it compiles or is refused with a position, never a panic, a
//! hang or unbounded memory (nested macros, quotes, brackets, keywords in odd places).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysflow_rules::compiler::Compiler;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut compiler = Compiler::default();
    if compiler
        .add_file(std::path::Path::new("fuzz.yaml"), text)
        .is_ok()
    {
        let policy = compiler.finish();
        let _ = policy.listing();
    }
});
