//! Completing what a crash left: `.sf.partial` files cut after their last whole block and
//! given their final names.

use std::{
    fs::{self, OpenOptions},
    io::{BufReader, Read, Seek},
    path::{Path, PathBuf},
};

use super::{PARTIAL_SUFFIX, settings::io_err};
use crate::writer::SysflowWriteError;

/// A zig-zag varint Avro long; None at the end of the file (or a read error).
fn read_long(r: &mut impl Read) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).ok()?;
        value |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Some((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    None
}

/// The length of the longest prefix of the file that is a whole Avro container file: the
/// header and every block whose data and sync marker are all there. None when the header is
/// not. Block data is skipped, not read: a partial file can be hundreds of MiB.
fn whole_blocks_len(path: &Path) -> std::io::Result<Option<u64>> {
    let file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut r = BufReader::new(file);
    // Moves past `n` bytes if the file has them all.
    let skip = |r: &mut BufReader<fs::File>, n: i64| -> std::io::Result<bool> {
        let pos = r.stream_position()?;
        match u64::try_from(n).ok().and_then(|n| pos.checked_add(n)) {
            Some(end) if end <= len => {
                r.seek_relative(n)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let mut magic = [0u8; 4];
    if r.read_exact(&mut magic).is_err() || &magic != b"Obj\x01" {
        return Ok(None);
    }
    // The metadata map: blocks of entries (a negative count is followed by the block's size).
    loop {
        let Some(count) = read_long(&mut r) else {
            return Ok(None);
        };
        if count == 0 {
            break;
        }
        if count < 0 && read_long(&mut r).is_none() {
            return Ok(None);
        }
        for _ in 0..count.unsigned_abs() {
            for _ in 0..2 {
                let Some(n) = read_long(&mut r) else {
                    return Ok(None);
                };
                if !skip(&mut r, n)? {
                    return Ok(None);
                }
            }
        }
    }
    let mut sync = [0u8; 16];
    if r.read_exact(&mut sync).is_err() {
        return Ok(None);
    }
    let mut whole = r.stream_position()?;
    let mut marker = [0u8; 16];
    while let (Some(_count), Some(size)) = (read_long(&mut r), read_long(&mut r)) {
        if !skip(&mut r, size)? || r.read_exact(&mut marker).is_err() || marker != sync {
            break;
        }
        whole = r.stream_position()?;
    }
    Ok(Some(whole))
}

/// Renames `*.sf.partial` files left by a crash to `*.sf`, cut after their last whole block
/// (a block is written in one `write`, but a node that lost power, or a write cut short, can
/// leave a torn one); a file whose header is not whole is removed. Returns the recovered paths.
pub fn recover_partials(dir: &Path) -> Result<Vec<PathBuf>, SysflowWriteError> {
    let mut recovered = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(PARTIAL_SUFFIX) {
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            match whole_blocks_len(&path).map_err(io_err(&path))? {
                // A file whose header never made it holds nothing to keep.
                None => {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    continue;
                }
                Some(whole) if whole < len => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(io_err(&path))?;
                    file.set_len(whole).map_err(io_err(&path))?;
                }
                Some(_) => {}
            }
            let target = dir.join(format!("{stem}.sf"));
            fs::rename(&path, &target).map_err(io_err(&path))?;
            recovered.push(target);
        }
    }
    Ok(recovered)
}
