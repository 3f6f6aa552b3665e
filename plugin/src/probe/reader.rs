//! Ring buffer readers: one tokio task per ring, decoding records into a bounded channel, in
//! batches (one channel operation and one wake-up per batch, not per record). When the channel
//! is full a reader waits, the ring fills, and the kernel counts what it cannot write
//! (`KernelStats::ring_full`): loss is always counted, never silent.
//!
//! The programs write records without waking the reader (a wake-up per record costs a context
//! switch per record); the reader polls every `POLL_INTERVAL`, and the kernel wakes it early
//! when a ring is a quarter full.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::warn;

use super::{Record, records, ring::Ring};
use crate::internal_events::{Loss, Losses};

/// How long a record may wait in a ring before the reader looks (at most).
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Records decoded per batch before they are handed on.
const BATCH: usize = 256;

/// What the readers counted.
#[derive(Default, Debug)]
pub struct ReaderStats {
    pub records: AtomicU64,
    /// Records in the channel.
    queued: AtomicU64,
}

/// The receiving end of the decoded record stream.
pub struct RecordReceiver {
    rx: mpsc::Receiver<Vec<Record>>,
    /// Records the queue holds at most.
    capacity: usize,
    /// The rest of the batch `recv` is handing out one by one.
    current: std::vec::IntoIter<Record>,
    pub stats: Arc<ReaderStats>,
}

impl RecordReceiver {
    /// The next batch of records, in ring order; None once the readers stopped.
    pub async fn recv_batch(&mut self) -> Option<Vec<Record>> {
        if self.current.len() > 0 {
            return Some(std::mem::take(&mut self.current).collect());
        }
        let batch = self.rx.recv().await?;
        self.stats
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        Some(batch)
    }

    /// The next record (taken from the current batch).
    pub async fn recv(&mut self) -> Option<Record> {
        loop {
            if let Some(record) = self.current.next() {
                return Some(record);
            }
            self.current = self.recv_batch().await?.into_iter();
        }
    }

    /// Records the queue holds at most (the configured capacity, in whole batches).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records decoded and waiting for the consumer.
    pub fn queued(&self) -> u64 {
        self.stats.queued.load(Ordering::Relaxed) + self.current.len() as u64
    }
}

pub(super) fn spawn(
    rings: Vec<Ring>,
    capacity: usize,
    losses: Arc<Losses>,
) -> std::io::Result<RecordReceiver> {
    let batches = capacity.div_ceil(BATCH).max(1);
    let (tx, rx) = mpsc::channel(batches);
    let stats = Arc::new(ReaderStats::default());
    for ring in rings {
        // SAFETY: the ring's fd is owned by the Ring moved into the AsyncFd; it stays open and
        // the same until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        tokio::spawn(read_ring(fd, tx.clone(), stats.clone(), losses.clone()));
    }
    Ok(RecordReceiver {
        rx,
        capacity: batches * BATCH,
        current: Vec::new().into_iter(),
        stats,
    })
}

async fn read_ring(
    mut ring: AsyncFd<Ring>,
    tx: mpsc::Sender<Vec<Record>>,
    stats: Arc<ReaderStats>,
    losses: Arc<Losses>,
) {
    loop {
        tokio::select! {
            ready = ring.readable_mut() => match ready {
                Ok(mut guard) => guard.clear_ready(),
                Err(e) => {
                    warn!("ring buffer poll failed, reader stops: {e}");
                    return;
                }
            },
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        // Drain in batches so the channel is not awaited while a ring item is borrowed.
        loop {
            let mut batch = Vec::new();
            let inner = ring.get_mut();
            while batch.len() < BATCH {
                let Some(decoded) = inner.next(records::decode) else {
                    break;
                };
                match decoded {
                    Ok(record) => {
                        if batch.is_empty() {
                            batch.reserve_exact(BATCH);
                        }
                        batch.push(record);
                    }
                    Err(e) => losses.emit(
                        Loss::UndecodableKernelRecord,
                        1,
                        format_args!("undecodable kernel record: {e}"),
                    ),
                }
            }
            if batch.is_empty() {
                break;
            }
            stats
                .records
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            stats
                .queued
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if tx.send(batch).await.is_err() {
                return;
            }
        }
    }
}
