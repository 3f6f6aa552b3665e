//! Detection rules throughput on one core: the conformance kit's traces read and flattened,
//! then the runtime-integrity rule set (79 rules, 4 files) and the distribution filter set
//! evaluated on the same flattened records, looped to at least a million evaluations. The
//! read-and-flatten rate is the baseline measured in the same run. Ends with one JSON line.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use sysflow::{Record, SysFlowReader, reader::ReadItem};
use sysflow_rules::{
    Policy, compile_paths,
    engine::Verdict,
    flat::{Context, Flat},
};

const TARGET: usize = 1_000_000;

/// A trace's records as read (no entity cached yet), and whether its header has `ip`.
struct Trace {
    records: Vec<Record>,
    header_has_ip: bool,
}

fn read(path: &Path) -> Trace {
    let reader = SysFlowReader::open(path).unwrap();
    let header_has_ip = reader.has_field("SFHeader", "ip");
    let records = reader
        .filter_map(|item| match item.unwrap() {
            ReadItem::Record(r) => Some(r),
            _ => None,
        })
        .collect();
    Trace {
        records,
        header_has_ip,
    }
}

/// The records the engine sees: every trace flattened with fresh entity caches.
fn flatten(traces: &[Trace]) -> Vec<Flat> {
    let mut out = Vec::new();
    for trace in traces {
        let mut context = Context::default();
        context.start_file(trace.header_has_ip);
        out.extend(trace.records.iter().filter_map(|r| context.push(r.clone())));
    }
    out
}

/// Evaluations per second and alerts, over the traces looped to TARGET evaluations. Each
/// loop flattens the traces afresh (not timed), so every value made once per process
/// snapshot or file (ancestor lists, parsed paths, the terms and index lookups remembered per
/// entity) is made again: each loop costs what the agent's one evaluation of each record does.
fn evaluate(policy: &Policy, traces: &[Trace]) -> (f64, usize, usize) {
    let mut busy = std::time::Duration::ZERO;
    let mut alerts = 0;
    let mut n = 0;
    let mut loops = 0;
    while n < TARGET {
        let flats = flatten(traces);
        let started = Instant::now();
        for flat in &flats {
            if let Verdict::Matched(m) = policy.evaluate(flat)
                && !m.is_empty()
            {
                alerts += 1;
            }
        }
        busy += started.elapsed();
        n += flats.len();
        loops += 1;
    }
    (n as f64 / busy.as_secs_f64(), n, alerts / loops)
}

fn main() {
    let kit = support::kit();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(kit.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();

    // Baseline: read and flatten, looped to TARGET records.
    let started = Instant::now();
    let mut flattened = 0;
    let mut per_loop = 0;
    while flattened < TARGET {
        let traces: Vec<Trace> = paths.iter().map(|p| read(p)).collect();
        per_loop = flatten(&traces).len();
        flattened += per_loop;
    }
    let flatten_rate = flattened as f64 / started.elapsed().as_secs_f64();
    let traces: Vec<Trace> = paths.iter().map(|p| read(p)).collect();

    let sets = [
        ("runtimeintegrity", kit.join("policies/runtimeintegrity")),
        (
            "distribution_filter",
            kit.join("policies/distribution/filter.yaml"),
        ),
    ];
    println!();
    println!(
        "{:<28} {:>8} {:>14} {:>12} {:>16}",
        "one core", "rules", "records/s", "evaluated", "alerts per loop"
    );
    println!(
        "{:<28} {:>8} {:>14.0} {:>12} {:>16}",
        "read + flatten (baseline)", "-", flatten_rate, flattened, "-"
    );
    let mut json = serde_json::Map::new();
    json.insert("bench".into(), "rules".into());
    json.insert("engine_input_records_per_loop".into(), per_loop.into());
    json.insert("read_flatten_records_per_s".into(), flatten_rate.into());
    for (name, path) in sets {
        let policy = compile_paths(&[path]).unwrap();
        let (indexed, attrs) = policy.index.size();
        eprintln!(
            "{name}: {indexed} of {} rules indexed on {attrs} attributes; terms remembered \
             per record {}, per process {}, per file {}",
            policy.rules.len(),
            policy.shared_terms,
            policy.process_terms,
            policy.file_terms
        );
        let (rate, n, alerts) = evaluate(&policy, &traces);
        println!(
            "{:<28} {:>8} {:>14.0} {:>12} {:>16}",
            format!("evaluate {name}"),
            policy.rules.len(),
            rate,
            n,
            alerts
        );
        json.insert(
            name.into(),
            serde_json::json!({"rules": policy.rules.len(), "records_per_s": rate, "evaluated": n, "alerts_per_loop": alerts}),
        );
    }
    println!("{}", serde_json::Value::Object(json));
}
