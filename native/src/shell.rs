//! The worker's shell around the rules: what `StreamWorker._apply`, the trigger manager's
//! work stack, the worker's runners (`noop` inline, everything else to `task-runs`), the
//! `finalizing` manager's rule and `OutputSink` do for one input, in the same order.

use std::collections::HashMap;

use crate::avro::{current, decode, Writer};
use crate::errors::{unsupported, Refusal, Rejection};
use crate::inputs::{input_from_record, Configs, MAX_US, MIN_US};
use crate::state::{Instance, SessionState, Status};
use crate::stateformat::PackedTasks;
use crate::transition::{step, Effect, Input, META_TIMESTAMPS};
use crate::value::{dumps, py_repr, Map, Style, Value};

pub const SESSION_FINALIZED: &str = "sessionFinalized";

/// Which built-in manager's rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Default,
    /// Fires `sessionFinalized` once every task is resolved.
    Finalizing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    TaskRuns,
    /// An `InstanceStatusChanged` record announcing this status (the worker counts them).
    TaskResults(Status),
    Sessions,
}

/// One output record: its topic and value (the key is the input's key).
pub type Output = (Topic, Vec<u8>);

/// What became of one input.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Applied {
        type_name: &'static str,
        outputs: Vec<Output>,
        /// The input's `produced_at` (µs), for the worker's latency histogram.
        at: i64,
    },
    /// Its offset was applied to the session before (a re-delivery).
    Skipped { type_name: &'static str },
    /// Dead-letter it with this reason.
    Dead(Rejection),
    /// The Python engine must apply it (the reason says what this core lacks).
    Python(String),
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub state: SessionState,
    pub applied_offset: i64,
    /// Stored as parts (format 4 header + instances); else whole, or not stored yet.
    pub in_parts: bool,
    /// Its task configurations as last packed (every state record repeats them).
    pub packed_tasks: PackedTasks,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            state: SessionState::default(),
            applied_offset: -1,
            in_parts: false,
            packed_tasks: PackedTasks::default(),
        }
    }
}

/// Whether applying `input` could end in `Unsupported` after changing the state: only
/// through a `task-runs` record whose depth or cooldown the core does not model (a user
/// may put anything in metadata), or a retry cooldown beyond a datetime.
fn needs_snapshot(state: &SessionState, input: &Input) -> bool {
    let touches = |metadata: &Option<Map>| {
        metadata
            .as_ref()
            .is_some_and(|m| m.contains_key("depth") || m.contains_key("cooldown"))
    };
    let risky_input = match input {
        Input::StatusUpdated { metadata, .. } | Input::StatusReported { metadata, .. } => {
            touches(metadata)
        }
        Input::Retry {
            metadata, cooldown, ..
        } => touches(metadata) || cooldown.is_some_and(|c| !(c.is_finite() && c.abs() < 1e9)),
        Input::MetadataUpdated { metadata, .. } => {
            metadata.contains_key("depth") || metadata.contains_key("cooldown")
        }
        _ => false,
    };
    risky_input || state.unmodelled > 0
}

pub struct Core {
    pub manager: Manager,
    pub manager_key: String,
    pub sessions: HashMap<String, Entry>,
    configs: Configs,
}

/// The envelope of one input's outputs.
struct Sink<'a> {
    uid: &'a str,
    cause_id: &'a str,
    cause_at: i64,
    id_prefix: String,
    now_us: i64,
    outputs: Vec<Output>,
}

impl Sink<'_> {
    fn envelope(&self, type_name: &str) -> Writer {
        let mut writer = Writer::new(current(type_name).expect("an output schema"));
        writer
            .str(&format!("{}:{}", self.id_prefix, self.outputs.len()))
            .str(self.uid)
            .long(self.now_us)
            .str(self.cause_id)
            .long(self.cause_at);
        writer
    }

    fn effects(&mut self, effects: &[Effect]) -> Result<(), Refusal> {
        for effect in effects {
            match effect {
                Effect::Changed { instance, previous }
                    if instance.status.is_published() && Some(instance.status) != *previous =>
                {
                    let metadata = metadata_json(&instance.metadata)?;
                    let mut writer = self.envelope("InstanceStatusChanged");
                    writer
                        .str(&instance.name)
                        .str(&instance.config.name)
                        .str(instance.status.as_str())
                        .opt_str(previous.map(Status::as_str))
                        .str(&metadata);
                    self.outputs
                        .push((Topic::TaskResults(instance.status), writer.finish()));
                }
                Effect::Fired { trigger } if trigger == SESSION_FINALIZED => {
                    let mut writer = self.envelope("SessionFinalized");
                    writer.str("{}");
                    self.outputs.push((Topic::Sessions, writer.finish()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn task_run(&mut self, instance: &Instance, manager_key: &str, at: i64) -> Result<(), Refusal> {
        let config = &instance.config;
        let kwargs = if config.with_params().is_empty() {
            (*instance.kwargs).clone()
        } else {
            merge(config.with_params(), &instance.kwargs)
        };
        let kwargs_json = dumps(&Value::Map(kwargs), Style::Jsonx).map_err(unsupported)?;
        let depth = match instance.metadata.get("depth") {
            None => 0,
            Some(Value::Int(depth)) => *depth,
            Some(other) => return Err(unsupported(format!("a {} depth", other.type_name()))),
        };
        let not_before = match instance.metadata.get("cooldown") {
            Some(cooldown) if cooldown.truthy() => {
                let seconds = match cooldown {
                    Value::Int(i) => *i as f64,
                    Value::Float(f) => *f,
                    Value::Bool(_) => 1.0,
                    other => return Err(unsupported(format!("a {} cooldown", other.type_name()))),
                };
                let us = (seconds * 1e6).round_ties_even();
                let not_before = at as f64 + us;
                if !us.is_finite() || !(MIN_US as f64..=MAX_US as f64).contains(&not_before) {
                    return Err(unsupported("a cooldown beyond the datetime range"));
                }
                at + us as i64
            }
            _ => 0,
        };
        let mut writer = self.envelope("TaskRunRequested");
        writer
            .str(&instance.name)
            .str(&config.name)
            .str(&config.run)
            .str(config.using.as_deref().unwrap_or("kafka"))
            .str(manager_key)
            .str(&kwargs_json)
            .long(depth)
            .long(not_before);
        self.outputs.push((Topic::TaskRuns, writer.finish()));
        Ok(())
    }
}

/// `merge_dict_recursive(with_params, kwargs)`: nested mappings merge, the rest is replaced.
fn merge(first: &Map, second: &Map) -> Map {
    let mut merged = first.clone();
    for (key, value) in second {
        match (merged.get(key), value) {
            (Some(Value::Map(before)), Value::Map(more)) => {
                let inner = merge(before, more);
                merged.insert(key.clone(), Value::Map(inner));
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    merged
}

/// The output's `metadata_json`: metadata less the timestamps, plain ASCII JSON if it can
/// be, else jsonx (as `_metadata_json` in stream/session.py).
fn metadata_json(metadata: &Map) -> Result<String, Refusal> {
    let shown: Map = metadata
        .iter()
        .filter(|(k, _)| *k != META_TIMESTAMPS)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let shown = Value::Map(shown);
    dumps(&shown, Style::PlainAscii).or_else(|_| dumps(&shown, Style::Jsonx).map_err(unsupported))
}

enum Work {
    Input(Input),
    PostFire(String),
    /// The finalizing manager's `_post_resolve`: an input resolved instances without a fire.
    PostResolve,
}

impl Core {
    pub fn new(manager: Manager, manager_key: &str) -> Core {
        Core {
            manager,
            manager_key: manager_key.to_string(),
            sessions: HashMap::new(),
            configs: Configs::default(),
        }
    }

    /// Hold `uid`'s state as the store has it (loaded, not changed since); its task count.
    pub fn hold(
        &mut self,
        uid: String,
        state: SessionState,
        applied_offset: i64,
        in_parts: bool,
    ) -> usize {
        let tasks = state.tasks.len();
        self.sessions.insert(
            uid,
            Entry {
                state,
                applied_offset,
                in_parts,
                packed_tasks: PackedTasks::default(),
            },
        );
        tasks
    }

    /// Apply one `events` record (as `StreamWorker._apply`); outputs are ids `<partition>:<offset>:<n>`.
    pub fn apply(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        now_us: i64,
    ) -> Outcome {
        let Some(key) = key else {
            return Outcome::Dead(Rejection::new(
                "missing_key",
                "events records must be keyed by session UID",
            ));
        };
        let uid = match std::str::from_utf8(key) {
            Ok(uid) => uid,
            Err(error) => {
                return Outcome::Dead(Rejection::new("undecodable", utf8_message(key, &error)))
            }
        };
        let record = match decode(value.unwrap_or_default()) {
            Ok(record) => record,
            Err(rejection) => return Outcome::Dead(rejection),
        };
        let session_uid = record.get("session_uid").and_then(|f| f.as_str());
        if session_uid != Some(uid) {
            let shown = session_uid.map_or("None".to_string(), py_repr);
            return Outcome::Dead(Rejection::new(
                "key_mismatch",
                format!(
                    "record session_uid {shown} differs from key {}",
                    py_repr(uid)
                ),
            ));
        }
        let type_name = record.type_name;
        let applied_offset = self.sessions.get(uid).map_or(-1, |e| e.applied_offset);
        if offset <= applied_offset {
            return Outcome::Skipped { type_name };
        }
        let (input, at) = match input_from_record(&record, &mut self.configs) {
            Ok(pair) => pair,
            Err(refusal) => return refused(refusal),
        };
        let Core {
            manager,
            manager_key,
            sessions,
            ..
        } = self;
        let known = sessions.contains_key(uid);
        if !known {
            sessions.insert(uid.to_string(), Entry::new());
        }
        let Some(entry) = sessions.get_mut(uid) else {
            return Outcome::Python("session entry vanished".into());
        };
        // Work on the state in place; a copy is kept only when the input could be handed
        // back to Python after a change (see `needs_snapshot`).  Refusals come before changes.
        let snapshot = needs_snapshot(&entry.state, &input).then(|| entry.state.clone());
        let mut sink = Sink {
            uid,
            cause_id: record.str("event_id").unwrap_or_default(),
            cause_at: at,
            id_prefix: format!("{partition}:{offset}"),
            now_us,
            outputs: Vec::new(),
        };
        let rules = Rules {
            manager: *manager,
            manager_key,
        };
        if let Err(refusal) = rules.submit(&mut entry.state, input, at, &mut sink) {
            if let Some(before) = snapshot {
                entry.state = before;
            }
            if !known {
                sessions.remove(uid);
            }
            return refused(refusal);
        }
        entry.applied_offset = offset;
        let outputs = sink.outputs;
        Outcome::Applied {
            type_name,
            outputs,
            at,
        }
    }
}

/// The manager's side of applying an input: its follow-ups, runners and hook.
struct Rules<'a> {
    manager: Manager,
    manager_key: &'a str,
}

impl Rules<'_> {
    /// Apply one input and everything that follows from it, depth first (`TriggerManager.submit`).
    fn submit(
        &self,
        state: &mut SessionState,
        input: Input,
        at: i64,
        sink: &mut Sink,
    ) -> Result<(), Refusal> {
        let mut stack: Vec<Work> = self.apply_one(state, &input, at, sink)?;
        stack.reverse();
        while let Some(item) = stack.pop() {
            match item {
                Work::Input(input) => {
                    let mut more = self.apply_one(state, &input, at, sink)?;
                    more.reverse();
                    stack.extend(more);
                }
                Work::PostFire(_) | Work::PostResolve => {
                    let after_finalized =
                        matches!(&item, Work::PostFire(t) if t == SESSION_FINALIZED);
                    if !after_finalized && ready_to_finalize(state) {
                        let fire = Input::Fire {
                            trigger: SESSION_FINALIZED.into(),
                            kwargs: Map::new(),
                        };
                        self.submit(state, fire, at, sink)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// One transition and its immediate consequences (`TriggerManager._apply`).
    fn apply_one(
        &self,
        state: &mut SessionState,
        input: &Input,
        at: i64,
        sink: &mut Sink,
    ) -> Result<Vec<Work>, Refusal> {
        let effects = step(state, input, at)?;
        sink.effects(&effects)?;
        let mut work = Vec::new();
        let mut inline = Vec::new();
        let post_resolve = self.manager == Manager::Finalizing
            && effects.iter().any(|e| {
                matches!(e, Effect::Changed { instance, previous }
                    if instance.status.is_resolved() && !previous.is_some_and(Status::is_resolved))
            })
            && !effects
                .iter()
                .any(|e| matches!(e, Effect::Fired { .. } | Effect::Cascade { .. }));
        for effect in effects {
            match effect {
                Effect::Run(instance) => {
                    if instance.config.using.as_deref() == Some("noop") {
                        // The noop runner finishes it at once, after this input's cascades.
                        let mut metadata = Map::new();
                        metadata.insert("result", Value::Map(Map::new()));
                        metadata.insert("logLevel", Value::Int(0));
                        inline.push(Work::Input(Input::StatusReported {
                            instance: instance.name.to_string(),
                            status: Status::Finished,
                            metadata: Some(metadata),
                            result: Some(Map::new()),
                        }));
                    } else {
                        sink.task_run(&instance, self.manager_key, at)?;
                    }
                }
                Effect::Cascade { trigger, kwargs } => {
                    work.push(Work::Input(Input::Fire { trigger, kwargs }))
                }
                Effect::Fired { trigger } if self.manager == Manager::Finalizing => {
                    work.push(Work::PostFire(trigger))
                }
                _ => {}
            }
        }
        if post_resolve {
            work.push(Work::PostResolve);
        }
        work.extend(inline);
        Ok(work)
    }
}

/// The finalizing manager's rule: not finalized yet, and every unresolved task waits for it.
fn ready_to_finalize(state: &SessionState) -> bool {
    !state.latest_kwargs.contains_key(SESSION_FINALIZED)
        && state
            .unresolved_tasks()
            .all(|config| config.after.contains(SESSION_FINALIZED))
}

fn refused(refusal: Refusal) -> Outcome {
    match refusal {
        Refusal::Rejected(rejection) => Outcome::Dead(rejection),
        Refusal::Unsupported(why) => Outcome::Python(why),
    }
}

/// Python's `UnicodeDecodeError` text for a key that is not UTF-8.
fn utf8_message(key: &[u8], error: &std::str::Utf8Error) -> String {
    let at = error.valid_up_to();
    let byte = key.get(at).copied().unwrap_or_default();
    match error.error_len() {
        None => format!(
            "'utf-8' codec can't decode byte 0x{byte:02x} in position {at}: unexpected end of data"
        ),
        Some(_) if (0xc2..=0xf4).contains(&byte) => {
            format!("'utf-8' codec can't decode byte 0x{byte:02x} in position {at}: invalid continuation byte")
        }
        Some(_) => format!(
            "'utf-8' codec can't decode byte 0x{byte:02x} in position {at}: invalid start byte"
        ),
    }
}
