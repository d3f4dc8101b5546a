//! The Python face: one call per batch, bytes in, output records out; the GIL is released
//! while Rust works.  Nothing Python is kept inside Rust beyond a call.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::avro::SCHEMAS;
use crate::shell::{Core, Manager, Outcome, Topic};
use crate::value::{dumps, Map, Style, Value};

/// The worker's session states and rules for the partitions it owns.
#[pyclass(module = "stream_triggers_native")]
struct NativeCore {
    core: Core,
    topics: [String; 3],
}

type RawInput = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

#[pymethods]
impl NativeCore {
    /// `manager` is "default" or "finalizing" (the built-in managers' rules).
    #[new]
    fn new(
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
            topics: [task_runs, task_results, sessions],
        })
    }

    /// Apply a batch of `(offset, key, value)` records of one partition, in order.
    ///
    /// Returns one tuple per record: `("applied", type_name, [(topic, value), ...])`,
    /// `("skipped", type_name)`, `("dead", reason, message)` or `("python", why)`.
    fn apply_batch<'py>(
        &mut self,
        py: Python<'py>,
        partition: i32,
        records: Vec<RawInput>,
        now_us: i64,
    ) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let core = &mut self.core;
        let outcomes: Vec<Outcome> = py.allow_threads(|| {
            records
                .iter()
                .map(|(offset, key, value)| {
                    core.apply(partition, *offset, key.as_deref(), value.as_deref(), now_us)
                })
                .collect()
        });
        outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Applied { type_name, outputs } => {
                    let records: Vec<Bound<'py, PyTuple>> = outputs
                        .iter()
                        .map(|(topic, value)| {
                            let name = match topic {
                                Topic::TaskRuns => &self.topics[0],
                                Topic::TaskResults => &self.topics[1],
                                Topic::Sessions => &self.topics[2],
                            };
                            (name.as_str(), PyBytes::new(py, value)).into_pyobject(py)
                        })
                        .collect::<PyResult<_>>()?;
                    ("applied", type_name, records).into_pyobject(py)
                }
                Outcome::Skipped { type_name } => ("skipped", type_name).into_pyobject(py),
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
}

/// Datetimes as `{"$time": µs}` for the comparable form.
fn timeless(value: Value) -> Value {
    match value {
        Value::Time(us) => {
            let mut map = Map::new();
            map.insert("$time".into(), Value::Int(us));
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
