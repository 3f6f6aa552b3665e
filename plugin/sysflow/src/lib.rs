//! SysFlow: the flow-centric Avro telemetry format of the sysflow-telemetry project.
//!
//! * [`records`]: typed records for the 12 branches of the v5 `rec` union.
//! * [`avro`]: the records encoded as Avro and framed as container files, directly.
//! * [`writer`]: Avro container files with entity bookkeeping, rotation and crash safety.
//! * [`reader`]: version-tolerant streaming reader (schema versions 1000 to 5).
//! * [`flat`]: records joined with their entities the way `sysprint` shows them.
//! * [`encoding`]: OIDs, FOIDs, IPv4 ints, op flags and Falco open flags.
//! * [`check`]: the entities-before-references rule, checked on a file.
//!
//! No eBPF, no async runtime: usable by any tool that reads or writes SysFlow.

pub mod avro;
pub mod check;
pub mod encoding;
pub mod flat;
pub mod reader;
pub mod records;
pub mod schema;
pub mod writer;

pub use reader::{ReadError, ReadItem, SysFlowReader};
pub use records::*;
pub use writer::{Compression, SysFlowWriter, SysflowWriteError, WriterConfig};
