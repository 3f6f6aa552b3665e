//! `nri-sysflow convert --to parquet` as a user runs it: every reference trace converts, and
//! pyarrow reads back exactly sysprint's flat view of every record (no root needed; needs the
//! test venv with pyarrow, which `cargo xtask setup` installs).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[path = "support/cli.rs"]
mod cli;

use cli::{reference_dir, run};

fn venv_python() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap())
        .join(".local/share/nri-sysflow/venv/bin/python")
}

/// (file, rows): every event and flow of each reference trace, as `print` counts them.
const TRACES: [(&str, u64); 10] = [
    ("collector-v1001-nginx", 55),
    ("collector-v5-alpine", 24),
    ("collector-v5-files", 21),
    ("collector-v5-mpm-event-full-capture", 4707),
    ("collector-v5-rename", 28),
    ("collector-v5-setuid", 12),
    ("collector-v5-tcp-client-server", 10),
    ("processor-v1000-tcp", 10),
    ("processor-v2-httpd", 5),
    ("processor-v4-k8s-small", 5247),
];

#[test]
fn every_reference_trace_converts_and_reads_back_as_sysprints_flat_view() {
    let out = tempfile::tempdir().unwrap();
    let refs = reference_dir();
    let (code, stdout, stderr) = run(&[
        "convert",
        "--to",
        "parquet",
        refs.to_str().unwrap(),
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(
        (code, stderr.as_str()),
        (0, "nri-sysflow convert: 10 files, 10119 rows\n")
    );
    let mut args = vec![
        serde_json::to_string(
            &sysflow_parquet::COLUMNS
                .iter()
                .map(|c| {
                    [
                        c.name.to_string(),
                        c.field.to_string(),
                        format!("{:?}", c.kind),
                    ]
                })
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    ];
    let mut want = String::new();
    for (name, rows) in TRACES {
        let sf = refs.join(format!("{name}.sf"));
        let parquet = out.path().join(format!("{name}.parquet"));
        assert!(
            stdout.contains(&format!(
                "{} -> {} ({rows} rows)",
                sf.display(),
                parquet.display()
            )),
            "{stdout}"
        );
        let (code, json, _) = run(&["print", "--format", "json", sf.to_str().unwrap()]);
        assert_eq!(code, 0);
        let jsonl = out.path().join(format!("{name}.jsonl"));
        std::fs::write(&jsonl, json).unwrap();
        args.push(parquet.display().to_string());
        args.push(jsonl.display().to_string());
        want.push_str(&format!("{name}.parquet: {rows} rows equal\n"));
    }
    let check = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parquet_matches_flat_view.py"))
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(
        (
            check.status.code(),
            String::from_utf8_lossy(&check.stdout).into_owned(),
            String::from_utf8_lossy(&check.stderr).into_owned()
        ),
        (Some(0), want, String::new())
    );
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_file_that_is_not_sysflow_is_named_and_the_others_still_convert() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.sf");
    std::fs::write(&bogus, b"not avro at all").unwrap();
    let good = reference_dir().join("collector-v5-alpine.sf");
    let out = dir.path().join("out");
    let (code, stdout, stderr) = run(&[
        "convert",
        "--to",
        "parquet",
        bogus.to_str().unwrap(),
        good.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stdout.ends_with("collector-v5-alpine.parquet (24 rows)\n"),
        "{stdout}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!("nri-sysflow convert: {}: ", bogus.display())),
        "{stderr}"
    );
    assert_eq!(lines[1], "nri-sysflow convert: 1 files, 24 rows");
    assert!(!out.join("bogus.parquet").exists());
    assert!(!out.join("bogus.parquet.partial").exists());

    let (code, _, stderr) = run(&["convert", "--to", "csv", good.to_str().unwrap(), "x"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown target format \"csv\": expected parquet"),
        "{stderr}"
    );
}
