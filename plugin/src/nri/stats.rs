//! What the NRI side counts: events handled by kind, malformed messages, connections, and how
//! long handlers took (the runtime waits for every handler, node-wide, so this is the number
//! that matters to the cluster). Lock-free counters; recent latencies kept in a bounded ring
//! for exact percentiles.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

/// Recent handler latencies kept for percentiles.
const RECENT: usize = 4096;

#[derive(Default)]
pub struct NriStats {
    pub connected: AtomicBool,
    pub connections: AtomicU64,
    pub disconnects: AtomicU64,
    pub malformed: AtomicU64,
    /// Events by kind: run/stop/remove pod, start/stop/remove container, synchronize.
    pub events: [AtomicU64; 16],
    pub synchronized_pods: AtomicU64,
    pub synchronized_containers: AtomicU64,
    recent: Mutex<VecDeque<u64>>,
    /// The Prometheus histogram the latencies also go to, when metrics are exported.
    pub histogram: std::sync::OnceLock<prometheus_client::metrics::histogram::Histogram>,
}

/// Index in `NriStats::events` of Synchronize calls (past the NRI event numbers we use).
pub const SYNCHRONIZE_SLOT: usize = 15;

impl NriStats {
    pub fn observe_latency(&self, d: Duration) {
        if let Some(h) = self.histogram.get() {
            h.observe(d.as_secs_f64());
        }
        let ns = d.as_nanos().min(u64::MAX as u128) as u64;
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(ns);
        }
    }

    /// Percentile (0..=100) of the recent handler latencies, if any were observed.
    pub fn latency_percentile(&self, p: f64) -> Option<Duration> {
        let mut v: Vec<u64> = self.recent.lock().ok()?.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(Duration::from_nanos(v[rank.clamp(1, v.len()) - 1]))
    }

    pub fn count_event(&self, slot: usize) {
        if let Some(c) = self.events.get(slot) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn events_total(&self) -> u64 {
        self.events.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// One line for logs: events, p50/p99 handler latency.
    pub fn summary(&self) -> String {
        let us = |d: Option<Duration>| {
            d.map(|d| format!("{:.1}", d.as_secs_f64() * 1e6))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "nri: {} events handled, handler latency p50 {} us p99 {} us (last {} calls), {} malformed, {} connections",
            self.events_total(),
            us(self.latency_percentile(50.0)),
            us(self.latency_percentile(99.0)),
            self.recent.lock().map(|r| r.len()).unwrap_or(0),
            self.malformed.load(Relaxed),
            self.connections.load(Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_recent_latencies() {
        let stats = NriStats::default();
        for us in 1..=100u64 {
            stats.observe_latency(Duration::from_micros(us));
        }
        assert_eq!(
            stats.latency_percentile(50.0),
            Some(Duration::from_micros(50))
        );
        assert_eq!(
            stats.latency_percentile(99.0),
            Some(Duration::from_micros(99))
        );
    }
}
