//! The pipeline: kernel records and runtime updates through state → flows → sinks, one way.
//! Each stage owns its state; a batch's facts are translated and handed to every sink before
//! the next batch is taken in.

use std::time::Instant;

use crate::{
    flows::{Flows, Item},
    probe::Record,
    sink::{Fanout, Sink, SinkError},
    state::{State, StateStats},
    workloads::WorkloadUpdate,
};

pub struct Pipeline {
    state: State,
    flows: Flows,
    sinks: Fanout,
    /// Reused between batches.
    items: Vec<Item>,
}

/// Items the reused batch keeps room for: a burst (the start's /proc snapshot, a tick that
/// forgets thousands of files) gives its room back after it is passed on.
const ITEMS_ROOM_KEPT: usize = 1024;

impl Pipeline {
    pub fn new(state: State, sinks: Fanout) -> Self {
        Pipeline {
            state,
            flows: Flows::default(),
            sinks,
            items: Vec::new(),
        }
    }

    /// Learns every process running now from /proc.
    pub fn seed(&mut self) {
        self.state.seed();
        self.pass();
    }

    pub fn records(&mut self, batch: impl IntoIterator<Item = Record>) {
        for record in batch {
            self.state.apply(record);
        }
        self.pass();
    }

    pub fn workload_updates(&mut self, updates: impl IntoIterator<Item = WorkloadUpdate>) {
        for update in updates {
            self.state.apply_workload(update);
        }
        self.pass();
    }

    /// At the flow interval, after the kernel was asked to report every descriptor.
    pub fn interval(&mut self) {
        self.state.interval();
        self.pass();
    }

    /// Housekeeping, once a second.
    pub fn tick(&mut self, now_boot_ns: u64, now: Instant) {
        self.state.tick(now_boot_ns);
        self.pass();
        self.sinks.tick(now);
    }

    /// Ends every open flow (truncated) and completes every sink.
    pub fn finish(mut self, now_boot_ns: u64) -> Result<(), SinkError> {
        self.state.shutdown(now_boot_ns);
        self.pass();
        self.sinks.finish()
    }

    pub fn state_stats(&self) -> StateStats {
        self.state.stats()
    }

    pub fn flows_exported(&self) -> u64 {
        self.flows.flows_exported
    }

    fn pass(&mut self) {
        for fact in self.state.drain_facts() {
            self.flows.translate(fact, &mut self.items);
        }
        self.sinks.consume(&self.items);
        self.items.clear();
        self.items.shrink_to(ITEMS_ROOM_KEPT);
        self.state.shrink_facts(ITEMS_ROOM_KEPT);
    }
}
