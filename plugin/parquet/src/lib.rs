//! SysFlow files as Parquet, for SQL engines that know nothing of SysFlow (Spark, Trino,
//! DuckDB, pandas).
//!
//! One row per event and flow (entities are joined in, not rows of their own), with exactly the
//! fields of sysprint's flat view (`sysprint -o flatjson`, our `print --format json`): the
//! dotted names become `_`-joined column names (`proc.exe` → `proc_exe`, `net.dport` →
//! `net_dport`), so every engine reads them without quoting. Values are typed: numbers are
//! INT64, flags BOOLEAN, pod addresses lists of strings, `pod.services` JSON text, and `ts` /
//! `endts` real timestamps (nanoseconds, UTC) instead of sysprint's ISO strings. Where sysprint
//! shows an empty string for a missing number (a field the record type does not have), the
//! column holds null; text fields keep sysprint's empty string. The columns are in [`COLUMNS`].

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use Kind::*;
use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{
        BooleanBuilder, Int64Builder, ListBuilder, StringBuilder, TimestampNanosecondBuilder,
    },
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::{metadata::KeyValue, properties::WriterProperties},
};
use serde_json::Value as Json;
use sysflow::{
    SysFlowReader,
    flat::{FlatRecord, Flattener},
    reader::ReadItem,
};

/// How a column's values are typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8; sysprint's empty string where the record has no such field.
    Text,
    /// INT64, null where sysprint shows an empty string or null.
    Int,
    /// BOOLEAN, null where sysprint shows an empty string.
    Bool,
    /// A list of strings (pod addresses), null where the record has no pod.
    TextList,
    /// JSON text of a nested value (`pod.services`), null where the record has no pod.
    JsonText,
    /// TIMESTAMP(NANOS, UTC), from the `_uts` nanosecond field of the same name.
    Timestamp,
}

/// A column: its name, the dotted field of sysprint's flat view it holds, and its type.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub field: &'static str,
    pub kind: Kind,
}

const fn col(name: &'static str, field: &'static str, kind: Kind) -> Column {
    Column { name, field, kind }
}

/// Every column, in sysprint's field order.
pub const COLUMNS: &[Column] = &[
    col("type", "type", Text),
    col("state", "state", Text),
    col("opflags", "opflags", Text),
    col("opflags_bitmap", "opflags_bitmap", Int),
    col("ret", "ret", Int),
    col("ts", "ts_uts", Timestamp),
    col("ts_uts", "ts_uts", Int),
    col("endts", "endts_uts", Timestamp),
    col("endts_uts", "endts_uts", Int),
    col("proc_pid", "proc.pid", Int),
    col("proc_tid", "proc.tid", Int),
    col("proc_uid", "proc.uid", Int),
    col("proc_user", "proc.user", Text),
    col("proc_gid", "proc.gid", Int),
    col("proc_group", "proc.group", Text),
    col("proc_cwd", "proc.cwd", Text),
    col("proc_exe", "proc.exe", Text),
    col("proc_args", "proc.args", Text),
    col("proc_tty", "proc.tty", Bool),
    col("proc_entry", "proc.entry", Bool),
    col("proc_env", "proc.env", Text),
    col("proc_createts", "proc.createts", Int),
    col("pproc_pid", "pproc.pid", Int),
    col("pproc_gid", "pproc.gid", Int),
    col("pproc_uid", "pproc.uid", Int),
    col("pproc_group", "pproc.group", Text),
    col("pproc_tty", "pproc.tty", Bool),
    col("pproc_entry", "pproc.entry", Bool),
    col("pproc_env", "pproc.env", Text),
    col("pproc_user", "pproc.user", Text),
    col("pproc_cwd", "pproc.cwd", Text),
    col("pproc_exe", "pproc.exe", Text),
    col("pproc_args", "pproc.args", Text),
    col("pproc_createts", "pproc.createts", Int),
    col("file_fd", "file.fd", Int),
    col("file_path", "file.path", Text),
    col("file_newpath", "file.newpath", Text),
    col("file_type", "file.type", Text),
    col("file_openflags", "file.openflags", Int),
    col("net_proto", "net.proto", Int),
    col("net_sport", "net.sport", Int),
    col("net_dport", "net.dport", Int),
    col("net_sip", "net.sip", Text),
    col("net_dip", "net.dip", Text),
    col("res", "res", Text),
    col("flow_rbytes", "flow.rbytes", Int),
    col("flow_rops", "flow.rops", Int),
    col("flow_wbytes", "flow.wbytes", Int),
    col("flow_wops", "flow.wops", Int),
    col("pf_nthreads", "pf.nthreads", Int),
    col("pf_nexits", "pf.nexits", Int),
    col("pf_nerrors", "pf.nerrors", Int),
    col("container_id", "container.id", Text),
    col("container_name", "container.name", Text),
    col("container_imageid", "container.imageid", Text),
    col("container_image", "container.image", Text),
    col("container_type", "container.type", Text),
    col("container_privileged", "container.privileged", Bool),
    col("pod_id", "pod.id", Text),
    col("pod_name", "pod.name", Text),
    col("pod_nname", "pod.nname", Text),
    col("pod_hostip", "pod.hostip", TextList),
    col("pod_internalip", "pod.internalip", TextList),
    col("pod_ns", "pod.ns", Text),
    col("pod_rstrtcnt", "pod.rstrtcnt", Int),
    col("pod_services", "pod.services", JsonText),
    col("node_id", "node.id", Text),
    col("node_ip", "node.ip", Text),
    col("filename", "filename", Text),
    col("schema", "schema", Int),
    col("k8s_action", "k8s.action", Text),
    col("k8s_kind", "k8s.kind", Text),
    col("k8s_msg", "k8s.msg", Text),
];

/// Rows per record batch (and so at most per row group page run): large enough for good
/// compression, small enough to bound the converter's memory.
const BATCH_ROWS: usize = 16 * 1024;

/// The Arrow schema of [`COLUMNS`].
pub fn schema() -> SchemaRef {
    let fields: Vec<Field> = COLUMNS
        .iter()
        .map(|c| {
            let (ty, nullable) = match c.kind {
                Text => (DataType::Utf8, false),
                JsonText => (DataType::Utf8, true),
                Int => (DataType::Int64, true),
                Bool => (DataType::Boolean, true),
                TextList => (
                    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                    true,
                ),
                Timestamp => (
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    true,
                ),
            };
            Field::new(c.name, ty, nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write Parquet to {path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    /// The input is not a SysFlow file at all (nothing was written).
    #[error(transparent)]
    Read(#[from] sysflow::ReadError),
}

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Bool(BooleanBuilder),
    List(ListBuilder<StringBuilder>),
    Ts(TimestampNanosecondBuilder),
}

impl Builder {
    fn new(kind: Kind) -> Builder {
        match kind {
            Text | JsonText => Builder::Text(StringBuilder::new()),
            Int => Builder::Int(Int64Builder::new()),
            Bool => Builder::Bool(BooleanBuilder::new()),
            TextList => Builder::List(ListBuilder::new(StringBuilder::new())),
            Timestamp => Builder::Ts(TimestampNanosecondBuilder::new().with_timezone("UTC")),
        }
    }

    fn append(&mut self, kind: Kind, value: Option<&Json>) {
        match (self, kind) {
            (Builder::Text(b), JsonText) => match value {
                Some(v @ (Json::Array(_) | Json::Object(_))) => b.append_value(v.to_string()),
                _ => b.append_null(),
            },
            (Builder::Text(b), _) => match value {
                Some(Json::String(s)) => b.append_value(s),
                None | Some(Json::Null) => b.append_value(""),
                Some(other) => b.append_value(other.to_string()),
            },
            (Builder::Int(b), _) => b.append_option(value.and_then(Json::as_i64)),
            (Builder::Ts(b), _) => b.append_option(value.and_then(Json::as_i64)),
            (Builder::Bool(b), _) => b.append_option(value.and_then(Json::as_bool)),
            (Builder::List(b), _) => match value {
                Some(Json::Array(items)) => {
                    for item in items {
                        b.values().append_option(item.as_str());
                    }
                    b.append(true);
                }
                _ => b.append_null(),
            },
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::List(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// The field at a dotted path of sysprint's nested JSON (`proc.exe`).
fn field<'a>(json: &'a Json, dotted: &str) -> Option<&'a Json> {
    dotted.split('.').try_fold(json, |v, key| v.get(key))
}

/// Writes flat records as Parquet rows, a record batch at a time.
pub struct ParquetWriter<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    builders: Vec<Builder>,
    pending: usize,
    rows: u64,
}

impl<W: Write + Send> ParquetWriter<W> {
    /// `source` is recorded in the file's key-value metadata (`sysflow.source`).
    pub fn new(out: W, source: &str) -> Result<Self, parquet::errors::ParquetError> {
        let schema = schema();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_created_by(format!("nri-sysflow {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "sysflow.source".to_string(),
                source.to_string(),
            )]))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
        Ok(ParquetWriter {
            writer,
            schema,
            builders: COLUMNS.iter().map(|c| Builder::new(c.kind)).collect(),
            pending: 0,
            rows: 0,
        })
    }

    pub fn push(&mut self, record: &FlatRecord) -> Result<(), parquet::errors::ParquetError> {
        let json = record.to_sysprint_json();
        for (column, builder) in COLUMNS.iter().zip(&mut self.builders) {
            builder.append(column.kind, field(&json, column.field));
        }
        self.pending += 1;
        self.rows += 1;
        if self.pending >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), parquet::errors::ParquetError> {
        if self.pending == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.pending = 0;
        self.writer.write(&batch)
    }

    /// Writes what is pending and the footer; returns the rows written.
    pub fn finish(mut self) -> Result<u64, parquet::errors::ParquetError> {
        self.flush_batch()?;
        self.writer.close()?;
        Ok(self.rows)
    }
}

/// What converting one file did.
#[derive(Debug, PartialEq, Eq)]
pub struct Converted {
    pub output: PathBuf,
    pub rows: u64,
    /// Records of union branches this reader does not know (skipped).
    pub unknown_records: u64,
    /// Why reading stopped before the end of the input (a damaged tail); the rows before it
    /// are in the output.
    pub read_error: Option<String>,
}

/// The Parquet file name for a SysFlow file: its stem with `.parquet`.
pub fn output_name(input: &Path) -> String {
    let stem = input
        .file_stem()
        .map_or_else(|| "sysflow".into(), |s| s.to_string_lossy().into_owned());
    format!("{stem}.parquet")
}

/// Converts one SysFlow file into `out_dir/<stem>.parquet`, written under a `.partial` name
/// and renamed when complete, so a reader of the folder never sees half a file.
pub fn convert_file(input: &Path, out_dir: &Path) -> Result<Converted, ConvertError> {
    let output = out_dir.join(output_name(input));
    let partial = out_dir.join(format!("{}.partial", output_name(input)));
    let result = convert_to(input, &partial, &output);
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

fn convert_to(input: &Path, partial: &Path, output: &Path) -> Result<Converted, ConvertError> {
    let reader = SysFlowReader::open(input)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, source }
    };
    let pq = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Parquet { path, source }
    };
    let file = fs::File::create(partial).map_err(io(partial))?;
    let source = input
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut writer =
        ParquetWriter::new(std::io::BufWriter::new(file), &source).map_err(pq(partial))?;
    let mut flattener = Flattener::default();
    let mut unknown_records = 0;
    let mut read_error = None;
    for item in reader {
        match item {
            Ok(ReadItem::Record(record)) => {
                if let Some(flat) = flattener.push(record) {
                    writer.push(&flat).map_err(pq(partial))?;
                }
            }
            Ok(ReadItem::Unknown { .. }) => unknown_records += 1,
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    let rows = writer.finish().map_err(pq(partial))?;
    fs::rename(partial, output).map_err(io(output))?;
    Ok(Converted {
        output: output.to_path_buf(),
        rows,
        unknown_records,
        read_error,
    })
}
