//! Operations shared by the CLI and the HTTP API: starting, replaying, revoking and
//! resuming runs, reading their logs, and storing definitions (configurations with their
//! secrets split off). Calls the executor (`process`), run creation and transitions.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::Value;
use sluice_core::engine::Event;
use sluice_core::logs;
use sluice_core::model::{Application, Configuration, LogEntry, Run, RunState};
use sluice_core::plan::DocumentKind;
use sluice_core::ports::RunQuery;
use sluice_core::validate::{validate_application, validate_configuration};
use sluice_core::versions::{NewVersion, PushOutcome, UNATTRIBUTED};
use sluice_core::{Invalid, Issue};

use crate::create::{StartError, StartRequest};
use crate::runtime::{Runtime, RuntimeError};

/// Runs read per listing page by [`Runtime::revoke_all`].
const REVOKE_PAGE: usize = 500;

impl Runtime {
    /// Checks a request, creates the run and starts it. Starting is idempotent for a
    /// fixed `run_id`: the existing run is returned. A new run is refused with
    /// [`StartError::Overloaded`] while the step queues are full (`backpressure.rs`).
    pub async fn start(&self, request: StartRequest) -> Result<Run, StartError> {
        self.admit(&request).await?;
        let id = self.create_run(request).await?;
        self.process(&id, Event::Start).await?;
        Ok(self.get_run(&id).await?)
    }

    /// Starts the alert run an ended run's application asks for (`on_failure`,
    /// `on_warning`) unless it exists, and returns its id; `None` when the run needs no
    /// alert or the alert was refused (then its log says why). The end of a run does
    /// this by itself; a caller that waits for a run and what it starts (`sluice run`)
    /// calls it to learn the alert run's id, harmlessly repeating it.
    pub async fn start_alert(&self, run: &Run) -> Result<Option<String>, RuntimeError> {
        if !sluice_core::alert::may_alert(run) {
            return Ok(None);
        }
        let Some(app) = self.backend.runs.get_snapshot(&run.id).await? else {
            return Ok(None);
        };
        let Some(alert) = sluice_core::alert::alert_for(&app, run) else {
            return Ok(None);
        };
        if let Some(id) = self.create_alert_run(run, &alert).await? {
            self.process(&id, Event::Start).await?;
        }
        let exists = self.backend.runs.get_run(&alert.run_id).await?.is_some();
        Ok(exists.then_some(alert.run_id))
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
            snapshot_version: original.application_version,
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

    /// Revokes every unfinished (pending or running) run, or every unfinished run of
    /// `application`, and returns how many it revoked (children revoked by a parent's
    /// cascade included). Runs are read a page at a time, newest first, so memory stays
    /// bounded whatever the number of runs; runs started after the call began may be
    /// left running.
    pub async fn revoke_all(&self, application: Option<&str>) -> Result<u64, RuntimeError> {
        let mut revoked = 0;
        for state in [RunState::Running, RunState::Pending] {
            let mut before_id = None;
            loop {
                let page = self
                    .backend
                    .runs
                    .list_runs(&RunQuery {
                        application: application.map(str::to_string),
                        state: Some(state),
                        before_id: before_id.clone(),
                        limit: REVOKE_PAGE,
                        ..RunQuery::default()
                    })
                    .await?;
                for run in &page {
                    match self.revoke(&run.id).await {
                        Ok(after) if after.state == RunState::Revoked => revoked += 1,
                        Ok(_) => {} // it ended before the revoke reached it
                        // Expired or deleted between the listing and the revoke.
                        Err(RuntimeError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                if page.len() < REVOKE_PAGE {
                    break;
                }
                before_id = page.last().map(|run| run.id.clone());
            }
        }
        tracing::info!(application, revoked, "revoked unfinished runs");
        Ok(revoked)
    }

    /// Up to `limit` (0: 1000) log entries of `run` after sequence number `after`: the
    /// stored ones merged with the `FLOW` entries derived from this record of the run
    /// (see [`sluice_core::logs`]). Read the run before its logs.
    pub async fn logs(
        &self,
        run: &Run,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEntry)>, RuntimeError> {
        let limit = if limit == 0 { 1000 } else { limit };
        let stored = self.backend.runs.get_logs(&run.id, after, limit).await?;
        Ok(logs::merge(stored, logs::derived_flow(run), after, limit))
    }

    /// Re-issues the outstanding work of every unfinished run. `taken_over_at` (embedded:
    /// the time this process took the data-directory lock, so every earlier claim was
    /// made by a process that is now dead) also re-queues the attempts that were running
    /// when the previous process died. Call it before this process's workers poll; claims
    /// made at or after `taken_over_at` are never reset, so a live worker's attempt is
    /// never sent a second time.
    pub async fn resume_all(
        &self,
        taken_over_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<Vec<String>, RuntimeError> {
        let ids = self.backend.runs.unfinished_runs().await?;
        for id in &ids {
            self.resume(id, taken_over_at).await?;
        }
        Ok(ids)
    }

    /// [`Runtime::resume_all`] for one run.
    pub async fn resume(
        &self,
        run_id: &str,
        taken_over_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<(), RuntimeError> {
        let run = self.get_run(run_id).await?;
        let event = match (run.state, taken_over_at) {
            (RunState::Pending, _) => Event::Start,
            (_, Some(claimed_before)) => Event::Recover { claimed_before },
            (_, None) => Event::Resend,
        };
        self.process(run_id, event).await
    }

    /// [`push_application`](Self::push_application) unattributed.
    pub async fn put_application(&self, app: &Application) -> Result<(), StartError> {
        self.push_application(app, UNATTRIBUTED).await.map(|_| ())
    }

    /// Validates and stores an application as a new version by `author` (none when its
    /// content equals the latest version's). Ids are case-sensitive in every store, so an
    /// id differing from a stored one only in case is refused (it would be a second
    /// application to the store but the same one to a reader).
    /// An application an active pack owns may change only in its user settings (see
    /// [`Runtime::refuse_pack_owned`]).
    pub async fn push_application(
        &self,
        app: &Application,
        author: &str,
    ) -> Result<PushOutcome, StartError> {
        self.refuse_pack_owned_edit(app).await?;
        self.store_application(app, author).await
    }

    /// [`push_application`](Self::push_application) without the pack ownership check
    /// (activating a pack writes its own definitions).
    pub(crate) async fn store_application(
        &self,
        app: &Application,
        author: &str,
    ) -> Result<PushOutcome, StartError> {
        validate_application(app, &self.catalog)?;
        let stored = self.backend.definitions.list_applications().await?;
        if let Some(other) = stored
            .iter()
            .find(|other| other.name != app.name && other.name.eq_ignore_ascii_case(&app.name))
        {
            return Err(Invalid::one(Issue::new(
                "name",
                format!(
                    "\"{}\" differs only in case from the stored application \"{}\"",
                    app.name, other.name
                ),
            ))
            .into());
        }
        let push = NewVersion::application(app, author, self.config.versions_kept)?;
        Ok(self.backend.definitions.push_definition(&push).await?)
    }

    /// [`push_configuration`](Self::push_configuration) unattributed.
    pub async fn put_configuration(
        &self,
        config: &Configuration,
    ) -> Result<Configuration, StartError> {
        Ok(self.push_configuration(config, UNATTRIBUTED).await?.0)
    }

    /// Validates and stores a configuration: encrypted values go to the secret store (an
    /// encrypted entry posted with `null` keeps the stored secret), the definition is
    /// stored with every encrypted value `null`, as a new version by `author` unless it
    /// equals the latest (a changed secret alone is no new version: versions never hold
    /// secrets). Returns the stored (redacted) document and the version.
    /// A configuration an active pack owns is refused.
    pub async fn push_configuration(
        &self,
        config: &Configuration,
        author: &str,
    ) -> Result<(Configuration, PushOutcome), StartError> {
        self.refuse_pack_owned(DocumentKind::Configuration, &config.name)
            .await?;
        self.store_configuration(config, author).await
    }

    /// [`push_configuration`](Self::push_configuration) without the pack ownership check.
    pub(crate) async fn store_configuration(
        &self,
        config: &Configuration,
        author: &str,
    ) -> Result<(Configuration, PushOutcome), StartError> {
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
        let push = NewVersion::configuration(config, author, self.config.versions_kept)?;
        let outcome = self.backend.definitions.push_definition(&push).await?;
        self.secret_cache
            .lock()
            .expect("secret cache")
            .remove(&config.name);
        Ok((config.redacted(), outcome))
    }

    /// Deletes a configuration and its secrets (refused for one an active pack owns).
    pub async fn delete_configuration(&self, name: &str) -> Result<bool, RuntimeError> {
        self.refuse_pack_owned(DocumentKind::Configuration, name)
            .await?;
        self.remove_configuration(name).await
    }

    /// [`delete_configuration`](Self::delete_configuration) without the ownership check.
    pub(crate) async fn remove_configuration(&self, name: &str) -> Result<bool, RuntimeError> {
        let existed = self.backend.definitions.delete_configuration(name).await?;
        self.backend.secrets.delete_secrets(name).await?;
        self.secret_cache.lock().expect("secret cache").remove(name);
        Ok(existed)
    }
}
