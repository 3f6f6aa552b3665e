//! Our writer's files read back by our reader, record for record.

mod support;

use sysflow::{reader::ReadItem, *};

fn read_all(path: &std::path::Path) -> Vec<Record> {
    SysFlowReader::open(path)
        .unwrap()
        .map(|item| match item.unwrap() {
            ReadItem::Record(r) => r,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn every_record_type_round_trips_with_entities_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = SysFlowWriter::to_directory(dir.path(), WriterConfig::default()).unwrap();
    let s = support::sample();
    support::write_sample(&mut w, &s);
    let path = w.close().unwrap().unwrap();
    let records = read_all(&path);

    let Record::Header(h) = &records[0] else {
        panic!("no header first")
    };
    assert_eq!((h.version, h.exporter.as_str()), (5, "local"));
    assert_eq!(h.filename, path.to_str().unwrap());
    // Every event written, in order, after the entities it needs.
    let events: Vec<&Record> = records
        .iter()
        .filter(|r| {
            !matches!(
                r,
                Record::Header(_)
                    | Record::Pod(_)
                    | Record::Container(_)
                    | Record::Process(_)
                    | Record::File(_)
            )
        })
        .collect();
    assert_eq!(events, s.events.iter().collect::<Vec<_>>());
    // Entities are written as given (the worker keeps MODIFIED), each once.
    for p in &s.processes {
        assert_eq!(
            records
                .iter()
                .filter(|r| **r == Record::Process(p.clone()))
                .count(),
            1,
            "{p:?}"
        );
    }
    for f in &s.files {
        assert_eq!(
            records
                .iter()
                .filter(|r| **r == Record::File(f.clone()))
                .count(),
            1
        );
    }
    assert_eq!(
        records
            .iter()
            .filter(|r| **r == Record::Pod(s.pods[0].clone()))
            .count(),
        1
    );
    // Order: pod before its container, container before its processes, root before children.
    let pos = |want: &Record| records.iter().position(|r| r == want).unwrap();
    assert!(
        pos(&Record::Pod(s.pods[0].clone())) < pos(&Record::Container(s.containers[0].clone()))
    );
    assert!(
        pos(&Record::Container(s.containers[0].clone()))
            < pos(&Record::Process(s.processes[1].clone()))
    );
    assert!(
        pos(&Record::Process(s.processes[0].clone()))
            < pos(&Record::Process(s.processes[1].clone()))
    );
    assert!(
        pos(&Record::Process(s.processes[1].clone()))
            < pos(&Record::Process(s.processes[2].clone()))
    );
}

/// Leaves a sample file for manual inspection when SYSFLOW_SAMPLE_OUT is set.
#[test]
fn write_sample_file_for_inspection() {
    let Some(out) = std::env::var_os("SYSFLOW_SAMPLE_OUT") else {
        return;
    };
    let mut w =
        SysFlowWriter::to_directory(std::path::Path::new(&out), WriterConfig::default()).unwrap();
    support::write_sample(&mut w, &support::sample());
    w.close().unwrap();
}
