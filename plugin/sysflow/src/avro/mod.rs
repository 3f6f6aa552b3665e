//! Avro written directly: the SysFlow schema is fixed, so records are encoded field by field
//! with no schema walk and no intermediate values, and framed into container files byte for
//! byte as apache-avro writes them (apache-avro remains the reader).
//!
//! * `binary`: Avro binary encoding of primitive values.
//! * `datum`: typed SysFlow records as Avro data ([`encode_datum`]).
//! * `codec`: block compression.
//! * `container`: the Object Container File framing.

mod binary;
pub(crate) mod codec;
pub(crate) mod container;
mod datum;

pub use codec::CompressError;
pub use datum::encode_datum;
