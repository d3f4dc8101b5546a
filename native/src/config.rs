//! Task configurations: `build_task_configs` of `stream_triggers/engine/validation.py`.
//!
//! Either the whole payload is valid or nothing is built; the refusals carry the Python
//! engine's reasons and (for JSON-born values) its messages.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::errors::{rejected, Refusal};
use crate::value::{float_repr, py_repr, Key, Map, Value};

/// Trigger names as a set (a task's `after` and `unless`, an instance's abandon state):
/// sorted, without repeats, in exactly the room they take (a few names, held by thousands
/// of sessions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Names(Box<[Key]>);

impl Names {
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
    }

    /// Add a name (a name already there is kept once).
    pub fn insert(&mut self, name: &str) {
        if let Err(at) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            let mut names = std::mem::take(&mut self.0).into_vec();
            names.insert(at, name.into());
            self.0 = names.into_boxed_slice();
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Key> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Key>> FromIterator<K> for Names {
    fn from_iter<I: IntoIterator<Item = K>>(names: I) -> Names {
        let set: BTreeSet<Key> = names.into_iter().map(Into::into).collect();
        Names(set.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Names {
    type Item = &'a Key;
    type IntoIter = std::slice::Iter<'a, Key>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// What a task waits for (`after`, `andEvery`, `unless`) and what it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskConfig {
    pub name: Key,
    pub run: Key,
    /// `after` plus `andEvery` (which a run also needs).
    pub after: Names,
    pub unless: Names,
    pub using: Option<Key>,
    /// `andEvery`, `withParams` and the extra directives: most tasks have none (nothing
    /// allocated then), and every config of every held session pays for the room.
    rare: Option<Box<Rare>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Rare {
    and_every: Option<Key>,
    with_params: Map,
    extras: Map,
}

/// What a task without the rare directives has.
static NONE: Map = Map::new();

impl TaskConfig {
    pub fn and_every(&self) -> Option<&Key> {
        self.rare.as_ref()?.and_every.as_ref()
    }

    pub fn with_params(&self) -> &Map {
        self.rare.as_ref().map_or(&NONE, |r| &r.with_params)
    }

    /// The directives beyond the known ones, kept as given.
    pub fn extras(&self) -> &Map {
        self.rare.as_ref().map_or(&NONE, |r| &r.extras)
    }

    pub fn listens_to(&self, trigger: &str) -> bool {
        self.after.contains(trigger) || self.unless.contains(trigger)
    }

    /// `TaskConfig.serialize()`: the directives, `after` without `andEvery`.
    pub fn serialize(&self) -> Value {
        let mut out = self.extras().clone();
        let sorted = |set: &Names, skip: Option<&Key>| {
            Value::List(
                set.iter()
                    .filter(|t| Some(*t) != skip)
                    .map(|t| Value::Str(t.to_string()))
                    .collect(),
            )
        };
        let opt = |s: Option<&Key>| s.map_or(Value::Null, |s| Value::Str(s.to_string()));
        out.insert("after", sorted(&self.after, self.and_every()));
        out.insert("unless", sorted(&self.unless, None));
        out.insert("andEvery", opt(self.and_every()));
        out.insert("run", Value::Str(self.run.to_string()));
        out.insert("using", opt(self.using.as_ref()));
        out.insert("withParams", Value::Map(self.with_params().clone()));
        Value::Map(out)
    }
}

/// Python's `repr()` of a JSON-born value, for messages.
pub fn py_value_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(digits) => digits.clone(),
        Value::Float(f) => float_repr(*f),
        Value::Str(s) => py_repr(s),
        Value::List(items) => format!(
            "[{}]",
            items
                .iter()
                .map(py_value_repr)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Map(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(k), py_value_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Time(us) => format!("<datetime {us}>"),
    }
}

fn invalid(task: &str, directive: &str, problem: impl AsRef<str>) -> Refusal {
    rejected(
        "invalid_configuration",
        format!(
            "Task {}: directive {} {}",
            py_repr(task),
            py_repr(directive),
            problem.as_ref()
        ),
    )
}

/// Validate a whole configuration payload and build its configs, in payload order.
pub fn build_task_configs(configuration: &Map) -> Result<Vec<Arc<TaskConfig>>, Refusal> {
    let mut configs = Vec::with_capacity(configuration.len());
    for (name, directives) in configuration {
        if name.is_empty() {
            return Err(invalid(
                &py_repr(name),
                "<name>",
                "task names must be non-empty strings",
            ));
        }
        configs.push(Arc::new(build_task_config(name, directives)?));
    }
    Ok(configs)
}

fn build_task_config(name: &str, directives: &Value) -> Result<TaskConfig, Refusal> {
    let Value::Map(directives) = directives else {
        return Err(invalid(
            name,
            "<task>",
            format!(
                "must be a mapping of directives, not {}",
                directives.type_name()
            ),
        ));
    };
    for required in ["after", "run"] {
        if !directives.contains_key(required) {
            return Err(invalid(name, required, "is required"));
        }
    }
    let after = trigger_list(name, "after", &directives["after"])?;
    let and_every_value = directives.get("andEvery");
    if after.is_empty() && !and_every_value.is_some_and(Value::truthy) {
        return Err(invalid(name, "after", "must name at least one trigger"));
    }
    let run = match &directives["run"] {
        Value::Str(run) if !run.is_empty() => run.clone(),
        other => {
            return Err(invalid(
                name,
                "run",
                format!("must be a task name (string), not {}", py_value_repr(other)),
            ))
        }
    };
    let unless = match directives.get("unless") {
        None | Some(Value::Null) => Vec::new(),
        Some(value) => trigger_list(name, "unless", value)?,
    };
    let and_every = match and_every_value {
        None | Some(Value::Null) => None,
        Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            return Err(invalid(
                name,
                "andEvery",
                format!(
                    "must be a single trigger name (string), not {}",
                    py_value_repr(other)
                ),
            ))
        }
    };
    let using = match directives.get("using") {
        None | Some(Value::Null) => None,
        Some(Value::Str(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            return Err(invalid(
                name,
                "using",
                format!("must be a task runner name, not {}", py_value_repr(other)),
            ))
        }
    };
    let with_params = match directives.get("withParams") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Map(params)) if params.values().all(|v| matches!(v, Value::Map(_))) => {
            for (trigger, kwargs) in params {
                finite(kwargs, &format!("task {} withParams[{}]", py_repr(name), py_repr(trigger)))?;
            }
            params.clone()
        }
        Some(_) => {
            return Err(invalid(
                name,
                "withParams",
                "must be a dict of dicts (trigger name -> kwargs), e.g. {'scoring': {'model': 'Psych 01'}}",
            ))
        }
    };
    let mut extras = Map::new();
    for (key, value) in directives {
        if matches!(
            key.as_str(),
            "after" | "run" | "unless" | "andEvery" | "using" | "withParams"
        ) {
            continue;
        }
        finite(
            value,
            &format!("task {} directive {}", py_repr(name), py_repr(key)),
        )?;
        extras.insert(key.clone(), value.clone());
    }
    if extras.contains_key("name") {
        return Err(rejected(
            "apply_failed",
            "stream_triggers.types.TaskConfig() got multiple values for keyword argument 'name'",
        ));
    }
    let after: Names = after.into_iter().chain(and_every.clone()).collect();
    Ok(TaskConfig {
        name: name.into(),
        run: run.into(),
        after,
        unless: unless.into_iter().collect(),
        using: using.map(Key::from),
        rare: (and_every.is_some() || !with_params.is_empty() || !extras.is_empty()).then(|| {
            Box::new(Rare {
                and_every: and_every.map(Key::from),
                with_params,
                extras,
            })
        }),
    })
}

fn trigger_list(task: &str, directive: &str, value: &Value) -> Result<Vec<String>, Refusal> {
    let Value::List(items) = value else {
        return Err(invalid(
            task,
            directive,
            format!(
                "must be a list of trigger names, not {} {}",
                value.type_name(),
                py_value_repr(value)
            ),
        ));
    };
    items
        .iter()
        .map(|item| match item {
            Value::Str(s) if !s.is_empty() => Ok(s.clone()),
            other => Err(invalid(
                task,
                directive,
                format!(
                    "must contain only non-empty strings; found {}",
                    py_value_repr(other)
                ),
            )),
        })
        .collect()
}

/// `_json_value`'s one refusal for JSON-born values: a float JSON cannot carry.
fn finite(value: &Value, what: &str) -> Result<(), Refusal> {
    match value {
        Value::Float(f) if !f.is_finite() => Err(rejected(
            "invalid_payload",
            format!("{what} is {}, which JSON cannot carry", float_repr(*f)),
        )),
        Value::List(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| finite(item, &format!("{what}[{i}]"))),
        Value::Map(map) => map
            .iter()
            .try_for_each(|(k, v)| finite(v, &format!("{what}[{}]", py_repr(k)))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::parse;

    fn build(text: &str) -> Result<Vec<Arc<TaskConfig>>, Refusal> {
        match parse(text).unwrap() {
            Value::Map(map) => build_task_configs(&map),
            _ => unreachable!(),
        }
    }

    #[test]
    fn messages_match_python() {
        let cases = [
            (
                r#"{"t": {"after": "a", "run": "x"}}"#,
                "Task 't': directive 'after' must be a list of trigger names, not str 'a'",
            ),
            (
                r#"{"t": {"after": [], "run": "x", "andEvery": ""}}"#,
                "Task 't': directive 'after' must name at least one trigger",
            ),
            (
                r#"{"t": {"after": ["a"], "run": "x", "unless": [1.5]}}"#,
                "Task 't': directive 'unless' must contain only non-empty strings; found 1.5",
            ),
            (
                r#"{"t": {"after": ["a"], "run": "x", "k": NaN}}"#,
                "task 't' directive 'k' is nan, which JSON cannot carry",
            ),
            (
                r#"{"t": {"after": ["a"], "run": "x", "withParams": {"a": {"k": [Infinity]}}}}"#,
                "task 't' withParams['a']['k'][0] is inf, which JSON cannot carry",
            ),
        ];
        for (text, message) in cases {
            match build(text) {
                Err(Refusal::Rejected(r)) => assert_eq!(r.message, message),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn and_every_joins_after() {
        let configs =
            build(r#"{"t": {"after": [], "andEvery": "e", "run": "x", "k": 1}}"#).unwrap();
        assert!(configs[0].after.contains("e"));
        assert_eq!(configs[0].extras().len(), 1);
        assert_eq!(configs[0].and_every().map(Key::as_str), Some("e"));
    }

    #[test]
    fn names_stay_sorted_and_single() {
        let mut names: Names = ["b", "a", "b"].into_iter().collect();
        names.insert("c");
        names.insert("a");
        names.insert("0");
        let listed: Vec<&str> = names.iter().map(Key::as_str).collect();
        assert_eq!(listed, ["0", "a", "b", "c"]);
        assert!(names.contains("c") && !names.contains("d"));
    }
}
