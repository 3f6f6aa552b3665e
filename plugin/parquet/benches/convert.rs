//! Parquet conversion rate beside our own SysFlow read rate, on the same records: the
//! reference trace with pods (processor-v4-k8s-small.sf, 5,247 events and flows) converted
//! and read again and again. Prints a table, then one JSON line.

use std::{path::PathBuf, time::Instant};

use sysflow::{SysFlowReader, flat::Flattener, reader::ReadItem};

const ROUNDS: usize = 60;

fn trace() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/reference-traces/processor-v4-k8s-small.sf"))
        .find(|p| p.exists())
        .expect("shared/reference-traces beside the repository")
}

fn main() {
    let input = trace();
    let out = tempfile::tempdir().unwrap();
    // Read and flatten only (what `print` and the rules do before their own work).
    let start = Instant::now();
    let mut read_rows = 0u64;
    for _ in 0..ROUNDS {
        let mut flat = Flattener::default();
        for item in SysFlowReader::open(&input).unwrap() {
            if let Ok(ReadItem::Record(r)) = item
                && flat.push(r).is_some()
            {
                read_rows += 1;
            }
        }
    }
    let read_s = start.elapsed().as_secs_f64();
    // Read, flatten, and write Parquet (zstd).
    let start = Instant::now();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    for _ in 0..ROUNDS {
        let done = sysflow_parquet::convert_file(&input, out.path()).unwrap();
        rows += done.rows;
        bytes = std::fs::metadata(&done.output).unwrap().len();
    }
    let convert_s = start.elapsed().as_secs_f64();
    assert_eq!(rows, read_rows);
    let sf_bytes = std::fs::metadata(&input).unwrap().len();
    println!();
    println!("{:<40} {:>14} {:>12}", "one core", "records/s", "seconds");
    println!(
        "{:<40} {:>14.0} {:>12.2}",
        "read + flatten (SysFlow)",
        read_rows as f64 / read_s,
        read_s
    );
    println!(
        "{:<40} {:>14.0} {:>12.2}",
        "read + flatten + Parquet (zstd)",
        rows as f64 / convert_s,
        convert_s
    );
    println!(
        "{rows} records; one file: {sf_bytes} bytes of SysFlow (deflate) -> {bytes} bytes of Parquet"
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "parquet",
            "records": rows,
            "read_flatten_records_per_s": read_rows as f64 / read_s,
            "parquet_records_per_s": rows as f64 / convert_s,
            "sf_bytes": sf_bytes,
            "parquet_bytes": bytes,
        })
    );
}
