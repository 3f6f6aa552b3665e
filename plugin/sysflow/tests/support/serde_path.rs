//! The path the writer took before the direct encoder: apache-avro's schema-aware serde
//! serializer over the records' `Serialize` impls, and apache-avro's container `Writer`. Kept
//! outside the library as the tests' reference (`tests/encoding.rs`) and the benchmark's
//! baseline (`benches/format.rs`). The wrapper types below are the ones the writer used.
#![allow(dead_code)]

use apache_avro::{Codec, DeflateSettings, ZstandardSettings, writer::datum::GenericDatumWriter};
use serde::{Serialize, Serializer};
use sysflow::{schema::WriterSchema, *};

/// NetworkFlow as the extended schema encodes it: the v5 fields, then the two extension fields.
pub struct NetworkFlowV6<'a> {
    pub flow: &'a NetworkFlow,
}

impl Serialize for NetworkFlowV6<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let f = self.flow;
        let mut st = s.serialize_struct("NetworkFlow", 17)?;
        st.serialize_field("procOID", &f.proc_oid)?;
        st.serialize_field("ts", &f.ts)?;
        st.serialize_field("tid", &f.tid)?;
        st.serialize_field("opFlags", &f.op_flags)?;
        st.serialize_field("endTs", &f.end_ts)?;
        st.serialize_field("sip", &f.sip)?;
        st.serialize_field("sport", &f.sport)?;
        st.serialize_field("dip", &f.dip)?;
        st.serialize_field("dport", &f.dport)?;
        st.serialize_field("proto", &f.proto)?;
        st.serialize_field("fd", &f.fd)?;
        st.serialize_field("numRRecvOps", &f.num_r_recv_ops)?;
        st.serialize_field("numWSendOps", &f.num_w_send_ops)?;
        st.serialize_field("numRRecvBytes", &f.num_r_recv_bytes)?;
        st.serialize_field("numWSendBytes", &f.num_w_send_bytes)?;
        st.serialize_field("sip6", &f.sip6)?;
        st.serialize_field("dip6", &f.dip6)?;
        st.end()
    }
}

/// The top-level Avro record.
#[derive(Serialize)]
pub struct SysFlow<'a, R: Serialize> {
    pub rec: &'a R,
}

/// The union as the extended schema encodes it: like [`Record`], with NetworkFlow carrying its
/// two extension fields.
#[derive(Serialize)]
pub enum RecordV6<'a> {
    Header(&'a SfHeader),
    Container(&'a Container),
    Process(&'a Process),
    File(&'a File),
    ProcessEvent(&'a ProcessEvent),
    NetworkFlow(NetworkFlowV6<'a>),
    FileFlow(&'a FileFlow),
    FileEvent(&'a FileEvent),
    NetworkEvent(&'a NetworkEvent),
    ProcessFlow(&'a ProcessFlow),
    Pod(&'a Pod),
    K8sEvent(&'a K8sEvent),
}

impl<'a> From<&'a Record> for RecordV6<'a> {
    fn from(r: &'a Record) -> Self {
        match r {
            Record::Header(x) => RecordV6::Header(x),
            Record::Container(x) => RecordV6::Container(x),
            Record::Process(x) => RecordV6::Process(x),
            Record::File(x) => RecordV6::File(x),
            Record::ProcessEvent(x) => RecordV6::ProcessEvent(x),
            Record::NetworkFlow(x) => RecordV6::NetworkFlow(NetworkFlowV6 { flow: x }),
            Record::FileFlow(x) => RecordV6::FileFlow(x),
            Record::FileEvent(x) => RecordV6::FileEvent(x),
            Record::NetworkEvent(x) => RecordV6::NetworkEvent(x),
            Record::ProcessFlow(x) => RecordV6::ProcessFlow(x),
            Record::Pod(x) => RecordV6::Pod(x),
            Record::K8sEvent(x) => RecordV6::K8sEvent(x),
        }
    }
}

/// One `SysFlow` datum for `record`, as the serde path encodes it.
pub fn datum(record: &Record, schema: WriterSchema) -> Vec<u8> {
    let writer = GenericDatumWriter::builder(schema.schema())
        .build()
        .unwrap();
    match schema {
        WriterSchema::V5 => writer.write_ser_to_vec(&SysFlow { rec: record }),
        WriterSchema::V5Ipv6 => writer.write_ser_to_vec(&SysFlow {
            rec: &RecordV6::from(record),
        }),
    }
    .unwrap()
}

/// The apache-avro codec the writer configured for each compression.
pub fn codec(compression: Compression) -> Codec {
    match compression {
        Compression::Deflate => Codec::Deflate(DeflateSettings::default()),
        Compression::Zstd => Codec::Zstandard(ZstandardSettings::default()),
        Compression::Snappy => Codec::Snappy,
        Compression::None => Codec::Null,
    }
}

/// A container file written record by record through apache-avro, as the writer did.
pub struct SerdeContainer {
    avro: apache_avro::Writer<'static, Vec<u8>>,
    schema: WriterSchema,
}

impl SerdeContainer {
    pub fn new(
        schema: WriterSchema,
        compression: Compression,
        block_bytes: usize,
        marker: [u8; 16],
    ) -> Self {
        let avro = apache_avro::Writer::builder()
            .schema(schema.schema())
            .writer(Vec::new())
            .codec(codec(compression))
            .block_size(block_bytes)
            .marker(marker)
            .build()
            .unwrap();
        SerdeContainer { avro, schema }
    }

    pub fn append(&mut self, record: &Record) {
        match self.schema {
            WriterSchema::V5 => self.avro.append_ser(SysFlow { rec: record }),
            WriterSchema::V5Ipv6 => self.avro.append_ser(SysFlow {
                rec: &RecordV6::from(record),
            }),
        }
        .unwrap();
    }

    pub fn flush(&mut self) {
        self.avro.flush().unwrap();
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.avro.into_inner().unwrap()
    }
}
