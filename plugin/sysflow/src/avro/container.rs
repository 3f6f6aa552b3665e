//! The Avro Object Container File framing, as apache-avro 0.22 writes it: a header (magic,
//! metadata map, sync marker), then blocks of (record count, byte size, compressed records, sync
//! marker).
//!
//! Crash safety: framed bytes collect in `pending` and reach the output in one `write_all`
//! per block (the header goes out with the first block), so output cut short at any moment ends
//! on a block boundary. After a failed write the bytes stay pending and are written again on the
//! next flush, as apache-avro's writer did.

use std::io::{self, Write};

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
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Compress(#[from] CompressError),
}

/// Writes one container file to `out`.
pub struct ContainerWriter {
    out: Box<dyn Write + Send>,
    schema: WriterSchema,
    compressor: BlockCompressor,
    marker: [u8; 16],
    /// A block is complete once its uncompressed records reach this many bytes.
    block_bytes: usize,
    /// The records of the block being filled, uncompressed.
    block: Vec<u8>,
    records_in_block: u64,
    /// Framed bytes not yet in `out`: the header, a complete block, or a block whose write
    /// failed.
    pending: Vec<u8>,
    /// Bytes that reached `out`.
    written: u64,
}

impl ContainerWriter {
    pub fn new(
        out: Box<dyn Write + Send>,
        schema: WriterSchema,
        compression: Compression,
        block_bytes: usize,
        marker: [u8; 16],
    ) -> Self {
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
            pending: header(schema, compression, &marker),
            written: 0,
        }
    }

    /// Appends a record; writes the block out when it is complete.
    pub fn append(&mut self, record: &Record) -> Result<(), ContainerError> {
        encode_datum(&mut self.block, record, self.schema);
        self.records_in_block += 1;
        if self.block.len() >= self.block_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Frames the records appended so far (if any) as a block and writes everything pending.
    pub fn flush(&mut self) -> Result<(), ContainerError> {
        if self.records_in_block > 0 {
            let data = self.compressor.compress(&self.block)?;
            // Counts and sizes are Avro longs; neither can exceed i64::MAX in memory.
            put_long(&mut self.pending, self.records_in_block as i64);
            put_long(&mut self.pending, data.len() as i64);
            self.pending.extend_from_slice(data);
            self.pending.extend_from_slice(&self.marker);
            self.block.clear();
            self.records_in_block = 0;
        }
        if !self.pending.is_empty() {
            self.out.write_all(&self.pending)?;
            self.written += self.pending.len() as u64;
            self.pending.clear();
        }
        self.out.flush()?;
        Ok(())
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
