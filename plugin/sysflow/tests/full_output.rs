//! A full disk, met without root: RLIMIT_FSIZE makes writes past a size fail (EFBIG) the way a
//! full filesystem does (ENOSPC), in part first. This binary has one test: the limit is
//! process-wide.

mod support;

use std::path::{Path, PathBuf};

use sysflow::{encoding::*, reader::ReadItem, *};

fn set_file_size_limit(bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls with a valid pointer.
    unsafe {
        // Without this the kernel ends the process with SIGXFSZ instead of failing the write.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

fn flow(s: &support::Sample, i: i64) -> Record {
    let proc = &s.processes[1];
    Record::FileFlow(FileFlow {
        proc_oid: proc.oid,
        ts: 1_700_000_000_000_000_000 + i,
        tid: proc.oid.hpid,
        op_flags: op::OPEN | op::WRITE_SEND | op::CLOSE,
        open_flags: open_flags::WRONLY,
        end_ts: 1_700_000_000_000_000_100 + i,
        file_oid: s.files[0].oid,
        fd: 3,
        num_r_recv_ops: 0,
        num_w_send_ops: 1,
        num_r_recv_bytes: 0,
        num_w_send_bytes: i,
    })
}

/// The FileFlow byte counts in a file, and the reader's error if it stopped early.
fn flows_in(path: &Path) -> (Vec<i64>, Option<String>) {
    let mut bytes = Vec::new();
    for item in SysFlowReader::open(path).unwrap() {
        match item {
            Ok(ReadItem::Record(Record::FileFlow(f))) => bytes.push(f.num_w_send_bytes),
            Ok(_) => {}
            Err(e) => return (bytes, Some(e.to_string())),
        }
    }
    (bytes, None)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn a_block_that_does_not_fit_is_cut_back_counted_and_writing_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let config = WriterConfig {
        // No compression: block sizes follow the record count.
        compression: Compression::None,
        ..WriterConfig::default()
    };
    let mut w = SysFlowWriter::to_directory(dir.path(), config).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    for i in 0..100 {
        w.write(&flow(&s, i)).unwrap();
    }
    w.flush().unwrap();
    let whole = w.current_file_bytes();
    let partial = w.current_path().unwrap().with_extension("sf.partial");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), whole);
    let (before, read_error) = flows_in(&partial);
    assert_eq!(read_error, None);
    assert_eq!(before.len(), 100 + 2, "the sample's two flows and ours");

    // Room for part of the next block only.
    set_file_size_limit(whole + 100);
    for i in 100..200 {
        w.write(&flow(&s, i)).unwrap();
    }
    let err = w.flush().unwrap_err();
    assert!(err.is_output_failure(), "{err}");
    assert!(err.to_string().contains("File too large"), "{err}");
    // Cut back to the last whole block, the 100 flows counted as lost, the cause kept.
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), whole);
    assert_eq!(w.stats().records_lost, 100);
    assert_eq!(w.stats().output_failures, 1);
    assert!(w.stats().output_error.is_some());
    assert_eq!(flows_in(&partial), (before.clone(), None));

    // Space returns: the next block goes out after the last whole one.
    set_file_size_limit(libc::RLIM_INFINITY);
    for i in 200..250 {
        w.write(&flow(&s, i)).unwrap();
    }
    w.flush().unwrap();
    assert_eq!(w.stats().output_error, None);
    assert_eq!(w.stats().records_lost, 100);
    let first = w.current_path().unwrap().to_owned();

    // A new file on a full disk: its header does not make it either, and goes out with the
    // first block that does, followed by the entities its flows need.
    set_file_size_limit(0);
    let _ = w.rotate();
    for i in 300..310 {
        let _ = w.write(&flow(&s, i));
    }
    assert!(w.flush().unwrap_err().is_output_failure());
    set_file_size_limit(libc::RLIM_INFINITY);
    for i in 400..405 {
        w.write(&flow(&s, i)).unwrap();
    }
    let second = w.close().unwrap().unwrap();
    assert_eq!(files_in(dir.path()), vec![first.clone(), second.clone()]);

    let (flows, read_error) = flows_in(&first);
    assert_eq!(read_error, None);
    assert_eq!(flows[..before.len()], before[..]);
    assert_eq!(flows[before.len()..], (200..250).collect::<Vec<_>>()[..]);
    assert_eq!(flows_in(&second), ((400..405).collect(), None));
    let records: Vec<Record> = SysFlowReader::open(&second)
        .unwrap()
        .map(|item| match item.unwrap() {
            ReadItem::Record(r) => r,
            ReadItem::Unknown { name } => panic!("{name}"),
        })
        .collect();
    assert!(matches!(&records[0], Record::Header(h) if h.filename == second.to_str().unwrap()));
    assert_eq!(
        sysflow::check::dangling_references(&records),
        Vec::<String>::new()
    );
}
