//! Ring buffer readers: one tokio task per ring, decoding records into a bounded channel. When
//! the channel is full a reader waits, the ring fills, and the kernel counts what it cannot write
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

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::warn;

use super::{Record, records};

/// How long a record may wait in a ring before the reader looks (at most).
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Records decoded per batch before they are handed on.
const BATCH: usize = 256;

/// What the readers counted.
#[derive(Default, Debug)]
pub struct ReaderStats {
    pub records: AtomicU64,
    /// Items that did not decode (logged once, then only counted).
    pub decode_errors: AtomicU64,
}

/// The receiving end of the decoded record stream.
pub struct RecordReceiver {
    pub rx: mpsc::Receiver<Record>,
    pub stats: Arc<ReaderStats>,
}

impl RecordReceiver {
    pub async fn recv(&mut self) -> Option<Record> {
        self.rx.recv().await
    }
}

pub(super) fn spawn(
    rings: Vec<RingBuf<MapData>>,
    capacity: usize,
) -> std::io::Result<RecordReceiver> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(ReaderStats::default());
    for ring in rings {
        // SAFETY: the ring's fd is owned by the RingBuf moved into the AsyncFd; it stays open and
        // the same until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        tokio::spawn(read_ring(fd, tx.clone(), stats.clone()));
    }
    Ok(RecordReceiver { rx, stats })
}

async fn read_ring(
    mut ring: AsyncFd<RingBuf<MapData>>,
    tx: mpsc::Sender<Record>,
    stats: Arc<ReaderStats>,
) {
    let mut batch = Vec::with_capacity(BATCH);
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
            let inner = ring.get_mut();
            while batch.len() < BATCH {
                let Some(item) = inner.next() else { break };
                match records::decode(&item) {
                    Ok(record) => batch.push(record),
                    Err(e) => {
                        if stats.decode_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            warn!("undecodable kernel record (further ones only counted): {e}");
                        }
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            stats
                .records
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            for record in batch.drain(..) {
                if tx.send(record).await.is_err() {
                    return;
                }
            }
        }
    }
}
