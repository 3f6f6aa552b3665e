//! The sink stage: where SysFlow records and their entities go. Each sink owns what it keeps
//! (the SysFlow writer's entity tables, the per-workload metric series) and is handed every
//! item in order; the [`Fanout`] hands each batch to every sink. The detection rules and the
//! object-store exporter that come next are sinks too.

pub mod sysflow_files;
pub mod workload_metrics;

use std::time::Instant;

use crate::flows::Item;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot complete the SysFlow file: {0}")]
    SysFlow(#[from] sysflow::SysflowWriteError),
}

pub trait Sink: Send {
    /// Takes a batch of items, in order. Never fails: what a sink cannot take it counts.
    fn consume(&mut self, items: &[Item]);
    /// Housekeeping, about once a second (`now` is injected so cadences are testable).
    fn tick(&mut self, _now: Instant) {}
    /// The run ends: complete what is open.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Every sink, each handed every batch.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Box<dyn Sink>>,
}

impl Fanout {
    pub fn with(mut self, sink: impl Sink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }
}

impl Sink for Fanout {
    fn consume(&mut self, items: &[Item]) {
        if items.is_empty() {
            return;
        }
        for sink in &mut self.sinks {
            sink.consume(items);
        }
    }

    fn tick(&mut self, now: Instant) {
        for sink in &mut self.sinks {
            sink.tick(now);
        }
    }

    /// Finishes every sink, even after one failed; the first error is returned.
    fn finish(&mut self) -> Result<(), SinkError> {
        let mut first = Ok(());
        for sink in &mut self.sinks {
            if let Err(e) = sink.finish()
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}
