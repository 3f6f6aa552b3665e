//! Ring buffer readers: one tokio task per ring, woken by epoll, decoding records into a bounded
//! channel. When the channel is full a reader waits, the ring fills, and the kernel counts what
//! it cannot write (`KernelStats::ring_full`): loss is always counted, never silent.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{MapData, RingBuf};
use sysflow_common::FdKey;
use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::warn;

use super::{FlushedCounters, Record, records};

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
    flushed: Arc<Mutex<FlushedCounters>>,
) -> std::io::Result<RecordReceiver> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let stats = Arc::new(ReaderStats::default());
    for ring in rings {
        // SAFETY: the ring's fd is owned by the RingBuf moved into the AsyncFd; it stays open and
        // the same until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        tokio::spawn(read_ring(fd, tx.clone(), stats.clone(), flushed.clone()));
    }
    Ok(RecordReceiver { rx, stats })
}

async fn read_ring(
    mut ring: AsyncFd<RingBuf<MapData>>,
    tx: mpsc::Sender<Record>,
    stats: Arc<ReaderStats>,
    flushed: Arc<Mutex<FlushedCounters>>,
) {
    let mut batch = Vec::with_capacity(256);
    loop {
        let mut guard = match ring.readable_mut().await {
            Ok(guard) => guard,
            Err(e) => {
                warn!("ring buffer poll failed, reader stops: {e}");
                return;
            }
        };
        // Drain in batches so the channel is not awaited while a ring item is borrowed.
        loop {
            let inner = guard.get_inner_mut();
            while batch.len() < batch.capacity() {
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
            for mut record in batch.drain(..) {
                subtract_flushed(&mut record, &flushed);
                if tx.send(record).await.is_err() {
                    return;
                }
            }
        }
        guard.clear_ready();
    }
}

/// A close reports the kernel's cumulative counters; take out what a periodic flush already
/// reported.
fn subtract_flushed(record: &mut Record, flushed: &Mutex<FlushedCounters>) {
    let Record::Close(close) = record else { return };
    let Some(counters) = close.counters.as_mut() else {
        return;
    };
    let key = FdKey {
        tgid: close.common.tgid,
        fd: close.fd,
    };
    let raw = sysflow_common::FdCounters {
        read_bytes: counters.read_bytes,
        read_ops: counters.read_ops,
        write_bytes: counters.write_bytes,
        write_ops: counters.write_ops,
        first_ns: counters.first_ns,
        last_ns: counters.last_ns,
        ..Default::default()
    };
    let delta = flushed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .delta(key, &raw, false);
    counters.read_bytes = delta.read_bytes;
    counters.read_ops = delta.read_ops;
    counters.write_bytes = delta.write_bytes;
    counters.write_ops = delta.write_ops;
    counters.first_ns = delta.first_ns;
}
