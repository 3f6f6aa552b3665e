//! The SysFlow Avro schema: v5 exactly as published (sf-apis avro/avsc/SysFlow.avsc, the text
//! embedded in the reference collector's files), and v5 with our IPv6 extension.

use std::sync::LazyLock;

use apache_avro::{Schema, rabin::Rabin};

/// The published v5 schema text.
pub const SCHEMA_V5_JSON: &str = include_str!("../schema/SysFlow-v5.avsc");

/// CRC-64-AVRO fingerprint of v5's Parsing Canonical Form, as the reference collector 0.7.0
/// embeds it.
pub const SCHEMA_V5_FINGERPRINT: &str = "c2e3f9517576b46c";

/// Header `version` written by this writer.
pub const SCHEMA_VERSION: i64 = 5;

/// Schema v5 plus the IPv6 extension: NetworkFlow gains two trailing optional fields, `sip6` and
/// `dip6` (null, or the 16 bytes of the address in network order), both defaulting to null.
/// Plain `bytes` rather than a named `fixed`: fastavro returns a named type inside a union
/// differently depending on where it is defined, plain bytes the same way everywhere. Readers that decode with the
/// writer's schema (sysprint, the Go file reader) ignore fields they do not know; the v4/v5 Go
/// socket reader decodes by position and ignores trailing bytes. When they are set, the v4 `sip`
/// and `dip` ints hold 0.
pub fn extended_schema_json() -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(SCHEMA_V5_JSON).expect("the embedded v5 schema is valid JSON");
    let branches = schema["fields"][0]["type"]
        .as_array_mut()
        .expect("rec is a union");
    let network_flow = branches
        .iter_mut()
        .find(|b| b["name"] == "NetworkFlow")
        .expect("v5 has NetworkFlow");
    let fields = network_flow["fields"]
        .as_array_mut()
        .expect("record fields");
    fields.push(serde_json::json!({
        "name": "sip6",
        "type": ["null", "bytes"],
        "default": null,
        "doc": "nri-sysflow extension: IPv6 source address; sip is 0 when set"
    }));
    fields.push(serde_json::json!({
        "name": "dip6",
        "type": ["null", "bytes"],
        "default": null,
        "doc": "nri-sysflow extension: IPv6 destination address; dip is 0 when set"
    }));
    schema.to_string()
}

pub static SCHEMA_V5: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(SCHEMA_V5_JSON).expect("the embedded v5 schema parses"));

pub static SCHEMA_V5_IPV6: LazyLock<Schema> = LazyLock::new(|| {
    Schema::parse_str(&extended_schema_json()).expect("the extended schema parses")
});

/// The schema a file is written with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriterSchema {
    /// Exactly the published v5: IPv6 endpoints are not representable.
    V5,
    /// v5 plus the IPv6 extension (NetworkFlow.sip6/dip6).
    #[default]
    V5Ipv6,
}

static SCHEMA_V5_HEADER_JSON: LazyLock<String> = LazyLock::new(|| header_json(&SCHEMA_V5));
static SCHEMA_V5_IPV6_HEADER_JSON: LazyLock<String> =
    LazyLock::new(|| header_json(&SCHEMA_V5_IPV6));

/// The text apache-avro 0.22 puts in a file's `avro.schema`: its JSON rendering of the parsed
/// schema. Files written before the direct encoder carry exactly this text, so it stays.
fn header_json(schema: &Schema) -> String {
    serde_json::to_string(schema).expect("a parsed schema renders as JSON")
}

impl WriterSchema {
    pub fn schema(self) -> &'static Schema {
        match self {
            WriterSchema::V5 => &SCHEMA_V5,
            WriterSchema::V5Ipv6 => &SCHEMA_V5_IPV6,
        }
    }

    /// The schema text written into a file header (`avro.schema`).
    pub fn header_json(self) -> &'static str {
        match self {
            WriterSchema::V5 => &SCHEMA_V5_HEADER_JSON,
            WriterSchema::V5Ipv6 => &SCHEMA_V5_IPV6_HEADER_JSON,
        }
    }
}

/// Hex CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form.
pub fn fingerprint(schema: &Schema) -> String {
    schema.fingerprint::<Rabin>().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_is_byte_for_byte_the_published_schema() {
        assert_eq!(fingerprint(&SCHEMA_V5), SCHEMA_V5_FINGERPRINT);
    }

    #[test]
    fn the_extension_only_appends_to_network_flow() {
        let ext: serde_json::Value = serde_json::from_str(&extended_schema_json()).unwrap();
        let v5: serde_json::Value = serde_json::from_str(SCHEMA_V5_JSON).unwrap();
        let (e, o) = (&ext["fields"][0]["type"], &v5["fields"][0]["type"]);
        assert_eq!(e.as_array().unwrap().len(), 12);
        for i in 0..12 {
            if o[i]["name"] == "NetworkFlow" {
                let (ef, of) = (
                    e[i]["fields"].as_array().unwrap(),
                    o[i]["fields"].as_array().unwrap(),
                );
                assert_eq!(&ef[..of.len()], &of[..]);
                assert_eq!(ef.len(), of.len() + 2);
            } else {
                assert_eq!(e[i], o[i]);
            }
        }
        assert_ne!(fingerprint(&SCHEMA_V5_IPV6), SCHEMA_V5_FINGERPRINT);
    }
}
