//! [`EventBridgeScheduler`]: the `Scheduler` port on EventBridge Scheduler — one schedule
//! per Sluice schedule in the deployment's schedule group, invoking the `start` function
//! with `{"entry_id", "scheduled_time"}` — and the exact translation of PowerFlow's
//! timing into EventBridge expressions ([`eventbridge_expression`]).
//!
//! Translation (PowerFlow/Celery semantics, see `sluice_core::schedule`):
//! - crontab `minute hour day_of_month month_of_year day_of_week` →
//!   `cron(minutes hours day-of-month month day-of-week *)`; days of the week are
//!   renumbered 0-6 (Sunday 0) → 1-7 (Sunday 1); the day field that is `*` becomes `?`
//!   (EventBridge requires exactly one `?`); a schedule restricting both day fields (which
//!   Celery ANDs) has no EventBridge equivalent and is refused naming `day_of_week`;
//!   every field is written from its parsed set of values, so names, steps and ranges
//!   all come out in EventBridge's syntax.
//! - `frequency` `run_every` seconds: ticks fall on multiples of `run_every` since the
//!   Unix epoch (as the embedded scheduler fires them). When that grid repeats every
//!   hour or every day it is written as a `cron(...)` firing on exactly those ticks;
//!   otherwise as `rate(...)` (which counts from the schedule's creation). EventBridge
//!   counts in whole minutes, so `run_every` must be a multiple of 60.

use async_trait::async_trait;
use aws_sdk_scheduler::types::{
    DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, ScheduleState,
    Target,
};
use aws_sdk_scheduler::Client;
use sluice_core::json::{Invalid, Issue};
use sluice_core::model::{Schedule, ScheduleSpec};
use sluice_core::ports::{Scheduler, StoreError};
use sluice_core::schedule::{CronSpec, FieldSet};

use crate::error::sdk;

/// Writes a field's values compactly: `*` for every value, ranges `a-b`, steps `a/n`
/// running to the end of the field, lists otherwise. `shift` renumbers (days of week).
fn field(set: &FieldSet, lo: u32, hi: u32, shift: u32) -> String {
    let values = set.values();
    if set.any || values.len() as u32 == hi - lo + 1 {
        return "*".into();
    }
    if values.len() >= 3 {
        let step = values[1] - values[0];
        let regular = values.windows(2).all(|w| w[1] - w[0] == step);
        let last = *values.last().expect("three values");
        if regular && step > 1 && last + step > hi {
            return format!("{}/{step}", values[0] + shift);
        }
    }
    // Contiguous runs as ranges.
    let mut parts = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let mut j = i;
        while j + 1 < values.len() && values[j + 1] == values[j] + 1 {
            j += 1;
        }
        if j >= i + 2 {
            parts.push(format!("{}-{}", values[i] + shift, values[j] + shift));
        } else {
            for v in &values[i..=j] {
                parts.push((v + shift).to_string());
            }
        }
        i = j + 1;
    }
    parts.join(",")
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid::one(Issue::new(
        format!("schedule.schedule_info.{field}"),
        message.into(),
    ))
}

/// The EventBridge Scheduler expression firing on exactly a schedule's ticks (UTC).
pub fn eventbridge_expression(spec: &ScheduleSpec) -> Result<String, Invalid> {
    match spec {
        ScheduleSpec::Crontab(info) => {
            let cron = CronSpec::parse(info).map_err(|e| invalid(e.field.name(), e.message))?;
            let minute = field(&cron.minute, 0, 59, 0);
            let hour = field(&cron.hour, 0, 23, 0);
            let dom = field(&cron.day_of_month, 1, 31, 0);
            let month = field(&cron.month_of_year, 1, 12, 0);
            let dow = field(&cron.day_of_week, 0, 6, 1);
            let (dom, dow) =
                match (dom.as_str(), dow.as_str()) {
                    (_, "*") => (dom, "?".to_string()),
                    ("*", _) => ("?".to_string(), dow),
                    _ => return Err(invalid(
                        "day_of_week",
                        "EventBridge Scheduler cannot restrict both day_of_month and day_of_week \
                         (Sluice runs only on days matching both); set one of them to *",
                    )),
                };
            Ok(format!("cron({minute} {hour} {dom} {month} {dow} *)"))
        }
        ScheduleSpec::Frequency(f) => {
            let secs = f.run_every;
            if secs < sluice_core::schedule::MIN_RUN_EVERY_SECONDS {
                return Err(invalid(
                    "run_every",
                    format!("must be at least 60 seconds (got {secs})"),
                ));
            }
            if secs % 60 != 0 {
                return Err(invalid(
                    "run_every",
                    format!("EventBridge Scheduler counts in whole minutes: use a multiple of 60 (got {secs})"),
                ));
            }
            let minutes = secs / 60;
            if 60 % minutes == 0 {
                // Every n minutes on the hour's grid (3600 is a multiple of n: epoch-aligned).
                return Ok(if minutes == 1 {
                    "cron(* * * * ? *)".into()
                } else if minutes == 60 {
                    "cron(0 * * * ? *)".into()
                } else {
                    format!("cron(0/{minutes} * * * ? *)")
                });
            }
            if minutes % 60 == 0 && 24 % (minutes / 60) == 0 {
                let hours = minutes / 60;
                return Ok(if hours == 24 {
                    "cron(0 0 * * ? *)".into()
                } else {
                    format!("cron(0 0/{hours} * * ? *)")
                });
            }
            Ok(if minutes % 1440 == 0 {
                rate(minutes / 1440, "day")
            } else if minutes % 60 == 0 {
                rate(minutes / 60, "hour")
            } else {
                rate(minutes, "minute")
            })
        }
    }
}

fn rate(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("rate(1 {unit})")
    } else {
        format!("rate({n} {unit}s)")
    }
}

/// The EventBridge schedule name of an entry id: itself when it fits EventBridge's
/// `[0-9a-zA-Z-_.]{1,64}`, else a stable digest.
pub fn schedule_name(entry_id: &str) -> String {
    let fits = !entry_id.is_empty()
        && entry_id.len() <= 64
        && entry_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if fits {
        entry_id.to_string()
    } else {
        use sha2::Digest;
        format!(
            "s-{}",
            &hex::encode(sha2::Sha256::digest(entry_id.as_bytes()))[..40]
        )
    }
}

/// The payload a schedule sends the `start` function.
pub fn target_input(entry_id: &str) -> String {
    serde_json::json!({"entry_id": entry_id, "scheduled_time": "<aws.scheduler.scheduled-time>"})
        .to_string()
}

#[derive(Clone, Debug)]
pub struct EventBridgeScheduler {
    client: Client,
    group: String,
    target_arn: String,
    role_arn: String,
    /// The SQS queue that receives the events of ticks whose invocations failed after
    /// every retry (the template's `ScheduleDeadLetterQueue`).
    dead_letter_arn: Option<String>,
}

impl EventBridgeScheduler {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        target_arn: impl Into<String>,
        role_arn: impl Into<String>,
    ) -> Self {
        Self {
            client,
            group: group.into(),
            target_arn: target_arn.into(),
            role_arn: role_arn.into(),
            dead_letter_arn: None,
        }
    }

    /// Sends the events of ticks that failed every retry to this SQS queue.
    pub fn with_dead_letter(mut self, queue_arn: Option<String>) -> Self {
        self.dead_letter_arn = queue_arn;
        self
    }

    fn target(&self, entry_id: &str) -> Result<Target, StoreError> {
        Target::builder()
            .arn(&self.target_arn)
            .role_arn(&self.role_arn)
            .input(target_input(entry_id))
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(5)
                    .maximum_event_age_in_seconds(3600)
                    .build(),
            )
            .set_dead_letter_config(
                self.dead_letter_arn
                    .as_ref()
                    .map(|arn| DeadLetterConfig::builder().arn(arn).build()),
            )
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

#[async_trait]
impl Scheduler for EventBridgeScheduler {
    /// Creates the schedule, or replaces it when it exists.
    async fn upsert(&self, schedule: &Schedule) -> Result<(), StoreError> {
        let expression = eventbridge_expression(&schedule.schedule)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let name = schedule_name(&schedule.entry_id);
        let state = if schedule.enabled {
            ScheduleState::Enabled
        } else {
            ScheduleState::Disabled
        };
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let description = format!(
            "Sluice schedule {} of application {}",
            schedule.entry_id, schedule.application_id
        );
        let created = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(&expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window.clone())
            .target(self.target(&schedule.entry_id)?)
            .state(state.clone())
            .description(&description)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conflict_exception()) =>
            {
                self.client
                    .update_schedule()
                    .name(&name)
                    .group_name(&self.group)
                    .schedule_expression(&expression)
                    .schedule_expression_timezone("UTC")
                    .flexible_time_window(window)
                    .target(self.target(&schedule.entry_id)?)
                    .state(state)
                    .description(description)
                    .send()
                    .await
                    .map_err(|e| sdk("scheduler UpdateSchedule", e))?;
                Ok(())
            }
            Err(e) => Err(sdk("scheduler CreateSchedule", e)),
        }
    }

    async fn remove(&self, entry_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_schedule()
            .name(schedule_name(entry_id))
            .group_name(&self.group)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk("scheduler DeleteSchedule", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cron(m: &str, h: &str, dom: &str, moy: &str, dow: &str) -> Result<String, Invalid> {
        let spec: ScheduleSpec = serde_json::from_value(json!({"schedule_type": "crontab", "schedule_info": {
            "minute": m, "hour": h, "day_of_month": dom, "month_of_year": moy, "day_of_week": dow}}))
        .unwrap();
        eventbridge_expression(&spec)
    }

    fn every(seconds: u64) -> Result<String, Invalid> {
        eventbridge_expression(&ScheduleSpec::Frequency(
            sluice_core::model::FrequencyInfo { run_every: seconds },
        ))
    }

    #[test]
    fn plain_times_put_the_question_mark_in_day_of_week() {
        assert_eq!(cron("0", "2", "*", "*", "*").unwrap(), "cron(0 2 * * ? *)");
        assert_eq!(cron("*", "*", "*", "*", "*").unwrap(), "cron(* * * * ? *)");
        assert_eq!(
            cron("30", "*/6", "*", "*", "*").unwrap(),
            "cron(30 0/6 * * ? *)"
        );
    }

    #[test]
    fn days_of_week_are_renumbered_from_sunday_1() {
        // Celery: 0 = Sunday .. 6 = Saturday; EventBridge: 1 = Sunday .. 7 = Saturday.
        assert_eq!(cron("0", "9", "*", "*", "0").unwrap(), "cron(0 9 ? * 1 *)");
        assert_eq!(cron("0", "9", "*", "*", "6").unwrap(), "cron(0 9 ? * 7 *)");
        assert_eq!(
            cron("0", "9", "*", "*", "1-5").unwrap(),
            "cron(0 9 ? * 2-6 *)"
        );
        assert_eq!(
            cron("0", "9", "*", "*", "mon-fri").unwrap(),
            "cron(0 9 ? * 2-6 *)"
        );
        assert_eq!(
            cron("0", "9", "*", "*", "sun,sat").unwrap(),
            "cron(0 9 ? * 1,7 *)"
        );
        assert_eq!(
            cron("0", "9", "*", "*", "*/2").unwrap(),
            "cron(0 9 ? * 1/2 *)"
        );
        assert_eq!(
            cron("0", "9", "*", "*", "1,3").unwrap(),
            "cron(0 9 ? * 2,4 *)"
        );
        // Every day written out is no restriction at all.
        assert_eq!(
            cron("0", "9", "*", "*", "0-6").unwrap(),
            "cron(0 9 * * ? *)"
        );
    }

    #[test]
    fn day_of_month_takes_the_other_question_mark() {
        assert_eq!(
            cron("15", "4", "1", "*", "*").unwrap(),
            "cron(15 4 1 * ? *)"
        );
        assert_eq!(
            cron("15", "4", "1,15", "*", "*").unwrap(),
            "cron(15 4 1,15 * ? *)"
        );
        assert_eq!(
            cron("0", "0", "*/10", "*", "*").unwrap(),
            "cron(0 0 1/10 * ? *)"
        );
    }

    #[test]
    fn both_day_fields_restricted_is_refused_naming_the_field() {
        let err = cron("0", "0", "13", "*", "5").unwrap_err();
        assert_eq!(err.issues[0].path, "schedule.schedule_info.day_of_week");
        assert!(
            err.to_string()
                .contains("both day_of_month and day_of_week"),
            "{err}"
        );
    }

    #[test]
    fn months_ranges_steps_and_lists() {
        assert_eq!(
            cron("0", "0", "1", "1,7", "*").unwrap(),
            "cron(0 0 1 1,7 ? *)"
        );
        assert_eq!(
            cron("0", "0", "1", "*/3", "*").unwrap(),
            "cron(0 0 1 1/3 ? *)"
        );
        assert_eq!(
            cron("0", "0", "1", "3-5", "*").unwrap(),
            "cron(0 0 1 3-5 ? *)"
        );
        assert_eq!(
            cron("*/15", "*", "*", "*", "*").unwrap(),
            "cron(0/15 * * * ? *)"
        );
        assert_eq!(
            cron("5/20", "*", "*", "*", "*").unwrap(),
            "cron(5/20 * * * ? *)"
        );
        assert_eq!(
            cron("0,1,2,10", "8-17", "*", "*", "*").unwrap(),
            "cron(0-2,10 8-17 * * ? *)"
        );
        // A step that stops before the end of the field is written out.
        assert_eq!(
            cron("0-20/10", "*", "*", "*", "*").unwrap(),
            "cron(0,10,20 * * * ? *)"
        );
    }

    #[test]
    fn bad_fields_are_refused_naming_the_field() {
        let err = cron("0", "25", "*", "*", "*").unwrap_err();
        assert_eq!(err.issues[0].path, "schedule.schedule_info.hour");
        let err = cron("61", "0", "*", "*", "*").unwrap_err();
        assert_eq!(err.issues[0].path, "schedule.schedule_info.minute");
        let err = cron("0", "0", "*", "13", "*").unwrap_err();
        assert_eq!(err.issues[0].path, "schedule.schedule_info.month_of_year");
    }

    #[test]
    fn frequencies_on_the_epoch_grid_become_cron_others_rate() {
        assert_eq!(every(60).unwrap(), "cron(* * * * ? *)");
        assert_eq!(every(300).unwrap(), "cron(0/5 * * * ? *)");
        assert_eq!(every(3600).unwrap(), "cron(0 * * * ? *)");
        assert_eq!(every(7200).unwrap(), "cron(0 0/2 * * ? *)");
        assert_eq!(every(86_400).unwrap(), "cron(0 0 * * ? *)");
        assert_eq!(every(420).unwrap(), "rate(7 minutes)");
        assert_eq!(every(5400).unwrap(), "rate(90 minutes)");
        assert_eq!(every(5 * 3600).unwrap(), "rate(5 hours)");
        assert_eq!(every(2 * 86_400).unwrap(), "rate(2 days)");
        assert_eq!(every(7 * 86_400).unwrap(), "rate(7 days)");
    }

    #[test]
    fn frequencies_that_eventbridge_cannot_count_are_refused() {
        assert_eq!(
            every(30).unwrap_err().issues[0].path,
            "schedule.schedule_info.run_every"
        );
        let err = every(90).unwrap_err();
        assert!(err.to_string().contains("multiple of 60"), "{err}");
    }

    #[test]
    fn schedule_names_fit_eventbridge() {
        assert_eq!(schedule_name("nightly"), "nightly");
        let odd = schedule_name("night ly/ü");
        assert!(odd.starts_with("s-") && odd.len() == 42);
        assert_eq!(odd, schedule_name("night ly/ü"));
        let input: serde_json::Value = serde_json::from_str(&target_input("nightly")).unwrap();
        assert_eq!(input["scheduled_time"], "<aws.scheduler.scheduled-time>");
    }
}
