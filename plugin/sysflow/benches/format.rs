//! `cargo xtask bench sysflow`: SysFlow write and read throughput and size on the same records,
//! the same schema (published v5) and the same codec (deflate, 80 KB blocks), in one run:
//!
//! * nri-sysflow: the writer (entity bookkeeping, direct Avro encoding, zlib-rs deflate);
//! * previous: the path the writer took before, apache-avro's serde serializer and container
//!   writer (miniz_oxide deflate at level 10), fed the very records the writer wrote, entities
//!   included, but without the writer's bookkeeping (so it is, if anything, flattered);
//! * fastavro (the Avro library the reference Python tools use) reads our file (timed), then
//!   writes the records it read (timed) and reads its own file back.
//!
//! The mix is what a node produces: mostly FileFlow and NetworkFlow, some process and file
//! events, with the entities they need. Records are built before the clock starts. Rust
//! timings are the best of a few runs (the machine is shared); a second table splits the write
//! time into encoding (codec none) and deflate.

#[path = "../tests/support/serde_path.rs"]
mod serde_path;

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::json;
use sysflow::{encoding::*, reader::ReadItem, schema::WriterSchema, *};

const EVENTS: usize = 300_000;
const RUNS: usize = 3;

/// A `Write` whose bytes the benchmark can take back afterwards.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Deterministic pseudo-random numbers (xorshift), so every run writes the same records.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Mix {
    pods: Vec<Pod>,
    containers: Vec<Container>,
    processes: Vec<Process>,
    files: Vec<File>,
    events: Vec<Record>,
}

fn mix() -> Mix {
    let mut rng = Rng(0x5eed);
    let pods: Vec<Pod> = (0..5)
        .map(|i| Pod {
            ts: 1_700_000_000_000_000_000,
            id: format!("pod-uid-{i:04}"),
            name: format!("web-{i}"),
            node_name: "node-1".into(),
            host_ip: vec![ipv4_to_long(Ipv4Addr::new(10, 0, 0, 1))],
            internal_ip: vec![ipv4_to_long(Ipv4Addr::new(10, 244, 0, i as u8))],
            namespace: "shop".into(),
            ..Pod::default()
        })
        .collect();
    let containers: Vec<Container> = (0..20)
        .map(|i| Container {
            id: format!("{i:012x}"),
            name: format!("c{i}"),
            image: "registry.local/app:1.0".into(),
            imageid: "sha256:0123".into(),
            container_type: ContainerType::Cri,
            privileged: false,
            pod_id: Some(pods[i % pods.len()].id.clone()),
        })
        .collect();
    let processes: Vec<Process> = (0..200)
        .map(|i| Process {
            oid: Oid {
                create_ts: 1_700_000_000_000_000_000 + i,
                hpid: 1000 + i,
            },
            ts: 1_700_000_000_000_000_000 + i,
            exe: format!("/usr/bin/app{}", i % 7),
            exe_args: "--serve --port 8080".into(),
            uid: 1000,
            user_name: "app".into(),
            gid: 1000,
            group_name: "app".into(),
            container_id: Some(containers[i as usize % containers.len()].id.clone()),
            cwd: "/srv".into(),
            ..Process::default()
        })
        .collect();
    let files: Vec<File> = (0..1000)
        .map(|i| {
            let c = &containers[i % containers.len()];
            let path = format!("/var/lib/app/data/{:03}/segment-{i}.log", i % 100);
            File {
                oid: foid(Some(&c.id), &path),
                ts: 1_700_000_000_000_000_000,
                restype: restype::FILE,
                path,
                container_id: Some(c.id.clone()),
                ..File::default()
            }
        })
        .collect();
    let events = (0..EVENTS)
        .map(|i| {
            let p = &processes[rng.below(processes.len())];
            let ts = 1_700_000_001_000_000_000 + i as i64 * 1000;
            match rng.below(100) {
                0..45 => Record::FileFlow(FileFlow {
                    proc_oid: p.oid,
                    ts,
                    tid: p.oid.hpid,
                    op_flags: op::OPEN | op::READ_RECV | op::WRITE_SEND | op::CLOSE,
                    open_flags: open_flags::RDWR | open_flags::CLOEXEC,
                    end_ts: ts + 5_000_000,
                    file_oid: files[rng.below(files.len())].oid,
                    fd: 3 + rng.below(60) as i32,
                    num_r_recv_ops: rng.below(50) as i64,
                    num_w_send_ops: rng.below(50) as i64,
                    num_r_recv_bytes: rng.below(1 << 20) as i64,
                    num_w_send_bytes: rng.below(1 << 20) as i64,
                }),
                45..80 => Record::NetworkFlow(NetworkFlow {
                    proc_oid: p.oid,
                    ts,
                    tid: p.oid.hpid,
                    op_flags: op::CONNECT | op::READ_RECV | op::WRITE_SEND | op::CLOSE,
                    end_ts: ts + 2_000_000,
                    sip: ipv4_to_int(Ipv4Addr::new(10, 244, 0, rng.below(250) as u8)),
                    sport: 30_000 + rng.below(30_000) as i32,
                    dip: ipv4_to_int(Ipv4Addr::new(10, 96, 0, rng.below(250) as u8)),
                    dport: [80, 443, 5432, 6379][rng.below(4)],
                    proto: proto::TCP,
                    fd: 3 + rng.below(60) as i32,
                    num_r_recv_ops: rng.below(20) as i64,
                    num_w_send_ops: rng.below(20) as i64,
                    num_r_recv_bytes: rng.below(1 << 16) as i64,
                    num_w_send_bytes: rng.below(1 << 16) as i64,
                    ..NetworkFlow::default()
                }),
                80..90 => Record::ProcessEvent(ProcessEvent {
                    proc_oid: p.oid,
                    ts,
                    tid: p.oid.hpid,
                    op_flags: [op::CLONE, op::EXEC, op::EXIT][rng.below(3)],
                    args: vec![],
                    ret: 0,
                }),
                90..95 => Record::FileEvent(FileEvent {
                    proc_oid: p.oid,
                    ts,
                    tid: p.oid.hpid,
                    op_flags: op::UNLINK,
                    file_oid: files[rng.below(files.len())].oid,
                    ret: 0,
                    new_file_oid: None,
                }),
                _ => Record::ProcessFlow(ProcessFlow {
                    proc_oid: p.oid,
                    ts,
                    num_threads_cloned: rng.below(8) as i64,
                    op_flags: op::CLONE | op::EXIT,
                    end_ts: ts + 1_000_000_000,
                    num_threads_exited: rng.below(8) as i64,
                    num_clone_errors: 0,
                }),
            }
        })
        .collect();
    Mix {
        pods,
        containers,
        processes,
        files,
        events,
    }
}

/// Events plus the entities written for them (each entity once, one header).
fn written_records(m: &Mix) -> usize {
    m.events.len() + 1 + m.pods.len() + m.containers.len() + m.processes.len() + m.files.len()
}

/// One timed run: the file and the seconds it took.
struct Run {
    bytes: Vec<u8>,
    secs: f64,
}

/// The best of `RUNS` runs (every run writes the same bytes).
fn best(mut run: impl FnMut() -> Run) -> Run {
    let mut best = run();
    for _ in 1..RUNS {
        let r = run();
        assert_eq!(r.bytes.len(), best.bytes.len());
        if r.secs < best.secs {
            best = r;
        }
    }
    best
}

/// Ours: entities handed to the writer, then every event written (timed), then closed.
fn write_ours(m: &Mix, compression: Compression) -> Run {
    let config = WriterConfig {
        ipv6_extension: false,
        compression,
        ..WriterConfig::default()
    };
    let out = SharedBuf::default();
    let mut w = SysFlowWriter::to_stream(Box::new(out.clone()), config).unwrap();
    for p in &m.pods {
        w.set_pod(p.clone());
    }
    for c in &m.containers {
        w.set_container(c.clone());
    }
    for p in &m.processes {
        w.set_process(p.clone());
    }
    for f in &m.files {
        w.set_file(f.clone());
    }
    let started = Instant::now();
    for e in &m.events {
        w.write(e).unwrap();
    }
    w.close().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let bytes = std::mem::take(&mut *out.0.lock().unwrap());
    Run { bytes, secs }
}

/// The previous path: the records the writer wrote, in its order, appended through apache-avro
/// (the header in a block of its own, as the writer starts every file).
fn write_previous(records: &[Record], compression: Compression) -> Run {
    let started = Instant::now();
    let mut w = serde_path::SerdeContainer::new(
        WriterSchema::V5,
        compression,
        writer::DEFAULT_BLOCK_BYTES,
        [0x5f; 16],
    );
    for (n, r) in records.iter().enumerate() {
        w.append(r);
        if n == 0 {
            w.flush();
        }
    }
    let bytes = w.into_bytes();
    Run {
        bytes,
        secs: started.elapsed().as_secs_f64(),
    }
}

fn read_all(bytes: &[u8]) -> Vec<Record> {
    SysFlowReader::new(bytes, "bench")
        .unwrap()
        .map(|item| match item.unwrap() {
            ReadItem::Record(r) => r,
            ReadItem::Unknown { name } => panic!("{name}"),
        })
        .collect()
}

/// Our reader over a file: (records, best seconds).
fn read_ours(bytes: &[u8]) -> (usize, f64) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        n = 0;
        for item in SysFlowReader::new(bytes, "bench").unwrap() {
            match item.unwrap() {
                ReadItem::Record(_) => n += 1,
                ReadItem::Unknown { name } => panic!("{name}"),
            }
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    (n, best)
}

const FASTAVRO: &str = r#"
import io, json, sys, time, fastavro
path = sys.argv[1]
data = open(path, 'rb').read()
t = time.perf_counter()
reader = fastavro.reader(io.BytesIO(data))
schema = reader.writer_schema
records = list(reader)
read_s = time.perf_counter() - t
out = io.BytesIO()
t = time.perf_counter()
fastavro.writer(out, schema, records, codec='deflate', sync_interval=80000)
write_s = time.perf_counter() - t
written = out.getvalue()
t = time.perf_counter()
n2 = sum(1 for _ in fastavro.reader(io.BytesIO(written)))
reread_s = time.perf_counter() - t
print(json.dumps({"records": len(records), "read_s": read_s, "write_s": write_s,
                  "bytes": len(written), "reread_records": n2, "reread_s": reread_s,
                  "version": fastavro.__version__}))
"#;

fn venv_python() -> PathBuf {
    let venv = std::env::var_os("NRI_SYSFLOW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/share/nri-sysflow/venv")
        });
    venv.join("bin/python")
}

fn fastavro(bytes: &[u8]) -> serde_json::Value {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let out = Command::new(venv_python())
        .args(["-c", FASTAVRO])
        .arg(file.path())
        .output()
        .expect("run fastavro (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn main() {
    let m = mix();
    let records = written_records(&m);

    let ours = best(|| write_ours(&m, Compression::Deflate));
    let ours_none = best(|| write_ours(&m, Compression::None));
    // The previous path writes exactly what ours wrote, record for record.
    let written = read_all(&ours.bytes);
    assert_eq!(written.len(), records);
    let previous = best(|| write_previous(&written, Compression::Deflate));
    let previous_none = best(|| write_previous(&written, Compression::None));
    assert_eq!(read_all(&previous.bytes), written);
    // Same records, same blocks: uncompressed, the two files differ only in header key order.
    assert_eq!(ours_none.bytes.len(), previous_none.bytes.len());

    let (ours_read_n, ours_read_s) = read_ours(&ours.bytes);
    let (previous_read_n, previous_read_s) = read_ours(&previous.bytes);
    assert_eq!((ours_read_n, previous_read_n), (records, records));

    let fa = fastavro(&ours.bytes);
    assert_eq!(fa["records"].as_u64(), Some(records as u64));
    let fa_write = records as f64 / fa["write_s"].as_f64().unwrap();
    let fa_read = records as f64 / fa["read_s"].as_f64().unwrap();
    let fa_bytes = fa["bytes"].as_f64().unwrap() / records as f64;

    let per_s = |secs: f64| records as f64 / secs;
    let per_record = |bytes: &[u8]| bytes.len() as f64 / records as f64;
    let ns = |secs: f64| secs * 1e9 / records as f64;
    let (ours_write, ours_read, ours_bytes) = (
        per_s(ours.secs),
        per_s(ours_read_s),
        per_record(&ours.bytes),
    );
    let (prev_write, prev_read, prev_bytes) = (
        per_s(previous.secs),
        per_s(previous_read_s),
        per_record(&previous.bytes),
    );
    // Deflate's share: the deflate run less the uncompressed one.
    let ours_deflate_ns = ns(ours.secs) - ns(ours_none.secs);
    let prev_deflate_ns = ns(previous.secs) - ns(previous_none.secs);

    println!();
    println!(
        "{records} records (45% FileFlow, 35% NetworkFlow, 10% ProcessEvent, 5% FileEvent, 5% ProcessFlow + entities), schema v5, deflate, 80 KB blocks; Rust: best of {RUNS}"
    );
    println!(
        "{:<34} {:>16} {:>16} {:>14}",
        "", "write records/s", "read records/s", "bytes/record"
    );
    let row = |name: &str, write: f64, read: f64, bytes: f64| {
        println!("{name:<34} {write:>16.0} {read:>16.0} {bytes:>14.2}");
    };
    row(
        "nri-sysflow (direct, zlib-rs 6)",
        ours_write,
        ours_read,
        ours_bytes,
    );
    row(
        "previous (serde, miniz_oxide 10)",
        prev_write,
        prev_read,
        prev_bytes,
    );
    row(
        &format!("fastavro {}", fa["version"].as_str().unwrap_or("?")),
        fa_write,
        fa_read,
        fa_bytes,
    );
    println!();
    println!(
        "{:<34} {:>16} {:>16} {:>14}",
        "where write time goes (ns/record)", "codec none", "deflate share", "total"
    );
    let split = |name: &str, none: f64, deflate: f64| {
        println!(
            "{name:<34} {none:>16.0} {deflate:>16.0} {:>14.0}",
            none + deflate
        );
    };
    split("nri-sysflow", ns(ours_none.secs), ours_deflate_ns);
    split("previous", ns(previous_none.secs), prev_deflate_ns);
    println!(
        "{}",
        json!({
            "bench": "sysflow",
            "records": records,
            "ours": {"write_records_per_s": ours_write, "read_records_per_s": ours_read, "bytes_per_record": ours_bytes,
                     "codec_none_write_records_per_s": per_s(ours_none.secs), "deflate_ns_per_record": ours_deflate_ns},
            "previous": {"write_records_per_s": prev_write, "read_records_per_s": prev_read, "bytes_per_record": prev_bytes,
                         "codec_none_write_records_per_s": per_s(previous_none.secs), "deflate_ns_per_record": prev_deflate_ns},
            "fastavro": {"write_records_per_s": fa_write, "read_records_per_s": fa_read, "bytes_per_record": fa_bytes,
                         "version": fa["version"]},
            "write_ratio": ours_write / fa_write,
            "read_ratio": ours_read / fa_read,
            "write_ratio_previous": ours_write / prev_write,
        })
    );
}
