//! Detection rules (sf-processor's policy language, the `sysflow-rules` crate) in the agent:
//! the command-line tools, and the sink that evaluates the records the agent writes.

pub mod cli;
