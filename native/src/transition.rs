//! The rules of the Triggers framework: `step(state, input, at) -> effects`, as
//! `stream_triggers/engine/transition.py` applies them (that file is the specification).
//!
//! `step` mutates the state it is given; callers work on a copy they drop on a refusal.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Names, TaskConfig};
use crate::errors::{rejected, unsupported, Refusal};
use crate::state::{Instance, SessionState, Status};
use crate::value::{py_repr, Key, Map, Value};

pub const META_TIMESTAMPS: &str = "timestamps";
const CREATED: &str = "created";
const LAST_MODIFIED: &str = "lastModified";

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Validated task configurations (`inputs` builds them, shared between sessions).
    Configure(Arc<Vec<Arc<TaskConfig>>>),
    Fire {
        trigger: String,
        kwargs: Map,
    },
    StatusUpdated {
        instance: String,
        status: Status,
        metadata: Option<Map>,
        cascade: bool,
        cascade_kwargs: Option<Map>,
    },
    StatusReported {
        instance: String,
        status: Status,
        metadata: Option<Map>,
        result: Option<Map>,
    },
    Retry {
        instance: String,
        metadata: Option<Map>,
        replacement: Option<Map>,
        cooldown: Option<f64>,
    },
    Replay {
        instance: String,
        replacement: Option<Map>,
    },
    Skip {
        instance: String,
        cascade: bool,
        result: Option<Map>,
    },
    MetadataUpdated {
        instance: String,
        metadata: Map,
    },
    LogsResolved {
        instance: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Hand this (now scheduled) instance to its runner.
    Run(Instance),
    /// An instance was created (`previous` None) or changed status.
    Changed {
        instance: Instance,
        previous: Option<Status>,
    },
    /// Fire `trigger` with `kwargs` next (a finished task's result).
    Cascade { trigger: String, kwargs: Map },
    /// A trigger was applied.
    Fired { trigger: String },
    /// A failed instance was replayed.
    Replayed,
    /// A failed instance was skipped.
    Skipped,
    /// A status report that changed nothing.
    Ignored,
}

/// Apply one input at time `at` (µs since the epoch, naive UTC).
pub fn step(state: &mut SessionState, input: &Input, at: i64) -> Result<Vec<Effect>, Refusal> {
    let mut effects = Vec::new();
    match input {
        Input::Configure(configuration) => configure(state, configuration)?,
        Input::Fire { trigger, kwargs } => fire(state, trigger, kwargs, at, &mut effects)?,
        Input::StatusUpdated {
            instance,
            status,
            metadata,
            cascade,
            cascade_kwargs,
        } => {
            let current = existing(state, instance)?;
            let task = current.config.name.clone();
            set_status(state, current, *status, metadata.as_ref(), at, &mut effects)?;
            if *cascade {
                effects.push(Effect::Cascade {
                    trigger: task.to_string(),
                    kwargs: cascade_kwargs.clone().unwrap_or_default(),
                });
            }
        }
        Input::StatusReported {
            instance,
            status,
            metadata,
            result,
        } => {
            let current = existing(state, instance)?;
            let allowed: &[Status] = match status {
                Status::Running => &[Status::Scheduled],
                Status::Finished | Status::Failed | Status::Skipped => {
                    &[Status::Scheduled, Status::Running]
                }
                other => {
                    return Err(rejected(
                        "operation_not_allowed",
                        format!(
                            "A task runner cannot report status {}.",
                            status_repr(*other)
                        ),
                    ))
                }
            };
            if !allowed.contains(&current.status) {
                effects.push(Effect::Ignored);
                return Ok(effects);
            }
            let task = current.config.name.clone();
            set_status(state, current, *status, metadata.as_ref(), at, &mut effects)?;
            if *status == Status::Finished {
                effects.push(Effect::Cascade {
                    trigger: task.to_string(),
                    kwargs: result.clone().unwrap_or_default(),
                });
            }
        }
        Input::Retry {
            instance,
            metadata,
            replacement,
            cooldown,
        } => {
            let current = existing(state, instance)?;
            if !matches!(current.status, Status::Scheduled | Status::Running) {
                effects.push(Effect::Ignored);
                return Ok(effects);
            }
            let failed = set_status(
                state,
                current,
                Status::Failed,
                metadata.as_ref(),
                at,
                &mut effects,
            )?;
            replay(
                state,
                failed,
                replacement.as_ref(),
                *cooldown,
                at,
                &mut effects,
            )?;
        }
        Input::Replay {
            instance,
            replacement,
        } => {
            let current = existing(state, instance)?;
            if current.status != Status::Failed {
                return Err(rejected(
                    "operation_not_allowed",
                    format!(
                        "Instance \"{} ({})\" in {} state cannot be replayed!",
                        current.name,
                        current.status.as_str(),
                        current.status.as_str()
                    ),
                ));
            }
            replay(state, current, replacement.as_ref(), None, at, &mut effects)?;
        }
        Input::Skip {
            instance,
            cascade,
            result,
        } => {
            let current = existing(state, instance)?;
            if current.status != Status::Failed {
                return Err(rejected(
                    "operation_not_allowed",
                    format!(
                        "Instance \"{} ({})\" in {} state cannot be skipped!",
                        current.name,
                        current.status.as_str(),
                        current.status.as_str()
                    ),
                ));
            }
            let result = result.clone().unwrap_or_default();
            let mut metadata = Map::new();
            metadata.insert("cascade", Value::Bool(*cascade));
            metadata.insert("result", Value::Map(result.clone()));
            let task = current.config.name.clone();
            set_status(
                state,
                current,
                Status::Skipped,
                Some(&metadata),
                at,
                &mut effects,
            )?;
            if *cascade {
                effects.push(Effect::Cascade {
                    trigger: task.to_string(),
                    kwargs: result,
                });
            }
            effects.push(Effect::Skipped);
        }
        Input::MetadataUpdated { instance, metadata } => {
            let mut current = existing(state, instance)?;
            let mut merged = (*current.metadata).clone();
            merged.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
            current.metadata = Arc::new(stamped(merged, None, at)?);
            state.put(current);
        }
        Input::LogsResolved { instance } => {
            let mut current = existing(state, instance)?;
            let mut merged = (*current.metadata).clone();
            merged.insert("logsResolved", Value::Bool(true));
            current.metadata = Arc::new(stamped(merged, None, at)?);
            state.put(current);
        }
    }
    Ok(effects)
}

fn status_repr(status: Status) -> String {
    format!(
        "<Status.{}: '{}'>",
        status.as_str().to_uppercase(),
        status.as_str()
    )
}

fn existing(state: &SessionState, name: &str) -> Result<Instance, Refusal> {
    state.instances.get(name).cloned().ok_or_else(|| {
        rejected(
            "unknown_instance",
            format!("No task instance named {} in this session.", py_repr(name)),
        )
    })
}

fn configure(state: &mut SessionState, configs: &[Arc<TaskConfig>]) -> Result<(), Refusal> {
    // Previously fired triggers are deliberately not re-applied (as in the original).
    for config in configs {
        let config = Arc::clone(config);
        for (position, instance) in state.instances.values_mut().enumerate() {
            // (As the Python engine replaces an instance whose config object differs.)
            if instance.config.name == config.name && !Arc::ptr_eq(&instance.config, &config) {
                instance.config = Arc::clone(&config);
                state.changed.insert(position);
            }
        }
        state.tasks.insert(config.name.clone(), config);
    }
    Ok(())
}

fn fire(
    state: &mut SessionState,
    trigger: &str,
    kwargs: &Map,
    at: i64,
    effects: &mut Vec<Effect>,
) -> Result<(), Refusal> {
    let listening: Vec<_> = state
        .tasks
        .values()
        .filter(|c| c.listens_to(trigger))
        .cloned()
        .collect();
    // Record the trigger on every unstarted instance that still accepts it.
    let mut took: HashSet<Key> = HashSet::new();
    for (position, instance) in state.instances.values_mut().enumerate() {
        if !instance.accepts(trigger) {
            continue;
        }
        state.changed.insert(position);
        took.insert(instance.config.name.clone());
        if instance.config.after.contains(trigger) && !instance.kwargs.contains_key(trigger) {
            Arc::make_mut(&mut instance.kwargs)
                .insert(trigger.to_string(), Value::Map(kwargs.clone()));
        }
        if instance.config.unless.contains(trigger) {
            instance.abandon_state.insert(trigger);
        }
    }
    // New instances: for a task with none yet, and for `andEvery` when no open instance took it.
    let mut created = Vec::new();
    for config in &listening {
        let task = &config.name;
        if config.and_every().is_some_and(|every| *every == *trigger) {
            if took.contains(task) {
                continue;
            }
        } else if state.instances_of(task).next().is_some() {
            continue;
        }
        let mut inherited = Map::new();
        for t in &config.after {
            if t != trigger {
                if let Some(latest) = state.latest_kwargs.get(t) {
                    inherited.insert(t.clone(), latest.clone());
                }
            }
        }
        if config.after.contains(trigger) {
            inherited.insert(trigger.to_string(), Value::Map(kwargs.clone()));
        }
        let abandon_state: Names = config
            .unless
            .iter()
            .filter(|t| t.as_str() == trigger || state.latest_kwargs.contains_key(t))
            .cloned()
            .collect();
        let instance = Instance {
            name: free_name(state, task, state.count_of(task)),
            config: Arc::clone(config),
            status: Status::Unstarted,
            metadata: Arc::new(timestamps_only(at)),
            kwargs: Arc::new(inherited),
            abandon_state,
        };
        effects.push(Effect::Changed {
            instance: instance.clone(),
            previous: None,
        });
        created.push(instance);
    }
    for instance in created {
        state.add(instance);
    }
    // Settle the unstarted instances now due, task by task in configuration order.
    for config in &listening {
        let ready: Vec<Instance> = state
            .unresolved_of(&config.name)
            .filter(|i| i.is_ready())
            .cloned()
            .collect();
        for instance in ready {
            let abandon = instance.can_abandon();
            let status = if abandon {
                Status::Abandoned
            } else {
                Status::Scheduled
            };
            let updated = set_status(state, instance, status, None, at, effects)?;
            if !abandon {
                effects.push(Effect::Run(updated));
            }
        }
    }
    state
        .latest_kwargs
        .insert(trigger.to_string(), Value::Map(kwargs.clone()));
    effects.push(Effect::Fired {
        trigger: trigger.to_string(),
    });
    Ok(())
}

fn replay(
    state: &mut SessionState,
    failed: Instance,
    replacement: Option<&Map>,
    cooldown: Option<f64>,
    at: i64,
    effects: &mut Vec<Effect>,
) -> Result<(), Refusal> {
    // The failed instance keeps its exception details; a clone runs instead.
    let depth = match failed.metadata.get("depth") {
        None => 0,
        Some(Value::Int(depth)) => *depth,
        Some(other) => return Err(unsupported(format!("a {} depth", other.type_name()))),
    };
    let replayed = set_status(state, failed, Status::Replayed, None, at, effects)?;
    let mut metadata = Map::new();
    metadata.insert(
        "depth",
        Value::Int(
            depth
                .checked_add(1)
                .ok_or_else(|| unsupported("a huge depth"))?,
        ),
    );
    metadata.insert("parent", Value::Str(replayed.name.to_string()));
    if let Some(cooldown) = cooldown.filter(|c| *c != 0.0) {
        metadata.insert("cooldown", Value::Float(cooldown));
    }
    metadata.extend(timestamps_only(at));
    let task = &replayed.config.name;
    let clone = Instance {
        name: free_name(state, task, state.count_of(task)),
        config: Arc::clone(&replayed.config),
        status: Status::Unstarted,
        metadata: Arc::new(metadata),
        kwargs: replacement.map_or_else(|| Arc::clone(&replayed.kwargs), |r| Arc::new(r.clone())),
        abandon_state: replayed.abandon_state.clone(),
    };
    state.put(clone.clone());
    effects.push(Effect::Changed {
        instance: clone.clone(),
        previous: None,
    });
    let scheduled = set_status(state, clone, Status::Scheduled, None, at, effects)?;
    effects.push(Effect::Run(scheduled));
    effects.push(Effect::Replayed);
    Ok(())
}

/// `<task>#<count>`, primed while a hand-made instance holds that name.
fn free_name(state: &SessionState, task: &str, count: usize) -> Key {
    let mut name = format!("{task}#{count}");
    while state.instances.contains_key(name.as_str()) {
        name.push('\'');
    }
    name.into()
}

fn timestamps_only(at: i64) -> Map {
    let mut timestamps = Map::new();
    timestamps.insert(CREATED, Value::Time(at));
    timestamps.insert(LAST_MODIFIED, Value::Time(at));
    let mut metadata = Map::new();
    metadata.insert(META_TIMESTAMPS, Value::Map(timestamps));
    metadata
}

fn set_status(
    state: &mut SessionState,
    mut instance: Instance,
    status: Status,
    metadata: Option<&Map>,
    at: i64,
    effects: &mut Vec<Effect>,
) -> Result<Instance, Refusal> {
    let mut merged = (*instance.metadata).clone();
    if let Some(extra) = metadata {
        merged.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let previous = instance.status;
    instance.metadata = Arc::new(stamped(merged, Some(status), at)?);
    instance.status = status;
    state.put(instance.clone());
    effects.push(Effect::Changed {
        instance: instance.clone(),
        previous: Some(previous),
    });
    Ok(instance)
}

/// `metadata` with its timestamps bumped (`_stamped`).
fn stamped(mut metadata: Map, status: Option<Status>, at: i64) -> Result<Map, Refusal> {
    match metadata.get(META_TIMESTAMPS) {
        Some(Value::Map(_)) => {}
        Some(value) if value.truthy() => {
            return Err(unsupported("non-mapping timestamps metadata"))
        }
        _ => {
            metadata.insert(META_TIMESTAMPS, Value::Map(Map::new()));
        }
    }
    // (Bumped in place: `metadata` is this state's own copy.)
    if let Some(Value::Map(timestamps)) = metadata.get_mut(META_TIMESTAMPS) {
        if !timestamps.contains_key(CREATED) {
            timestamps.insert(CREATED, Value::Time(at));
        }
        timestamps.insert(LAST_MODIFIED, Value::Time(at));
        if let Some(status) = status {
            timestamps.insert(status.as_str(), Value::Time(at));
        }
    }
    Ok(metadata)
}
