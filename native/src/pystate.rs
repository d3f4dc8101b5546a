//! Session states across the boundary, as plain Python objects.
//!
//! The worker's state records are still written by Python (`events/state_format.py`), so a
//! session moves between the two worlds as its serialisable parts: `(tasks, instances,
//! latest_kwargs, metadata)` with `tasks = [(name, directives)]` (`TaskConfig.serialize()`)
//! and `instances = [(name, task, status, kwargs, metadata, abandon_state)]` in creation
//! order.  Values are JSON's plus naive UTC datetimes (the engine's timestamps); anything
//! else (a tuple, a `Decimal`, an aware datetime, a dict subclass...) is refused, so such a
//! session stays on the Python engine rather than being guessed at.
//!
//! The crate is built with the stable ABI (`abi3`), which has no datetime C API: datetimes
//! are made and read through the `datetime` module's Python face.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use pyo3::IntoPyObjectExt;

use crate::config::build_task_configs;
use crate::errors::Refusal;
use crate::shell::Entry;
use crate::state::{Instance, SessionState, Status};
use crate::value::{Key, Map, Value};

/// The `datetime` pieces the conversions need, looked up once per call.
pub struct Clock<'py> {
    datetime: Bound<'py, PyAny>,
    timedelta: Bound<'py, PyAny>,
    epoch: Bound<'py, PyAny>,
    one_us: Bound<'py, PyAny>,
}

impl<'py> Clock<'py> {
    pub fn new(py: Python<'py>) -> PyResult<Clock<'py>> {
        let module = py.import("datetime")?;
        let datetime = module.getattr("datetime")?;
        let timedelta = module.getattr("timedelta")?;
        let epoch = datetime.call1((1970, 1, 1))?;
        let one_us = timedelta.call1((0, 0, 1))?;
        Ok(Clock {
            datetime,
            timedelta,
            epoch,
            one_us,
        })
    }

    fn to_datetime(&self, us: i64) -> PyResult<Bound<'py, PyAny>> {
        let (days, rest) = (us.div_euclid(86_400_000_000), us.rem_euclid(86_400_000_000));
        let delta = self
            .timedelta
            .call1((days, rest / 1_000_000, rest % 1_000_000))?;
        self.epoch.call_method1("__add__", (delta,))
    }

    /// Microseconds since the epoch of a naive datetime; None for anything else.
    fn micros(&self, obj: &Bound<'py, PyAny>) -> PyResult<Option<i64>> {
        if !obj.get_type().is(&self.datetime) || !obj.getattr("tzinfo")?.is_none() {
            return Ok(None);
        }
        let delta = obj.call_method1("__sub__", (&self.epoch,))?;
        let us = delta.call_method1("__floordiv__", (&self.one_us,))?;
        Ok(Some(us.extract()?))
    }
}

fn unsupported(what: impl Into<String>) -> PyErr {
    PyValueError::new_err(what.into())
}

pub fn to_py<'py>(
    py: Python<'py>,
    clock: &Clock<'py>,
    value: &Value,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_bound_py_any(py)?,
        Value::Int(i) => i.into_bound_py_any(py)?,
        Value::BigInt(digits) => py.get_type::<PyInt>().call1((digits.as_str(),))?,
        Value::Float(f) => f.into_bound_py_any(py)?,
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, clock, item)?)?;
            }
            list.into_any()
        }
        Value::Map(map) => map_to_py(py, clock, map)?.into_any(),
        Value::Time(us) => clock.to_datetime(*us)?,
    })
}

fn map_to_py<'py>(py: Python<'py>, clock: &Clock<'py>, map: &Map) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(key.as_str(), to_py(py, clock, value)?)?;
    }
    Ok(dict)
}

pub fn from_py<'py>(clock: &Clock<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if obj.is_exact_instance_of::<PyBool>() {
        return Ok(Value::Bool(obj.extract()?));
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return Ok(match obj.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(obj.str()?.to_string()),
        });
    }
    if obj.is_exact_instance_of::<PyFloat>() {
        return Ok(Value::Float(obj.extract()?));
    }
    if obj.is_exact_instance_of::<PyString>() {
        return Ok(Value::Str(obj.extract()?));
    }
    if obj.is_exact_instance_of::<PyList>() {
        let list = obj.downcast::<PyList>()?;
        return list
            .iter()
            .map(|item| from_py(clock, &item))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if obj.is_exact_instance_of::<PyDict>() {
        return map_from_py(clock, obj).map(Value::Map);
    }
    if let Some(us) = clock.micros(obj)? {
        return Ok(Value::Time(us));
    }
    Err(unsupported(format!(
        "a {} in the session state",
        obj.get_type().name()?
    )))
}

fn map_from_py<'py>(clock: &Clock<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Map> {
    let Ok(dict) = obj.downcast_exact::<PyDict>() else {
        return Err(unsupported(format!(
            "a {} where a dict belongs",
            obj.get_type().name()?
        )));
    };
    let mut map = Map::new();
    for (key, value) in dict.iter() {
        if !key.is_exact_instance_of::<PyString>() {
            return Err(unsupported("a dict key that is not a str"));
        }
        map.insert(key.extract::<String>()?, from_py(clock, &value)?);
    }
    Ok(map)
}

/// `(tasks, instances, latest_kwargs, metadata)` of a session (see the module docs).
pub fn export<'py>(py: Python<'py>, entry: &Entry) -> PyResult<Bound<'py, PyTuple>> {
    let clock = Clock::new(py)?;
    let state = &entry.state;
    let tasks = PyList::empty(py);
    for config in state.tasks.values() {
        let directives = to_py(py, &clock, &config.serialize())?;
        tasks.append((config.name.as_str(), directives))?;
    }
    let instances = PyList::empty(py);
    for instance in state.instances.values() {
        let abandon: Vec<&str> = instance.abandon_state.iter().map(Key::as_str).collect();
        instances.append((
            instance.name.as_str(),
            instance.config.name.as_str(),
            instance.status.as_str(),
            map_to_py(py, &clock, &instance.kwargs)?,
            map_to_py(py, &clock, &instance.metadata)?,
            abandon,
        ))?;
    }
    (
        tasks,
        instances,
        map_to_py(py, &clock, &state.latest_kwargs)?,
        map_to_py(py, &clock, &state.metadata)?,
    )
        .into_pyobject(py)
}

pub type InstanceRow<'py> = (
    String,
    String,
    String,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Vec<String>,
);

/// Build a session from its parts; refuses what the core does not model.
pub fn import<'py>(
    clock: &Clock<'py>,
    tasks: Vec<(String, Bound<'py, PyAny>)>,
    instances: Vec<InstanceRow<'py>>,
    latest_kwargs: &Bound<'py, PyAny>,
    metadata: &Bound<'py, PyAny>,
) -> PyResult<SessionState> {
    let mut configuration = Map::new();
    for (name, directives) in &tasks {
        configuration.insert(name.clone(), from_py(clock, directives)?);
    }
    let configs = build_task_configs(&configuration).map_err(|refusal| match refusal {
        Refusal::Rejected(rejection) => {
            unsupported(format!("a task config: {}", rejection.message))
        }
        Refusal::Unsupported(why) => unsupported(why),
    })?;
    let mut state = SessionState::default();
    for config in configs {
        state.tasks.insert(config.name.clone(), config);
    }
    for (name, task, status, kwargs, meta, abandon) in instances {
        let config =
            state.tasks.get(task.as_str()).cloned().ok_or_else(|| {
                unsupported(format!("instance {name:?} of an unknown task {task:?}"))
            })?;
        let status =
            Status::parse(&status).ok_or_else(|| unsupported(format!("status {status:?}")))?;
        state.add(Instance {
            name: name.into(),
            config: Arc::clone(&config),
            status,
            metadata: Arc::new(map_from_py(clock, &meta)?),
            kwargs: Arc::new(map_from_py(clock, &kwargs)?),
            abandon_state: abandon.into_iter().collect(),
        });
    }
    state.latest_kwargs = map_from_py(clock, latest_kwargs)?;
    state.metadata = map_from_py(clock, metadata)?;
    Ok(state)
}
