//! stream-triggers' native core: the worker's hot path (decode, apply the Triggers rules,
//! build the output records) in Rust.  The Python engine is the specification; this crate
//! is held to it by the differential tests in `tests/native`.
//!
//! Layers, bottom up: `value` and `map` (JSON as Python reads and prints it), `avro` (our fixed
//! schemas), `config`, `state`, `transition` (the rules, pure), `inputs` (records to
//! inputs), `shell` (the worker's manager, runners and output sink), and `binding` (PyO3,
//! only with the `python` feature).

pub mod avro;
pub mod config;
pub mod errors;
pub mod inputs;
pub mod map;
pub mod shell;
pub mod state;
pub mod stateformat;
pub mod stateread;
pub mod transition;
pub mod value;

#[cfg(feature = "python")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "python")]
mod binding;
#[cfg(feature = "python")]
mod pystate;
