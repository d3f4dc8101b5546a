//! Errors as values: why an input was refused, with the dead-letter reason the Python path uses.

/// An input the worker cannot apply: `reason` is the dead-letter code (`undecodable`,
/// `unknown_schema`, `invalid_payload`, `missing_key`, `key_mismatch`, `unknown_instance`,
/// `operation_not_allowed`, `invalid_configuration`, `apply_failed`), `message` the detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
        }
    }
}

/// Why a step could not finish natively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The Python engine would refuse the input the same way: dead-letter it.
    Rejected(Rejection),
    /// The input needs something this core does not model (e.g. jsonx-tagged values in a
    /// payload): the Python engine must apply it.  Counted by the caller, never silent.
    Unsupported(String),
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Refusal {
        Refusal::Rejected(rejection)
    }
}

pub fn rejected(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Rejected(Rejection::new(reason, message))
}

pub fn unsupported(what: impl Into<String>) -> Refusal {
    Refusal::Unsupported(what.into())
}
