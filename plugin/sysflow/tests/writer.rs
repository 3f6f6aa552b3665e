//! Writer rules: rotation keeps each file self-contained, files appear under their final name
//! only when complete, and a writer killed at any moment leaves readable files.

mod support;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sysflow::{encoding::*, reader::ReadItem, *};

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn read(path: &Path) -> (Vec<Record>, Option<String>) {
    let mut records = Vec::new();
    for item in SysFlowReader::open(path).unwrap() {
        match item {
            Ok(ReadItem::Record(r)) => records.push(r),
            Ok(ReadItem::Unknown { name }) => panic!("unknown {name}"),
            Err(e) => return (records, Some(e.to_string())),
        }
    }
    (records, None)
}

/// Asserts that every reference in the file points to an entity written earlier in it, and
/// counts the entity states.
fn assert_self_contained(path: &Path) -> HashMap<&'static str, usize> {
    let (records, err) = read(path);
    assert_eq!(err, None, "{}", path.display());
    assert!(
        matches!(records.first(), Some(Record::Header(_))),
        "{} starts with a header",
        path.display()
    );
    assert_eq!(
        sysflow::check::dangling_references(&records),
        Vec::<String>::new(),
        "{}",
        path.display()
    );
    let mut states: HashMap<&'static str, usize> = HashMap::new();
    for r in &records {
        match r {
            Record::Process(p) => *states.entry(p.state.symbol()).or_default() += 1,
            Record::File(f) => *states.entry(f.state.symbol()).or_default() += 1,
            _ => {}
        }
    }
    states
}

fn flow(s: &support::Sample, i: i64) -> Record {
    let proc = &s.processes[1 + (i as usize % 2)];
    let file = &s.files[i as usize % s.files.len()];
    Record::FileFlow(FileFlow {
        proc_oid: proc.oid,
        ts: 1_700_000_000_000_000_000 + i,
        tid: proc.oid.hpid,
        op_flags: op::OPEN | op::WRITE_SEND | op::CLOSE,
        open_flags: open_flags::WRONLY,
        end_ts: 1_700_000_000_000_000_100 + i,
        file_oid: file.oid,
        fd: 3,
        num_r_recv_ops: 0,
        num_w_send_ops: 1,
        num_r_recv_bytes: 0,
        num_w_send_bytes: i,
    })
}

#[test]
fn size_rotation_keeps_every_file_self_contained_with_reup_entities() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig {
        block_bytes: 2048,
        max_file_bytes: Some(8 * 1024),
        ..WriterConfig::default()
    };
    let mut w = SysFlowWriter::to_directory(dir.path(), config).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    // The worker execs something new mid-stream: it must be written again as MODIFIED.
    for i in 0..3000 {
        if i == 1500 {
            let mut p = s.processes[2].clone();
            p.exe = "/usr/bin/other".into();
            p.state = SfObjectState::Modified;
            w.set_process(p);
        }
        w.write(&flow(&s, i)).unwrap();
    }
    w.close().unwrap();
    assert!(files_in(dir.path(), ".partial").is_empty());
    let files = files_in(dir.path(), ".sf");
    assert!(files.len() >= 4, "{files:?}");
    let mut total_flows = 0;
    for (i, f) in files.iter().enumerate() {
        let states = assert_self_contained(f);
        if i > 0 {
            // Entities that existed before this file are re-emitted as REUP.
            assert!(
                states.get("REUP").copied().unwrap_or(0) >= 3,
                "{}: {states:?}",
                f.display()
            );
        }
        total_flows += read(f)
            .0
            .iter()
            .filter(|r| matches!(r, Record::FileFlow(_)))
            .count();
    }
    assert_eq!(total_flows, 3000 + 2);
    let all: Vec<Record> = files.iter().flat_map(|f| read(f).0).collect();
    assert!(all.iter().any(|r| matches!(r, Record::Process(p) if p.exe == "/usr/bin/other" && p.state == SfObjectState::Modified)));
}

#[test]
fn time_rotation_starts_a_new_file_with_a_new_header() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig {
        rotate_after: Duration::from_millis(300),
        ..WriterConfig::default()
    };
    let mut w = SysFlowWriter::to_directory(dir.path(), config).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    let first = w.current_path().unwrap().to_owned();
    // While open, only the .partial name exists.
    assert!(!first.exists());
    assert_eq!(files_in(dir.path(), ".partial").len(), 1);
    std::thread::sleep(Duration::from_millis(350));
    assert!(w.rotate_if_due().unwrap());
    w.write(&flow(&s, 1)).unwrap();
    let second = w.close().unwrap().unwrap();
    assert_ne!(first, second);
    assert!(first.exists() && second.exists());
    for f in [&first, &second] {
        let (records, _) = read(f);
        let Record::Header(h) = &records[0] else {
            panic!()
        };
        assert_eq!(h.filename, f.to_str().unwrap());
        assert_self_contained(f);
    }
}

/// The child side of the crash test: writes flows forever, flushing a block now and then.
#[test]
fn crash_child_writes_until_killed() {
    let Some(dir) = std::env::var_os("SYSFLOW_CRASH_DIR") else {
        return;
    };
    let config = WriterConfig {
        block_bytes: 4096,
        ..WriterConfig::default()
    };
    let mut w = SysFlowWriter::to_directory(Path::new(&dir), config).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    // Until the parent kills this process.
    for i in 0..i64::MAX {
        w.write(&flow(&s, i)).unwrap();
        if i % 1000 == 0 {
            std::fs::write(Path::new(&dir).join("progress"), i.to_string()).unwrap();
        }
    }
}

#[test]
fn a_writer_killed_mid_stream_leaves_a_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writes_until_killed", "--nocapture"])
        .env("SYSFLOW_CRASH_DIR", dir.path())
        .spawn()
        .unwrap();
    // Let it write a few hundred blocks, then SIGKILL at an arbitrary point.
    let progress = dir.path().join("progress");
    for _ in 0..200 {
        let done: u64 = std::fs::read_to_string(&progress)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if done >= 20_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = files_in(dir.path(), ".partial");
    assert_eq!(partial.len(), 1);
    // Our reader: every record up to the last whole block. A block goes out in one write, but
    // the kernel stops a write between pages when SIGKILL lands in it: the file may then end
    // inside that block, which the reader reports when it reaches it.
    let (torn_records, torn_err) = read(&partial[0]);
    if let Some(e) = &torn_err {
        assert!(e.ends_with("failed to fill whole buffer"), "{e}");
    }
    // Recovery on the next start cuts such a block off and renames the file: then our reader
    // takes the same records without an error, and sysprint reads it to the end.
    let recovered = sysflow::writer::recover_partials(dir.path()).unwrap();
    assert_eq!(recovered.len(), 1);
    let (records, err) = read(&recovered[0]);
    assert_eq!(err, None);
    assert_eq!(records.len(), torn_records.len());
    let flows = records
        .iter()
        .filter(|r| matches!(r, Record::FileFlow(_)))
        .count();
    assert!(flows >= 15_000, "{flows}");
    assert_self_contained(&recovered[0]);
    let venv =
        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv");
    let out = Command::new(venv.join("bin/sysprint"))
        .args(["-o", "json"])
        .arg(&recovered[0])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Error"), "{stderr}");
    let printed = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(
        printed,
        records
            .iter()
            .filter(|r| !matches!(
                r,
                Record::Header(_)
                    | Record::Pod(_)
                    | Record::Container(_)
                    | Record::Process(_)
                    | Record::File(_)
            ))
            .count()
    );
}

#[test]
fn missing_entities_are_errors_not_dangling_references() {
    let mut w =
        SysFlowWriter::to_stream(Box::new(std::io::sink()), WriterConfig::default()).unwrap();
    let s = support::sample();
    let err = w.write(&flow(&s, 0)).unwrap_err();
    assert!(
        matches!(err, SysflowWriteError::MissingProcess(oid) if oid == s.processes[1].oid),
        "{err}"
    );
    w.set_process(s.processes[1].clone());
    let err = w.write(&flow(&s, 0)).unwrap_err();
    assert!(
        matches!(err, SysflowWriteError::MissingContainer(ref c) if *c == s.containers[0].id),
        "{err}"
    );
    assert!(matches!(
        w.write(&Record::Header(SfHeader::default())),
        Err(SysflowWriteError::NotWritable("SFHeader"))
    ));
}

#[test]
fn a_vanished_output_directory_is_counted_and_writing_resumes_when_it_returns() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let config = WriterConfig {
        rotate_after: Duration::from_millis(200),
        ..WriterConfig::default()
    };
    let mut w = SysFlowWriter::to_directory(&dir, config).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    w.write(&flow(&s, 1)).unwrap();

    // The directory goes away (an unmount, an operator's rm -r): completing the file and
    // opening the next fail, and so does every write until it is back.
    std::fs::remove_dir_all(&dir).unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let err = w.write(&flow(&s, 2)).unwrap_err();
    assert!(err.is_output_failure(), "{err}");
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
    let err = w.write(&flow(&s, 3)).unwrap_err();
    assert!(matches!(err, SysflowWriteError::NoOutput(_)), "{err}");
    assert!(
        err.to_string().contains("No such file or directory"),
        "{err}"
    );
    let lost = w.stats().records_lost;
    assert!(lost >= 2, "{:?}", w.stats());
    assert!(w.stats().output_error.is_some());

    // Back: within a second the writer opens a new file, entities included.
    std::fs::create_dir(&dir).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    w.write(&flow(&s, 4)).unwrap();
    assert_eq!(w.stats().records_lost, lost);
    let last = w.close().unwrap().unwrap();
    assert_eq!(files_in(&dir, ""), vec![last.clone()]);
    assert_self_contained(&last);
    let (records, _) = read(&last);
    let flows: Vec<i64> = records
        .iter()
        .filter_map(|r| match r {
            Record::FileFlow(f) => Some(f.num_w_send_bytes),
            _ => None,
        })
        .collect();
    assert_eq!(flows, [4]);
}

#[test]
fn recovery_cuts_a_torn_last_block_and_drops_a_file_without_a_whole_header() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig {
        block_bytes: 2048,
        ..WriterConfig::default()
    };
    let mut w = SysFlowWriter::to_directory(dir.path(), config).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    for i in 0..2000 {
        w.write(&flow(&s, i)).unwrap();
    }
    w.close().unwrap();
    let whole = std::fs::read(&files_in(dir.path(), ".sf")[0]).unwrap();
    let (all, err) = read(&files_in(dir.path(), ".sf")[0]);
    assert_eq!(err, None);
    // Cut inside the last block's sync marker, inside its data, in the middle of the file,
    // and inside the header.
    for (cut, keeps_a_file) in [
        (whole.len() - 1, true),
        (whole.len() - 40, true),
        (whole.len() / 2, true),
        (20, false),
    ] {
        let scratch = tempfile::tempdir().unwrap();
        let partial = scratch.path().join("node-1700000000-000001.sf.partial");
        std::fs::write(&partial, &whole[..cut]).unwrap();
        // What a reader takes from the torn file before its error.
        let (before, _) = if keeps_a_file {
            read(&partial)
        } else {
            (Vec::new(), None)
        };
        let recovered = sysflow::writer::recover_partials(scratch.path()).unwrap();
        assert!(!partial.exists());
        if !keeps_a_file {
            assert_eq!(recovered, Vec::<PathBuf>::new(), "cut at {cut}");
            continue;
        }
        let (records, err) = read(&recovered[0]);
        assert_eq!(err, None, "cut at {cut}");
        assert_eq!(records, before, "cut at {cut}");
        assert!(
            records.len() < all.len() && !records.is_empty(),
            "cut at {cut}"
        );
    }
}
