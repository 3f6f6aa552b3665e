//! Avro binary encoding of primitive values (Avro 1.11 specification, "Binary Encoding"),
//! appended to a buffer. Appending to a `Vec` cannot fail, so nothing here returns an error.

/// `long`: zigzag, then a little-endian base-128 varint (1 to 10 bytes).
#[inline]
pub fn put_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    // Most values in SysFlow (counts, flags, fds, small ids) fit in one byte.
    if n < 0x80 {
        out.push(n as u8);
        return;
    }
    let mut bytes = [0u8; 10];
    let mut len = 0;
    while n >= 0x80 {
        bytes[len] = (n as u8) | 0x80;
        n >>= 7;
        len += 1;
    }
    bytes[len] = n as u8;
    out.extend_from_slice(&bytes[..=len]);
}

/// `int`: the same varint as `long` (zigzag of a sign-extended i32 equals its 32-bit zigzag).
#[inline]
pub fn put_int(out: &mut Vec<u8>, value: i32) {
    put_long(out, i64::from(value));
}

/// `boolean`: one byte, 0 or 1.
#[inline]
pub fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

/// `bytes`: the length as a `long`, then the bytes.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    // A slice never holds more than isize::MAX bytes, so the length fits in an i64.
    put_long(out, value.len() as i64);
    out.extend_from_slice(value);
}

/// `string`: UTF-8 bytes, encoded like `bytes`.
#[inline]
pub fn put_str(out: &mut Vec<u8>, value: &str) {
    put_bytes(out, value.as_bytes());
}

/// `fixed`: the bytes as they are (the schema gives the size).
#[inline]
pub fn put_fixed(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(value);
}

/// A union branch or enum symbol: its index as an `int`.
#[inline]
pub fn put_index(out: &mut Vec<u8>, index: usize) {
    // Unions and enums here have at most a dozen entries.
    put_long(out, index as i64);
}

/// Array or map with all items in one block: the item count (omitted when there are none), the
/// items, then the empty block that ends the list. `put_item` writes one item.
#[inline]
pub fn put_block_list<T>(
    out: &mut Vec<u8>,
    items: impl ExactSizeIterator<Item = T>,
    mut put_item: impl FnMut(&mut Vec<u8>, T),
) {
    if items.len() > 0 {
        put_long(out, items.len() as i64);
        for item in items {
            put_item(out, item);
        }
    }
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        put_long(&mut out, v);
        out
    }

    #[test]
    fn longs_are_zigzag_varints() {
        assert_eq!(long(0), [0x00]);
        assert_eq!(long(-1), [0x01]);
        assert_eq!(long(1), [0x02]);
        assert_eq!(long(-64), [0x7f]);
        assert_eq!(long(64), [0x80, 0x01]);
        assert_eq!(
            long(i64::MAX),
            [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(
            long(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn ints_use_the_same_varint() {
        let int = |v: i32| {
            let mut out = Vec::new();
            put_int(&mut out, v);
            out
        };
        assert_eq!(int(-1), [0x01]);
        assert_eq!(int(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(int(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn empty_and_non_empty_lists() {
        let mut out = Vec::new();
        put_block_list(&mut out, [0i64; 0].iter(), |o, v| put_long(o, *v));
        assert_eq!(out, [0]);
        out.clear();
        put_block_list(&mut out, [1i64, -1].iter(), |o, v| put_long(o, *v));
        assert_eq!(out, [0x04, 0x02, 0x01, 0x00]);
    }
}
