//! `nri-sysflow rules check` and `rules run` as a user runs them (no root needed).

use std::path::Path;

#[path = "support/cli.rs"]
mod cli;

use cli::{kit, run};

#[test]
fn check_counts_the_shipped_rules_and_lints_the_kits_probes() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules");
    let (code, out, err) = run(&["rules", "check", "--strict", shipped.to_str().unwrap()]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            0,
            "1 files: 7 rules (7 enabled), 2 macros, 5 lists, 0 filters\n",
            ""
        )
    );

    let probes = kit().join("policies/kit-probes/probes.yaml");
    let (code, out, _) = run(&["rules", "check", "--strict", probes.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 11, "{out}");
    assert_eq!(
        lines[0],
        "1 files: 23 rules (22 enabled), 0 macros, 4 lists, 0 filters"
    );
    assert_eq!(
        lines[4],
        format!(
            "{}:31:14: warning: sf.proc.username is not an attribute: compared as the literal text",
            probes.display()
        )
    );
    assert_eq!(lines[10], "9 warnings");
}

#[test]
fn a_file_that_does_not_compile_is_one_line_with_its_position() {
    let bad = kit().join("policies/kit-probes/negative/severity_word_as_value.yaml");
    let (code, out, err) = run(&["rules", "check", bad.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "nri-sysflow: {}:5:29: expected an operand (a name, path, number or quoted string), found 'debug'\n",
            bad.display()
        )
    );
}

#[test]
fn run_writes_the_alerts_of_a_trace_in_order() {
    let trace = kit().join("traces/tcp.sf");
    let policy = kit().join("policies/distribution/filter.yaml");
    let (code, out, _) = run(&[
        "rules",
        "run",
        "--policy",
        policy.to_str().unwrap(),
        "--format",
        "tsv",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let rows: Vec<String> = out
        .lines()
        .skip(1)
        .map(|l| l.split('\t').skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        rows,
        [
            "7 PE 1553543280704111050 13823 ./server Execution of a file",
            "16 PE 1553543282831501974 13824 ./client Execution of a file",
            "19 NF 1553543282832225890 13824 ./client Process Created a Network Connection|Process Sending and Receiving Network Data",
            "20 PE 1553543292823002683 13824 ./client Process or thread exit",
            "21 NF 1553543282832196976 13823 ./server Process Accepted a Network Connection|Process Sending and Receiving Network Data",
            "22 PE 1553543293422794962 13823 ./server Process or thread exit",
        ]
    );
    // JSON by default: one object per alert, sf-processor's layout.
    let (code, out, _) = run(&[
        "rules",
        "run",
        "--policy",
        policy.to_str().unwrap(),
        trace.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 6);
    assert!(out.starts_with("{\"version\":5,\"endts\":0,\"opflags\":[\"EXEC\"],\"ret\":0,\"ts\":1553543280704111050,\"type\":\"PE\",\"meta\":{\"schema\":1000,\"tracename\":\".\"},\"node\":{\"id\":\"tests\",\"ip\":\"NA\"},\"pproc\":{"), "{out}");
}
