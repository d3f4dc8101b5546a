//! The session state format (format 4, docs/state-format.md) written in Rust: the bytes
//! `events/state_format.py` and `events/state_parts.py` write for the same state, so the
//! checkpoint stores a native session's changed parts without building a Python state.
//!
//! MessagePack as `msgpack.packb(value, strict_types=True, datetime=False)` packs the
//! values a session holds: the shortest int family, float64, str8/16/32, fixarray /
//! array16 / array32, fixmap / map16 / map32, and a naive datetime as extension type 1
//! (`>qi`: microseconds, the naive marker).  The differential tests in `tests/native`
//! compare these bytes with the Python encoder's, part by part.

use std::sync::Arc;

use crate::avro::{current, Writer};
use crate::config::TaskConfig;
use crate::shell::Entry;
use crate::state::{Instance, SessionState};
use crate::transition::META_TIMESTAMPS;
use crate::value::{Key, KeyMap, Map, Value};

pub const FORMAT: u8 = 4;
pub const KIND_WHOLE: u8 = b'S';
pub const KIND_HEADER: u8 = b'H';
pub const KIND_INSTANCE: u8 = b'I';
/// The part keys' separator (never in UTF-8) and kinds.
const SEPARATOR: u8 = 0xff;
/// RocksDB key prefixes of `stream/store.py`: committed parts and whole sessions.
pub const STORE_PART: &[u8] = b"p:";
pub const STORE_WHOLE: &[u8] = b"s:";
const EXT_DATETIME: i8 = 1;
const NAIVE: i32 = i32::MIN;

// -- MessagePack ------------------------------------------------------------------------

pub fn pack_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        pack_uint(out, i as u64);
    } else if i >= -32 {
        out.push(i as u8);
    } else if i >= -128 {
        out.push(0xd0);
        out.push(i as i8 as u8);
    } else if i >= -32768 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= -(1 << 31) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn pack_uint(out: &mut Vec<u8>, u: u64) {
    if u < 128 {
        out.push(u as u8);
    } else if u < 256 {
        out.push(0xcc);
        out.push(u as u8);
    } else if u < 65536 {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u < 1 << 32 {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

fn pack_len(out: &mut Vec<u8>, len: usize, fix: u8, fix_max: usize, family16: u8) {
    if len < fix_max {
        out.push(fix | len as u8);
    } else if len < 65536 {
        out.push(family16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(family16 + 1);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

pub fn array_header(out: &mut Vec<u8>, len: usize) {
    pack_len(out, len, 0x90, 16, 0xdc);
}

fn map_header(out: &mut Vec<u8>, len: usize) {
    pack_len(out, len, 0x80, 16, 0xde);
}

pub fn pack_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len < 256 {
        out.push(0xd9);
        out.push(len as u8);
    } else if len < 65536 {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn pack_datetime(out: &mut Vec<u8>, us: i64) {
    out.extend_from_slice(&[0xc7, 12, EXT_DATETIME as u8]);
    out.extend_from_slice(&us.to_be_bytes());
    out.extend_from_slice(&NAIVE.to_be_bytes());
}

pub fn pack_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => pack_int(out, *i),
        // (Only integers that fit 64 unsigned bits are held: `value::parse`.)
        Value::BigInt(digits) => pack_uint(out, digits.parse().unwrap_or(u64::MAX)),
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::Str(s) => pack_str(out, s),
        Value::List(items) => {
            array_header(out, items.len());
            for item in items {
                pack_value(out, item);
            }
        }
        Value::Map(map) => pack_map(out, map),
        Value::Time(us) => pack_datetime(out, *us),
    }
}

pub fn pack_map(out: &mut Vec<u8>, map: &Map) {
    map_header(out, map.len());
    for (key, value) in map {
        pack_str(out, key);
        pack_value(out, value);
    }
}

// -- the pieces of a state ----------------------------------------------------------------

/// `[[name, directives], ...]` (`pack_tasks`: `TaskConfig.serialize()` per task).
///
/// (Packed afresh each time: a cache of the packed bytes per config cost more than it
/// saved on the preload workload, whose sessions each have their own configuration.)
pub fn pack_tasks(out: &mut Vec<u8>, tasks: &KeyMap<Arc<TaskConfig>>) {
    array_header(out, tasks.len());
    for (name, config) in tasks {
        out.push(0x92);
        pack_str(out, name);
        pack_directives(out, config);
    }
}

/// A session's packed task configurations, packed again only when they change: a session
/// changes its configuration rarely, and every state record written for it repeats them.
///
/// Held with the configurations it packed: while they stay the same (`Arc::ptr_eq`, and
/// held here, so no other configuration can take their place in memory), so do the bytes.
#[derive(Clone, Debug, Default)]
pub struct PackedTasks {
    configs: Vec<Arc<TaskConfig>>,
    bytes: Vec<u8>,
}

impl PackedTasks {
    /// `pack_tasks(tasks)`'s bytes (a map's keys are its configurations' names).
    pub fn of(&mut self, tasks: &KeyMap<Arc<TaskConfig>>) -> &[u8] {
        let same = !self.bytes.is_empty()
            && self.configs.len() == tasks.len()
            && self
                .configs
                .iter()
                .zip(tasks.values())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if !same {
            self.bytes.clear();
            pack_tasks(&mut self.bytes, tasks);
            self.configs = tasks.values().cloned().collect();
        }
        &self.bytes
    }
}

/// `TaskConfig.serialize()`: extras, then after (less andEvery), unless, andEvery, run, using, withParams.
fn pack_directives(out: &mut Vec<u8>, config: &TaskConfig) {
    map_header(out, config.extras().len() + 6);
    for (key, value) in config.extras() {
        pack_str(out, key);
        pack_value(out, value);
    }
    let every = config.and_every().map(Key::as_str);
    pack_str(out, "after");
    let after_len =
        config.after.len() - usize::from(every.is_some_and(|e| config.after.contains(e)));
    array_header(out, after_len);
    for trigger in config.after.iter().filter(|t| Some(t.as_str()) != every) {
        pack_str(out, trigger);
    }
    pack_str(out, "unless");
    array_header(out, config.unless.len());
    for trigger in &config.unless {
        pack_str(out, trigger);
    }
    pack_str(out, "andEvery");
    pack_opt_str(out, every);
    pack_str(out, "run");
    pack_str(out, &config.run);
    pack_str(out, "using");
    pack_opt_str(out, config.using.as_deref());
    pack_str(out, "withParams");
    pack_map(out, config.with_params());
}

fn pack_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => pack_str(out, s),
        None => out.push(0xc0),
    }
}

/// The seven columns of an instance row after its array header:
/// `name, task, status, kwargs, metadata, abandon_state, timestamps` (`_instance_row`).
fn pack_row_columns(out: &mut Vec<u8>, instance: &Instance) {
    pack_str(out, &instance.name);
    pack_str(out, &instance.config.name);
    pack_str(out, instance.status.as_str());
    pack_map(out, &instance.kwargs);
    let metadata = &instance.metadata;
    let stamps = match metadata.get(META_TIMESTAMPS) {
        Some(Value::Map(stamps)) if stamps.values().all(|v| matches!(v, Value::Time(_))) => {
            Some(stamps)
        }
        _ => None,
    };
    match stamps {
        Some(_) => {
            map_header(out, metadata.len() - 1);
            for (key, value) in metadata.iter().filter(|(k, _)| *k != META_TIMESTAMPS) {
                pack_str(out, key);
                pack_value(out, value);
            }
        }
        None => pack_map(out, metadata),
    }
    array_header(out, instance.abandon_state.len());
    for trigger in &instance.abandon_state {
        pack_str(out, trigger);
    }
    match stamps {
        Some(stamps) => {
            map_header(out, stamps.len());
            for (key, value) in stamps {
                pack_str(out, key);
                if let Value::Time(us) = value {
                    pack_int(out, *us);
                }
            }
        }
        None => out.push(0xc0),
    }
}

/// The first ten bytes of a value: format, owner epoch (big-endian), kind.
fn prefix(epoch: i64, kind: u8, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(FORMAT);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(kind);
    out
}

/// A whole session (`encode_state`): `[tasks, instances, latest_kwargs, metadata]`, with
/// `tasks` packed (`pack_tasks`).
pub fn encode_whole(state: &SessionState, tasks: &[u8], epoch: i64) -> Vec<u8> {
    let mut out = prefix(epoch, KIND_WHOLE, 512 + 256 * state.instances.len());
    out.push(0x94);
    out.extend_from_slice(tasks);
    array_header(&mut out, state.instances.len());
    for instance in state.instances.values() {
        out.push(0x97);
        pack_row_columns(&mut out, instance);
    }
    pack_map(&mut out, &state.latest_kwargs);
    pack_map(&mut out, &state.metadata);
    out
}

/// A header part (`encode_header`): `[applied_offset, instance_count, tasks, latest_kwargs,
/// metadata]`, with `tasks` packed.
pub fn encode_header(
    state: &SessionState,
    tasks: &[u8],
    applied_offset: i64,
    epoch: i64,
) -> Vec<u8> {
    let mut out = prefix(epoch, KIND_HEADER, 512);
    out.push(0x95);
    pack_int(&mut out, applied_offset);
    pack_int(&mut out, state.instances.len() as i64);
    out.extend_from_slice(tasks);
    pack_map(&mut out, &state.latest_kwargs);
    pack_map(&mut out, &state.metadata);
    out
}

/// An instance part (`encode_instance`): `[applied_offset, seq, <the instance row's seven columns>]`.
pub fn encode_instance(
    instance: &Instance,
    seq: usize,
    applied_offset: i64,
    epoch: i64,
) -> Vec<u8> {
    let mut out = prefix(epoch, KIND_INSTANCE, 256);
    out.push(0x99);
    pack_int(&mut out, applied_offset);
    pack_int(&mut out, seq as i64);
    pack_row_columns(&mut out, instance);
    out
}

pub fn header_key(uid: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(uid.len() + 2);
    key.extend_from_slice(uid.as_bytes());
    key.extend_from_slice(&[SEPARATOR, b'h']);
    key
}

pub fn instance_key(uid: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(uid.len() + name.len() + 2);
    key.extend_from_slice(uid.as_bytes());
    key.extend_from_slice(&[SEPARATOR, b'i']);
    key.extend_from_slice(name.as_bytes());
    key
}

// -- one batch's rows -----------------------------------------------------------------------

/// A row: a key and a value, or None to delete (RocksDB) / tombstone (changelog).
pub type Row = (Vec<u8>, Option<Vec<u8>>);

/// What the checkpoint writes for one changed session.
#[derive(Debug, Default, PartialEq)]
pub struct SessionRows {
    /// `(changelog key, state value)` in the order they are produced: changed instance
    /// parts by position, then the header; or the one whole-session record.
    pub parts: Vec<Row>,
    /// Written as one whole-session record.
    pub whole: bool,
}

/// The rows of a changed session (`Checkpoint.commit` step 2 for one session): one
/// whole-session record while it is small and was never in parts (at most
/// `whole_limit` bytes), else its changed instance parts and the header, last.  The
/// session's changed set is emptied and it counts as stored in parts from then on
/// (the caller writes these rows before the next batch, or drops the session).
pub fn session_rows(uid: &str, entry: &mut Entry, epoch: i64, whole_limit: usize) -> SessionRows {
    let applied = entry.applied_offset;
    let state = &mut entry.state;
    let tasks = entry.packed_tasks.of(&state.tasks);
    if !entry.in_parts {
        let whole = encode_whole(state, tasks, epoch);
        state.changed.clear();
        if whole.len() <= whole_limit {
            return SessionRows {
                parts: vec![(uid.as_bytes().to_vec(), Some(whole))],
                whole: true,
            };
        }
        // In parts from now on: every instance is written (the upgrade).
        state.changed.extend(0..state.instances.len());
        entry.in_parts = true;
    }
    let changed = std::mem::take(&mut state.changed);
    let mut parts = Vec::with_capacity(changed.len() + 1);
    for seq in changed.iter() {
        if let Some((name, instance)) = state.instances.get_index(seq) {
            parts.push((
                instance_key(uid, name),
                Some(encode_instance(instance, seq, applied, epoch)),
            ));
        }
    }
    parts.push((
        header_key(uid),
        Some(encode_header(state, tasks, applied, epoch)),
    ));
    SessionRows {
        parts,
        whole: false,
    }
}

/// The RocksDB rows for a session's changelog rows (`p:` + key; `s:` + uid for a whole
/// record, its applied offset first; a session going to parts loses its `s:` value).
pub fn store_rows(
    uid: &str,
    rows: &SessionRows,
    applied_offset: i64,
    was_in_parts: bool,
) -> Vec<Row> {
    let whole_key = [STORE_WHOLE, uid.as_bytes()].concat();
    if rows.whole {
        let value = rows.parts[0].1.as_deref().unwrap_or_default();
        return vec![(
            whole_key,
            Some([&applied_offset.to_be_bytes()[..], value].concat()),
        )];
    }
    let mut out = Vec::with_capacity(rows.parts.len() + 1);
    if !was_in_parts {
        out.push((whole_key, None));
    }
    out.extend(
        rows.parts
            .iter()
            .map(|(key, value)| ([STORE_PART, key].concat(), value.clone())),
    );
    out
}

/// A changelog record's value: the `SessionSnapshot` envelope around a state value.
pub fn snapshot(
    uid: &str,
    produced_at: i64,
    state: &[u8],
    partition: i32,
    applied_offset: i64,
) -> Vec<u8> {
    let mut writer = Writer::new(current("SessionSnapshot").expect("the SessionSnapshot schema"));
    writer
        .str(uid)
        .long(produced_at)
        .bytes(state)
        .long(i64::from(partition))
        .long(applied_offset);
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        pack_value(&mut out, value);
        out
    }

    #[test]
    fn ints_take_the_shortest_family() {
        for (i, first) in [
            (127, 0x7f),
            (128, 0xcc),
            (256, 0xcd),
            (65536, 0xce),
            (1 << 32, 0xcf),
            (-32, 0xe0),
            (-33, 0xd0),
            (-129, 0xd1),
            (-32769, 0xd2),
            (-(1 << 31) - 1, 0xd3),
        ] {
            assert_eq!(packed(&Value::Int(i))[0], first, "{i}");
        }
        assert_eq!(
            packed(&Value::BigInt("18446744073709551615".into()))[0],
            0xcf
        );
    }

    #[test]
    fn strings_and_containers() {
        assert_eq!(packed(&Value::Str("a".repeat(31)))[0], 0xbf);
        assert_eq!(packed(&Value::Str("a".repeat(32)))[..2], [0xd9, 32]);
        assert_eq!(
            packed(&Value::List(vec![Value::Null; 16]))[..3],
            [0xdc, 0, 16]
        );
        assert_eq!(
            packed(&Value::Float(1.5)),
            [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(packed(&Value::Time(0))[..3], [0xc7, 12, 1]);
    }

    fn tasks(json: &str) -> KeyMap<Arc<TaskConfig>> {
        let Ok(Value::Map(configuration)) = crate::value::parse(json) else {
            panic!("not a mapping: {json}");
        };
        let mut tasks = KeyMap::default();
        for config in crate::config::build_task_configs(&configuration).expect("valid") {
            tasks.insert(config.name.clone(), config);
        }
        tasks
    }

    fn fresh(tasks: &KeyMap<Arc<TaskConfig>>) -> Vec<u8> {
        let mut out = Vec::new();
        pack_tasks(&mut out, tasks);
        out
    }

    #[test]
    fn packed_tasks_are_packed_again_when_the_configurations_change() {
        let mut cache = PackedTasks::default();
        let none = KeyMap::default();
        assert_eq!(cache.of(&none), [0x90]);
        let first = tasks(r#"{"t": {"after": ["a"], "run": "x"}}"#);
        assert_eq!(cache.of(&first), fresh(&first));
        let mut changed = first.clone();
        let other = tasks(r#"{"t": {"after": ["b"], "run": "x"}}"#);
        changed.insert("t", other.get("t").cloned().expect("t"));
        assert_eq!(cache.of(&changed), fresh(&changed));
        assert_ne!(fresh(&changed), fresh(&first));
        let mut more = changed.clone();
        let u = tasks(r#"{"u": {"after": ["t"], "run": "y"}}"#);
        more.insert("u", u.get("u").cloned().expect("u"));
        assert_eq!(cache.of(&more), fresh(&more));
        assert_eq!(cache.of(&changed), fresh(&changed));
        assert_eq!(cache.of(&none), [0x90]);
    }

    #[test]
    fn keys() {
        assert_eq!(header_key("s"), b"s\xffh");
        assert_eq!(instance_key("s", "t#0"), b"s\xffit#0");
    }
}
