//! Failure alerting: what a finished run's application asks to start (`on_failure`,
//! `on_warning`), decided from the run record and its application snapshot alone.
//!
//! - `on_failure` starts when the run ends `failure` (not when it is revoked: revoking
//!   is deliberate); `on_warning` when it ends `success` with a step in `warning`.
//! - The alert run's id is derived from the finished run's id, its end time and the
//!   event ([`alert_run_id`]), so a redelivered end notice never starts a second one.
//! - An alert run, and every run it triggers, carries [`AlertOf`]; such a run never
//!   starts an alert, so alerting cannot loop and a chain is one alert long.
//! - The alert run gets the alert's `params` and each of [`ALERT_PARAMS`] that its
//!   application declares as an app variable ([`AlertStart::params_for`]). Step errors
//!   and warnings are taken from the run record, where they are stored redacted.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::model::{
    deterministic_run_id, AlertEvent, AlertOf, Application, Run, RunState, StepState,
};

/// The params an alert run is given, when its application declares them: the event
/// (`failure` or `warning`), the finished run's id, application and state, its failed
/// (or warning) steps as a list of `{step, state, error, warnings}`, and a one-line
/// summary.
pub const ALERT_PARAMS: [&str; 6] = [
    "alert_event",
    "alert_run_id",
    "alert_application",
    "alert_state",
    "alert_steps",
    "alert_message",
];

/// Longest error or warning text passed on (in characters); longer ones are cut.
pub const MAX_ALERT_TEXT: usize = 2_000;
/// Most steps listed in `alert_steps` (in application order).
pub const MAX_ALERT_STEPS: usize = 50;

/// An alert run to start.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertStart {
    /// The application to start.
    pub application: String,
    /// Its id: the same for every end notice of the same run.
    pub run_id: String,
    pub alert_of: AlertOf,
    /// The alert's own params (from the application document).
    pub params: Map<String, Value>,
    /// The values of [`ALERT_PARAMS`].
    pub alert_params: Map<String, Value>,
}

impl AlertStart {
    /// The params of the alert run for its application `target`: the alert's params,
    /// plus each reserved alert param `target` declares as an app variable (the others
    /// are left out, so an alert application declares only what it uses).
    pub fn params_for(&self, target: &Application) -> Map<String, Value> {
        let mut params = self.params.clone();
        for (name, value) in &self.alert_params {
            if target.variable(name).is_some() {
                params.insert(name.clone(), value.clone());
            }
        }
        params
    }
}

/// The id of the alert run of `run_id` for `event`, ended at `finished_at`.
pub fn alert_run_id(run_id: &str, event: AlertEvent, finished_at: DateTime<Utc>) -> String {
    deterministic_run_id(finished_at, &format!("alert/{run_id}/{}", event.as_str()))
}

/// Whether `run` ended in a way an application can alert on (so that a runtime reads
/// its application snapshot only then): it failed, or succeeded with a step in
/// `warning`, and it is not an alert run.
pub fn may_alert(run: &Run) -> bool {
    run.alert_of.is_none()
        && match run.state {
            RunState::Failure => true,
            RunState::Success => run.steps.iter().any(|s| s.state == StepState::Warning),
            _ => false,
        }
}

/// What `run`, executing `app` (its snapshot), asks to start now that it ended; `None`
/// while it runs, when it needs no alert, or when it is an alert run itself.
pub fn alert_for(app: &Application, run: &Run) -> Option<AlertStart> {
    if !may_alert(run) {
        return None;
    }
    let (event, alert, state) = match run.state {
        RunState::Failure => (
            AlertEvent::Failure,
            app.on_failure.as_ref()?,
            StepState::Failed,
        ),
        _ => (
            AlertEvent::Warning,
            app.on_warning.as_ref()?,
            StepState::Warning,
        ),
    };
    let finished_at = run.finished_at.unwrap_or(run.created_at);
    let steps: Vec<Value> = run
        .steps
        .iter()
        .filter(|s| s.state == state)
        .take(MAX_ALERT_STEPS)
        .map(|s| {
            json!({
                "step": s.id,
                "state": s.state.as_str(),
                "error": s.error.as_deref().map(bounded),
                "warnings": s.warnings.iter().map(|w| bounded(w)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let details: Vec<String> = run
        .steps
        .iter()
        .filter(|s| s.state == state)
        .take(MAX_ALERT_STEPS)
        .map(|s| match &s.error {
            Some(error) => format!("{}: {}", s.id, bounded(error)),
            None => format!("{}: {}", s.id, bounded(&s.warnings.join("; "))),
        })
        .collect();
    let message = format!(
        "run {} of {} ended {}{}{}",
        run.id,
        run.application,
        run.state.as_str(),
        if event == AlertEvent::Warning {
            " with warnings"
        } else {
            ""
        },
        if details.is_empty() {
            String::new()
        } else {
            format!(": {}", details.join("; "))
        }
    );
    let alert_params = Map::from_iter([
        ("alert_event".to_string(), json!(event.as_str())),
        ("alert_run_id".to_string(), json!(run.id)),
        ("alert_application".to_string(), json!(run.application)),
        ("alert_state".to_string(), json!(run.state.as_str())),
        ("alert_steps".to_string(), Value::Array(steps)),
        ("alert_message".to_string(), json!(message)),
    ]);
    Some(AlertStart {
        application: alert.application.clone(),
        run_id: alert_run_id(&run.id, event, finished_at),
        alert_of: AlertOf {
            run_id: run.id.clone(),
            event,
        },
        params: alert.params.clone(),
        alert_params,
    })
}

fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_ALERT_TEXT {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_ALERT_TEXT).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Plan;

    fn app(doc: Value) -> Application {
        serde_json::from_value(doc).unwrap()
    }

    fn failing_app() -> Application {
        app(json!({
            "name": "sync", "author": "t",
            "on_failure": {"application": "alert", "params": {"channel": "ops"}},
            "on_warning": {"application": "notice"},
            "steps": [{"id": "A", "type": "echo"}, {"id": "B", "type": "echo", "depends_on": ["A"]}]
        }))
    }

    fn ended(app: &Application, state: RunState, a: StepState) -> Run {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut run = Plan::new(app.clone()).new_run("isapp-1".into(), now, now);
        run.state = state;
        run.finished_at = Some(now);
        run.steps[0].state = a;
        match a {
            StepState::Failed => {
                run.steps[0].error = Some("HTTP 500: boom".into());
                run.steps[1].state = StepState::Cancelled;
            }
            StepState::Warning => {
                run.steps[0].warnings = vec!["slow".into()];
                run.steps[1].state = StepState::Success;
            }
            _ => run.steps[1].state = a,
        }
        run
    }

    #[test]
    fn a_failed_run_starts_its_on_failure_with_the_failed_steps() {
        let app = failing_app();
        let run = ended(&app, RunState::Failure, StepState::Failed);
        let alert = alert_for(&app, &run).unwrap();
        assert_eq!(alert.application, "alert");
        assert_eq!(alert.alert_of.event, AlertEvent::Failure);
        assert_eq!(alert.alert_params["alert_run_id"], "isapp-1");
        assert_eq!(alert.alert_params["alert_application"], "sync");
        assert_eq!(alert.alert_params["alert_state"], "failure");
        assert_eq!(
            alert.alert_params["alert_steps"],
            json!([{"step": "A", "state": "failed", "error": "HTTP 500: boom", "warnings": []}]),
            "cancelled successors are not failed steps"
        );
        assert_eq!(
            alert.alert_params["alert_message"],
            "run isapp-1 of sync ended failure: A: HTTP 500: boom"
        );
    }

    #[test]
    fn the_alert_run_id_is_the_same_for_every_end_notice() {
        let app = failing_app();
        let run = ended(&app, RunState::Failure, StepState::Failed);
        let first = alert_for(&app, &run).unwrap();
        assert_eq!(first, alert_for(&app, &run).unwrap());
        let mut other = run.clone();
        other.id = "isapp-2".into();
        assert_ne!(first.run_id, alert_for(&app, &other).unwrap().run_id);
        assert!(first.run_id.starts_with("isapp-"), "{}", first.run_id);
    }

    #[test]
    fn an_alert_run_never_alerts_so_alerts_cannot_loop() {
        // Even an alert application that names itself as its on_failure.
        let mut app = failing_app();
        app.on_failure.as_mut().unwrap().application = "sync".into();
        let mut run = ended(&app, RunState::Failure, StepState::Failed);
        run.alert_of = Some(AlertOf {
            run_id: "isapp-0".into(),
            event: AlertEvent::Failure,
        });
        assert_eq!(alert_for(&app, &run), None);
    }

    #[test]
    fn warnings_success_revocation_and_running_runs() {
        let app = failing_app();
        let warned = ended(&app, RunState::Success, StepState::Warning);
        let alert = alert_for(&app, &warned).unwrap();
        assert_eq!(
            (alert.application.as_str(), alert.alert_of.event),
            ("notice", AlertEvent::Warning)
        );
        assert_eq!(
            alert.alert_params["alert_steps"][0]["warnings"],
            json!(["slow"])
        );
        let clean = ended(&app, RunState::Success, StepState::Success);
        assert_eq!(alert_for(&app, &clean), None);
        let revoked = ended(&app, RunState::Revoked, StepState::Cancelled);
        assert_eq!(alert_for(&app, &revoked), None, "a revoke is deliberate");
        let running = ended(&app, RunState::Running, StepState::Running);
        assert_eq!(alert_for(&app, &running), None);
        let mut quiet = failing_app();
        quiet.on_failure = None;
        let failed = ended(&quiet, RunState::Failure, StepState::Failed);
        assert_eq!(alert_for(&quiet, &failed), None);
    }

    #[test]
    fn only_declared_alert_params_are_passed_and_long_errors_are_cut() {
        let app = failing_app();
        let mut run = ended(&app, RunState::Failure, StepState::Failed);
        run.steps[0].error = Some("x".repeat(MAX_ALERT_TEXT + 10));
        let alert = alert_for(&app, &run).unwrap();
        let error = alert.alert_params["alert_steps"][0]["error"]
            .as_str()
            .unwrap();
        assert_eq!(error.chars().count(), MAX_ALERT_TEXT + 1);
        let target = Application {
            app_variables: vec![serde_json::from_value(
                json!({"name": "alert_run_id", "type": "string"}),
            )
            .unwrap()],
            ..app.clone()
        };
        let params = alert.params_for(&target);
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        assert_eq!(names, ["channel", "alert_run_id"]);
    }
}
