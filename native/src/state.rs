//! A session's state: task configs, instances, the latest kwargs of each trigger.
//!
//! Plain owned values (a transition works on a copy, so a refused input leaves nothing
//! changed).  Two orders are part of the behaviour and kept exactly as the Python engine
//! keeps them: instances in creation order, and per task the order instances joined the
//! unresolved list (an instance set back to an open status re-joins at the end), which
//! decides the order a fire settles ready instances in.

use std::sync::Arc;

use crate::config::{Names, TaskConfig};
use crate::value::{Key, KeyMap, Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Unstarted,
    Scheduled,
    Running,
    Finished,
    Failed,
    Replayed,
    Skipped,
    Abandoned,
}

pub const STATUSES: [Status; 8] = [
    Status::Unstarted,
    Status::Scheduled,
    Status::Running,
    Status::Finished,
    Status::Failed,
    Status::Replayed,
    Status::Skipped,
    Status::Abandoned,
];

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unstarted => "unstarted",
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Failed => "failed",
            Status::Replayed => "replayed",
            Status::Skipped => "skipped",
            Status::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        STATUSES.iter().copied().find(|s| s.as_str() == text)
    }

    pub fn is_resolved(self) -> bool {
        matches!(
            self,
            Status::Abandoned | Status::Finished | Status::Skipped | Status::Replayed
        )
    }

    /// Announced on `task-results` (scheduling goes to `task-runs`).
    pub fn is_published(self) -> bool {
        matches!(
            self,
            Status::Finished
                | Status::Failed
                | Status::Abandoned
                | Status::Skipped
                | Status::Replayed
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub name: Key,
    pub config: Arc<TaskConfig>,
    pub status: Status,
    /// Shared between versions of the state (and effects): copied only when changed.
    pub metadata: Arc<Map>,
    pub kwargs: Arc<Map>,
    pub abandon_state: Names,
}

impl Instance {
    pub fn can_abandon(&self) -> bool {
        let unless = &self.config.unless;
        self.status == Status::Unstarted
            && !unless.is_empty()
            && unless.iter().all(|t| self.abandon_state.contains(t))
    }

    /// Unstarted and due to run or to be abandoned (`is_ready` in the Python engine).
    pub fn is_ready(&self) -> bool {
        self.status == Status::Unstarted
            && (self.can_abandon()
                || self
                    .config
                    .after
                    .iter()
                    .all(|t| self.kwargs.contains_key(t)))
    }

    /// Whether its metadata holds a `depth` or `cooldown` a `task-runs` record could not
    /// carry the way the Python path does (a user may put anything in metadata).
    pub fn is_unmodelled(&self) -> bool {
        let depth = self
            .metadata
            .get("depth")
            .is_some_and(|d| !matches!(d, Value::Int(i) if i.unsigned_abs() < 1 << 31));
        let cooldown = self.metadata.get("cooldown").is_some_and(|c| match c {
            Value::Int(i) => i.unsigned_abs() >= 1_000_000_000,
            Value::Float(f) => !(f.is_finite() && f.abs() < 1e9),
            other => other.truthy(),
        });
        depth || cooldown
    }

    /// Whether firing `trigger` would still change it (the `accepting` index).
    pub fn accepts(&self, trigger: &str) -> bool {
        self.status == Status::Unstarted
            && ((self.config.after.contains(trigger) && !self.kwargs.contains_key(trigger))
                || (self.config.unless.contains(trigger) && !self.abandon_state.contains(trigger)))
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionState {
    pub tasks: KeyMap<Arc<TaskConfig>>,
    /// Every instance by name, in creation order.
    pub instances: KeyMap<Instance>,
    /// The positions (creation order) of the unresolved instances, in the order they
    /// (re-)joined: per task, the order a fire settles them in.
    pub unresolved: Vec<usize>,
    pub latest_kwargs: Map,
    pub metadata: Map,
    /// How many instances are `is_unmodelled` (kept so that no input scans them all).
    pub unmodelled: usize,
    /// Positions (creation order) of the instances changed since the state was last
    /// encoded: the instance parts the next checkpoint writes (`stateformat`).
    pub changed: Positions,
}

/// Instance positions as a set, one bit each, read in ascending order (a session changes a
/// few of its instances between two checkpoints).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Positions(Vec<u64>);

impl Positions {
    pub fn insert(&mut self, position: usize) {
        let word = position / 64;
        if word >= self.0.len() {
            self.0.reserve_exact(word + 1 - self.0.len());
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (position % 64);
    }

    pub fn clear(&mut self) {
        self.0 = Vec::new();
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &word)| {
            (0..64)
                .filter(move |bit| word >> bit & 1 == 1)
                .map(move |bit| i * 64 + bit)
        })
    }
}

impl Extend<usize> for Positions {
    fn extend<I: IntoIterator<Item = usize>>(&mut self, positions: I) {
        for position in positions {
            self.insert(position);
        }
    }
}

impl SessionState {
    /// Insert a new instance (its name is free).
    pub fn add(&mut self, instance: Instance) {
        let position = self.instances.len();
        if !instance.status.is_resolved() {
            self.unresolved.push(position);
        }
        self.unmodelled += usize::from(instance.is_unmodelled());
        self.changed.insert(position);
        self.instances.insert(instance.name.clone(), instance);
    }

    /// Insert or replace an instance, keeping the unresolved order right.
    pub fn put(&mut self, instance: Instance) {
        let Some((position, previous)) = self.instances.get_full(&instance.name) else {
            self.add(instance);
            return;
        };
        let was_open = !previous.status.is_resolved();
        let is_open = !instance.status.is_resolved();
        if is_open && !was_open {
            self.unresolved.push(position);
        } else if was_open && !is_open {
            self.unresolved.retain(|p| *p != position);
            if self.unresolved.is_empty() {
                self.unresolved = Vec::new(); // (a finished session holds no room for it)
            }
        }
        self.unmodelled -= usize::from(previous.is_unmodelled());
        self.unmodelled += usize::from(instance.is_unmodelled());
        self.instances[position] = instance;
        self.changed.insert(position);
    }

    /// The task's instances, in creation order.
    pub fn instances_of<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a Instance> {
        self.instances
            .values()
            .filter(move |i| i.config.name == task)
    }

    pub fn count_of(&self, task: &str) -> usize {
        self.instances_of(task).count()
    }

    /// The task's unresolved instances, in the order they (re-)joined.
    pub fn unresolved_of<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a Instance> {
        self.unresolved
            .iter()
            .map(|p| &self.instances[*p])
            .filter(move |i| i.config.name == task)
    }

    /// Tasks with no instance yet, or with at least one unresolved instance.
    pub fn unresolved_tasks(&self) -> impl Iterator<Item = &Arc<TaskConfig>> {
        self.tasks.values().filter(|c| {
            self.unresolved_of(&c.name).next().is_some()
                || self.instances_of(&c.name).next().is_none()
        })
    }

    /// The comparable form the differential tests read (see `tests/native/comparable.py`).
    pub fn comparable(&self) -> Value {
        let mut out = Map::new();
        out.insert(
            "tasks",
            Value::List(
                self.tasks
                    .values()
                    .map(|c| Value::List(vec![Value::Str(c.name.to_string()), c.serialize()]))
                    .collect(),
            ),
        );
        let instances = self
            .instances
            .values()
            .map(|i| {
                Value::List(vec![
                    Value::Str(i.name.to_string()),
                    Value::Str(i.config.name.to_string()),
                    Value::Str(i.status.as_str().into()),
                    Value::Map((*i.kwargs).clone()),
                    Value::Map((*i.metadata).clone()),
                    Value::List(
                        i.abandon_state
                            .iter()
                            .map(|t| Value::Str(t.to_string()))
                            .collect(),
                    ),
                ])
            })
            .collect();
        out.insert("instances", Value::List(instances));
        out.insert("latest_kwargs", Value::Map(self.latest_kwargs.clone()));
        out.insert("metadata", Value::Map(self.metadata.clone()));
        Value::Map(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Positions;

    #[test]
    fn positions_read_in_order_once_each() {
        let mut positions = Positions::default();
        assert!(positions.is_empty());
        positions.extend([70, 3, 0, 3, 64]);
        assert_eq!(positions.iter().collect::<Vec<_>>(), [0, 3, 64, 70]);
        assert_eq!(positions.len(), 4);
        positions.clear();
        assert!(positions.is_empty() && positions.iter().next().is_none());
    }
}
