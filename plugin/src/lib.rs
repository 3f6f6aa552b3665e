//! nri-sysflow: a container telemetry agent. Kernel capture (probe) attributed per cgroup.
pub mod cgroup;
pub mod probe;
