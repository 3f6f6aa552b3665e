//! Offline evaluation: SysFlow files read in order, each record flattened and evaluated, the
//! records the mode keeps written as JSON lines (sf-processor's encoder) or as TSV.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use sysflow::{SysFlowReader, reader::ReadItem};

use crate::{
    Policy,
    attrs::Attr,
    engine::{Evaluated, Mode, Verdict},
    flat::{Context, Flat},
    json,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Tsv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "tsv" => Ok(Format::Tsv),
            other => Err(format!("format {other:?}: expected json or tsv")),
        }
    }
}

/// The TSV header: the record's place, what it is, and the rules it matched.
pub const TSV_HEADER: &str = "trace\tordinal\tsf.type\tsf.ts\tsf.proc.pid\tsf.proc.exe\trules\n";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Read(#[from] sysflow::reader::ReadError),
    #[error("{}: {error}", path.display())]
    List {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("writing the output: {0}")]
    Write(#[from] std::io::Error),
}

/// What a run evaluated and wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub records: u64,
    pub evaluated: u64,
    /// Evaluated records whose verdict was remembered from an earlier one
    /// ([`crate::verdicts`]).
    pub remembered: u64,
    pub dropped: u64,
    pub written: u64,
}

/// Files in the order given; a directory stands for its files, sorted by name.
pub fn trace_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, RunError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let list = |error| RunError::List {
                path: path.clone(),
                error,
            };
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(list)?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(list)?;
            entries.retain(|p| p.is_file());
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Evaluates `policy` over the files, writing what `mode` keeps to `out` in `format`.
pub fn run(
    policy: &Policy,
    files: &[PathBuf],
    mode: Mode,
    format: Format,
    out: &mut impl Write,
) -> Result<RunStats, RunError> {
    let mut stats = RunStats::default();
    if format == Format::Tsv {
        out.write_all(TSV_HEADER.as_bytes())?;
    }
    let mut line = String::new();
    for file in files {
        let reader = SysFlowReader::open(file)?;
        let mut context = Context::default();
        context.start_file(reader.has_field("SFHeader", "ip"));
        for (ordinal, item) in reader.enumerate() {
            stats.records += 1;
            let record = match item? {
                ReadItem::Record(r) => r,
                ReadItem::Unknown { .. } => continue,
            };
            let Some(evaluated) = policy.evaluate_record(&mut context, &record) else {
                context.push(record);
                continue;
            };
            stats.evaluated += 1;
            let (flat, verdict) = match evaluated {
                Evaluated::Flat { flat, verdict, .. } => (Some(flat), verdict),
                Evaluated::Remembered(verdict) => {
                    stats.remembered += 1;
                    (None, verdict)
                }
            };
            if verdict == Verdict::Dropped {
                stats.dropped += 1;
            }
            let Some(matched) = mode.output(verdict) else {
                continue;
            };
            // A remembered verdict written all the same (enrich mode): flattened now.
            let Some(flat) = flat.or_else(|| context.flat_of(&record)) else {
                continue;
            };
            stats.written += 1;
            line.clear();
            match format {
                Format::Json => json::encode(&mut line, &flat, policy, &matched),
                Format::Tsv => tsv_row(&mut line, file, ordinal, &flat, policy, &matched),
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(stats)
}

fn tsv_row(
    out: &mut String,
    file: &Path,
    ordinal: usize,
    flat: &Flat,
    policy: &Policy,
    matched: &[usize],
) {
    let rules: Vec<&str> = matched
        .iter()
        .map(|&i| policy.rules[i].name.as_str())
        .collect();
    out.push_str(&format!(
        "{}\t{ordinal}\t{}\t{}\t{}\t{}\t{}",
        file.display(),
        flat.kind.code(),
        flat.ts(),
        flat.pid(),
        flat.text(Attr::ProcExe),
        rules.join("|")
    ));
}
