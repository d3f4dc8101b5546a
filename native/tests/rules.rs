//! The Triggers rules through the worker shell, without Python: records in, outputs out.

use stream_triggers_native::avro::{current, decode, Writer};
use stream_triggers_native::shell::{Core, Manager, Outcome, Topic};
use stream_triggers_native::state::Status;

const UID: &str = "s1";
const AT: i64 = 1_700_000_000_000_000;

fn plain(type_name: &str, fields: &[&str]) -> Vec<u8> {
    let mut writer = Writer::new(current(type_name).unwrap());
    writer.str("e").str(UID).long(AT);
    for field in fields {
        writer.str(field);
    }
    writer.finish()
}

struct Session {
    core: Core,
    offset: i64,
}

impl Session {
    fn new(manager: Manager, configuration: &str) -> Session {
        let mut session = Session {
            core: Core::new(manager, "default"),
            offset: 0,
        };
        session.applied(&plain("ConfigurationUpdated", &[configuration]));
        session
    }

    fn apply(&mut self, value: &[u8]) -> Outcome {
        self.offset += 1;
        self.core
            .apply(0, self.offset, Some(UID.as_bytes()), Some(value), AT)
    }

    /// Apply and return the outputs as `(type, instance or "", status or "")`.
    fn applied(&mut self, value: &[u8]) -> Vec<(String, String, String)> {
        match self.apply(value) {
            Outcome::Applied { outputs, .. } => outputs
                .iter()
                .map(|(topic, bytes)| {
                    let record = decode(bytes).unwrap();
                    let text = |name| record.str(name).unwrap_or_default().to_string();
                    match topic {
                        Topic::TaskRuns => ("run".into(), text("instance"), String::new()),
                        Topic::TaskResults(_) => {
                            ("result".into(), text("instance"), text("status"))
                        }
                        Topic::Sessions => ("finalized".into(), String::new(), String::new()),
                    }
                })
                .collect(),
            other => panic!("not applied: {other:?}"),
        }
    }

    fn fire(&mut self, trigger: &str) -> Vec<(String, String, String)> {
        self.applied(&plain("TriggerFired", &[trigger, "{}"]))
    }

    fn status(&self, instance: &str) -> Status {
        self.core.sessions[UID].state.instances[instance].status
    }
}

fn report(instance: &str, status: u8) -> Vec<u8> {
    let mut writer = Writer::new(current("InstanceStatusReported").unwrap());
    writer
        .str("e")
        .str(UID)
        .long(AT)
        .str(instance)
        .long(status as i64)
        .str("{}")
        .opt_str(None);
    writer.finish()
}

fn replay(instance: &str) -> Vec<u8> {
    let mut writer = Writer::new(current("ReplayRequested").unwrap());
    writer
        .str("e")
        .str(UID)
        .long(AT)
        .str(instance)
        .opt_str(None);
    writer.finish()
}

fn run(instance: &str) -> (String, String, String) {
    ("run".into(), instance.into(), String::new())
}

fn result(instance: &str, status: &str) -> (String, String, String) {
    ("result".into(), instance.into(), status.into())
}

#[test]
fn a_task_runs_once_all_its_triggers_fired() {
    let mut s = Session::new(
        Manager::Default,
        r#"{"t": {"after": ["a", "b"], "run": "x"}}"#,
    );
    assert_eq!(s.fire("a"), vec![]);
    assert_eq!(s.fire("b"), vec![run("t#0")]);
    assert_eq!(s.fire("a"), vec![]);
    let kwargs: Vec<&str> = s.core.sessions[UID].state.instances["t#0"]
        .kwargs
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kwargs, ["a", "b"]);
}

#[test]
fn and_every_adds_an_instance_per_firing_and_unless_abandons() {
    let mut s = Session::new(
        Manager::Default,
        r#"{"e": {"after": [], "andEvery": "tick", "run": "x"}, "u": {"after": ["a"], "unless": ["stop"], "run": "y"}}"#,
    );
    assert_eq!(s.fire("tick"), vec![run("e#0")]);
    assert_eq!(s.fire("tick"), vec![run("e#1")]);
    assert_eq!(s.fire("stop"), vec![result("u#0", "abandoned")]);
    assert_eq!(s.fire("a"), vec![]);
}

#[test]
fn a_finished_report_cascades_once_and_duplicates_change_nothing() {
    let mut s = Session::new(
        Manager::Default,
        r#"{"t": {"after": ["a"], "run": "x"}, "n": {"after": ["t"], "run": "y"}}"#,
    );
    s.fire("a");
    assert_eq!(
        s.applied(&report("t#0", 1)),
        vec![result("t#0", "finished"), run("n#0")]
    );
    assert_eq!(s.applied(&report("t#0", 1)), vec![]);
    assert_eq!(s.status("n#0"), Status::Scheduled);
}

#[test]
fn a_retry_fails_replays_and_reschedules_a_clone() {
    let mut s = Session::new(Manager::Default, r#"{"t": {"after": ["a"], "run": "x"}}"#);
    s.fire("a");
    let mut writer = Writer::new(current("RetryRequested").unwrap());
    writer
        .str("e")
        .str(UID)
        .long(AT)
        .str("t#0")
        .str("{}")
        .opt_str(None)
        .long(1);
    let mut retry = writer.finish();
    retry.extend_from_slice(&2.5f64.to_le_bytes());
    let outputs = s.applied(&retry);
    assert_eq!(
        outputs,
        vec![
            result("t#0", "failed"),
            result("t#0", "replayed"),
            run("t#1")
        ]
    );
    let clone = &s.core.sessions[UID].state.instances["t#1"];
    assert_eq!(
        clone
            .metadata
            .keys()
            .map(|k| k.as_str())
            .collect::<Vec<_>>(),
        ["depth", "parent", "cooldown", "timestamps"]
    );
}

#[test]
fn noop_tasks_finish_inline_and_the_finalizing_manager_finalizes_once() {
    let mut s = Session::new(
        Manager::Finalizing,
        r#"{"t": {"after": ["a"], "run": "x", "using": "noop"}, "n": {"after": ["t"], "run": "y", "using": "noop"}}"#,
    );
    let outputs = s.fire("a");
    assert_eq!(
        outputs,
        vec![
            result("t#0", "finished"),
            result("n#0", "finished"),
            ("finalized".into(), "".into(), "".into())
        ]
    );
    assert_eq!(s.fire("a"), vec![]);
}

#[test]
fn refusals_change_nothing() {
    let mut s = Session::new(Manager::Default, r#"{"t": {"after": ["a"], "run": "x"}}"#);
    s.fire("a");
    let before = s.core.sessions[UID].state.clone();
    match s.apply(&replay("t#0")) {
        Outcome::Dead(rejection) => assert_eq!(rejection.reason, "operation_not_allowed"),
        other => panic!("{other:?}"),
    }
    match s.apply(&plain(
        "ConfigurationUpdated",
        &[r#"{"t": {"after": "a", "run": "x"}}"#],
    )) {
        Outcome::Dead(rejection) => assert_eq!(rejection.reason, "invalid_configuration"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.core.sessions[UID].state, before);
}

#[test]
fn an_input_python_must_apply_comes_back_with_the_state_untouched() {
    let mut s = Session::new(
        Manager::Default,
        r#"{"t": {"after": ["a"], "run": "x"}, "u": {"after": ["b"], "run": "y"}}"#,
    );
    s.fire("a");
    s.applied(&plain(
        "InstanceMetadataUpdateRequested",
        &["t#0", r#"{"depth": "deep"}"#],
    ));
    assert_eq!(s.core.sessions[UID].state.unmodelled, 1);
    let before = s.core.sessions[UID].state.clone();
    // Retrying t#0 would need depth + 1 of a string: the Python engine decides.
    let mut writer = Writer::new(current("RetryRequested").unwrap());
    writer
        .str("e")
        .str(UID)
        .long(AT)
        .str("t#0")
        .str("{}")
        .opt_str(None)
        .long(0);
    assert!(matches!(s.apply(&writer.finish()), Outcome::Python(_)));
    assert_eq!(s.core.sessions[UID].state, before);
    assert_eq!(s.core.sessions[UID].applied_offset, 3);
}

/// A tiny deterministic generator (xorshift), so the fuzz loop below needs no crate.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() % (max as u64 + 1)) as usize;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn no_bytes_make_the_core_panic() {
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut core = Core::new(Manager::Finalizing, "finalizing");
    let headers: Vec<[u8; 8]> = stream_triggers_native::avro::SCHEMAS
        .iter()
        .map(|s| s.fingerprint)
        .collect();
    let valid = [
        plain(
            "ConfigurationUpdated",
            &[r#"{"t": {"after": ["a"], "run": "x", "using": "noop"}}"#],
        ),
        plain("TriggerFired", &["a", r#"{"k": [1, 2.5, "x"]}"#]),
        report("t#0", 2),
        replay("t#0"),
    ];
    for offset in 0..50_000 {
        let mut value = if noise.next().is_multiple_of(2) {
            let mut value = valid[(noise.next() % valid.len() as u64) as usize].clone();
            for _ in 0..=noise.next() % 3 {
                let at = 10 + (noise.next() as usize) % (value.len() - 10);
                value[at] = noise.next() as u8;
            }
            value
        } else {
            let mut value = vec![0xc3, 0x01];
            value.extend_from_slice(&headers[(noise.next() % headers.len() as u64) as usize]);
            value
        };
        value.extend(noise.bytes(8));
        let key = if noise.next().is_multiple_of(8) {
            noise.bytes(4)
        } else {
            UID.as_bytes().to_vec()
        };
        let _ = core.apply(0, offset, Some(&key), Some(&value), AT);
        let json = noise.bytes(24);
        let _ = stream_triggers_native::value::parse(&String::from_utf8_lossy(&json));
    }
}
