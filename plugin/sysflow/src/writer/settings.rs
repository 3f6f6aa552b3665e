//! The writer's settings, errors and statistics.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{DEFAULT_BLOCK_BYTES, DEFAULT_ROTATE};
use crate::{
    avro::CompressError,
    records::{Foid, Oid},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// The collector's default.
    #[default]
    Deflate,
    Zstd,
    Snappy,
    None,
}

/// A codec name that is not one of the four.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown codec {0:?} (deflate, zstd, snappy, none)")]
pub struct UnknownCodec(pub String);

impl std::str::FromStr for Compression {
    type Err = UnknownCodec;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "deflate" => Compression::Deflate,
            "zstd" => Compression::Zstd,
            "snappy" => Compression::Snappy,
            "none" | "null" => Compression::None,
            other => return Err(UnknownCodec(other.to_owned())),
        })
    }
}

/// How files are encoded and named.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// SFHeader.exporter, and part of every file name (the node name).
    pub exporter: String,
    /// SFHeader.ip (the node IP; empty when unknown, as the collector writes it).
    pub node_ip: String,
    pub compression: Compression,
    pub block_bytes: usize,
    /// Write the schema with the IPv6 extension (NetworkFlow.sip6/dip6). Off: exactly v5, and
    /// IPv6 endpoints are not representable.
    pub ipv6_extension: bool,
    /// Start a new file after this long.
    pub rotate_after: Duration,
    /// Start a new file once the current one reaches this size.
    pub max_file_bytes: Option<u64>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            exporter: "local".into(),
            node_ip: String::new(),
            compression: Compression::Deflate,
            block_bytes: DEFAULT_BLOCK_BYTES,
            ipv6_extension: true,
            rotate_after: DEFAULT_ROTATE,
            max_file_bytes: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SysflowWriteError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// A block could not be compressed.
    #[error("block compression: {0}")]
    Compress(#[from] CompressError),
    /// A record refers to a process the writer was never given.
    #[error("record refers to process (createTS {}, pid {}) that was never set", .0.create_ts, .0.hpid)]
    MissingProcess(Oid),
    /// A record refers to a file the writer was never given.
    #[error("record refers to a file (FOID {0:?}) that was never set")]
    MissingFile(Foid),
    /// A process refers to a container the writer was never given.
    #[error("process refers to container {0} that was never set")]
    MissingContainer(String),
    /// A container refers to a pod the writer was never given.
    #[error("container refers to pod {0} that was never set")]
    MissingPod(String),
    /// Headers are written by the writer itself; NetworkEvent is never written.
    #[error("{0} records are not written through write()")]
    NotWritable(&'static str),
    /// No file is open (the last one could not be created); the record is counted as lost.
    #[error("no output file: {0}")]
    NoOutput(String),
}

impl SysflowWriteError {
    /// The output failed (the record is counted in `WriterStats::records_lost`), as opposed to
    /// a record the writer refuses (a bug in the caller).
    pub fn is_output_failure(&self) -> bool {
        matches!(
            self,
            SysflowWriteError::Io { .. }
                | SysflowWriteError::Compress(_)
                | SysflowWriteError::NoOutput(_)
        )
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SysflowWriteError + '_ {
    move |source| SysflowWriteError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the writer has done, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records in the files, by union branch (0 = SFHeader ... 11 = K8sEvent).
    pub records_by_type: [u64; 12],
    /// Records given up because the output failed (entities included).
    pub records_lost: u64,
    /// The output's error while it is failing; None once a block went through again.
    pub output_error: Option<String>,
    /// Output operations that failed (block writes, file creations).
    pub output_failures: u64,
    pub entities_rewritten_after_rotation: u64,
    /// Parent processes not known to the writer (their poid stays dangling).
    pub missing_ancestors: u64,
    pub files_completed: u64,
    pub bytes_written: u64,
}
