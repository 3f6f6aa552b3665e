//! The conformance kit (`shared/policy-kit`): where it is and how its set ids name policies.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `shared/policy-kit` beside the repository (or `SYSFLOW_POLICY_KIT`).
pub fn kit() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYSFLOW_POLICY_KIT") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/policy-kit"))
        .find(|d| d.join("LANGUAGE.md").exists())
        .expect("shared/policy-kit not found beside the repository (or set SYSFLOW_POLICY_KIT)")
}

/// The policy path of a kit set id (`tests_unit_test_eq` is `policies/tests/unit_test_eq.yaml`).
pub fn set_path(set: &str) -> PathBuf {
    let policies = kit().join("policies");
    match set {
        "distribution_filter" => policies.join("distribution/filter.yaml"),
        "runtimeintegrity" => policies.join("runtimeintegrity"),
        "tests" => policies.join("tests"),
        "plugins-actions-example_policy" => policies.join("plugins-actions-example/policy.yaml"),
        "kit-probes_probes" => policies.join("kit-probes/probes.yaml"),
        _ => {
            for (prefix, dir) in [
                ("kit-probes_negative_", "kit-probes/negative"),
                ("runtimeintegrity_", "runtimeintegrity"),
                ("tests_", "tests"),
            ] {
                if let Some(name) = set.strip_prefix(prefix) {
                    return policies.join(dir).join(format!("{name}.yaml"));
                }
            }
            panic!("unknown set {set}")
        }
    }
}

/// A kit trace by name (`tcp` is `traces/tcp.sf`; `1621959914` has no extension).
pub fn trace_path(name: &str) -> PathBuf {
    let dir = kit().join("traces");
    let with_ext = dir.join(format!("{name}.sf"));
    if with_ext.exists() {
        with_ext
    } else {
        dir.join(name)
    }
}

/// A kit file, decompressed when it ends in `.gz`.
pub fn read_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
            .unwrap();
        text
    } else {
        String::from_utf8(bytes).unwrap()
    }
}
