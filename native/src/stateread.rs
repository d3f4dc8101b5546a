//! Reading format-4 state records into a session (the reverse of `stateformat`): a stored
//! session loads into the core from its RocksDB values, without a Python state between.
//!
//! Only what the core models is read: JSON values and naive datetimes (extension type 1
//! with the naive marker).  Anything else - another extension type, binary, a non-str map
//! key, an older format, a malformed record - is an `Err` and the caller reads the
//! session the Python way (which gives a corrupt one its exact error).

use std::sync::Arc;

use crate::config::{build_task_configs, Names};
use crate::state::{Instance, SessionState, Status};
use crate::stateformat::{FORMAT, KIND_HEADER, KIND_INSTANCE, KIND_WHOLE};
use crate::transition::META_TIMESTAMPS;
use crate::value::{Map, Value};

const PREFIX: usize = 10;
const MAX_DEPTH: usize = 100;

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or("truncated")?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn uint(&mut self, n: usize) -> Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn str(&mut self, len: usize) -> Result<String, String> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string that is not UTF-8".to_string())
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        let marker = self.take(1)?[0];
        Ok(match marker {
            0x00..=0x7f => Value::Int(i64::from(marker)),
            0x80..=0x8f => Value::Map(self.map(usize::from(marker & 0x0f), depth)?),
            0x90..=0x9f => Value::List(self.list(usize::from(marker & 0x0f), depth)?),
            0xa0..=0xbf => Value::Str(self.str(usize::from(marker & 0x1f))?),
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xca => Value::Float(f64::from(f32::from_bits(self.uint(4)? as u32))),
            0xcb => Value::Float(f64::from_bits(self.uint(8)?)),
            0xcc => Value::Int(self.uint(1)? as i64),
            0xcd => Value::Int(self.uint(2)? as i64),
            0xce => Value::Int(self.uint(4)? as i64),
            0xcf => {
                let u = self.uint(8)?;
                i64::try_from(u).map_or_else(|_| Value::BigInt(u.to_string()), Value::Int)
            }
            0xd0 => Value::Int(i64::from(self.uint(1)? as u8 as i8)),
            0xd1 => Value::Int(i64::from(self.uint(2)? as u16 as i16)),
            0xd2 => Value::Int(i64::from(self.uint(4)? as u32 as i32)),
            0xd3 => Value::Int(self.uint(8)? as i64),
            0xd9 => {
                let len = self.uint(1)? as usize;
                Value::Str(self.str(len)?)
            }
            0xda => {
                let len = self.uint(2)? as usize;
                Value::Str(self.str(len)?)
            }
            0xdb => {
                let len = self.uint(4)? as usize;
                Value::Str(self.str(len)?)
            }
            0xdc => {
                let len = self.uint(2)? as usize;
                Value::List(self.list(len, depth)?)
            }
            0xdd => {
                let len = self.uint(4)? as usize;
                Value::List(self.list(len, depth)?)
            }
            0xde => {
                let len = self.uint(2)? as usize;
                Value::Map(self.map(len, depth)?)
            }
            0xdf => {
                let len = self.uint(4)? as usize;
                Value::Map(self.map(len, depth)?)
            }
            0xc7 => {
                let len = self.uint(1)? as usize;
                let code = self.take(1)?[0];
                let data = self.take(len)?;
                if code != 1 || len != 12 || data[8..] != i32::MIN.to_be_bytes() {
                    return Err(format!("extension type {code}"));
                }
                let mut us = [0u8; 8];
                us.copy_from_slice(&data[..8]);
                Value::Time(i64::from_be_bytes(us))
            }
            0xe0..=0xff => Value::Int(i64::from(marker as i8)),
            other => return Err(format!("msgpack type 0x{other:02x}")),
        })
    }

    fn list(&mut self, len: usize, depth: usize) -> Result<Vec<Value>, String> {
        let mut items = Vec::with_capacity(len.min(1024));
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Ok(items)
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Map, String> {
        let mut map = Map::with_capacity(len.min(1024));
        for _ in 0..len {
            let Value::Str(key) = self.value(depth + 1)? else {
                return Err("a map key that is not a str".into());
            };
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Ok(map)
    }
}

/// The one msgpack value after a format-4 prefix of `kind`.
fn body(data: &[u8], kind: u8) -> Result<Vec<Value>, String> {
    if data.len() < PREFIX || data[0] != FORMAT || data[PREFIX - 1] != kind {
        return Err("not a format-4 record of the expected kind".into());
    }
    let mut reader = Reader {
        data: &data[PREFIX..],
        at: 0,
    };
    let value = reader.value(0)?;
    if reader.at != reader.data.len() {
        return Err("bytes after the value".into());
    }
    match value {
        Value::List(items) => Ok(items),
        _ => Err("not an array".into()),
    }
}

fn map(value: Value) -> Result<Map, String> {
    match value {
        Value::Map(map) => Ok(map),
        _ => Err("not a map".into()),
    }
}

fn text(value: Value) -> Result<String, String> {
    match value {
        Value::Str(s) => Ok(s),
        _ => Err("not a str".into()),
    }
}

fn int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Int(i) => Ok(*i),
        _ => Err("not an int".into()),
    }
}

/// A state with its tasks (`[[name, directives], ...]`) and no instances yet.
fn with_tasks(tasks: Value) -> Result<SessionState, String> {
    let Value::List(tasks) = tasks else {
        return Err("tasks are not an array".into());
    };
    let mut configuration = Map::new();
    for task in tasks {
        let Value::List(pair) = task else {
            return Err("a task is not an array".into());
        };
        let [name, directives]: [Value; 2] = pair.try_into().map_err(|_| "a task pair")?;
        configuration.insert(text(name)?, directives);
    }
    let configs = build_task_configs(&configuration).map_err(|_| "a task config".to_string())?;
    let mut state = SessionState::default();
    for config in configs {
        state.tasks.insert(config.name.clone(), config);
    }
    Ok(state)
}

/// An instance from its seven columns `[name, task, status, kwargs, metadata, abandon, timestamps]`
/// (`read_instance`: the timestamps go back into the metadata, last).
fn add_instance(state: &mut SessionState, row: Vec<Value>) -> Result<(), String> {
    let [name, task, status, kwargs, meta, abandon, stamps]: [Value; 7] =
        row.try_into().map_err(|_| "an instance row of 7 columns")?;
    let (name, task) = (text(name)?, text(task)?);
    let config = state
        .tasks
        .get(task.as_str())
        .cloned()
        .ok_or("an unknown task")?;
    let status = Status::parse(&text(status)?).ok_or("an unknown status")?;
    let mut metadata = map(meta)?;
    match stamps {
        Value::Null => {}
        Value::Map(stamps) => {
            let mut times = Map::with_capacity(stamps.len());
            for (key, us) in stamps {
                times.insert(key, Value::Time(int(&us)?));
            }
            metadata.insert(META_TIMESTAMPS, Value::Map(times));
        }
        _ => return Err("timestamps".into()),
    }
    let Value::List(abandon) = abandon else {
        return Err("abandon state".into());
    };
    let abandon_state = abandon
        .into_iter()
        .map(text)
        .collect::<Result<Names, _>>()?;
    if state.instances.contains_key(name.as_str()) {
        return Err("an instance twice".into());
    }
    state.add(Instance {
        name: name.into(),
        config: Arc::clone(&config),
        status,
        metadata: Arc::new(metadata),
        kwargs: Arc::new(map(kwargs)?),
        abandon_state,
    });
    Ok(())
}

/// A whole session (format 4, kind `S`).
pub fn read_whole(data: &[u8]) -> Result<SessionState, String> {
    let [tasks, instances, latest, metadata]: [Value; 4] = body(data, KIND_WHOLE)?
        .try_into()
        .map_err(|_| "a whole session of 4 elements")?;
    let mut state = with_tasks(tasks)?;
    let Value::List(instances) = instances else {
        return Err("instances are not an array".into());
    };
    for row in instances {
        let Value::List(row) = row else {
            return Err("an instance is not an array".into());
        };
        add_instance(&mut state, row)?;
    }
    state.latest_kwargs = map(latest)?;
    state.metadata = map(metadata)?;
    state.changed.clear();
    Ok(state)
}

/// A session from its header part and instance parts (`assemble`): `(state, applied offset)`.
pub fn read_parts(header: &[u8], instances: &[&[u8]]) -> Result<(SessionState, i64), String> {
    let [applied, count, tasks, latest, metadata]: [Value; 5] = body(header, KIND_HEADER)?
        .try_into()
        .map_err(|_| "a header of 5 elements")?;
    let (applied, count) = (int(&applied)?, int(&count)?);
    let mut state = with_tasks(tasks)?;
    let mut rows = Vec::with_capacity(instances.len());
    for data in instances {
        let mut row = body(data, KIND_INSTANCE)?;
        if row.len() != 9 {
            return Err("an instance part of 9 elements".into());
        }
        let seq = int(&row[1])?;
        rows.push((seq, row.split_off(2)));
    }
    rows.sort_by_key(|(seq, _)| *seq);
    if usize::try_from(count).ok() != Some(rows.len()) {
        return Err("incomplete session".into());
    }
    for (_, row) in rows {
        add_instance(&mut state, row)?;
    }
    state.latest_kwargs = map(latest)?;
    state.metadata = map(metadata)?;
    state.changed.clear();
    Ok((state, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stateformat::pack_value;

    #[test]
    fn values_read_back_as_packed() {
        let mut map = Map::new();
        map.insert("é", Value::Time(-1));
        map.insert("big", Value::BigInt("18446744073709551615".into()));
        let mut values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Float(-0.5),
            Value::Map(map),
        ];
        values
            .extend([0, 127, 128, 65536, 1 << 40, -1, -33, -129, -40000, i64::MIN].map(Value::Int));
        values.push(Value::Str("x".repeat(300)));
        values.push(Value::List(vec![Value::Null; 20]));
        for value in values {
            let mut out = Vec::new();
            pack_value(&mut out, &value);
            let mut reader = Reader { data: &out, at: 0 };
            assert_eq!(reader.value(0).as_ref(), Ok(&value));
            assert_eq!(reader.at, out.len());
            for end in 0..out.len() {
                let mut short = Reader {
                    data: &out[..end],
                    at: 0,
                };
                assert!(short.value(0).is_err());
            }
        }
    }
}
