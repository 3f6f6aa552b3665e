//! Truncated and corrupted files give errors (after whatever came before them), never panics.

use std::path::{Path, PathBuf};

use sysflow::{SysFlowReader, reader::ReadItem};

/// `shared/reference-traces` beside the repository (or `SYSFLOW_REFERENCE_TRACES`): searched
/// upwards from this crate, so any checkout layout with `shared/` beside it works.
fn reference_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SYSFLOW_REFERENCE_TRACES") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/reference-traces"))
        .find(|d| d.join("MANIFEST.md").exists())
        .expect("shared/reference-traces not found beside the repository (or set SYSFLOW_REFERENCE_TRACES)")
}

fn reference(name: &str) -> Vec<u8> {
    std::fs::read(reference_dir().join(name)).unwrap()
}

/// Reads everything; returns (records, whether an error ended the stream).
fn read_bytes(data: &[u8]) -> (usize, bool) {
    let Ok(reader) = SysFlowReader::new(data, "mem") else {
        return (0, true);
    };
    let mut n = 0;
    for item in reader {
        match item {
            Ok(ReadItem::Record(_)) | Ok(ReadItem::Unknown { .. }) => n += 1,
            Err(_) => return (n, true),
        }
    }
    (n, false)
}

#[test]
fn every_truncation_of_a_trace_is_an_error_or_a_clean_prefix() {
    let data = reference("collector-v5-tcp-client-server.sf");
    let (full, failed) = read_bytes(&data);
    assert_eq!((full, failed), (23, false));
    for cut in 0..data.len() {
        let (n, _) = read_bytes(&data[..cut]);
        assert!(n <= full);
    }
}

#[test]
fn bit_flips_never_panic() {
    // (file, positions): the large k8s trace decodes slowly in a debug build, so fewer there.
    for (name, positions) in [
        ("collector-v5-files.sf", 400),
        ("processor-v1000-tcp.sf", 400),
        ("processor-v4-k8s-small.sf", 60),
    ] {
        let data = reference(name);
        // A deterministic spread of positions, header and blocks alike.
        let step = (data.len() / positions).max(1);
        for i in (0..data.len()).step_by(step) {
            for bit in [0, 3, 7] {
                let mut d = data.clone();
                d[i] ^= 1 << bit;
                let _ = read_bytes(&d);
            }
        }
    }
}

#[test]
fn a_huge_length_field_is_refused_not_allocated() {
    // Magic, then a metadata map claiming one entry whose key is 2^60 bytes long.
    let mut data = b"Obj\x01".to_vec();
    data.push(0x02);
    data.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    assert_eq!(read_bytes(&data), (0, true));
}
