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

mod row;

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
use row::{Row, Value};
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

/// A column: its name, the dotted field of sysprint's flat view it holds, its type, and how
/// it is read from a record.
#[derive(Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub field: &'static str,
    pub kind: Kind,
    value: for<'a> fn(&Row<'a>) -> Value<'a>,
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {:?})", self.name, self.field, self.kind)
    }
}

const fn col(
    name: &'static str,
    field: &'static str,
    kind: Kind,
    value: for<'a> fn(&Row<'a>) -> Value<'a>,
) -> Column {
    Column {
        name,
        field,
        kind,
        value,
    }
}

/// Every column, in sysprint's field order.
pub const COLUMNS: &[Column] = &[
    col("type", "type", Text, row::record_type),
    col("state", "state", Text, row::state),
    col("opflags", "opflags", Text, row::opflags),
    col("opflags_bitmap", "opflags_bitmap", Int, row::opflags_bitmap),
    col("ret", "ret", Int, row::ret),
    col("ts", "ts_uts", Timestamp, row::ts),
    col("ts_uts", "ts_uts", Int, row::ts),
    col("endts", "endts_uts", Timestamp, row::end_ts),
    col("endts_uts", "endts_uts", Int, row::end_ts),
    col("proc_pid", "proc.pid", Int, |r| row::pid(r, false)),
    col("proc_tid", "proc.tid", Int, row::tid),
    col("proc_uid", "proc.uid", Int, |r| row::uid(r, false)),
    col("proc_user", "proc.user", Text, |r| row::user(r, false)),
    col("proc_gid", "proc.gid", Int, |r| row::gid(r, false)),
    col("proc_group", "proc.group", Text, |r| row::group(r, false)),
    col("proc_cwd", "proc.cwd", Text, |r| row::cwd(r, false)),
    col("proc_exe", "proc.exe", Text, |r| row::exe(r, false)),
    col("proc_args", "proc.args", Text, |r| row::args(r, false)),
    col("proc_tty", "proc.tty", Bool, |r| row::tty(r, false)),
    col("proc_entry", "proc.entry", Bool, |r| row::entry(r, false)),
    col("proc_env", "proc.env", Text, |r| row::env(r, false)),
    col("proc_createts", "proc.createts", Int, |r| {
        row::createts(r, false)
    }),
    col("pproc_pid", "pproc.pid", Int, |r| row::pid(r, true)),
    col("pproc_gid", "pproc.gid", Int, |r| row::gid(r, true)),
    col("pproc_uid", "pproc.uid", Int, |r| row::uid(r, true)),
    col("pproc_group", "pproc.group", Text, |r| row::group(r, true)),
    col("pproc_tty", "pproc.tty", Bool, |r| row::tty(r, true)),
    col("pproc_entry", "pproc.entry", Bool, |r| row::entry(r, true)),
    col("pproc_env", "pproc.env", Text, |r| row::env(r, true)),
    col("pproc_user", "pproc.user", Text, |r| row::user(r, true)),
    col("pproc_cwd", "pproc.cwd", Text, |r| row::cwd(r, true)),
    col("pproc_exe", "pproc.exe", Text, |r| row::exe(r, true)),
    col("pproc_args", "pproc.args", Text, |r| row::args(r, true)),
    col("pproc_createts", "pproc.createts", Int, |r| {
        row::createts(r, true)
    }),
    col("file_fd", "file.fd", Int, row::fd),
    col("file_path", "file.path", Text, row::file_path),
    col("file_newpath", "file.newpath", Text, row::file_newpath),
    col("file_type", "file.type", Text, row::file_type),
    col("file_openflags", "file.openflags", Int, row::open_flags),
    col("net_proto", "net.proto", Int, row::net_proto),
    col("net_sport", "net.sport", Int, row::net_sport),
    col("net_dport", "net.dport", Int, row::net_dport),
    col("net_sip", "net.sip", Text, row::net_sip),
    col("net_dip", "net.dip", Text, row::net_dip),
    col("res", "res", Text, row::res),
    col("flow_rbytes", "flow.rbytes", Int, |r| row::counter(r, 0)),
    col("flow_rops", "flow.rops", Int, |r| row::counter(r, 1)),
    col("flow_wbytes", "flow.wbytes", Int, |r| row::counter(r, 2)),
    col("flow_wops", "flow.wops", Int, |r| row::counter(r, 3)),
    col("pf_nthreads", "pf.nthreads", Int, |r| {
        row::process_flow(r, 0)
    }),
    col("pf_nexits", "pf.nexits", Int, |r| row::process_flow(r, 1)),
    col("pf_nerrors", "pf.nerrors", Int, |r| row::process_flow(r, 2)),
    col("container_id", "container.id", Text, row::container_id),
    col(
        "container_name",
        "container.name",
        Text,
        row::container_name,
    ),
    col(
        "container_imageid",
        "container.imageid",
        Text,
        row::container_imageid,
    ),
    col(
        "container_image",
        "container.image",
        Text,
        row::container_image,
    ),
    col(
        "container_type",
        "container.type",
        Text,
        row::container_type,
    ),
    col(
        "container_privileged",
        "container.privileged",
        Bool,
        row::container_privileged,
    ),
    col("pod_id", "pod.id", Text, row::pod_id),
    col("pod_name", "pod.name", Text, row::pod_name),
    col("pod_nname", "pod.nname", Text, row::pod_node),
    col("pod_hostip", "pod.hostip", TextList, row::pod_host_ip),
    col(
        "pod_internalip",
        "pod.internalip",
        TextList,
        row::pod_internal_ip,
    ),
    col("pod_ns", "pod.ns", Text, row::pod_namespace),
    col("pod_rstrtcnt", "pod.rstrtcnt", Int, row::pod_restarts),
    col("pod_services", "pod.services", JsonText, row::pod_services),
    col("node_id", "node.id", Text, row::node_id),
    col("node_ip", "node.ip", Text, row::node_ip),
    col("filename", "filename", Text, row::filename),
    col("schema", "schema", Int, row::schema),
    col("k8s_action", "k8s.action", Text, row::k8s_action),
    col("k8s_kind", "k8s.kind", Text, row::k8s_kind),
    col("k8s_msg", "k8s.msg", Text, row::k8s_msg),
];

/// Rows per record batch (and so at most per row group page run): large enough for good
/// compression, small enough to bound the converter's memory.
const BATCH_ROWS: usize = 16 * 1024;

/// Rows per row group (what the writer holds in memory before writing it out).
const ROW_GROUP_ROWS: usize = 64 * 1024;

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

    fn append(&mut self, value: Value<'_>) {
        match (self, value) {
            (Builder::Text(b), Value::Text(t)) => b.append_value(t),
            (Builder::Text(b), Value::Json(j)) => b.append_option(j),
            (Builder::Int(b), Value::Int(v)) => b.append_option(v),
            (Builder::Ts(b), Value::Int(v)) => b.append_option(v),
            (Builder::Bool(b), Value::Bool(v)) => b.append_option(v),
            (Builder::List(b), Value::List(items)) => match items {
                Some(items) => {
                    for item in items {
                        b.values().append_value(item);
                    }
                    b.append(true);
                }
                None => b.append_null(),
            },
            // COLUMNS pairs every kind with a reader of that kind; were one wrong, the
            // conformance test against the flat view would show the empty value.
            (Builder::Text(b), _) => b.append_value(""),
            (Builder::Int(b), _) => b.append_null(),
            (Builder::Ts(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
            (Builder::List(b), _) => b.append_null(),
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
            // A row group is held in memory until written: bounded, not the default million.
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
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
        let row = Row::new(record);
        for (column, builder) in COLUMNS.iter().zip(&mut self.builders) {
            builder.append((column.value)(&row));
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
