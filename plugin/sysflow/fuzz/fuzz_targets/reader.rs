//! Any bytes given to the SysFlow reader end in records or an error: no panic, no unbounded
//! allocation (libFuzzer's -rss_limit_mb catches the latter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysflow::{SysFlowReader, flat::Flattener, reader::ReadItem};

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = SysFlowReader::new(data, "fuzz") else {
        return;
    };
    let mut flat = Flattener::default();
    for item in reader.take(100_000) {
        match item {
            Ok(ReadItem::Record(r)) => {
                // The sysprint view must cope with whatever references the file has.
                if let Some(f) = flat.push(r) {
                    let _ = f.to_sysprint_json();
                }
            }
            Ok(ReadItem::Unknown { .. }) => {}
            Err(_) => break,
        }
    }
});
