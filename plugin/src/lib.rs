//! nri-sysflow: a container telemetry agent. Kernel capture (probe) attributed per cgroup,
//! written as SysFlow (the `sysflow` crate).
pub mod cgroup;
pub mod print;
pub mod probe;
