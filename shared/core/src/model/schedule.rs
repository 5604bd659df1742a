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
    /// Read-only fields of the listing (`GET /api/v1/schedule`), accepted and ignored on
    /// input so that a listed schedule can be sent back as it is (PowerFlow's manual does).
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub total_runs: ReadOnly,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub last_run: ReadOnly,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub next_run: ReadOnly,
    #[serde(default, skip_serializing)]
    #[schemars(skip)]
    pub last_error: ReadOnly,
}

/// A field the server computes: any value is accepted on input and dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOnly;

impl PartialEq for ReadOnly {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<'de> Deserialize<'de> for ReadOnly {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| ReadOnly)
    }
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
    /// Seconds between runs, at least 60. An integral float (`3600.0`, as PowerFlow's
    /// clients send) is taken as the integer.
    #[serde(deserialize_with = "whole_seconds")]
    #[schemars(with = "u64")]
    pub run_every: u64,
}

/// A non-negative whole number, written as an integer or as an integral float.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct WholeSeconds;
    impl serde::de::Visitor<'_> for WholeSeconds {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a whole number of seconds")
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            // 2^64 is exactly representable; anything at or above it does not fit a u64.
            if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                Ok(v as u64)
            } else {
                Err(E::custom(format!("{v} is not a whole number of seconds")))
            }
        }
    }
    deserializer.deserialize_any(WholeSeconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_document;

    const MANUAL_BODY: &str = r#"{
        "application_id": "nightly", "entry_id": "every-hour",
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 3600.0}},
        "total_runs": 0, "last_run": null, "next_run": "2026-01-01T00:00:00Z"
    }"#;

    #[test]
    fn the_listing_shape_is_accepted_with_its_read_only_fields_ignored() {
        let schedule: Schedule = parse_document(MANUAL_BODY).unwrap();
        assert_eq!(
            schedule.schedule,
            ScheduleSpec::Frequency(FrequencyInfo { run_every: 3600 })
        );
        let stored = serde_json::to_value(&schedule).unwrap();
        assert!(stored.get("total_runs").is_none(), "{stored}");
        assert!(stored.get("next_run").is_none(), "{stored}");
    }

    #[test]
    fn a_fractional_run_every_and_unknown_fields_are_refused_naming_the_field() {
        let fractional = MANUAL_BODY.replace("3600.0", "3600.5");
        let err = parse_document::<Schedule>(&fractional)
            .unwrap_err()
            .to_string();
        assert!(err.contains("run_every") && err.contains("3600.5"), "{err}");
        let unknown = MANUAL_BODY.replace("\"total_runs\"", "\"total_runz\"");
        let err = parse_document::<Schedule>(&unknown)
            .unwrap_err()
            .to_string();
        assert!(err.contains("total_runz"), "{err}");
    }
}
