//! `nri-sysflow convert --to parquet IN... OUT_DIR`: SysFlow files as Parquet files, one per
//! input, for SQL engines (see the sysflow-parquet crate for the columns).

use std::{
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Parquet,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "parquet" => Ok(Target::Parquet),
            other => Err(format!("unknown target format {other:?}: expected parquet")),
        }
    }
}

/// What a conversion run did: files converted, rows written, and the problems met (each one
/// line naming its file; the others are still converted).
#[derive(Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub rows: u64,
    pub problems: Vec<String>,
}

/// Converts each input (a file, or the `.sf` files of a folder in name order) into `out_dir`,
/// writing one line per output file to `log`.
pub fn convert(
    inputs: &[PathBuf],
    out_dir: &Path,
    log: &mut dyn Write,
) -> std::io::Result<Summary> {
    std::fs::create_dir_all(out_dir)?;
    let mut summary = Summary::default();
    for input in crate::print::expand(inputs)? {
        match sysflow_parquet::convert_file(&input, out_dir) {
            Ok(done) => {
                writeln!(
                    log,
                    "{} -> {} ({} rows)",
                    input.display(),
                    done.output.display(),
                    done.rows
                )?;
                summary.files += 1;
                summary.rows += done.rows;
                if let Some(e) = done.read_error {
                    summary.problems.push(format!(
                        "{}: read stopped early ({e}); the {} rows before it were converted",
                        input.display(),
                        done.rows
                    ));
                }
                if done.unknown_records > 0 {
                    summary.problems.push(format!(
                        "{}: skipped {} records of unknown types",
                        input.display(),
                        done.unknown_records
                    ));
                }
            }
            Err(e) => summary.problems.push(format!("{}: {e}", input.display())),
        }
    }
    Ok(summary)
}
