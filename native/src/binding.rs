//! The Python face: one call per batch, bytes in, output records out; the GIL is released
//! while Rust works.  Nothing Python is kept inside Rust beyond a call.

use std::collections::{HashMap, HashSet};

use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use crate::avro::SCHEMAS;
use crate::pystate;
use crate::shell::{Core, Manager, Outcome, Topic, SESSION_FINALIZED};
use crate::value::{dumps, Map, Style, Value};
use crate::{stateformat, stateread};

/// The reason given for a session's inputs after one handed to Python in the same batch.
const AFTER_HANDED: &str = "after an input of its session handed to Python";

/// The worker's session states and rules for the partitions it owns.
#[pyclass(module = "stream_triggers_native")]
struct NativeCore {
    core: Core,
    /// The output topics' names, as the Python strings handed out with every output.
    topics: [Py<PyString>; 3],
    /// Record type names and statuses as Python strings, made once (not once per output).
    names: HashMap<&'static str, Py<PyString>>,
}

/// A record as the worker hands it over: the bytes are read in place, never copied
/// (extracting a `Vec<u8>` goes byte by byte through the sequence protocol).
type Input<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);
type RawInput<'py> = (
    i64,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
);

#[pymethods]
impl NativeCore {
    /// `manager` is "default" or "finalizing" (the built-in managers' rules).
    #[new]
    fn new(
        py: Python<'_>,
        manager: &str,
        task_runs: String,
        task_results: String,
        sessions: String,
    ) -> PyResult<NativeCore> {
        let kind = match manager {
            "default" => Manager::Default,
            "finalizing" => Manager::Finalizing,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "the native core runs the built-in managers only, not {other:?}"
                )))
            }
        };
        Ok(NativeCore {
            core: Core::new(kind, manager),
            topics: [task_runs, task_results, sessions].map(|t| PyString::new(py, &t).unbind()),
            names: HashMap::new(),
        })
    }

    /// Apply a batch of `(offset, key, value)` records of one partition, in order.
    ///
    /// Returns one tuple per record: `("applied", type_name, [(topic, value, status), ...], produced_at)`
    /// (`status`: the one an `InstanceStatusChanged` announces, else None),
    /// `("skipped", type_name)`, `("dead", reason, message)` or `("python", why)`.
    fn apply_batch<'py>(
        &mut self,
        py: Python<'py>,
        partition: i32,
        records: Vec<RawInput<'py>>,
        now_us: i64,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let core = &mut self.core;
        let records: Vec<Input> = records
            .iter()
            .map(|(offset, key, value)| {
                (
                    *offset,
                    key.as_ref().map(|k| k.as_bytes()),
                    value.as_ref().map(|v| v.as_bytes()),
                )
            })
            .collect();
        let outcomes: Vec<Outcome> = py.allow_threads(|| {
            // Once an input of a session is handed to Python, so are its later ones in the
            // batch: they must apply on top of it, and the Python engine applies it.
            let mut handed: HashSet<&[u8]> = HashSet::new();
            let mut outcomes = Vec::with_capacity(records.len());
            for &(offset, key, value) in &records {
                if key.is_some_and(|k| handed.contains(k)) {
                    outcomes.push(Outcome::Python(AFTER_HANDED.into()));
                    continue;
                }
                let outcome = core.apply(partition, offset, key, value, now_us);
                if let (Outcome::Python(_), Some(key)) = (&outcome, key) {
                    handed.insert(key);
                }
                outcomes.push(outcome);
            }
            outcomes
        });
        let NativeCore { topics, names, .. } = self;
        let mut name = |text: &'static str| -> Bound<'py, PyString> {
            names
                .entry(text)
                .or_insert_with(|| PyString::new(py, text).unbind())
                .bind(py)
                .clone()
        };
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Applied {
                    type_name,
                    outputs,
                    at,
                } => {
                    let records: Vec<Bound<'py, PyTuple>> = outputs
                        .iter()
                        .map(|(topic, value)| {
                            let (topic, status) = match topic {
                                Topic::TaskRuns => (&topics[0], None),
                                Topic::TaskResults(status) => {
                                    (&topics[1], Some(name(status.as_str())))
                                }
                                Topic::Sessions => (&topics[2], None),
                            };
                            (topic.bind(py), PyBytes::new(py, value), status).into_pyobject(py)
                        })
                        .collect::<PyResult<_>>()?;
                    (intern!(py, "applied"), name(type_name), records, at).into_pyobject(py)
                }
                Outcome::Skipped { type_name } => {
                    (intern!(py, "skipped"), name(type_name)).into_pyobject(py)
                }
                Outcome::Dead(rejection) => {
                    ("dead", rejection.reason, rejection.message).into_pyobject(py)
                }
                Outcome::Python(why) => ("python", why).into_pyobject(py),
            })
            .collect()
    }

    /// The session's state in the comparable JSON form (None for a session never applied).
    fn state_json(&self, uid: &str) -> Option<String> {
        let entry = self.core.sessions.get(uid)?;
        dumps(&timeless(entry.state.comparable()), Style::Jsonx).ok()
    }

    /// The offset of the last input applied to the session (-1 if none).
    fn applied_offset(&self, uid: &str) -> i64 {
        self.core.sessions.get(uid).map_or(-1, |e| e.applied_offset)
    }

    /// Forget every session (a rebalance took the partitions away).
    fn clear(&mut self) {
        self.core.sessions.clear();
    }

    /// Hold `uid`'s state, given as its parts (see `pystate`), replacing any held before;
    /// `in_parts`: the store holds it as format-4 parts (else whole, or nothing).
    ///
    /// Raises ValueError for a state the core does not model (the session then stays on
    /// the Python engine); nothing is held then.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (uid, applied_offset, tasks, instances, latest_kwargs, metadata, in_parts=false))]
    fn load<'py>(
        &mut self,
        py: Python<'py>,
        uid: String,
        applied_offset: i64,
        tasks: Vec<(String, Bound<'py, PyAny>)>,
        instances: Vec<pystate::InstanceRow<'py>>,
        latest_kwargs: Bound<'py, PyAny>,
        metadata: Bound<'py, PyAny>,
        in_parts: bool,
    ) -> PyResult<()> {
        let clock = pystate::Clock::new(py)?;
        let mut state = pystate::import(&clock, tasks, instances, &latest_kwargs, &metadata)?;
        state.changed.clear(); // (what the store holds: nothing to write)
        self.core.hold(uid, state, applied_offset, in_parts);
        Ok(())
    }

    /// The state records of these sessions' changes since they were last encoded, for
    /// the checkpoint: per session `(uid, store_rows, changelog_rows, task_count, finalized)`
    /// (`finalized`: it has fired `sessionFinalized`, which retention counts from), where
    /// `store_rows` are `(RocksDB key, value or None to delete)` and `changelog_rows`
    /// `(changelog key, SessionSnapshot value)`, in the order to write them.  The bytes
    /// are those `events/state_parts.py` / `state_format.py` write for the same state
    /// (a whole-session record while the session is at most `whole_limit` bytes and was
    /// never in parts, else its changed instance parts and the header, last).
    ///
    /// Afterwards the sessions count as written: the caller writes these rows, or drops
    /// the sessions (they reload from the store).  Uids the core does not hold are left out.
    fn encode<'py>(
        &mut self,
        py: Python<'py>,
        partition: i32,
        epoch: i64,
        produced_at: i64,
        whole_limit: usize,
        uids: Vec<String>,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        type Encoded = (
            String,
            Vec<stateformat::Row>,
            Vec<(Vec<u8>, Vec<u8>)>,
            usize,
            bool,
        );
        let sessions = &mut self.core.sessions;
        let encoded: Vec<Encoded> = py.allow_threads(|| {
            uids.into_iter()
                .filter_map(|uid| {
                    let entry = sessions.get_mut(&uid)?;
                    let was_in_parts = entry.in_parts;
                    let rows = stateformat::session_rows(&uid, entry, epoch, whole_limit);
                    let applied = entry.applied_offset;
                    let store = stateformat::store_rows(&uid, &rows, applied, was_in_parts);
                    let changelog = rows
                        .parts
                        .into_iter()
                        .map(|(key, value)| {
                            let state = value.unwrap_or_default();
                            let snapshot = stateformat::snapshot(
                                &uid,
                                produced_at,
                                &state,
                                partition,
                                applied,
                            );
                            (key, snapshot)
                        })
                        .collect();
                    let state = &entry.state;
                    let finalized = state.latest_kwargs.contains_key(SESSION_FINALIZED);
                    Some((uid, store, changelog, state.tasks.len(), finalized))
                })
                .collect()
        });
        encoded
            .into_iter()
            .map(|(uid, store, changelog, tasks, finalized)| {
                let store: Vec<(Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>)> = store
                    .iter()
                    .map(|(k, v)| {
                        (
                            PyBytes::new(py, k),
                            v.as_deref().map(|v| PyBytes::new(py, v)),
                        )
                    })
                    .collect();
                let changelog: Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> = changelog
                    .iter()
                    .map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v)))
                    .collect();
                (uid, store, changelog, tasks, finalized).into_pyobject(py)
            })
            .collect()
    }

    /// Hold `uid`'s state read from its stored whole-session value (format 4, kind `S`,
    /// without the store's offset prefix); returns its task count.  ValueError for what
    /// the core does not read (the caller then reads it the Python way).
    fn load_whole(&mut self, uid: String, applied_offset: i64, data: &[u8]) -> PyResult<usize> {
        let state = stateread::read_whole(data).map_err(PyValueError::new_err)?;
        Ok(self.core.hold(uid, state, applied_offset, false))
    }

    /// Hold `uid`'s state read from its stored header part and instance parts; returns
    /// `(applied_offset, task_count)`.  ValueError as for `load_whole`.
    fn load_parts(
        &mut self,
        uid: String,
        header: &[u8],
        instances: Vec<Bound<'_, PyBytes>>,
    ) -> PyResult<(i64, usize)> {
        let parts: Vec<&[u8]> = instances.iter().map(|i| i.as_bytes()).collect();
        let (state, applied_offset) =
            stateread::read_parts(header, &parts).map_err(PyValueError::new_err)?;
        Ok((
            applied_offset,
            self.core.hold(uid, state, applied_offset, true),
        ))
    }

    /// Whether the held session is stored in parts (None: not held).
    fn in_parts(&self, uid: &str) -> Option<bool> {
        self.core.sessions.get(uid).map(|e| e.in_parts)
    }

    /// The held session's task count (None: not held): the size bound's multiplier.
    fn task_count(&self, uid: &str) -> Option<usize> {
        self.core.sessions.get(uid).map(|e| e.state.tasks.len())
    }

    /// `(tasks, instances, latest_kwargs, metadata)` of a held session, or None.
    fn export<'py>(&self, py: Python<'py>, uid: &str) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.core
            .sessions
            .get(uid)
            .map(|entry| pystate::export(py, entry))
            .transpose()
    }

    /// Stop holding these sessions (evicted from the worker's cache, or handed to Python).
    fn forget(&mut self, uids: Vec<String>) {
        for uid in uids {
            self.core.sessions.remove(&uid);
        }
    }

    /// The uids of every session held.
    fn held(&self) -> Vec<String> {
        self.core.sessions.keys().cloned().collect()
    }

    fn __len__(&self) -> usize {
        self.core.sessions.len()
    }
}

/// Datetimes as `{"$time": µs}` for the comparable form.
fn timeless(value: Value) -> Value {
    match value {
        Value::Time(us) => {
            let mut map = Map::new();
            map.insert("$time", Value::Int(us));
            Value::Map(map)
        }
        Value::List(items) => Value::List(items.into_iter().map(timeless).collect()),
        Value::Map(map) => Value::Map(map.into_iter().map(|(k, v)| (k, timeless(v))).collect()),
        other => other,
    }
}

/// `(name, version, fingerprint)` of every schema this core reads.
#[pyfunction]
fn fingerprints(py: Python<'_>) -> Vec<(&'static str, &'static str, Bound<'_, PyBytes>)> {
    SCHEMAS
        .iter()
        .map(|s| (s.name, s.version, PyBytes::new(py, &s.fingerprint)))
        .collect()
}

#[pymodule]
fn stream_triggers_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<NativeCore>()?;
    module.add_function(wrap_pyfunction!(fingerprints, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
