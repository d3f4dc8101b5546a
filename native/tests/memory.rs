//! The heap a held session costs: the benchmark's sessions (six `noop` tasks chained on
//! seven triggers, every trigger fired, the session finalized), counted by the allocator.
//!
//! The worker holds thousands of sessions at its peak: their size is most of its memory.
//! (Without the `python` feature: that one brings its own allocator.)
#![cfg(not(feature = "python"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use stream_triggers_native::avro::{current, Writer};
use stream_triggers_native::shell::{Core, Manager, Outcome};

/// The system allocator, counting the bytes asked for and not given back.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TRIGGERS: [&str; 7] = [
    "start", "page1", "page2", "page3", "page4", "page5", "complete",
];
const TASKS: [&str; 6] = ["t_a", "t_b", "t_c", "t_d", "t_e", "t_f"];
const AT: i64 = 1_700_000_000_000_000;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A session's configuration (each task after one to three triggers or earlier tasks)
/// and the order its triggers fire in.
fn session(rng: &mut Rng) -> (String, Vec<&'static str>) {
    let mut tasks = Vec::new();
    for (i, task) in TASKS.iter().enumerate() {
        let mut candidates: Vec<&str> = TRIGGERS.iter().chain(&TASKS[..i]).copied().collect();
        let after: Vec<String> = (0..=rng.below(3))
            .map(|_| format!("{:?}", candidates.remove(rng.below(candidates.len()))))
            .collect();
        tasks.push(format!(
            r#""{task}":{{"after":[{}],"run":"bench.noop","using":"noop"}}"#,
            after.join(",")
        ));
    }
    let mut order = TRIGGERS.to_vec();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    (format!("{{{}}}", tasks.join(",")), order)
}

fn record(uid: &str, type_name: &str, fields: &[&str]) -> Vec<u8> {
    let mut writer = Writer::new(current(type_name).unwrap());
    writer.str("e").str(uid).long(AT);
    for field in fields {
        writer.str(field);
    }
    writer.finish()
}

#[test]
fn a_finished_benchmark_session_holds_under_8_kb() {
    const SESSIONS: usize = 2000;
    let mut rng = Rng(42);
    let inputs: Vec<(String, Vec<Vec<u8>>)> = (0..SESSIONS)
        .map(|n| {
            let uid = format!("session-{n:05}");
            let (configuration, order) = session(&mut rng);
            let mut records = vec![record(&uid, "ConfigurationUpdated", &[&configuration])];
            records.extend(
                order
                    .iter()
                    .map(|t| record(&uid, "TriggerFired", &[t, "{}"])),
            );
            (uid, records)
        })
        .collect();
    let mut core = Core::new(Manager::Finalizing, "finalizing");
    let before = HELD.load(Ordering::Relaxed);
    // Sessions interleaved, as on a partition: every session's first input, then every second...
    let mut offset = 0;
    for step in 0..=TRIGGERS.len() {
        for (uid, records) in &inputs {
            offset += 1;
            let outcome = core.apply(0, offset, Some(uid.as_bytes()), Some(&records[step]), AT);
            assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        }
    }
    let per_session = (HELD.load(Ordering::Relaxed) - before) as usize / SESSIONS;
    assert!(core
        .sessions
        .values()
        .all(|e| e.state.unresolved.is_empty()));
    // 20.1 KB before the compact forms (map.rs, config::Names, no per-session indexes), 6.6 KB after.
    assert!(per_session < 8_000, "{per_session} bytes per held session");
}
