//! nri-sysflow: a container telemetry agent. Kernel records (probe) flow one way through the
//! state stage (processes, descriptors, files, containers), the flows stage (SysFlow records)
//! and the sinks (SysFlow files, per-workload metrics); the runtime side (workloads: NRI, the
//! containerd API, capture policies) feeds the state stage through one queue.
pub mod agent;
pub mod capture;
pub mod convert;
pub mod detection;
pub mod export;
pub mod file_watch;
pub mod flows;
pub mod host;
pub mod internal_events;
pub mod log_limit;
pub mod metrics;
pub mod nri;
pub mod pipeline;
pub mod policy;
pub mod print;
pub mod probe;
pub mod redact;
pub mod sink;
pub mod state;
pub mod workloads;
