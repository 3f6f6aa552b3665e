//! `nri-sysflow print` as a user runs it.

use std::path::PathBuf;

#[path = "support/cli.rs"]
mod cli;

use cli::{reference_dir, run};

fn trace(name: &str) -> PathBuf {
    reference_dir().join(name)
}

#[test]
fn json_of_the_network_flows_has_sysprint_fields_and_values() {
    let path = trace("collector-v5-tcp-client-server.sf");
    let (code, out, err) = run(&[
        "print",
        "--format",
        "json",
        "--type",
        "NF",
        path.to_str().unwrap(),
    ]);
    assert_eq!((code, err.as_str()), (0, ""));
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let client = &lines[0];
    assert_eq!(client["proc"]["exe"], "./client");
    assert_eq!(client["opflags"], "  CWR    T ");
    assert_eq!(
        client["net"],
        serde_json::json!({"proto": 6, "sport": 40556, "dport": 8080, "sip": "127.0.0.1", "dip": "127.0.0.1"})
    );
    assert_eq!(
        (
            client["flow"]["rbytes"].as_i64(),
            client["flow"]["wbytes"].as_i64()
        ),
        (Some(80), Some(80))
    );
    assert_eq!(client["ts_uts"].as_i64(), Some(1553543282832225890));
}

#[test]
fn table_and_csv_show_one_line_per_record() {
    let path = trace("collector-v5-rename.sf");
    let (code, out, _) = run(&["print", "--type", "FE", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].contains("Op Flags") && rows[0].contains("Resource"));
    assert!(
        rows[1].contains("RENAME") && rows[1].contains("/tmp/test1, /tmp/test2"),
        "{}",
        rows[1]
    );
    let (code, out, _) = run(&[
        "print",
        "--format",
        "csv",
        "--type",
        "FE",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    // The trace's environments hold multi-line values: rows must be split CSV-aware.
    let rows = parse_csv(&out);
    assert_eq!(rows.len(), 2);
    let col = rows[0].iter().position(|h| h == "file.newpath").unwrap();
    assert_eq!(rows[1][col], "/tmp/test2");
    assert_eq!(rows[0].len(), rows[1].len());
}

/// RFC 4180 rows: quoted fields may hold commas, doubled quotes and newlines.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

#[test]
fn errors_name_the_file_and_exit_non_zero() {
    let (code, _, err) = run(&["print", "/nonexistent/x.sf"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/x.sf") && err.contains("No such file"),
        "{err}"
    );
    let bogus = std::env::temp_dir().join(format!("not-sysflow-{}.sf", std::process::id()));
    std::fs::write(&bogus, b"hello").unwrap();
    let (code, _, err) = run(&["print", bogus.to_str().unwrap()]);
    std::fs::remove_file(&bogus).unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("not a readable Avro container file"), "{err}");
    let (code, _, err) = run(&["print", "--type", "XX", "/tmp"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown record type \"XX\""), "{err}");
}
