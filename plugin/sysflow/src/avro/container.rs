//! The Avro Object Container File framing, as apache-avro 0.22 writes it: a header (magic,
//! metadata map, sync marker), then blocks of (record count, byte size, compressed records, sync
//! marker).
//!
//! Crash safety: framed bytes collect in `pending` and reach the output in one write per block
//! (the header goes out with the first block), so output cut short at any moment ends on a
//! block boundary, or inside the last block when the write itself was cut short (SIGKILL
//! lands between its pages; recovery cuts that block off). A write that fails part-way (a
//! full disk) is undone by the output
//! ([`BlockOutput`]: a file is cut back to its last whole block) and that block's records are
//! given up and reported as lost: a block written in part would make everything after it
//! unreadable, and holding failed blocks for later would grow without bound while the disk
//! stays full.

use std::{
    fs::File,
    io::{self, Write},
};

use super::{
    binary::{put_block_list, put_bytes, put_long, put_str},
    codec::{BlockCompressor, CompressError, ZSTD_LEVEL},
    datum::encode_datum,
};
use crate::{records::Record, schema::WriterSchema, writer::Compression};

const MAGIC: &[u8; 4] = b"Obj\x01";
const MAX_PREALLOCATED_BLOCK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The output failed; the records of the block that did not make it are lost (counted by
    /// type in [`ContainerWriter::take_lost`]).
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Compress(#[from] CompressError),
}

/// Where blocks go. A block is written whole or not at all.
pub trait BlockOutput: Send {
    /// Writes one block. On failure the output is as it was before the call, when it can be
    /// (a file is cut back to its previous length); a stream cannot take bytes back.
    fn write_block(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

/// A file opened for appending: a failed write is cut back to the last whole block.
pub struct FileOutput {
    file: File,
    len: u64,
}

impl FileOutput {
    /// `file` must be opened with `append` (each write lands at the current end).
    pub fn new(file: File) -> io::Result<FileOutput> {
        let len = file.metadata()?.len();
        Ok(FileOutput { file, len })
    }
}

impl BlockOutput for FileOutput {
    fn write_block(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Whatever part of the block made it would leave the file unreadable from here
                // on: take it back. (Shrinking needs no space.)
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Any byte stream (tests, benchmarks, pipes): a failed write cannot be taken back.
pub struct StreamOutput(pub Box<dyn Write + Send>);

impl BlockOutput for StreamOutput {
    fn write_block(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Records by union branch (0 = SFHeader ... 11 = K8sEvent).
pub type TypeCounts = [u64; 12];

fn add_counts(into: &mut TypeCounts, from: &mut TypeCounts) {
    for (a, b) in into.iter_mut().zip(from.iter_mut()) {
        *a += std::mem::take(b);
    }
}

/// Writes one container file to `out`.
pub struct ContainerWriter {
    out: Box<dyn BlockOutput>,
    schema: WriterSchema,
    compressor: BlockCompressor,
    marker: [u8; 16],
    /// A block is complete once its uncompressed records reach this many bytes.
    block_bytes: usize,
    /// The records of the block being filled, uncompressed.
    block: Vec<u8>,
    records_in_block: u64,
    /// Framed bytes not yet in `out`: the header (until it is written), then a complete block.
    pending: Vec<u8>,
    /// Length of the header at the start of `pending` while it has not been written.
    header_pending: usize,
    /// Bytes that reached `out`.
    written: u64,
    /// Records of the block being filled, by type.
    in_block: TypeCounts,
    /// Records that reached `out` / were given up with a failed block, not yet taken.
    done: TypeCounts,
    lost: TypeCounts,
}

impl ContainerWriter {
    pub fn new(
        out: Box<dyn BlockOutput>,
        schema: WriterSchema,
        compression: Compression,
        block_bytes: usize,
        marker: [u8; 16],
    ) -> Self {
        let header = header(schema, compression, &marker);
        ContainerWriter {
            out,
            schema,
            compressor: BlockCompressor::new(compression),
            marker,
            block_bytes,
            // A record may take the block past `block_bytes`; the slack avoids a regrowth then.
            // Capped: a huge configured block size must not be allocated up front.
            block: Vec::with_capacity(block_bytes.min(MAX_PREALLOCATED_BLOCK) + 4096),
            records_in_block: 0,
            header_pending: header.len(),
            pending: header,
            written: 0,
            in_block: TypeCounts::default(),
            done: TypeCounts::default(),
            lost: TypeCounts::default(),
        }
    }

    /// Appends a record; writes the block out when it is complete.
    pub fn append(&mut self, record: &Record) -> Result<(), ContainerError> {
        encode_datum(&mut self.block, record, self.schema);
        self.records_in_block += 1;
        self.in_block[record.branch_index()] += 1;
        if self.block.len() >= self.block_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Frames the records appended so far (if any) as a block and writes everything pending.
    /// When the write fails the block's records are lost (see [`Self::take_lost`]); the header,
    /// if it was not written yet, stays pending: a file must start with it.
    pub fn flush(&mut self) -> Result<(), ContainerError> {
        if self.records_in_block > 0 {
            let data = match self.compressor.compress(&self.block) {
                Ok(data) => data,
                Err(e) => {
                    self.give_up_block();
                    return Err(e.into());
                }
            };
            // Counts and sizes are Avro longs; neither can exceed i64::MAX in memory.
            put_long(&mut self.pending, self.records_in_block as i64);
            put_long(&mut self.pending, data.len() as i64);
            self.pending.extend_from_slice(data);
            self.pending.extend_from_slice(&self.marker);
            self.block.clear();
            self.records_in_block = 0;
        }
        if !self.pending.is_empty() {
            if let Err(e) = self.out.write_block(&self.pending) {
                self.pending.truncate(self.header_pending);
                add_counts(&mut self.lost, &mut self.in_block);
                return Err(e.into());
            }
            self.written += self.pending.len() as u64;
            self.pending.clear();
            self.header_pending = 0;
            add_counts(&mut self.done, &mut self.in_block);
        }
        self.out.flush()?;
        Ok(())
    }

    /// The block being filled could not be framed: its records are lost.
    fn give_up_block(&mut self) {
        self.block.clear();
        self.records_in_block = 0;
        add_counts(&mut self.lost, &mut self.in_block);
    }

    /// Records that reached the output since the last call, by type.
    pub fn take_written(&mut self) -> TypeCounts {
        std::mem::take(&mut self.done)
    }

    /// Records given up with failed blocks since the last call, by type.
    pub fn take_lost(&mut self) -> TypeCounts {
        std::mem::take(&mut self.lost)
    }

    /// Bytes that reached the output.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Framed bytes waiting to be written (only after a failed write).
    pub fn pending(&self) -> u64 {
        self.pending.len() as u64
    }
}

/// The file header: magic, the metadata map, the sync marker. apache-avro takes the metadata
/// order from a `HashMap` (it varies from file to file); here keys are sorted, as the reference
/// collector (Avro C++, a `std::map`) writes them.
fn header(schema: WriterSchema, compression: Compression, marker: &[u8; 16]) -> Vec<u8> {
    let schema_json = schema.header_json();
    let mut metadata: Vec<(&str, &[u8])> = Vec::with_capacity(3);
    if let Some(codec) = compression.avro_codec_name() {
        metadata.push(("avro.codec", codec.as_bytes()));
    }
    if compression == Compression::Zstd {
        metadata.push(("avro.codec.compression_level", &[ZSTD_LEVEL]));
    }
    metadata.push(("avro.schema", schema_json.as_bytes()));

    let mut out = Vec::with_capacity(schema_json.len() + 128);
    out.extend_from_slice(MAGIC);
    put_block_list(&mut out, metadata.into_iter(), |out, (key, value)| {
        put_str(out, key);
        put_bytes(out, value);
    });
    out.extend_from_slice(marker);
    out
}
