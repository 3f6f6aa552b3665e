//! `nri-sysflow print`: SysFlow files as sysprint users know them. One line per event or flow,
//! joined with its process, parent, container, pod and files; `json` has sysprint's fields.

use std::{
    io::Write,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde_json::Value as Json;
use sysflow::{
    SysFlowReader,
    flat::{FlatRecord, Flattener, TABLE_COLUMNS, dotted},
    reader::ReadItem,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table with sysprint's default columns.
    Str,
    /// sysprint's nested JSON, one object per line.
    Json,
    /// Every field, dotted names as the header.
    Csv,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "str" => Ok(Format::Str),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(format!(
                "unknown format {other:?}: expected str, json or csv"
            )),
        }
    }
}

/// Record types `--type` accepts (sysprint's codes).
pub const TYPES: [&str; 7] = ["PE", "FF", "FE", "NF", "PF", "KE", "NE"];

/// A `--type` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeList(pub Vec<String>);

/// A `--type` entry that is not one of [`TYPES`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown record type {0:?}: expected some of PE,FF,FE,NF,PF,KE,NE")]
pub struct UnknownRecordType(pub String);

/// Parses `PE,FF,...`.
pub fn parse_types(s: &str) -> Result<TypeList, UnknownRecordType> {
    s.split(',')
        .map(|t| {
            let t = t.trim().to_uppercase();
            if TYPES.contains(&t.as_str()) {
                Ok(t)
            } else {
                Err(UnknownRecordType(t))
            }
        })
        .collect::<Result<_, _>>()
        .map(TypeList)
}

/// Files to print: each file argument, and the `.sf` files of each directory in name order
/// (our file names sort in the order they were written).
pub fn expand(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "sf"))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// What was printed, and the problems met (file and error), which do not stop the printing.
#[derive(Debug, Default)]
pub struct Summary {
    pub records: u64,
    pub errors: Vec<PrintProblem>,
}

/// A problem met while printing; the printing goes on with the next record or file.
#[derive(Debug, thiserror::Error)]
pub enum PrintProblem {
    /// A file could not be opened, or a record read (the rest of that file is skipped).
    #[error(transparent)]
    Read(#[from] sysflow::ReadError),
    /// A record of a union branch this reader does not know (skipped).
    #[error("{file}: skipped unknown record type {name}")]
    UnknownType { file: PathBuf, name: String },
}

/// sysprint's column widths for the table format; longer values are cut from the left with
/// `..` as sysprint does.
const WIDTHS: [usize; 12] = [21, 2, 20, 20, 8, 8, 8, 14, 45, 8, 8, 12];

fn cell(value: &str, width: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= width {
        format!("{value:<width$}")
    } else {
        let tail: String = chars[chars.len() - (width - 2)..].iter().collect();
        format!("..{tail}")
    }
}

fn csv_field(v: &Json) -> String {
    let s = match v {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

pub fn print(
    files: &[PathBuf],
    format: Format,
    types: Option<&[String]>,
    out: &mut dyn Write,
) -> std::io::Result<Summary> {
    let mut summary = Summary::default();
    let mut header_done = false;
    for file in files {
        let reader = match SysFlowReader::open(file) {
            Ok(r) => r,
            Err(e) => {
                summary.errors.push(e.into());
                continue;
            }
        };
        let mut flat = Flattener::default();
        for item in reader {
            let record = match item {
                Ok(ReadItem::Record(r)) => r,
                Ok(ReadItem::Unknown { name }) => {
                    summary.errors.push(PrintProblem::UnknownType {
                        file: file.clone(),
                        name,
                    });
                    continue;
                }
                Err(e) => {
                    summary.errors.push(e.into());
                    break;
                }
            };
            let Some(f) = flat.push(record) else { continue };
            if types.is_some_and(|t| !t.iter().any(|t| t == f.code())) {
                continue;
            }
            write_one(&f, format, &mut header_done, summary.records, out)?;
            summary.records += 1;
        }
    }
    Ok(summary)
}

fn write_one(
    f: &FlatRecord,
    format: Format,
    header_done: &mut bool,
    index: u64,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", f.to_sysprint_json()),
        Format::Csv => {
            let fields = dotted(&f.to_sysprint_json());
            if !*header_done {
                let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                writeln!(out, "{}", names.join(","))?;
                *header_done = true;
            }
            let values: Vec<String> = fields.iter().map(|(_, v)| csv_field(v)).collect();
            writeln!(out, "{}", values.join(","))
        }
        Format::Str => {
            if !*header_done {
                let titles: Vec<String> = TABLE_COLUMNS
                    .iter()
                    .zip(WIDTHS)
                    .map(|(t, w)| cell(t, w))
                    .collect();
                writeln!(out, "| {:<7} | {} |", "Rec #", titles.join(" | "))?;
                *header_done = true;
            }
            let cells: Vec<String> = f
                .table_row()
                .iter()
                .zip(WIDTHS)
                .map(|(v, w)| cell(v, w))
                .collect();
            writeln!(out, "| {index:<7} | {} |", cells.join(" | "))
        }
    }
}

/// Convenience for tests and tools: print one path to a string.
pub fn print_to_string(path: &Path, format: Format, types: Option<&[String]>) -> (String, Summary) {
    let mut buf = Vec::new();
    let files = expand(&[path.to_owned()]).unwrap_or_default();
    let summary = print(&files, format, types, &mut buf).unwrap_or_default();
    (String::from_utf8_lossy(&buf).into_owned(), summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_from_the_left_like_sysprint() {
        assert_eq!(cell("2147483647", 8), "..483647");
        assert_eq!(cell("ab", 4), "ab  ");
    }

    #[test]
    fn types_are_checked() {
        assert_eq!(parse_types("pe,FF").unwrap().0, vec!["PE", "FF"]);
        assert_eq!(parse_types("PE,XX"), Err(UnknownRecordType("XX".into())));
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field(&Json::from("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&Json::from("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field(&Json::Null), "");
    }
}
