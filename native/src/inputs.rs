//! Decoded `events` records to engine inputs (`input_from_record` of events/records.py).

use std::collections::HashMap;
use std::sync::Arc;

use crate::avro::Record;
use crate::config::{build_task_configs, TaskConfig};
use crate::errors::{rejected, unsupported, Refusal};
use crate::state::{Status, STATUSES};
use crate::transition::Input;
use crate::value::{parse, JsonError, Map, Value};

/// The datetimes Python can hold: years 1 to 9999, in µs since the epoch.
pub const MIN_US: i64 = -62_135_596_800_000_000;
pub const MAX_US: i64 = 253_402_300_799_999_999;

/// Configurations built lately, by their JSON text: usually every session of an application
/// gets the same one, so they share one set of configs (memory) and skip the building (time).
#[derive(Default)]
pub struct Configs {
    built: HashMap<String, Arc<Vec<Arc<TaskConfig>>>>,
}

const CONFIGS_KEPT: usize = 256;

impl Configs {
    fn get(&mut self, text: &str) -> Result<Arc<Vec<Arc<TaskConfig>>>, Refusal> {
        if let Some(configs) = self.built.get(text) {
            return Ok(Arc::clone(configs));
        }
        let configuration = mapping(Some(text), "configuration_json")?.unwrap_or_default();
        let configs = Arc::new(build_task_configs(&configuration)?);
        if self.built.len() >= CONFIGS_KEPT {
            self.built.clear();
        }
        self.built.insert(text.to_string(), Arc::clone(&configs));
        Ok(configs)
    }
}

fn mapping(text: Option<&str>, what: &str) -> Result<Option<Map>, Refusal> {
    let Some(text) = text else {
        return Ok(None);
    };
    match parse(text) {
        Ok(Value::Map(map)) => Ok(Some(map)),
        Ok(other) => Err(rejected(
            "invalid_payload",
            format!("{what} must be a JSON object, not {}", other.type_name()),
        )),
        Err(JsonError::Invalid(message)) => Err(rejected("invalid_payload", message)),
        Err(JsonError::Unsupported(why)) => Err(unsupported(why)),
    }
}

fn status(text: &str) -> Result<Status, Refusal> {
    Status::parse(text).ok_or_else(|| {
        let known: Vec<&str> = STATUSES.iter().map(|s| s.as_str()).collect();
        rejected(
            "invalid_payload",
            format!(
                "unknown status {}; expected one of {}",
                crate::value::py_repr(text),
                known.join(", ")
            ),
        )
    })
}

fn text<'a>(record: &'a Record, field: &str) -> &'a str {
    record.str(field).unwrap_or_default()
}

/// The engine input an `events` record asks for, and its time (its `produced_at`).
pub fn input_from_record(record: &Record, configs: &mut Configs) -> Result<(Input, i64), Refusal> {
    let r = record;
    let known = matches!(
        r.type_name,
        "TriggerFired"
            | "ConfigurationUpdated"
            | "InstanceStatusReported"
            | "RetryRequested"
            | "ReplayRequested"
            | "SkipRequested"
            | "InstanceStatusUpdateRequested"
            | "InstanceMetadataUpdateRequested"
            | "LogsResolved"
    );
    if !known {
        return Err(rejected(
            "invalid_payload",
            format!("{} records do not belong on the events topic", r.type_name),
        ));
    }
    let at = r.long("produced_at");
    if !(MIN_US..=MAX_US).contains(&at) {
        // (The Python path raises OverflowError here, which escapes the worker's handler:
        // a bug reported to the lead.  A dead letter is what the contract asks for.)
        return Err(rejected(
            "invalid_payload",
            format!("produced_at {at} is outside the years 1-9999"),
        ));
    }
    let instance = || text(r, "instance").to_string();
    let input = match r.type_name {
        "TriggerFired" => Input::Fire {
            trigger: text(r, "trigger").to_string(),
            kwargs: mapping(Some(text(r, "kwargs_json")), "kwargs_json")?.unwrap_or_default(),
        },
        "ConfigurationUpdated" => Input::Configure(configs.get(text(r, "configuration_json"))?),
        "InstanceStatusReported" => Input::StatusReported {
            instance: instance(),
            status: status(text(r, "status"))?,
            metadata: mapping(Some(text(r, "metadata_json")), "metadata_json")?,
            result: mapping(r.opt_str("result_json"), "result_json")?,
        },
        "RetryRequested" => Input::Retry {
            instance: instance(),
            metadata: mapping(Some(text(r, "metadata_json")), "metadata_json")?,
            replacement: mapping(
                r.opt_str("replacement_kwargs_json"),
                "replacement_kwargs_json",
            )?,
            cooldown: r.double("cooldown_s"),
        },
        "ReplayRequested" => Input::Replay {
            instance: instance(),
            replacement: mapping(
                r.opt_str("replacement_kwargs_json"),
                "replacement_kwargs_json",
            )?,
        },
        "SkipRequested" => Input::Skip {
            instance: instance(),
            cascade: r.bool("cascade"),
            result: mapping(r.opt_str("result_json"), "result_json")?,
        },
        "InstanceStatusUpdateRequested" => {
            let status = status(text(r, "status"))?;
            let metadata_text = Some(text(r, "metadata_json"))
                .filter(|t| !t.is_empty())
                .unwrap_or("{}");
            Input::StatusUpdated {
                instance: instance(),
                status,
                metadata: mapping(Some(metadata_text), "metadata_json")?,
                cascade: r.bool("cascade"),
                cascade_kwargs: mapping(r.opt_str("cascade_kwargs_json"), "cascade_kwargs_json")?,
            }
        }
        "InstanceMetadataUpdateRequested" => Input::MetadataUpdated {
            instance: instance(),
            metadata: mapping(Some(text(r, "metadata_json")), "metadata_json")?.unwrap_or_default(),
        },
        _ => Input::LogsResolved {
            instance: instance(),
        },
    };
    Ok((input, at))
}
