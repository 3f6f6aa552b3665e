//! The direct encoder against the serde path it replaced (`support/serde_path.rs`): every
//! record branch with edge values, datum for datum, under both schemas; whole files for every
//! codec; and every block reaching the output in a single write.
//!
//! Deflate blocks are compared inflated: the writer compresses with zlib-rs where apache-avro
//! used miniz_oxide, so the compressed streams differ while what they hold is the same.

#[path = "support/serde_path.rs"]
mod serde_path;
mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    sync::{Arc, Mutex},
};

use sysflow::{avro::encode_datum, reader::ReadItem, schema::WriterSchema, *};

const SCHEMAS: [WriterSchema; 2] = [WriterSchema::V5, WriterSchema::V5Ipv6];
const CODECS: [Compression; 4] = [
    Compression::Deflate,
    Compression::Zstd,
    Compression::Snappy,
    Compression::None,
];
const MARKER: [u8; 16] = *b"sync-marker-0123";

// Edge values: zero, varint length boundaries (63/64 and 8191/8192 zigzag to 1/2/3 bytes),
// int and long extremes.
const LONGS: [i64; 13] = [
    0,
    1,
    -1,
    63,
    -64,
    64,
    -65,
    8191,
    -8193,
    i32::MAX as i64,
    i32::MIN as i64 - 1,
    i64::MAX,
    i64::MIN,
];
const INTS: [i32; 9] = [0, 1, -1, 63, -64, 64, -65, i32::MAX, i32::MIN];

fn strings() -> Vec<String> {
    vec![
        String::new(),
        "a".into(),
        "héllo ユーザー ✓ 名前".into(),
        "x".repeat(63),
        "x".repeat(64),
        "p".repeat(8191),
        "q".repeat(8192),
        format!("/data/{}", "d".repeat(70_000)),
    ]
}

/// Field `k` of edge record `i` takes value `(i + k) % n` of its list: over `i` in
/// `0..VARIANTS` every field takes every value of its list.
const VARIANTS: usize = LONGS.len();

struct Edge {
    i: usize,
    strings: Vec<String>,
}

impl Edge {
    fn pick(&self, k: usize, n: usize) -> usize {
        (self.i + k) % n
    }
    fn long(&self, k: usize) -> i64 {
        LONGS[self.pick(k, LONGS.len())]
    }
    fn int(&self, k: usize) -> i32 {
        INTS[self.pick(k, INTS.len())]
    }
    fn bool(&self, k: usize) -> bool {
        self.pick(k, 2) == 1
    }
    fn string(&self, k: usize) -> String {
        self.strings[self.pick(k, self.strings.len())].clone()
    }
    fn opt_string(&self, k: usize) -> Option<String> {
        (self.pick(k, 3) != 0).then(|| self.string(k + 1))
    }
    /// 0 to 3 items.
    fn strings(&self, k: usize) -> Vec<String> {
        (0..self.pick(k, 4)).map(|j| self.string(k + j)).collect()
    }
    fn longs(&self, k: usize) -> Vec<i64> {
        (0..self.pick(k, 4)).map(|j| self.long(k + j)).collect()
    }
    fn map(&self, k: usize) -> BTreeMap<String, String> {
        (0..self.pick(k, 4))
            .map(|j| {
                (
                    format!("key-{j}-{}", self.string(k + j)),
                    self.string(k + j + 1),
                )
            })
            .collect()
    }
    fn oid(&self, k: usize) -> Oid {
        Oid {
            create_ts: self.long(k),
            hpid: self.long(k + 1),
        }
    }
    fn opt_oid(&self, k: usize) -> Option<Oid> {
        (self.pick(k, 3) != 0).then(|| self.oid(k + 1))
    }
    fn foid(&self, k: usize) -> Foid {
        Foid(match self.pick(k, 3) {
            0 => [0; 20],
            1 => [0xff; 20],
            _ => std::array::from_fn(|b| (b * 13 + self.i) as u8),
        })
    }
    fn opt_foid(&self, k: usize) -> Option<Foid> {
        (self.pick(k, 3) != 0).then(|| self.foid(k + 1))
    }
    fn opt_ipv6(&self, k: usize) -> Option<Ipv6Bytes> {
        match self.pick(k, 3) {
            0 => None,
            1 => Some(Ipv6Bytes(std::net::Ipv6Addr::LOCALHOST.octets())),
            _ => Some(Ipv6Bytes([0xff; 16])),
        }
    }
    fn state(&self, k: usize) -> SfObjectState {
        let symbols = ["CREATED", "MODIFIED", "REUP"];
        SfObjectState::from_symbol(symbols[self.pick(k, symbols.len())]).unwrap()
    }
    fn container_type(&self, k: usize) -> ContainerType {
        let symbols = ContainerType::SYMBOLS;
        ContainerType::from_symbol(symbols[self.pick(k, symbols.len())]).unwrap()
    }
    fn k8s_component(&self, k: usize) -> K8sComponent {
        let symbols = K8sComponent::SYMBOLS;
        K8sComponent::from_symbol(symbols[self.pick(k, symbols.len())]).unwrap()
    }
    fn k8s_action(&self, k: usize) -> K8sAction {
        let symbols = K8sAction::SYMBOLS;
        K8sAction::from_symbol(symbols[self.pick(k, symbols.len())]).unwrap()
    }

    /// One record of each of the 12 branches.
    fn records(&self) -> Vec<Record> {
        vec![
            Record::Header(SfHeader {
                version: self.long(0),
                exporter: self.string(1),
                ip: self.string(2),
                filename: self.string(3),
            }),
            Record::Container(Container {
                id: self.string(0),
                name: self.string(1),
                image: self.string(2),
                imageid: self.string(3),
                container_type: self.container_type(4),
                privileged: self.bool(5),
                pod_id: self.opt_string(6),
            }),
            Record::Process(Process {
                state: self.state(0),
                oid: self.oid(1),
                poid: self.opt_oid(2),
                ts: self.long(3),
                exe: self.string(4),
                exe_args: self.string(5),
                uid: self.int(6),
                user_name: self.string(7),
                gid: self.int(8),
                group_name: self.string(9),
                tty: self.bool(10),
                container_id: self.opt_string(11),
                entry: self.bool(12),
                cwd: self.string(13),
                env: self.strings(14),
            }),
            Record::File(File {
                state: self.state(0),
                oid: self.foid(1),
                ts: self.long(2),
                restype: self.int(3),
                path: self.string(4),
                container_id: self.opt_string(5),
            }),
            Record::ProcessEvent(ProcessEvent {
                proc_oid: self.oid(0),
                ts: self.long(1),
                tid: self.long(2),
                op_flags: self.int(3),
                args: self.strings(4),
                ret: self.int(5),
            }),
            Record::NetworkFlow(NetworkFlow {
                proc_oid: self.oid(0),
                ts: self.long(1),
                tid: self.long(2),
                op_flags: self.int(3),
                end_ts: self.long(4),
                sip: self.int(5),
                sport: self.int(6),
                dip: self.int(7),
                dport: self.int(8),
                proto: self.int(9),
                fd: self.int(10),
                num_r_recv_ops: self.long(11),
                num_w_send_ops: self.long(12),
                num_r_recv_bytes: self.long(13),
                num_w_send_bytes: self.long(14),
                sip6: self.opt_ipv6(15),
                dip6: self.opt_ipv6(16),
            }),
            Record::FileFlow(FileFlow {
                proc_oid: self.oid(0),
                ts: self.long(1),
                tid: self.long(2),
                op_flags: self.int(3),
                open_flags: self.int(4),
                end_ts: self.long(5),
                file_oid: self.foid(6),
                fd: self.int(7),
                num_r_recv_ops: self.long(8),
                num_w_send_ops: self.long(9),
                num_r_recv_bytes: self.long(10),
                num_w_send_bytes: self.long(11),
            }),
            Record::FileEvent(FileEvent {
                proc_oid: self.oid(0),
                ts: self.long(1),
                tid: self.long(2),
                op_flags: self.int(3),
                file_oid: self.foid(4),
                ret: self.int(5),
                new_file_oid: self.opt_foid(6),
            }),
            Record::NetworkEvent(NetworkEvent {
                proc_oid: self.oid(0),
                ts: self.long(1),
                tid: self.long(2),
                op_flags: self.int(3),
                sip: self.int(4),
                sport: self.int(5),
                dip: self.int(6),
                dport: self.int(7),
                proto: self.int(8),
                ret: self.int(9),
            }),
            Record::ProcessFlow(ProcessFlow {
                proc_oid: self.oid(0),
                ts: self.long(1),
                num_threads_cloned: self.long(2),
                op_flags: self.int(3),
                end_ts: self.long(4),
                num_threads_exited: self.long(5),
                num_clone_errors: self.long(6),
            }),
            Record::Pod(Pod {
                ts: self.long(0),
                id: self.string(1),
                name: self.string(2),
                node_name: self.string(3),
                host_ip: self.longs(4),
                internal_ip: self.longs(5),
                namespace: self.string(6),
                restart_count: self.long(7),
                labels: self.map(8),
                selectors: self.map(9),
                services: (0..self.pick(10, 3))
                    .map(|j| Service {
                        name: self.string(11 + j),
                        id: self.string(12 + j),
                        namespace: self.string(13 + j),
                        port_list: (0..self.pick(14 + j, 3))
                            .map(|p| Port {
                                port: self.int(15 + p),
                                target_port: self.int(16 + p),
                                node_port: self.int(17 + p),
                                proto: self.string(18 + p),
                            })
                            .collect(),
                        cluster_ip: self.longs(19 + j),
                    })
                    .collect(),
            }),
            Record::K8sEvent(K8sEvent {
                kind: self.k8s_component(0),
                action: self.k8s_action(1),
                ts: self.long(2),
                message: self.string(3),
            }),
        ]
    }
}

fn edge_records() -> Vec<Record> {
    let strings = strings();
    (0..VARIANTS)
        .flat_map(|i| {
            Edge {
                i,
                strings: strings.clone(),
            }
            .records()
        })
        .collect()
}

fn ours(record: &Record, schema: WriterSchema) -> Vec<u8> {
    let mut out = Vec::new();
    encode_datum(&mut out, record, schema);
    out
}

#[test]
fn every_branch_and_edge_value_encodes_as_the_serde_path_does() {
    let records = edge_records();
    let sample = support::sample();
    let sample_records = sample
        .pods
        .iter()
        .cloned()
        .map(Record::Pod)
        .chain(sample.containers.iter().cloned().map(Record::Container))
        .chain(sample.processes.iter().cloned().map(Record::Process))
        .chain(sample.files.iter().cloned().map(Record::File))
        .chain(sample.events.iter().cloned());
    let mut branches = BTreeSet::new();
    for schema in SCHEMAS {
        for (n, record) in records
            .iter()
            .cloned()
            .chain(sample_records.clone())
            .enumerate()
        {
            assert_eq!(
                ours(&record, schema),
                serde_path::datum(&record, schema),
                "{schema:?}, record {n} ({})",
                record.code()
            );
            branches.insert(record.branch_index());
        }
    }
    assert_eq!(branches, (0..12).collect());
}

/// A value worked out by hand, so the two encoders cannot agree on a wrong answer.
#[test]
fn a_datum_worked_out_by_hand() {
    let event = Record::K8sEvent(K8sEvent {
        kind: K8sComponent::Pods,
        action: K8sAction::Modified,
        ts: -1,
        message: "hi".into(),
    });
    // Branch 11, symbol 2, symbol 1, long -1, string of 2 bytes: zigzag 22, 4, 2, 1, 4.
    let expected = [0x16, 0x04, 0x02, 0x01, 0x04, b'h', b'i'];
    assert_eq!(ours(&event, WriterSchema::V5), expected);
    assert_eq!(ours(&event, WriterSchema::V5Ipv6), expected);

    let flow = Record::NetworkFlow(NetworkFlow {
        sip6: Some(Ipv6Bytes([7; 16])),
        ..NetworkFlow::default()
    });
    // Branch 5 (zigzag 10), then 16 zero longs and ints (the OID is two longs); the extension
    // adds sip6 (branch 1, length 16, the bytes) and dip6 (branch 0).
    let v5 = ours(&flow, WriterSchema::V5);
    assert_eq!(v5, [&[0x0a][..], &[0u8; 16][..]].concat());
    let v6 = ours(&flow, WriterSchema::V5Ipv6);
    assert_eq!(
        v6,
        [&v5[..], &[0x02, 0x20][..], &[7u8; 16][..], &[0x00][..]].concat()
    );
}

/// A `Write` that keeps each `write` call separately.
#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

impl Writes {
    fn calls(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
    fn bytes(&self) -> Vec<u8> {
        self.calls().concat()
    }
}

impl Write for Writes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_long(bytes: &[u8], pos: &mut usize) -> i64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let b = bytes[*pos];
        *pos += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return (n >> 1) as i64 ^ -((n & 1) as i64);
        }
        shift += 7;
    }
}

/// A file header's metadata map.
struct Metadata<'a> {
    /// Each entry as (key, the entry's raw bytes), in file order.
    entries: Vec<(&'a [u8], &'a [u8])>,
    /// Where the entries start (after the count) and end (before the closing 0).
    start: usize,
    end: usize,
}

fn metadata(file: &[u8]) -> Metadata<'_> {
    assert_eq!(&file[..4], b"Obj\x01");
    let mut pos = 4;
    let count = read_long(file, &mut pos);
    let start = pos;
    let mut entries = Vec::new();
    for _ in 0..count {
        let entry = pos;
        let key_len = read_long(file, &mut pos) as usize;
        let key = &file[pos..pos + key_len];
        pos += key_len;
        let value_len = read_long(file, &mut pos) as usize;
        pos += value_len;
        entries.push((key, &file[entry..pos]));
    }
    let end = pos;
    assert_eq!(read_long(file, &mut pos), 0, "one metadata block");
    Metadata {
        entries,
        start,
        end,
    }
}

/// apache-avro writes the header's metadata in `HashMap` order, which varies from one writer to
/// the next; ours sorts the keys. The file with its metadata entries sorted by key and every
/// other byte as it was.
fn with_sorted_metadata(file: &[u8]) -> Vec<u8> {
    let mut metadata = metadata(file);
    metadata.entries.sort_by_key(|(key, _)| *key);
    let mut out = file[..metadata.start].to_vec();
    for (_, raw) in metadata.entries {
        out.extend_from_slice(raw);
    }
    out.extend_from_slice(&file[metadata.end..]);
    out
}

/// Where each block ends, after the header.
fn block_ends(file: &[u8]) -> Vec<usize> {
    let end = metadata(file).end;
    let mut pos = end + 1;
    let marker = &file[pos..pos + 16];
    pos += 16;
    let mut ends = Vec::new();
    while pos < file.len() {
        assert!(read_long(file, &mut pos) > 0, "block record count");
        let size = read_long(file, &mut pos) as usize;
        pos += size;
        assert_eq!(
            &file[pos..pos + 16],
            marker,
            "block ends with the sync marker"
        );
        pos += 16;
        ends.push(pos);
    }
    assert_eq!(pos, file.len());
    ends
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The file with every block's data inflated (and its size to match), every other byte as it
/// was.
fn with_inflated_blocks(file: &[u8]) -> Vec<u8> {
    let end = metadata(file).end;
    let mut pos = end + 1 + 16;
    let mut out = file[..pos].to_vec();
    while pos < file.len() {
        let count = read_long(file, &mut pos);
        let size = read_long(file, &mut pos) as usize;
        let mut data = Vec::new();
        flate2::read::DeflateDecoder::new(&file[pos..pos + size])
            .read_to_end(&mut data)
            .unwrap();
        pos += size;
        put_long(&mut out, count);
        put_long(&mut out, data.len() as i64);
        out.extend_from_slice(&data);
        out.extend_from_slice(&file[pos..pos + 16]);
        pos += 16;
    }
    out
}

fn assert_same_bytes(ours: &[u8], theirs: &[u8], what: &str) {
    if ours != theirs {
        let first = ours.iter().zip(theirs).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes vs {}, first difference at {first:?}",
            ours.len(),
            theirs.len()
        );
    }
}

/// Writes the sample, then `rounds` more copies of its events, through our writer.
fn write_ours(config: WriterConfig, rounds: i64, out: Writes) {
    let s = support::sample();
    let mut w = SysFlowWriter::to_stream_with_sync_marker(Box::new(out), config, MARKER).unwrap();
    support::write_sample(&mut w, &s);
    for round in 1..=rounds {
        for event in &s.events {
            let mut event = event.clone();
            if let Record::FileFlow(f) = &mut event {
                f.ts += round;
                f.num_w_send_bytes = round;
            }
            w.write(&event).unwrap();
        }
    }
    w.close().unwrap();
}

/// The same records through apache-avro, in the order our writer wrote them (read back from
/// its file), with the header record in a block of its own as the writer starts every file.
fn write_serde(ours: &[u8], config: &WriterConfig) -> Vec<u8> {
    let schema = if config.ipv6_extension {
        WriterSchema::V5Ipv6
    } else {
        WriterSchema::V5
    };
    let mut theirs =
        serde_path::SerdeContainer::new(schema, config.compression, config.block_bytes, MARKER);
    let records = SysFlowReader::new(ours, "ours")
        .unwrap()
        .map(|item| match item.unwrap() {
            ReadItem::Record(r) => r,
            other => panic!("{other:?}"),
        });
    for (n, record) in records.enumerate() {
        theirs.append(&record);
        if n == 0 {
            assert!(matches!(record, Record::Header(_)));
            theirs.flush();
        }
    }
    theirs.into_bytes()
}

#[test]
fn whole_files_are_byte_identical_to_the_serde_path_for_every_codec() {
    // Deflate: identical once both files' blocks are inflated (see the module comment).
    let comparable = |compression, file: &[u8]| match compression {
        Compression::Deflate => with_inflated_blocks(file),
        _ => file.to_vec(),
    };
    for compression in CODECS {
        for ipv6_extension in [false, true] {
            // Tiny blocks (a block per record or two) and the collector's 80 KB.
            for (block_bytes, rounds) in [(256, 40), (writer::DEFAULT_BLOCK_BYTES, 2500)] {
                let config = WriterConfig {
                    compression,
                    ipv6_extension,
                    block_bytes,
                    ..WriterConfig::default()
                };
                let what = format!("{compression:?}, ipv6 {ipv6_extension}, {block_bytes} B");
                let out = Writes::default();
                write_ours(config.clone(), rounds, out.clone());
                let ours = out.bytes();
                let theirs = write_serde(&ours, &config);
                assert!(block_ends(&ours).len() > 2, "{what}: several blocks");
                assert_same_bytes(
                    &comparable(compression, &ours),
                    &comparable(compression, &with_sorted_metadata(&theirs)),
                    &what,
                );
            }
        }
    }
}

#[test]
fn the_header_has_the_metadata_apache_avro_writes_in_key_order() {
    for compression in CODECS {
        let out = Writes::default();
        let config = WriterConfig {
            compression,
            ..WriterConfig::default()
        };
        write_ours(config, 0, out.clone());
        let file = out.bytes();
        let keys: Vec<&[u8]> = metadata(&file)
            .entries
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let expected: &[&[u8]] = match compression {
            Compression::None => &[b"avro.schema"],
            Compression::Zstd => &[
                b"avro.codec",
                b"avro.codec.compression_level",
                b"avro.schema",
            ],
            _ => &[b"avro.codec", b"avro.schema"],
        };
        assert_eq!(keys, expected, "{compression:?}");
    }
}

#[test]
fn every_block_reaches_the_output_in_one_write() {
    for compression in CODECS {
        let out = Writes::default();
        let config = WriterConfig {
            compression,
            block_bytes: 1024,
            ..WriterConfig::default()
        };
        write_ours(config, 50, out.clone());
        let file = out.bytes();
        let ends = block_ends(&file);
        let mut pos = 0;
        let write_ends: Vec<usize> = out
            .calls()
            .iter()
            .map(|call| {
                pos += call.len();
                pos
            })
            .collect();
        // The header goes out with the first block; then one write per block.
        assert_eq!(write_ends, ends, "{compression:?}");
        assert!(ends.len() > 10, "{compression:?}");
    }
}

fn venv_python() -> std::path::PathBuf {
    let venv = std::env::var_os("NRI_SYSFLOW_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".local/share/nri-sysflow/venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} missing: run `cargo xtask setup`",
        python.display()
    );
    python
}

/// fastavro (what sysprint reads with) decodes each record of the file, then encodes it again
/// with the file's schema: one hex line per record.
const FASTAVRO_REENCODE: &str = "import io, sys, fastavro\n\
    reader = fastavro.reader(open(sys.argv[1], 'rb'), return_record_name=True)\n\
    schema = fastavro.parse_schema(reader.writer_schema)\n\
    for record in reader:\n\
    \x20   out = io.BytesIO()\n\
    \x20   fastavro.schemaless_writer(out, schema, record)\n\
    \x20   print(out.getvalue().hex())\n";

/// The venv's fastavro has no snappy or zstd module, so deflate and uncompressed files.
#[test]
fn fastavro_reads_back_every_byte_of_every_record() {
    for compression in [Compression::Deflate, Compression::None] {
        for ipv6_extension in [false, true] {
            let config = WriterConfig {
                compression,
                ipv6_extension,
                block_bytes: 4096,
                ..WriterConfig::default()
            };
            let schema = if ipv6_extension {
                WriterSchema::V5Ipv6
            } else {
                WriterSchema::V5
            };
            let out = Writes::default();
            write_ours(config, 30, out.clone());
            let bytes = out.bytes();
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(&bytes).unwrap();
            let run = std::process::Command::new(venv_python())
                .args(["-c", FASTAVRO_REENCODE])
                .arg(file.path())
                .output()
                .unwrap();
            assert!(
                run.status.success(),
                "{}",
                String::from_utf8_lossy(&run.stderr)
            );
            let theirs: Vec<String> = String::from_utf8(run.stdout)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect();
            let ours: Vec<String> = SysFlowReader::new(&bytes[..], "ours")
                .unwrap()
                .map(|item| match item.unwrap() {
                    ReadItem::Record(r) => ours(&r, schema)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert!(ours.len() > 300, "{compression:?}");
            assert_eq!(ours, theirs, "{compression:?}, ipv6 {ipv6_extension}");
        }
    }
}
