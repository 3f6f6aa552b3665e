//! Damaged and hostile SysFlow files given to `print`, `convert` and `rules run`: truncated,
//! bit-flipped, a block claiming a terabyte, and bytes that are not Avro at all. Each gives
//! one error line naming the file, the record and the byte where reading stopped, keeps what
//! came before it, exits 1, never panics, and never allocates what a file merely claims.

use std::path::{Path, PathBuf};

#[path = "support/cli.rs"]
mod cli;

use cli::{reference_dir, run};

/// The damaged inputs, written into `dir`.
struct Damaged {
    truncated: PathBuf,
    flipped: PathBuf,
    huge_block: PathBuf,
    garbage: PathBuf,
}

fn zigzag_varint(n: i64) -> Vec<u8> {
    let mut n = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn damaged(dir: &Path) -> Damaged {
    let capture =
        std::fs::read(reference_dir().join("collector-v5-mpm-event-full-capture.sf")).unwrap();
    assert_eq!(capture.len(), 50_708);
    let truncated = dir.join("truncated.sf");
    std::fs::write(&truncated, &capture[..capture.len() / 2]).unwrap();
    // One byte inverted inside a compressed block.
    let mut flipped_bytes = capture.clone();
    flipped_bytes[29_000] ^= 0xff;
    let flipped = dir.join("flipped.sf");
    std::fs::write(&flipped, flipped_bytes).unwrap();
    // A valid header, then a block that claims 2^40 bytes.
    let alpine = std::fs::read(reference_dir().join("collector-v5-alpine.sf")).unwrap();
    let sync = &alpine[alpine.len() - 16..];
    let header_end = alpine.windows(16).position(|w| w == sync).unwrap() + 16;
    let mut huge = alpine[..header_end].to_vec();
    huge.extend(zigzag_varint(1));
    huge.extend(zigzag_varint(1 << 40));
    huge.extend([0u8; 64]);
    let huge_block = dir.join("huge-block.sf");
    std::fs::write(&huge_block, huge).unwrap();
    // Not Avro: a fixed pseudo-random stream.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let garbage = dir.join("garbage.sf");
    std::fs::write(&garbage, noise).unwrap();
    Damaged {
        truncated,
        flipped,
        huge_block,
        garbage,
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn print_names_each_damaged_file_with_record_and_byte_and_keeps_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let d = damaged(dir.path());
    for (file, error, lines) in [
        (
            &d.truncated,
            "record 1238 (at byte 25354): Read into buffer failed: failed to fill whole buffer",
            1167,
        ),
        (
            &d.flipped,
            "record 2488 (at byte 29327): Overflow when decoding integer value",
            2417,
        ),
        (
            &d.huge_block,
            "record 0 (at byte 6224): Unable to allocate 1099511627776 bytes (maximum allowed: 16777216). Change the limit using `apache_avro::util::max_allocation_bytes`",
            0,
        ),
        (
            &d.garbage,
            "not a readable Avro container file: wrong magic in header",
            0,
        ),
    ] {
        let (code, out, err) = run(&["print", s(file)]);
        assert_eq!(
            (code, err.as_str()),
            (
                1,
                format!("nri-sysflow print: {}: {error}\n", file.display()).as_str()
            )
        );
        assert_eq!(out.lines().count(), lines, "{}", file.display());
    }
}

#[test]
fn convert_and_rules_run_report_every_damaged_file_and_go_on_with_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = damaged(dir.path());
    let good = reference_dir().join("collector-v5-alpine.sf");
    let inputs = [&d.truncated, &d.flipped, &d.huge_block, &d.garbage, &good];
    let out_dir = dir.path().join("parquet");
    let mut args = vec!["convert", "--to", "parquet"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.push(s(&out_dir));
    let (code, _, err) = run(&args);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for (file, what) in [
        (&d.truncated, "record 1238 (at byte 25354)"),
        (&d.flipped, "record 2488 (at byte 29327)"),
        (&d.huge_block, "record 0 (at byte 6224)"),
        (&d.garbage, "wrong magic in header"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&file.display().to_string()) && l.contains(what)),
            "{} / {what}:\n{err}",
            file.display()
        );
    }
    // The readable part of each file (none of the huge block's: an empty table), and the whole
    // good file, were converted.
    let mut written: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "collector-v5-alpine.parquet",
            "flipped.parquet",
            "huge-block.parquet",
            "truncated.parquet"
        ]
    );

    // `rules run` stops at the first file it cannot read (its output is one ordered stream),
    // saying which and where.
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules");
    for (file, what) in [
        (&d.truncated, "record 1238 (at byte 25354)"),
        (&d.flipped, "record 2488 (at byte 29327)"),
        (&d.huge_block, "record 0 (at byte 6224)"),
        (&d.garbage, "wrong magic in header"),
    ] {
        let (code, _, err) = run(&["rules", "run", "--policy", s(&rules), s(file)]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.starts_with(&format!("nri-sysflow: {}: ", file.display()))
                && err.contains(what)
                && err.lines().count() == 1,
            "{err}"
        );
    }
}
