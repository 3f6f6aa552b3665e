//! The conformance kit's alert and enrich runs: every (policy set, trace) pair sf-processor
//! was run on gives the same records here, with the same rules in the same order, and, where
//! the kit has sf-processor's JSON, the same bytes (opflags named by the record's own type,
//! the one documented difference).

mod support;

use std::path::PathBuf;

use support::{kit, read_text, set_path, trace_path};
use sysflow_rules::{
    compile_paths,
    engine::Mode,
    runner::{Format, RunStats, run},
};

/// `<set>__<trace>.<ext>` files of an expected folder.
fn pairs(dir: &str, ext: &str) -> Vec<(String, String, PathBuf)> {
    let dir = kit().join("expected").join(dir);
    let mut out: Vec<(String, String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name()?.to_str()?.to_string();
            let stem = name
                .strip_suffix(&format!("{ext}.gz"))
                .or_else(|| name.strip_suffix(ext))?;
            let (set, trace) = stem.split_once("__")?;
            Some((set.to_string(), trace.to_string(), path))
        })
        .collect();
    out.sort();
    out
}

fn run_pair(set: &str, trace: &str, mode: Mode, format: Format) -> (String, RunStats) {
    let policy = compile_paths(&[set_path(set)]).unwrap_or_else(|e| panic!("{set}: {e}"));
    let mut out = Vec::new();
    let stats = run(&policy, &[trace_path(trace)], mode, format, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), stats)
}

/// The TSV rows without the trace column (the kit's paths are relative to the kit).
fn rows(tsv: &str) -> Vec<String> {
    tsv.lines()
        .skip(1)
        .map(|l| l.split_once('\t').map_or(l, |(_, rest)| rest).to_string())
        .collect()
}

fn compare_rows(what: &str, expected: &[String], got: &[String]) {
    if expected != got {
        let first = expected
            .iter()
            .zip(got)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(got.len()));
        panic!(
            "{what}: {} rows expected, {} got; first difference at row {first}:\n expected {:?}\n      got {:?}",
            expected.len(),
            got.len(),
            expected.get(first),
            got.get(first)
        );
    }
}

#[test]
fn every_alert_run_matches_the_same_records_with_the_same_rules() {
    let pairs = pairs("alert", ".tsv");
    assert_eq!(pairs.len(), 163);
    let mut failures = Vec::new();
    let (mut compared, mut evaluated, mut remembered) = (0, 0, 0);
    for (set, trace, path) in &pairs {
        let expected = rows(&read_text(path));
        compared += expected.len();
        let (got, stats) = run_pair(set, trace, Mode::Alert, Format::Tsv);
        let got = rows(&got);
        evaluated += stats.evaluated;
        remembered += stats.remembered;
        if let Err(e) =
            std::panic::catch_unwind(|| compare_rows(&format!("{set} on {trace}"), &expected, &got))
        {
            failures.push(e.downcast_ref::<String>().cloned().unwrap_or_default());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} pairs differ:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n")
    );
    // Every alert of every pair, as the kit counts them.
    assert_eq!(compared, 302_681);
    // The records evaluated, and those that got an earlier record's verdict unflattened:
    // the same alerts either way.
    assert_eq!((evaluated, remembered), (1_124_971, 88_097));
}

/// sf-processor names bits 8 and 9 by whichever record type first used a mask in the run
/// (READ/WRITE or RECV/SEND); we name them by the record's own type. Equal apart from that.
fn same_but_opflag_names(expected: &str, got: &str) -> bool {
    let normalize = |line: &str| {
        let Some(start) = line.find("\"opflags\":[") else {
            return line.to_string();
        };
        let end = start + line[start..].find(']').unwrap_or(0);
        let flags = line[start..end]
            .replace("\"SEND\"", "\"WRITE\"")
            .replace("\"RECV\"", "\"READ\"");
        format!("{}{}{}", &line[..start], flags, &line[end..])
    };
    normalize(expected) == normalize(got)
}

fn compare_json(what: &str, expected: &str, got: &str) -> (usize, usize) {
    let (expected, got): (Vec<&str>, Vec<&str>) =
        (expected.lines().collect(), got.lines().collect());
    assert_eq!(expected.len(), got.len(), "{what}: lines");
    let mut renamed = 0;
    for (n, (e, g)) in expected.iter().zip(&got).enumerate() {
        if e == g {
            continue;
        }
        assert!(
            same_but_opflag_names(e, g),
            "{what}: line {n} differs:\n expected {e}\n      got {g}"
        );
        renamed += 1;
    }
    (expected.len(), renamed)
}

#[test]
fn every_json_line_is_sf_processors_byte_for_byte() {
    let pairs = pairs("alert", ".jsonl");
    assert_eq!(pairs.len(), 19);
    let (mut lines, mut renamed) = (0, 0);
    for (set, trace, path) in &pairs {
        let (got, _) = run_pair(set, trace, Mode::Alert, Format::Json);
        let (n, r) = compare_json(&format!("{set} on {trace}"), &read_text(path), &got);
        lines += n;
        renamed += r;
    }
    // Lines, and those whose READ/WRITE bits sf-processor named RECV/SEND (or back).
    assert_eq!((lines, renamed), (56_694, 489));
}

#[test]
fn enrich_runs_write_every_record_not_dropped_with_its_matches() {
    let tsv = pairs("enrich", ".tsv");
    assert_eq!(tsv.len(), 2);
    for (set, trace, path) in &tsv {
        let expected = rows(&read_text(path));
        let got = rows(&run_pair(set, trace, Mode::Enrich, Format::Tsv).0);
        compare_rows(&format!("{set} on {trace} (enrich)"), &expected, &got);
    }
    for (set, trace, path) in pairs("enrich", ".jsonl") {
        let (got, _) = run_pair(&set, &trace, Mode::Enrich, Format::Json);
        compare_json(
            &format!("{set} on {trace} (enrich)"),
            &read_text(&path),
            &got,
        );
    }
}
