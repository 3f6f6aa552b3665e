//! Conformance with the reference tools: files we write are read by the real `sysprint`
//! (sysflow-tools from PyPI, installed by `cargo xtask setup`), and the reference collector's
//! traces are read by our reader with the exact counts of their manifest and the same values
//! sysprint prints.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value as Json;
use sysflow::{flat::Flattener, reader::ReadItem, *};

fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var_os("NRI_SYSFLOW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".local/share/nri-sysflow/venv")
        });
    let bin = venv.join("bin").join(tool);
    assert!(
        bin.exists(),
        "{} missing: run `cargo xtask setup`",
        bin.display()
    );
    bin
}

/// `shared/reference-traces` beside the repository (or `SYSFLOW_REFERENCE_TRACES`): searched
/// upwards from this crate, so any checkout layout with `shared/` beside it works.
fn reference_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYSFLOW_REFERENCE_TRACES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/reference-traces"))
        .find(|d| d.join("MANIFEST.md").exists())
        .expect("shared/reference-traces not found beside the repository (or set SYSFLOW_REFERENCE_TRACES)")
}

/// `sysprint -o json FILE`: one JSON object per event or flow. sysprint logs errors and still
/// exits 0, so stderr must be empty too.
fn sysprint_json(file: &Path) -> Vec<Json> {
    let out = Command::new(venv_bin("sysprint"))
        .args(["-o", "json"])
        .arg(file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("Error"),
        "sysprint failed: {stderr}"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ours_json(file: &Path) -> Vec<Json> {
    let mut flat = Flattener::default();
    SysFlowReader::open(file)
        .unwrap()
        .filter_map(|item| match item.unwrap() {
            ReadItem::Record(r) => flat.push(r),
            ReadItem::Unknown { name } => panic!("unknown branch {name}"),
        })
        .map(|f| f.to_sysprint_json())
        .collect()
}

fn assert_same_records(file: &Path) {
    let theirs = sysprint_json(file);
    let ours = ours_json(file);
    assert_eq!(ours.len(), theirs.len(), "{}", file.display());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "{} record {i}", file.display());
    }
}

#[test]
fn sysprint_reads_every_field_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SysFlowWriter::to_directory(dir.path(), WriterConfig::default()).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    let path = w.close().unwrap().unwrap();
    let theirs = sysprint_json(&path);
    // Every event and flow we wrote, joined with its entities, field for field.
    assert_eq!(theirs.len(), s.events.len());
    assert_same_records(&path);
    // Spot checks of values straight from what we wrote.
    let nf = theirs.iter().find(|r| r["type"] == "NF").unwrap();
    assert_eq!(
        (nf["net"]["sip"].as_str(), nf["net"]["sport"].as_i64()),
        (Some("127.0.0.1"), Some(40556))
    );
    assert_eq!(nf["net"]["dip"], "10.0.0.255");
    let long = theirs
        .iter()
        .find(|r| r["flow"]["wbytes"] == i64::MAX)
        .unwrap();
    assert_eq!(
        long["file"]["path"].as_str().unwrap().len(),
        support::LONG_PATH_LEN
    );
    let fe = theirs.iter().find(|r| r["opflags"] == "RENAME").unwrap();
    assert_eq!(
        (fe["file"]["path"].as_str(), fe["file"]["newpath"].as_str()),
        (Some("/etc/passwd"), Some("/tmp/new-名前"))
    );
    assert_eq!(fe["pod"]["name"], "web-7d9f");
    assert_eq!(
        fe["pod"]["internalip"],
        serde_json::json!(["10.244.0.7", "255.255.255.255"])
    );
    assert_eq!(fe["proc"]["user"], "ユーザー");
}

#[test]
fn the_reference_reader_library_sees_the_ipv6_extension() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SysFlowWriter::to_directory(dir.path(), WriterConfig::default()).unwrap();
    support::write_sample(&mut w, &support::sample());
    let path = w.close().unwrap().unwrap();
    // fastavro is what sysflow-tools reads with; it decodes with the schema in the file.
    let script = "import sys, fastavro, ipaddress\n\
        for r in fastavro.reader(open(sys.argv[1], 'rb'), return_record_name=True):\n\
        \x20   name, rec = r['rec']\n\
        \x20   if name == 'sysflow.flow.NetworkFlow':\n\
        \x20       f = lambda b: str(ipaddress.IPv6Address(b)) if b is not None else '-'\n\
        \x20       print(rec['sport'], f(rec['sip6']), f(rec['dip6']))\n";
    let out = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "40556 - -\n65535 ::1 2001:db8::1\n"
    );
}

#[test]
fn exact_v5_mode_writes_the_published_schema() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig {
        ipv6_extension: false,
        ..WriterConfig::default()
    };
    let mut w = SysFlowWriter::to_directory(dir.path(), config).unwrap();
    support::write_sample(&mut w, &support::sample());
    let path = w.close().unwrap().unwrap();
    let reader = apache_avro::Reader::new(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(
        schema::fingerprint(reader.writer_schema()),
        schema::SCHEMA_V5_FINGERPRINT
    );
    assert_same_records(&path);
}

/// Per-type counts from MANIFEST.md: file -> {HEADER: 1, PROC: 8, ...}.
fn manifest_counts() -> BTreeMap<String, BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(reference_dir().join("MANIFEST.md")).unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains(".sf |"))
    {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        let counts = cols[8]
            .split(", ")
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.replace(',', "").parse().unwrap())
            })
            .collect();
        out.insert(cols[1].to_owned(), counts);
    }
    assert_eq!(out.len(), 10, "{out:?}");
    out
}

fn manifest_name(r: &Record) -> &'static str {
    match r {
        Record::Header(_) => "HEADER",
        Record::Container(_) => "CONT",
        Record::Process(_) => "PROC",
        Record::File(_) => "FILE",
        Record::ProcessEvent(_) => "PROC_EVT",
        Record::NetworkFlow(_) => "NET_FLOW",
        Record::FileFlow(_) => "FILE_FLOW",
        Record::FileEvent(_) => "FILE_EVT",
        Record::NetworkEvent(_) => "NET_EVT",
        Record::ProcessFlow(_) => "PROC_FLOW",
        Record::Pod(_) => "POD",
        Record::K8sEvent(_) => "K8S_EVT",
    }
}

#[test]
fn our_reader_counts_every_reference_trace_exactly() {
    for (file, expected) in manifest_counts() {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for item in SysFlowReader::open(&reference_dir().join(&file)).unwrap() {
            match item.unwrap_or_else(|e| panic!("{file}: {e}")) {
                ReadItem::Record(r) => *counts.entry(manifest_name(&r).into()).or_default() += 1,
                ReadItem::Unknown { name } => panic!("{file}: unknown {name}"),
            }
        }
        assert_eq!(counts, expected, "{file}");
    }
}

#[test]
fn every_reference_trace_prints_exactly_as_sysprint_prints_it() {
    for file in manifest_counts().keys() {
        assert_same_records(&reference_dir().join(file));
    }
}
