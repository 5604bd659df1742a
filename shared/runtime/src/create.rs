//! Creating runs: checking a start request (params, configuration, references) and
//! storing the new run record. Below the executor, which creates the child runs of
//! `trigger_application`, and the service, which starts runs; calls transitions only.

use std::sync::Arc;

use serde_json::{Map, Value};
use sluice_core::alert::AlertStart;
use sluice_core::engine::Plan;
use sluice_core::model::{
    new_run_id, AlertOf, Application, Configuration, LogEntry, LogLevel, ParentRef, Run, RunState,
};
use sluice_core::step::version_of;
use sluice_core::validate::{check_config_references, check_run_params, RunSettings};
use sluice_core::Invalid;

use crate::runtime::{Runtime, RuntimeError};

/// A request to start a run.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// Name of a stored application (ignored when `snapshot` is given).
    pub application: String,
    /// Run params: app variable overrides and the reserved `configuration`, `queue`,
    /// `loglevel`.
    pub params: Map<String, Value>,
    pub parent: Option<ParentRef>,
    /// A fixed id (child runs); a new time-ordered id otherwise.
    pub run_id: Option<String>,
    pub replay_of: Option<String>,
    /// Run this document instead of the stored application (replays).
    pub snapshot: Option<Application>,
    /// The stored version `snapshot` is (a replay's: its original's), when known;
    /// otherwise the run records the latest version if the document is that version.
    pub snapshot_version: Option<u64>,
    /// The run whose end this run handles (an alert run, or a run an alert run
    /// triggered): it never starts an alert itself.
    pub alert_of: Option<AlertOf>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The step queues hold too much work already (see
    /// [`RuntimeConfig::max_queued_steps`](crate::RuntimeConfig::max_queued_steps)):
    /// try again after `retry_after`.
    #[error(
        "too much work queued: {queued} steps wait, the limit is {limit}; retry in {} s",
        retry_after.as_secs().max(1)
    )]
    Overloaded {
        queued: u64,
        limit: u64,
        retry_after: std::time::Duration,
    },
}

impl From<sluice_core::ports::StoreError> for StartError {
    fn from(e: sluice_core::ports::StoreError) -> Self {
        Self::Runtime(e.into())
    }
}

impl Runtime {
    /// Checks a request and stores its new run, returning the run's id; starting it
    /// (processing [`Event::Start`](sluice_core::engine::Event::Start)) is the caller's.
    /// Creating is idempotent for a fixed `run_id`: an existing run is left as it is.
    pub(crate) async fn create_run(&self, request: StartRequest) -> Result<String, StartError> {
        let app = match request.snapshot {
            Some(app) => app,
            None => self
                .backend
                .definitions
                .get_application(&request.application)
                .await?
                .ok_or_else(|| {
                    StartError::NotFound(format!(
                        "application \"{}\" not found",
                        request.application
                    ))
                })?,
        };
        let settings = self.check_start(&app, &request.params, None).await?;

        // The runtime's clock, which the stores judge expiry by too.
        let now = (self.config.clock)();
        let plan = Plan::new(app.clone());
        let id = request.run_id.unwrap_or_else(new_run_id);
        let mut run = plan.new_run(id.clone(), now, now + self.config.result_expires);
        run.configuration = settings.configuration;
        run.queue = settings.queue;
        run.loglevel = settings.loglevel;
        run.params = request.params;
        run.parent = request.parent;
        run.replay_of = request.replay_of;
        run.alert_of = request.alert_of;
        run.application_version = match request.snapshot_version {
            Some(version) => Some(version),
            None => self.stored_version_of(&app).await?,
        };
        // Versions from this runtime's registry: on AWS the catalogue, generated from the
        // same build as the step functions, so it names the versions they run.
        for (step, spec) in run.steps.iter_mut().zip(&app.steps) {
            step.type_version = version_of(&self.registry, &spec.step_type);
        }
        if self.backend.runs.create_run(&run, &app).await? {
            self.remember_plan(&id, Arc::new(plan));
            self.publish(&run);
        }
        Ok(id)
    }

    /// Creates the alert run `alert` of the ended run `ended` (see `sluice_core::alert`)
    /// and returns its id when it still needs its `Start` (created now, or created
    /// before a crash and never started). Idempotent: the alert run's id is fixed, so a
    /// redelivered end notice finds it and starts nothing. A refused alert (its
    /// application missing, params it does not accept) is an ERROR entry in the ended
    /// run's log, never silent; only infrastructure failures are errors here.
    pub(crate) async fn create_alert_run(
        &self,
        ended: &Run,
        alert: &AlertStart,
    ) -> Result<Option<String>, RuntimeError> {
        if let Some(existing) = self.backend.runs.get_run(&alert.run_id).await? {
            return Ok((existing.state == RunState::Pending).then_some(existing.id));
        }
        let field = match alert.alert_of.event {
            sluice_core::model::AlertEvent::Failure => "on_failure",
            sluice_core::model::AlertEvent::Warning => "on_warning",
        };
        let target = self
            .backend
            .definitions
            .get_application(&alert.application)
            .await?;
        let created = match target {
            None => Err(StartError::NotFound(format!(
                "application \"{}\" not found",
                alert.application
            ))),
            Some(target) => {
                let request = StartRequest {
                    application: alert.application.clone(),
                    params: alert.params_for(&target),
                    run_id: Some(alert.run_id.clone()),
                    alert_of: Some(alert.alert_of.clone()),
                    snapshot: Some(target),
                    ..StartRequest::default()
                };
                self.create_run(request).await
            }
        };
        let (level, message, started) = match created {
            Ok(id) => (
                LogLevel::Info,
                format!("{field}: started run {id} of \"{}\"", alert.application),
                Some(id),
            ),
            Err(StartError::Runtime(e)) => return Err(e),
            Err(refused) => {
                tracing::warn!(run = %ended.id, application = %alert.application, error = %refused, "alert not started");
                (
                    LogLevel::Error,
                    format!(
                        "{field}: cannot start application \"{}\": {refused}",
                        alert.application
                    ),
                    None,
                )
            }
        };
        let entry = LogEntry {
            ts: (self.config.clock)(),
            level,
            step: field.to_string(),
            attempt: 0,
            message,
        };
        self.backend
            .runs
            .append_logs(&ended.id, &[entry], ended.expires_at)
            .await?;
        Ok(started)
    }

    /// Checks that `app` can start with `params` (their values, the configuration they
    /// name and its references) without storing anything, so that a caller can check
    /// before it stores the documents of a run. `pending` is a configuration about to be
    /// stored: it stands in for the stored one of its name.
    pub async fn check_start(
        &self,
        app: &Application,
        params: &Map<String, Value>,
        pending: Option<&Configuration>,
    ) -> Result<RunSettings, StartError> {
        let settings = check_run_params(app, params)?;
        let configuration = match &settings.configuration {
            Some(name) if pending.is_some_and(|c| &c.name == name) => pending.cloned(),
            Some(name) => Some(
                self.backend
                    .definitions
                    .get_configuration(name)
                    .await?
                    .ok_or_else(|| {
                        StartError::NotFound(format!("configuration \"{name}\" not found"))
                    })?,
            ),
            None => None,
        };
        check_config_references(app, configuration.as_ref())?;
        Ok(settings)
    }
}
