//! nri-sysflow: a container telemetry agent. Kernel capture (probe) attributed per cgroup,
//! written as SysFlow (the `sysflow` crate).
pub mod agent;
pub mod capture;
pub mod cgroup;
pub mod engine;
pub mod log_limit;
pub mod metrics;
pub mod nri;
pub mod policy;
pub mod print;
pub mod probe;
pub mod workloads;
