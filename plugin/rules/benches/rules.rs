//! Detection rules throughput on one core: the conformance kit's traces read and flattened,
//! then the runtime-integrity rule set (79 rules, 4 files) and the distribution filter set
//! evaluated on the same flattened records, looped to at least a million evaluations. The
//! read-and-flatten rate is the baseline measured in the same run. Ends with one JSON line.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{path::PathBuf, time::Instant};

use sysflow::{SysFlowReader, reader::ReadItem};
use sysflow_rules::{
    Policy, compile_paths,
    engine::Verdict,
    flat::{Context, Flat},
};

const TARGET: usize = 1_000_000;

/// Every kit trace read and flattened once: the records the engine sees.
fn flatten(traces: &[PathBuf]) -> Vec<Flat> {
    let mut out = Vec::new();
    for trace in traces {
        let reader = SysFlowReader::open(trace).unwrap();
        let mut context = Context::default();
        context.start_file(reader.has_field("SFHeader", "ip"));
        for item in reader {
            if let ReadItem::Record(r) = item.unwrap()
                && let Some(flat) = context.push(r)
            {
                out.push(flat);
            }
        }
    }
    out
}

/// Evaluations per second and alerts, over `flats` looped to TARGET evaluations. Each loop
/// starts from records as the flattener hands them over (nothing derived yet), as every
/// record in the agent is evaluated once; values made per process snapshot (ancestor lists,
/// command lines) are kept, as the agent keeps them for all of a process's records.
fn evaluate(policy: &Policy, flats: &mut [Flat]) -> (f64, usize, usize) {
    let loops = TARGET.div_ceil(flats.len());
    let mut busy = std::time::Duration::ZERO;
    let mut alerts = 0;
    for _ in 0..loops {
        flats.iter_mut().for_each(Flat::forget_derived);
        let started = Instant::now();
        for flat in flats.iter() {
            if let Verdict::Matched(m) = policy.evaluate(flat)
                && !m.is_empty()
            {
                alerts += 1;
            }
        }
        busy += started.elapsed();
    }
    let n = loops * flats.len();
    (n as f64 / busy.as_secs_f64(), n, alerts / loops)
}

fn main() {
    let kit = support::kit();
    let mut traces: Vec<PathBuf> = std::fs::read_dir(kit.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    traces.sort();

    // Baseline: read and flatten, looped to TARGET records.
    let started = Instant::now();
    let mut flattened = 0;
    let mut flats = Vec::new();
    while flattened < TARGET {
        flats = flatten(&traces);
        flattened += flats.len();
    }
    let flatten_rate = flattened as f64 / started.elapsed().as_secs_f64();

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
    json.insert("engine_input_records_per_loop".into(), flats.len().into());
    json.insert("read_flatten_records_per_s".into(), flatten_rate.into());
    for (name, path) in sets {
        let policy = compile_paths(&[path]).unwrap();
        let (indexed, attrs) = policy.index.size();
        eprintln!(
            "{name}: {indexed} of {} rules indexed on {attrs} attributes; {} terms shared",
            policy.rules.len(),
            policy.shared_terms
        );
        let (rate, n, alerts) = evaluate(&policy, &mut flats);
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
