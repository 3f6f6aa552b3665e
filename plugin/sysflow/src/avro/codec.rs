//! Block compression for the container's codecs.
//!
//! Snappy and zstd call the same library the same way as apache-avro 0.22, so their blocks are
//! byte-identical to the ones it wrote. Deflate is where the write time goes: apache-avro asks
//! miniz_oxide for its "default" level, which miniz_oxide clamps to its slowest (10). zlib-rs at
//! level 6 compresses SysFlow's 80 KB blocks about six times faster, to 32.05 bytes per record
//! against 32.07 in `cargo xtask bench sysflow` (on the reference collector's small traces it is
//! about 1% larger). Any inflater reads either.

use std::io::{self, Write as _};

use flate2::{Compress, FlushCompress, Status};

use crate::writer::Compression;

const DEFLATE_LEVEL: u32 = 6;

/// apache-avro's default zstd level (0: the library's default), also written to the header.
pub const ZSTD_LEVEL: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("deflate: {0}")]
    Deflate(#[from] flate2::CompressError),
    #[error("snappy: {0}")]
    Snappy(#[from] snap::Error),
    #[error("zstd: {0}")]
    Zstd(#[source] io::Error),
}

impl Compression {
    /// The `avro.codec` header value; none when uncompressed (apache-avro then writes no key).
    pub(crate) fn avro_codec_name(self) -> Option<&'static str> {
        match self {
            Compression::Deflate => Some("deflate"),
            Compression::Zstd => Some("zstandard"),
            Compression::Snappy => Some("snappy"),
            Compression::None => None,
        }
    }
}

/// A codec with the state it keeps between blocks.
enum Codec {
    None,
    /// Raw deflate (no zlib header), as Avro's deflate codec specifies.
    Deflate(Box<Compress>),
    Snappy,
    Zstd,
}

/// Compresses whole blocks, reusing its state and output buffer from one block to the next.
pub struct BlockCompressor {
    codec: Codec,
    compressed: Vec<u8>,
}

impl BlockCompressor {
    pub fn new(compression: Compression) -> Self {
        let codec = match compression {
            Compression::None => Codec::None,
            Compression::Deflate => Codec::Deflate(Box::new(Compress::new(
                flate2::Compression::new(DEFLATE_LEVEL),
                false,
            ))),
            Compression::Snappy => Codec::Snappy,
            Compression::Zstd => Codec::Zstd,
        };
        BlockCompressor {
            codec,
            compressed: Vec::new(),
        }
    }

    /// The block as the file stores it.
    pub fn compress<'a>(&'a mut self, block: &'a [u8]) -> Result<&'a [u8], CompressError> {
        let out = &mut self.compressed;
        out.clear();
        match &mut self.codec {
            Codec::None => return Ok(block),
            Codec::Deflate(deflate) => deflate_block(deflate, block, out)?,
            Codec::Snappy => {
                // Snappy blocks end with the big-endian CRC32 of the uncompressed data.
                out.resize(snap::raw::max_compress_len(block.len()), 0);
                let len = snap::raw::Encoder::new().compress(block, out)?;
                out.truncate(len);
                out.extend_from_slice(&crc32fast::hash(block).to_be_bytes());
            }
            Codec::Zstd => {
                let mut encoder = zstd::Encoder::new(std::mem::take(out), i32::from(ZSTD_LEVEL))
                    .map_err(CompressError::Zstd)?;
                encoder.write_all(block).map_err(CompressError::Zstd)?;
                *out = encoder.finish().map_err(CompressError::Zstd)?;
            }
        }
        Ok(&self.compressed)
    }
}

/// One block as a complete raw deflate stream.
fn deflate_block(
    deflate: &mut Compress,
    block: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressError> {
    deflate.reset();
    // Deflate never grows data by more than a few bytes per 16 KB stored block; the loop covers
    // any shortfall anyway.
    out.reserve(block.len() + block.len() / 8 + 64);
    loop {
        let consumed = usize::try_from(deflate.total_in()).unwrap_or(block.len());
        let rest = block.get(consumed..).unwrap_or_default();
        match deflate.compress_vec(rest, out, FlushCompress::Finish)? {
            Status::StreamEnd => return Ok(()),
            Status::Ok | Status::BufError => out.reserve(out.capacity().max(4096)),
        }
    }
}
