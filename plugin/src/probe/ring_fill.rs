//! How full a BPF ring buffer is, read from the ring's own positions: the consumer position
//! (first page) and the producer position (second page) of the ring's memory, mapped read-only
//! beside the reader's mapping (the reader's `Ring` lives on its own task); this one costs two
//! pages.

use std::{
    os::fd::{AsFd, AsRawFd as _},
    sync::atomic::{AtomicU64, Ordering},
};

use super::ring::map_pages;

pub struct RingFill {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
    page: usize,
    size: u64,
}

// SAFETY: the mappings are read-only views of kernel-updated counters, read atomically.
unsafe impl Send for RingFill {}
// SAFETY: as above; no interior mutation through these pointers.
unsafe impl Sync for RingFill {}

impl RingFill {
    /// Maps the position pages of the ring behind `fd`, whose data area is `size` bytes.
    pub fn new(fd: impl AsFd, size: u64) -> std::io::Result<RingFill> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let raw = fd.as_fd().as_raw_fd();
        let consumer = map_pages(raw, page, libc::PROT_READ, 0)?;
        let producer = match map_pages(raw, page, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping what was just mapped.
                unsafe { libc::munmap(consumer, page) };
                return Err(e);
            }
        };
        Ok(RingFill {
            consumer,
            producer,
            page,
            size,
        })
    }

    /// Bytes written by the kernel and not yet consumed, as a fraction of the ring.
    pub fn fill(&self) -> f64 {
        // SAFETY: both pointers are page-aligned live mappings; the kernel keeps a u64 position
        // at the start of each page.
        let (consumer, producer) = unsafe {
            (
                (*(self.consumer as *const AtomicU64)).load(Ordering::Acquire),
                (*(self.producer as *const AtomicU64)).load(Ordering::Acquire),
            )
        };
        producer.saturating_sub(consumer) as f64 / self.size.max(1) as f64
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mappings once.
        unsafe {
            libc::munmap(self.consumer, self.page);
            libc::munmap(self.producer, self.page);
        }
    }
}
