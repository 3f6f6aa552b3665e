//! The conformance kit's compile dumps: every policy set sf-processor compiles gives the same
//! rule and filter listing here (names, descriptions, priorities, prefilters, tags, enabled,
//! order), and every file it refuses is refused here with a position.

mod support;

use support::{kit, set_path};
use sysflow_rules::{CompileError, compile_paths};

fn expected_sets() -> Vec<(String, String)> {
    let dir = kit().join("expected/compile");
    let mut sets: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let set = path.file_stem().unwrap().to_string_lossy().into_owned();
            (set, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    sets.sort();
    assert_eq!(sets.len(), 31, "compile dumps in {}", dir.display());
    sets
}

#[test]
fn every_set_sf_processor_compiles_lists_the_same_rules_and_filters() {
    let mut compared = 0;
    for (set, expected) in expected_sets() {
        if set.starts_with("kit-probes_negative_") {
            continue;
        }
        let policy = compile_paths(&[set_path(&set)]).unwrap_or_else(|e| panic!("{set}: {e}"));
        let listing = policy.listing();
        if listing != expected {
            let diff: Vec<String> = expected
                .lines()
                .zip(listing.lines())
                .filter(|(a, b)| a != b)
                .take(3)
                .map(|(a, b)| format!("expected {a}\n     got {b}"))
                .collect();
            panic!(
                "{set}: {} lines expected, {} got\n{}",
                expected.lines().count(),
                listing.lines().count(),
                diff.join("\n")
            );
        }
        compared += 1;
    }
    assert_eq!(compared, 26);
}

#[test]
fn every_file_sf_processor_refuses_is_refused_with_its_position() {
    // The first error sf-processor's parser reports for each, as line:column (its columns
    // count from 0, ours from 1).
    let expected = [
        ("bracket_rhs", "5:29", "'['"),
        ("keyword_in_rule_text", "4:34", "'priority'"),
        ("negative_number", "4:23", "'-'"),
        ("prefix_exists", "4:14", "'exists'"),
        ("severity_word_as_value", "5:29", "'debug'"),
    ];
    for (name, pos, found) in expected {
        let path = set_path(&format!("kit-probes_negative_{name}"));
        match compile_paths(std::slice::from_ref(&path)) {
            Err(CompileError::Syntax {
                path: p,
                error: source,
            }) => {
                assert_eq!(p, path);
                assert_eq!(
                    (source.pos.to_string().as_str(), source.found.as_str()),
                    (pos, found),
                    "{name}: {source}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn what_sf_processor_accepts_silently_is_linted_with_its_position() {
    let lints = |set: &str| -> Vec<String> {
        compile_paths(&[set_path(set)])
            .unwrap()
            .lints
            .iter()
            .map(|l| {
                let file = l.file.file_name().unwrap().to_string_lossy().into_owned();
                format!("{file}:{}: {}", l.pos, l.message)
            })
            .collect()
    };
    assert_eq!(
        lints("kit-probes_probes"),
        [
            "probes.yaml:3:1: list empty_list is empty: `in (empty_list)` matches only an empty value",
            "probes.yaml:11:1: list dup_list defined again with other items (first at PATH:9:1): which items a rule sees depends on where the rule is",
            "probes.yaml:26:31: a [...] group inside in/pmatch (...) is ignored: list its items bare or name a list",
            "probes.yaml:31:14: sf.proc.username is not an attribute: compared as the literal text",
            "probes.yaml:46:14: sf.pproc.uid is not a number here: < compares 0",
            "probes.yaml:67:13: priority alert is taken as low",
            "probes.yaml:72:13: priority alert is taken as low",
            "probes.yaml:110:14: some_undefined_macro is not a defined macro: always false",
            "probes.yaml:115:35: some_undefined_macro is not a defined macro: always false",
        ]
        .map(|l| l.replace("PATH", &set_path("kit-probes_probes").display().to_string()))
    );
    let ri = lints("runtimeintegrity");
    assert_eq!(ri.len(), 26, "{ri:#?}");
    for expected in [
        "runtimeintegrity.yaml:461:37: sf.proc.username is not an attribute: compared as the literal text",
        "runtimeintegrity.yaml:502:66: no list named pkg_mgmt_binaries: taken as the literal text \"pkg_mgmt_binaries\"",
        "ttps.yaml:949:36: sf.poc.name is not an attribute: compared as the literal text",
    ] {
        assert!(ri.iter().any(|l| l == expected), "{expected}\n{ri:#?}");
    }
    assert!(
        ri.iter().any(|l| l.starts_with(
            "ttps.yaml:328:1: macro open_write defined again with another condition (first at "
        )),
        "{ri:#?}"
    );
}

/// Inputs that grow without bound in sf-processor (or that a fuzzer finds) end, with an
/// error that says why where it is an error.
#[test]
fn pathological_inputs_are_bounded() {
    let mut compiler = sysflow_rules::compiler::Compiler::default();
    // A run of quotes: many ways for strings to nest.
    let quotes = format!("- list: q\n  items: [{}]\n", "'\"".repeat(400));
    let _ = compiler.add_file(std::path::Path::new("quotes.yaml"), &quotes);
    // Macros that each use the previous one twice: 2^40 conditions expanded.
    let mut doubling = String::from("- macro: m0\n  condition: sf.type = PE\n");
    for i in 1..=40 {
        doubling.push_str(&format!(
            "- macro: m{i}\n  condition: m{p} and m{p}\n",
            p = i - 1
        ));
    }
    doubling.push_str("- rule: Big\n  desc: d\n  condition: m40\n");
    let e = sysflow_rules::compiler::Compiler::default()
        .add_file(std::path::Path::new("doubling.yaml"), &doubling)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "doubling.yaml:85:14: Big expands to more than 200000 conditions or values"
    );
    // Lists of lists, doubling likewise.
    let mut lists = String::from("- list: l0\n  items: [a, b]\n");
    for i in 1..=40 {
        lists.push_str(&format!("- list: l{i}\n  items: [l{p}, l{p}]\n", p = i - 1));
    }
    lists.push_str("- rule: Wide\n  desc: d\n  condition: sf.proc.name in (l40)\n");
    let e = sysflow_rules::compiler::Compiler::default()
        .add_file(std::path::Path::new("lists.yaml"), &lists)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "lists.yaml:85:14: Wide expands to more than 200000 conditions or values"
    );
}
