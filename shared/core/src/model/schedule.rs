//! The schedule document (SPEC §5, PowerFlow-compatible).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A cron or frequency trigger of an application with its own params. UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub application_id: String,
    pub entry_id: String,
    #[serde(default)]
    pub params: Map<String, Value>,
    pub schedule: ScheduleSpec,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// `crontab` with five fields, or `frequency` with `run_every` seconds (at least 60).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "schedule_type",
    content = "schedule_info",
    rename_all = "lowercase"
)]
pub enum ScheduleSpec {
    Crontab(CrontabInfo),
    Frequency(FrequencyInfo),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrontabInfo {
    #[serde(default = "star")]
    pub minute: String,
    #[serde(default = "star")]
    pub hour: String,
    #[serde(default = "star")]
    pub day_of_month: String,
    #[serde(default = "star")]
    pub month_of_year: String,
    #[serde(default = "star")]
    pub day_of_week: String,
}

fn star() -> String {
    "*".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrequencyInfo {
    /// Seconds between runs, at least 60.
    pub run_every: u64,
}
