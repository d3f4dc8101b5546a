//! Avro single-object encoding for our fixed schemas (`stream_triggers/schemas/*.avsc`).
//!
//! Why hand-written: every record is a flat list of strings, longs, booleans, doubles, one
//! enum and `["null", T]` unions, so a reader is a few primitives and a field list per
//! schema; a generic Avro crate would parse schemas and build dynamic values per record.
//! The fingerprints are checked against the Python codec by `tests/native`.
//! Every failure is a [`Rejection`] value (`undecodable` / `unknown_schema`), never a panic.

use crate::errors::Rejection;

pub const MAGIC: [u8; 2] = [0xc3, 0x01];
pub const HEADER_SIZE: usize = 10;

/// An Avro field type as our schemas use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Long,
    Int,
    Bool,
    Bytes,
    OptStr,
    OptBytes,
    OptDouble,
    /// The `ReportedStatus` enum of `InstanceStatusReported`.
    ReportedStatus,
}

pub const REPORTED_STATUSES: [&str; 4] = ["running", "finished", "failed", "skipped"];

/// A decoded field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Null,
    Str(String),
    Long(i64),
    Bool(bool),
    Bytes(Vec<u8>),
    Double(f64),
}

impl Field {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }
}

pub struct Schema {
    pub name: &'static str,
    /// CRC-64-AVRO of the Parsing Canonical Form, little-endian (the header's 8 bytes).
    pub fingerprint: [u8; 8],
    /// "current" or "v<N>" (a historical writer schema resolved to the current one).
    pub version: &'static str,
    pub fields: &'static [(&'static str, Kind)],
    /// Fields the current schema adds to this (historical) one, with their null default.
    pub added: &'static [&'static str],
}

const fn fp(hex: u64) -> [u8; 8] {
    hex.to_be_bytes()
}

pub static SCHEMAS: &[Schema] = &[
    Schema {
        name: "ConfigurationUpdated",
        fingerprint: fp(0x4bff201739a5ca44),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("configuration_json", Kind::Str),
        ],
        added: &[],
    },
    Schema {
        name: "DeadLetter",
        fingerprint: fp(0xa9bbcbc028e3a698),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::OptStr),
            ("produced_at", Kind::Long),
            ("reason", Kind::Str),
            ("error", Kind::Str),
            ("topic", Kind::Str),
            ("partition", Kind::Int),
            ("offset", Kind::Long),
            ("key", Kind::OptBytes),
            ("value", Kind::OptBytes),
        ],
        added: &[],
    },
    Schema {
        name: "InstanceMetadataUpdateRequested",
        fingerprint: fp(0x20e62896b4b564b9),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("metadata_json", Kind::Str),
        ],
        added: &[],
    },
    Schema {
        name: "InstanceStatusChanged",
        fingerprint: fp(0x8ad24ca808bbc749),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("cause_event_id", Kind::Str),
            ("cause_produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("task", Kind::Str),
            ("status", Kind::Str),
            ("previous_status", Kind::OptStr),
            ("metadata_json", Kind::Str),
        ],
        added: &[],
    },
    Schema {
        name: "InstanceStatusReported",
        fingerprint: fp(0xf4b377b1b503cc80),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("status", Kind::ReportedStatus),
            ("metadata_json", Kind::Str),
            ("result_json", Kind::OptStr),
        ],
        added: &[],
    },
    Schema {
        name: "InstanceStatusReported",
        fingerprint: fp(0x9382673eaf9d8ed4),
        version: "v1",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("status", Kind::ReportedStatus),
            ("metadata_json", Kind::Str),
        ],
        added: &["result_json"],
    },
    Schema {
        name: "InstanceStatusUpdateRequested",
        fingerprint: fp(0x7bad008a36708410),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("status", Kind::Str),
            ("metadata_json", Kind::Str),
            ("cascade", Kind::Bool),
            ("cascade_kwargs_json", Kind::OptStr),
        ],
        added: &[],
    },
    Schema {
        name: "LogsResolved",
        fingerprint: fp(0xa1b42fa9a67fd4fb),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
        ],
        added: &[],
    },
    Schema {
        name: "ReplayRequested",
        fingerprint: fp(0x0ac9f2824a6c95e7),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("replacement_kwargs_json", Kind::OptStr),
        ],
        added: &[],
    },
    Schema {
        name: "RetryRequested",
        fingerprint: fp(0x336ac6491a7f48fd),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("metadata_json", Kind::Str),
            ("replacement_kwargs_json", Kind::OptStr),
            ("cooldown_s", Kind::OptDouble),
        ],
        added: &[],
    },
    Schema {
        name: "SessionFinalized",
        fingerprint: fp(0xe41933f5917d5f85),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("cause_event_id", Kind::Str),
            ("cause_produced_at", Kind::Long),
            ("kwargs_json", Kind::Str),
        ],
        added: &[],
    },
    Schema {
        name: "SessionPurged",
        fingerprint: fp(0x6c4e4cd755957c76),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("reason", Kind::Str),
            ("last_input_at", Kind::Long),
            ("finalized_at", Kind::Long),
            ("input_partition", Kind::Int),
            ("applied_offset", Kind::Long),
        ],
        added: &[],
    },
    Schema {
        name: "SessionSnapshot",
        fingerprint: fp(0xd91750cc6bd4e95a),
        version: "current",
        fields: &[
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("state", Kind::Bytes),
            ("input_partition", Kind::Int),
            ("applied_offset", Kind::Long),
        ],
        added: &[],
    },
    Schema {
        name: "SkipRequested",
        fingerprint: fp(0x8fabcf54be184444),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("cascade", Kind::Bool),
            ("result_json", Kind::OptStr),
        ],
        added: &[],
    },
    Schema {
        name: "TaskRunRequested",
        fingerprint: fp(0x47cd112b3fc2054e),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("cause_event_id", Kind::Str),
            ("cause_produced_at", Kind::Long),
            ("instance", Kind::Str),
            ("task", Kind::Str),
            ("run", Kind::Str),
            ("runner", Kind::Str),
            ("manager", Kind::Str),
            ("kwargs_json", Kind::Str),
            ("depth", Kind::Int),
            ("not_before", Kind::Long),
        ],
        added: &[],
    },
    Schema {
        name: "TriggerFired",
        fingerprint: fp(0xb85419bee71641f6),
        version: "current",
        fields: &[
            ("event_id", Kind::Str),
            ("session_uid", Kind::Str),
            ("produced_at", Kind::Long),
            ("trigger", Kind::Str),
            ("kwargs_json", Kind::Str),
        ],
        added: &[],
    },
];

/// The current schema of a record type.
pub fn current(name: &str) -> Option<&'static Schema> {
    SCHEMAS
        .iter()
        .find(|s| s.name == name && s.version == "current")
}

/// A decoded record: its type name and fields by name, in schema order (current schema).
#[derive(Debug, PartialEq)]
pub struct Record {
    pub type_name: &'static str,
    pub fields: Vec<(&'static str, Field)>,
}

impl Record {
    pub fn get(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, f)| f)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Field::as_str)
    }

    pub fn opt_str(&self, name: &str) -> Option<&str> {
        self.str(name)
    }

    pub fn long(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(Field::Long(v)) => *v,
            _ => 0,
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Field::Bool(true)))
    }

    pub fn double(&self, name: &str) -> Option<f64> {
        match self.get(name) {
            Some(Field::Double(v)) => Some(*v),
            _ => None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decode a single-object-encoded record, as `stream_triggers.events.codec.decode` does.
pub fn decode(data: &[u8]) -> Result<Record, Rejection> {
    if data.len() < HEADER_SIZE || data[..2] != MAGIC {
        let shown = if data.is_empty() {
            "-".to_string()
        } else {
            hex(&data[..data.len().min(HEADER_SIZE)])
        };
        return Err(Rejection::new(
            "undecodable",
            format!(
                "not an Avro single-object record: {} bytes starting {shown}",
                data.len()
            ),
        ));
    }
    let fingerprint = &data[2..HEADER_SIZE];
    let schema = SCHEMAS
        .iter()
        .find(|s| s.fingerprint == fingerprint)
        .ok_or_else(|| {
            Rejection::new(
                "unknown_schema",
                format!("no known schema has fingerprint {}", hex(fingerprint)),
            )
        })?;
    let mut reader = Reader {
        data,
        at: HEADER_SIZE,
    };
    let mut fields = Vec::with_capacity(schema.fields.len() + schema.added.len());
    for (name, kind) in schema.fields {
        match reader.field(*kind) {
            Ok(value) => fields.push((*name, value)),
            Err(problem) => {
                return Err(Rejection::new(
                    "undecodable",
                    format!(
                        "corrupt {} ({}) body: {problem}",
                        schema.name, schema.version
                    ),
                ))
            }
        }
    }
    if reader.at != data.len() {
        return Err(Rejection::new(
            "undecodable",
            format!(
                "{} ({}) body has {} trailing bytes",
                schema.name,
                schema.version,
                data.len() - reader.at
            ),
        ));
    }
    for name in schema.added {
        fields.push((*name, Field::Null));
    }
    Ok(Record {
        type_name: schema.name,
        fields,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.at).ok_or("EOFError: ")?;
        self.at += 1;
        Ok(b)
    }

    fn long(&mut self) -> Result<i64, String> {
        // As fastavro's compiled reader: 7 bits a byte into 64 bits (the shift wraps).
        let mut b = self.byte()? as u64;
        let mut n = b & 0x7f;
        let mut shift: u32 = 7;
        while b & 0x80 != 0 {
            b = self.byte()? as u64;
            n |= (b & 0x7f).wrapping_shl(shift);
            shift = shift.wrapping_add(7);
        }
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn bytes(&mut self) -> Result<&[u8], String> {
        let size = self.long()?;
        let size =
            usize::try_from(size).map_err(|_| format!("ValueError: negative size {size}"))?;
        let end = self
            .at
            .checked_add(size)
            .filter(|end| *end <= self.data.len())
            .ok_or("EOFError: ")?;
        let out = &self.data[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn string(&mut self) -> Result<String, String> {
        let raw = self.bytes()?;
        String::from_utf8(raw.to_vec()).map_err(|e| format!("UnicodeDecodeError: {e}"))
    }

    /// A branch index into `count` choices, indexed as Python indexes a list (fastavro
    /// does `choices[index]`, so -1 is the last one).
    fn index(&mut self, count: usize) -> Result<usize, String> {
        let index = self.long()?;
        let count = count as i64;
        let wrapped = if index < 0 { index + count } else { index };
        if (0..count).contains(&wrapped) {
            Ok(wrapped as usize)
        } else {
            Err("IndexError: list index out of range".into())
        }
    }

    fn field(&mut self, kind: Kind) -> Result<Field, String> {
        Ok(match kind {
            Kind::Str => Field::Str(self.string()?),
            Kind::Long | Kind::Int => Field::Long(self.long()?),
            Kind::Bool => Field::Bool(self.byte()? != 0),
            Kind::Bytes => Field::Bytes(self.bytes()?.to_vec()),
            Kind::OptStr => match self.index(2)? {
                0 => Field::Null,
                _ => Field::Str(self.string()?),
            },
            Kind::OptBytes => match self.index(2)? {
                0 => Field::Null,
                _ => Field::Bytes(self.bytes()?.to_vec()),
            },
            Kind::OptDouble => match self.index(2)? {
                0 => Field::Null,
                _ => {
                    let end = self.at + 8;
                    let raw = self.data.get(self.at..end).ok_or("EOFError: ")?;
                    self.at = end;
                    let mut buf = [0u8; 8];
                    buf.copy_from_slice(raw);
                    Field::Double(f64::from_le_bytes(buf))
                }
            },
            Kind::ReportedStatus => {
                let index = self.index(REPORTED_STATUSES.len())?;
                Field::Str(REPORTED_STATUSES[index].to_string())
            }
        })
    }
}

/// Builds one single-object-encoded record, field by field in schema order.
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub fn new(schema: &Schema) -> Writer {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&schema.fingerprint);
        Writer { out }
    }

    pub fn long(&mut self, value: i64) -> &mut Self {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
        while n >= 0x80 {
            self.out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
        self
    }

    pub fn str(&mut self, value: &str) -> &mut Self {
        self.long(value.len() as i64);
        self.out.extend_from_slice(value.as_bytes());
        self
    }

    pub fn bytes(&mut self, value: &[u8]) -> &mut Self {
        self.long(value.len() as i64);
        self.out.extend_from_slice(value);
        self
    }

    pub fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.long(0),
            Some(s) => self.long(1).str(s),
        }
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger_fired() -> Vec<u8> {
        let mut w = Writer::new(current("TriggerFired").unwrap());
        w.str("e1")
            .str("s1")
            .long(1_700_000_000_000_000)
            .str("a")
            .str("{}");
        w.finish()
    }

    #[test]
    fn round_trip() {
        let record = decode(&trigger_fired()).unwrap();
        assert_eq!(record.type_name, "TriggerFired");
        assert_eq!(record.str("trigger"), Some("a"));
        assert_eq!(record.long("produced_at"), 1_700_000_000_000_000);
    }

    #[test]
    fn every_prefix_and_mutation_is_a_value() {
        let data = trigger_fired();
        for end in 0..data.len() {
            assert!(decode(&data[..end]).is_err());
        }
        for i in 0..data.len() {
            for b in [0u8, 0x7f, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[i] = b;
                let _ = decode(&bad);
            }
        }
        let mut long = data.clone();
        long.push(0);
        assert_eq!(decode(&long).unwrap_err().reason, "undecodable");
    }
}
