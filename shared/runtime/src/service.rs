//! Operations shared by the CLI and the HTTP API: starting, replaying and revoking runs,
//! and storing definitions (configurations with their secrets split off).

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sluice_core::engine::{Event, Plan};
use sluice_core::model::{new_run_id, Application, Configuration, ParentRef, Run};
use sluice_core::validate::{
    check_config_references, check_run_params, validate_application, validate_configuration,
    RunSettings,
};
use sluice_core::{Invalid, Issue};

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
}

impl From<sluice_core::ports::StoreError> for StartError {
    fn from(e: sluice_core::ports::StoreError) -> Self {
        Self::Runtime(e.into())
    }
}

impl Runtime {
    /// Checks a request, creates the run and starts it. Starting is idempotent for a
    /// fixed `run_id`: the existing run is returned.
    pub async fn start(&self, request: StartRequest) -> Result<Run, StartError> {
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
        if self.backend.runs.create_run(&run, &app).await? {
            self.remember_plan(&id, std::sync::Arc::new(plan));
            self.publish(&run);
        }
        self.process(&id, Event::Start).await?;
        Ok(self.get_run(&id).await?)
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

    /// A new run with the same application document, params, configuration and queue.
    pub async fn replay(&self, run_id: &str) -> Result<Run, StartError> {
        let original = self.get_run(run_id).await?;
        let snapshot = self
            .backend
            .runs
            .get_snapshot(run_id)
            .await?
            .ok_or_else(|| {
                StartError::NotFound(format!("run \"{run_id}\" has no application snapshot"))
            })?;
        let mut params = original.params.clone();
        // The original's resolved settings win over whatever its params said.
        match &original.configuration {
            Some(c) => params.insert("configuration".into(), Value::String(c.clone())),
            None => params.insert("configuration".into(), Value::Null),
        };
        if let Some(q) = &original.queue {
            params.insert("queue".into(), Value::String(q.clone()));
        }
        self.start(StartRequest {
            application: original.application.clone(),
            params,
            replay_of: Some(original.id.clone()),
            snapshot: Some(snapshot),
            ..StartRequest::default()
        })
        .await
    }

    /// Revokes a run: nothing further starts, unfinished steps are cancelled, waiting
    /// children are revoked too.
    pub async fn revoke(&self, run_id: &str) -> Result<Run, RuntimeError> {
        self.process(run_id, Event::Revoke).await?;
        self.get_run(run_id).await
    }

    /// Validates and stores an application.
    pub async fn put_application(&self, app: &Application) -> Result<(), StartError> {
        validate_application(app, &self.catalog)?;
        self.backend.definitions.put_application(app).await?;
        Ok(())
    }

    /// Validates and stores a configuration: encrypted values go to the secret store (an
    /// encrypted entry posted with `null` keeps the stored secret), the definition is
    /// stored with every encrypted value `null`. Returns the stored (redacted) document.
    pub async fn put_configuration(
        &self,
        config: &Configuration,
    ) -> Result<Configuration, StartError> {
        validate_configuration(config)?;
        let encrypted: Vec<(usize, &sluice_core::model::ConfigVariable)> = config
            .data
            .iter()
            .enumerate()
            .filter(|(_, v)| v.encrypted)
            .collect();
        let keeps_stored = encrypted.iter().any(|(_, v)| v.value.is_null());
        let stored = if keeps_stored {
            self.backend
                .secrets
                .get_secrets(&config.name)
                .await
                .map_err(RuntimeError::from)?
        } else {
            BTreeMap::new()
        };
        let mut secrets = BTreeMap::new();
        let mut issues = Vec::new();
        for (i, var) in &encrypted {
            if var.value.is_null() {
                match stored.get(&var.name) {
                    Some(value) => {
                        secrets.insert(var.name.clone(), value.clone());
                    }
                    None => issues.push(Issue::new(
                        format!("data[{i}].value"),
                        format!(
                            "encrypted variable \"{}\" has no stored value to keep; give its value",
                            var.name
                        ),
                    )),
                }
            } else {
                secrets.insert(var.name.clone(), var.value.clone());
            }
        }
        if !issues.is_empty() {
            return Err(Invalid { issues }.into());
        }
        if secrets.is_empty() {
            self.backend
                .secrets
                .delete_secrets(&config.name)
                .await
                .map_err(RuntimeError::from)?;
        } else {
            self.backend
                .secrets
                .put_secrets(&config.name, &secrets)
                .await
                .map_err(RuntimeError::from)?;
        }
        let redacted = config.redacted();
        self.backend
            .definitions
            .put_configuration(&redacted)
            .await?;
        self.secret_cache
            .lock()
            .expect("secret cache")
            .remove(&config.name);
        Ok(redacted)
    }

    /// Deletes a configuration and its secrets.
    pub async fn delete_configuration(&self, name: &str) -> Result<bool, RuntimeError> {
        let existed = self.backend.definitions.delete_configuration(name).await?;
        self.backend.secrets.delete_secrets(name).await?;
        self.secret_cache.lock().expect("secret cache").remove(name);
        Ok(existed)
    }
}
