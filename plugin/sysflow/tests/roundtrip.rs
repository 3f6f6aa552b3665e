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

#[test]
fn zstd_snappy_and_uncompressed_files_round_trip() {
    for compression in [Compression::Zstd, Compression::Snappy, Compression::None] {
        let dir = tempfile::tempdir().unwrap();
        let config = WriterConfig {
            compression,
            ..WriterConfig::default()
        };
        let mut w = SysFlowWriter::to_directory(dir.path(), config).unwrap();
        let s = support::sample();
        support::write_sample(&mut w, &s);
        let path = w.close().unwrap().unwrap();
        let events: Vec<Record> = read_all(&path)
            .into_iter()
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
        assert_eq!(events, s.events, "{compression:?}");
    }
}

#[test]
fn a_union_branch_from_a_future_schema_is_skipped_not_fatal() {
    use apache_avro::{Schema, types::Value};
    // v5 plus a 13th branch, as a later schema version might add.
    let mut schema: serde_json::Value =
        serde_json::from_str(sysflow::schema::SCHEMA_V5_JSON).unwrap();
    schema["fields"][0]["type"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "type": "record", "namespace": "sysflow.future", "name": "Thing",
            "fields": [{"name": "x", "type": "long"}]
        }));
    let schema = Schema::parse_str(&schema.to_string()).unwrap();
    let mut w = apache_avro::Writer::new(&schema, Vec::new()).unwrap();
    let header = Value::Record(vec![(
        "rec".into(),
        Value::Union(
            0,
            Box::new(Value::Record(vec![
                ("version".into(), Value::Long(6)),
                ("exporter".into(), Value::String("n".into())),
                ("ip".into(), Value::String(String::new())),
                ("filename".into(), Value::String(String::new())),
            ])),
        ),
    )]);
    let thing = Value::Record(vec![(
        "rec".into(),
        Value::Union(
            12,
            Box::new(Value::Record(vec![("x".into(), Value::Long(7))])),
        ),
    )]);
    w.append_value(header.clone()).unwrap();
    w.append_value(thing).unwrap();
    w.append_value(header).unwrap();
    let bytes = w.into_inner().unwrap();
    let items: Vec<ReadItem> = SysFlowReader::new(&bytes[..], "future")
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(items.len(), 3);
    assert!(matches!(&items[0], ReadItem::Record(Record::Header(h)) if h.version == 6));
    assert_eq!(
        items[1],
        ReadItem::Unknown {
            name: "sysflow.future.Thing".into()
        }
    );
    assert!(matches!(&items[2], ReadItem::Record(Record::Header(_))));
}
