//! The consumer side of a BPF ring buffer, with its data pages mapped once.
//!
//! The kernel lets user space map a ring's data pages twice in a row, so that a record wrapping
//! around the end reads as one slice; libbpf and aya's `RingBuf` map it that way. The kernel
//! inserts every page of such a mapping at `mmap` time, so both copies are resident from the
//! start: the default 8 MiB ring cost 16 MiB of the agent's RSS (measured in
//! `/proc/PID/smaps`, the `anon_inode:bpf-map` mapping). This consumer maps the data once
//! (8 MiB) and copies the rare record that wraps into a scratch buffer.
//!
//! The protocol is the kernel's (`kernel/bpf/ringbuf.c`), as libbpf's `ringbuf_process_ring`
//! follows it: the first page holds the consumer position (ours to write), the second the
//! producer position, then the data; each record starts with an 8-byte header whose length word
//! carries a busy bit (not yet committed) and a discard bit.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: u64 = 8;

/// Maps `length` bytes of the ring buffer map `fd` from `offset`, shared (the kernel checks the
/// range: the consumer page may be writable, the rest only readable).
pub(super) fn map_pages(
    fd: RawFd,
    length: usize,
    protection: libc::c_int,
    offset: usize,
) -> std::io::Result<*mut libc::c_void> {
    // SAFETY: a fresh mapping at an address the kernel picks; it touches nothing of ours.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            length,
            protection,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(p)
    }
}

/// One ring buffer map, read from user space.
pub struct Ring {
    /// Owns the map's descriptor (the poller waits on it).
    map: MapData,
    /// The consumer position page, mapped read-write.
    consumer_page: *mut libc::c_void,
    /// The producer position page followed by the data pages, mapped read-only.
    producer_pages: *mut libc::c_void,
    page: usize,
    reader: RingReader,
}

// SAFETY: the mappings belong to this value alone (a ring has one consumer, this one); moving
// it to another thread moves that ownership.
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring buffer `map`, whose data area is `size` bytes (a power of two, a multiple
    /// of the page size: the kernel refuses any other).
    pub fn new(map: MapData, size: u32) -> std::io::Result<Ring> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if !size.is_power_of_two() || (size as usize) < page {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("ring buffer size {size} is not a power of two of at least a page"),
            ));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer_page = map_pages(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer_pages = match map_pages(fd, page + size as usize, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping what was just mapped.
                unsafe { libc::munmap(consumer_page, page) };
                return Err(e);
            }
        };
        // SAFETY: the three areas are live mappings of the ring's layout, unmapped only when
        // the Ring (which owns the reader) is dropped.
        let reader = unsafe {
            RingReader::new(
                consumer_page as *const AtomicU64,
                producer_pages as *const AtomicU64,
                (producer_pages as *const u8).add(page),
                u64::from(size),
            )
        };
        Ok(Ring {
            map,
            consumer_page,
            producer_pages,
            page,
            reader,
        })
    }

    /// Calls `read` with the next committed record and then hands its space back to the kernel;
    /// None when no committed record is waiting. Discarded records are skipped.
    pub fn next<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.reader.next(read)
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings once, with the lengths they were made with.
        unsafe {
            libc::munmap(self.consumer_page, self.page);
            libc::munmap(self.producer_pages, self.page + self.reader.size as usize);
        }
    }
}

/// The consumer's walk over a ring's memory: the two positions and the data, wherever they are
/// (the kernel's pages, or a test's buffer).
struct RingReader {
    consumer: *const AtomicU64,
    producer: *const AtomicU64,
    data: *const u8,
    /// Bytes of data (a power of two).
    size: u64,
    consumer_pos: u64,
    /// The last producer position read; re-read once the consumer catches up with it.
    producer_pos: u64,
    /// Where a record that wraps around the end of the data is made contiguous.
    wrapped: Vec<u8>,
}

impl RingReader {
    /// # Safety
    /// `consumer` and `producer` point at 8-aligned positions and `data` at `size` bytes
    /// (8-aligned, a power of two), all valid for as long as the reader is used.
    unsafe fn new(
        consumer: *const AtomicU64,
        producer: *const AtomicU64,
        data: *const u8,
        size: u64,
    ) -> RingReader {
        // A ring used before (a pinned map) starts where its last consumer stopped.
        // SAFETY: valid per this function's contract.
        let (consumer_pos, producer_pos) = unsafe {
            (
                (*consumer).load(Ordering::Acquire),
                (*producer).load(Ordering::Acquire),
            )
        };
        RingReader {
            consumer,
            producer,
            data,
            size,
            consumer_pos,
            producer_pos,
            wrapped: Vec::new(),
        }
    }

    fn next<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let mask = self.size - 1;
        let (offset, len) = loop {
            if self.consumer_pos == self.producer_pos {
                // The kernel stores the producer position with release semantics after the
                // record headers it covers.
                // SAFETY: valid per `new`'s contract.
                self.producer_pos = unsafe { (*self.producer).load(Ordering::Acquire) };
                if self.consumer_pos == self.producer_pos {
                    return None;
                }
            }
            let offset = self.consumer_pos & mask;
            // SAFETY: offset is 8-aligned and below size, so the header word is inside the
            // data; the kernel writes it atomically (its commit is a fully ordered exchange).
            let header = unsafe { &*(self.data.add(offset as usize) as *const AtomicU32) }
                .load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                // Reserved but not committed yet: records are consumed in order, so wait.
                return None;
            }
            // Never more than the ring holds, whatever the header says.
            let len = u64::from(header & !(BUSY_BIT | DISCARD_BIT)).min(self.size - HEADER_BYTES);
            if header & DISCARD_BIT == 0 {
                break (offset, len);
            }
            self.consume(len);
        };
        let start = (offset + HEADER_BYTES) & mask;
        let first = len.min(self.size - start);
        // SAFETY: both ranges are inside the data; the kernel leaves a committed record alone
        // until the consumer position passes it (published by `consume`, after the read).
        let record = unsafe {
            let head = std::slice::from_raw_parts(self.data.add(start as usize), first as usize);
            if first == len {
                head
            } else {
                let tail = std::slice::from_raw_parts(self.data, (len - first) as usize);
                self.wrapped.clear();
                self.wrapped.extend_from_slice(head);
                self.wrapped.extend_from_slice(tail);
                &self.wrapped[..]
            }
        };
        let result = read(record);
        self.consume(len);
        Some(result)
    }

    /// Moves past the record of `len` bytes at the consumer position.
    fn consume(&mut self, len: u64) {
        self.consumer_pos += (HEADER_BYTES + len).next_multiple_of(8);
        // Release: the kernel may reuse the space once it sees this position.
        // SAFETY: valid per `new`'s contract.
        unsafe { (*self.consumer).store(self.consumer_pos, Ordering::Release) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring's memory in a test: positions and 64 bytes of data, written the way the kernel
    /// writes them.
    struct FakeRing {
        consumer: AtomicU64,
        producer: AtomicU64,
        data: Vec<u64>,
    }

    impl FakeRing {
        fn new() -> FakeRing {
            FakeRing {
                consumer: AtomicU64::new(0),
                producer: AtomicU64::new(0),
                data: vec![0; 8],
            }
        }

        fn bytes(&mut self) -> &mut [u8] {
            // SAFETY: the u64s' bytes, 8-aligned.
            unsafe { std::slice::from_raw_parts_mut(self.data.as_mut_ptr().cast(), 64) }
        }

        /// Writes a record at the producer position (header `flags | len`, wrapping the payload
        /// around the end) and moves the producer past it.
        fn produce(&mut self, flags: u32, payload: &[u8]) {
            let pos = self.producer.load(Ordering::Relaxed);
            let header = (flags | payload.len() as u32).to_le_bytes();
            let at = (pos % 64) as usize;
            self.bytes()[at..at + 4].copy_from_slice(&header);
            for (i, b) in payload.iter().enumerate() {
                self.bytes()[(at + 8 + i) % 64] = *b;
            }
            let next = pos + (8 + payload.len() as u64).next_multiple_of(8);
            self.producer.store(next, Ordering::Release);
        }

        fn reader(&self) -> RingReader {
            // SAFETY: the fake outlives every reader in these tests.
            unsafe {
                RingReader::new(
                    &self.consumer,
                    &self.producer,
                    self.data.as_ptr().cast(),
                    64,
                )
            }
        }
    }

    fn take(reader: &mut RingReader) -> Option<Vec<u8>> {
        reader.next(|bytes| bytes.to_vec())
    }

    #[test]
    fn records_come_out_whole_in_order_also_across_the_end_of_the_data() {
        let mut ring = FakeRing::new();
        ring.produce(0, b"nineteen bytes long");
        ring.produce(DISCARD_BIT, b"dropped");
        let mut reader = ring.reader();
        assert_eq!(
            take(&mut reader).as_deref(),
            Some(&b"nineteen bytes long"[..])
        );
        assert_eq!(take(&mut reader), None, "a discarded record is skipped");
        // 32 + 16 bytes used: the next header is at 48, and its payload wraps after 8 bytes.
        assert_eq!(ring.consumer.load(Ordering::Relaxed), 48);
        ring.produce(0, b"0123456789abcdefWRAPPED!");
        assert_eq!(
            take(&mut reader).as_deref(),
            Some(&b"0123456789abcdefWRAPPED!"[..])
        );
        assert_eq!(ring.consumer.load(Ordering::Relaxed), 80);
        assert_eq!(take(&mut reader), None);
    }

    #[test]
    fn an_uncommitted_record_stops_the_reader_until_it_is_committed() {
        let mut ring = FakeRing::new();
        ring.produce(BUSY_BIT, b"not yet");
        let mut reader = ring.reader();
        assert_eq!(take(&mut reader), None);
        assert_eq!(ring.consumer.load(Ordering::Relaxed), 0);
        ring.bytes()[3] &= 0x7f; // the kernel clears the busy bit on commit
        assert_eq!(take(&mut reader).as_deref(), Some(&b"not yet"[..]));
    }

    #[test]
    fn a_length_beyond_the_ring_is_cut_to_the_ring_not_read_out_of_bounds() {
        let mut ring = FakeRing::new();
        ring.bytes()[..4].copy_from_slice(&0x0fff_ffffu32.to_le_bytes());
        ring.producer.store(64, Ordering::Release);
        let mut reader = ring.reader();
        assert_eq!(take(&mut reader).map(|r| r.len()), Some(56));
    }
}
