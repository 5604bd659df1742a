//! The environment the commands work in: a data directory's adapters (embedded) or a
//! deployment's AWS adapters (`--backend aws`), wired into a runtime.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sluice_api::schedules::LocalScheduler;
use sluice_api::ApiPorts;
use sluice_core::ports::StoreError;
use sluice_core::step::StepRegistry;
use sluice_embedded::{DataDirLock, EmbeddedStore};
use sluice_runtime::{Runtime, RuntimeConfig, WorkerPool};

/// Where the ports of a [`Local`] come from.
pub enum Store {
    Embedded(EmbeddedStore),
    Aws(Box<sluice_aws::AwsEnvironment>),
}

/// An opened backend and a runtime over it.
pub struct Local {
    pub store: Store,
    pub runtime: Arc<Runtime>,
}

impl Local {
    /// Opens a data directory with a runtime executing `registry`'s step types; runs
    /// started here are kept `result_expires` seconds (`--result-expires`,
    /// `SLUICE_RESULT_EXPIRES`; the default otherwise).
    pub fn open(
        data_dir: &Path,
        result_expires: Option<i64>,
        registry: &StepRegistry,
    ) -> anyhow::Result<Self> {
        let store = EmbeddedStore::open(data_dir)
            .with_context(|| format!("cannot open data directory {}", data_dir.display()))?;
        let backend = store.backend();
        let mut config = RuntimeConfig::default();
        if let Some(seconds) = result_expires {
            config.result_expires = chrono::Duration::seconds(seconds);
        }
        let runtime = Runtime::new(backend, registry.clone(), config);
        Ok(Self {
            store: Store::Embedded(store),
            runtime,
        })
    }

    /// The ports the API router needs beyond the runtime's, on this backend. Schedule
    /// changes wake nothing in this process: a running `sluice serve` rescans the store;
    /// on AWS the EventBridge Scheduler adapter, when the deployment's names are set.
    pub fn api_ports(&self) -> ApiPorts {
        match &self.store {
            Store::Embedded(store) => ApiPorts {
                schedules: store.schedules(),
                schedule_stats: store.schedule_stats(),
                scheduler: Arc::new(LocalScheduler::default()),
                access: store.access(),
            },
            Store::Aws(env) => ApiPorts {
                schedules: env.schedules(),
                schedule_stats: env.schedule_stats(),
                scheduler: env.scheduler().unwrap_or_else(|| Arc::new(NoAwsScheduler)),
                access: env.access(),
            },
        }
    }

    /// `embedded` or `aws`, as the API's `/about` names the backend.
    pub fn backend_name(&self) -> &'static str {
        match &self.store {
            Store::Embedded(_) => "embedded",
            Store::Aws(_) => "aws",
        }
    }

    /// Takes over the backend's step queues for this process's workers. Embedded: takes
    /// the data directory (only one process may run steps on it), so messages a dead
    /// process held are released at once, and records when: every claim older than that
    /// was made by a dead process. AWS: nothing to take, other workers stay alive.
    pub async fn take_over(&self) -> anyhow::Result<Takeover> {
        match &self.store {
            Store::Embedded(store) => {
                let lock = DataDirLock::acquire(store.data_dir())?;
                // A missing or replaced secret key stops the command here, loudly.
                store.secrets().check_key().await?;
                store.queue().release_inflight().await?;
                Ok(Takeover {
                    lock: Some(lock),
                    at: Some(chrono::Utc::now()),
                })
            }
            Store::Aws(_) => Ok(Takeover {
                lock: None,
                at: None,
            }),
        }
    }

    /// Starts polling the step queues, as the event source mappings do on AWS. Resume
    /// runs (with [`Takeover::at`]) before this, so no worker ever claims a unit that
    /// resume is about to reset.
    pub fn start_workers(&self, takeover: Takeover, concurrency: usize) -> Workers {
        let pool = WorkerPool::start(self.runtime.clone(), concurrency);
        Workers {
            pool,
            _lock: takeover.lock,
        }
    }
}

/// On AWS without the deployment's scheduler names: a schedule change would be stored
/// but never reach EventBridge, so it is refused.
struct NoAwsScheduler;

#[async_trait::async_trait]
impl sluice_core::ports::Scheduler for NoAwsScheduler {
    async fn upsert(&self, _: &sluice_core::model::Schedule) -> Result<(), StoreError> {
        Err(no_aws_scheduler())
    }
    async fn remove(&self, _: &str) -> Result<(), StoreError> {
        Err(no_aws_scheduler())
    }
}

fn no_aws_scheduler() -> StoreError {
    StoreError::Backend(
        "schedules on AWS are managed through the API (--endpoint), or with SLUICE_START_FUNCTION_ARN and SLUICE_SCHEDULER_ROLE_ARN set".into(),
    )
}

/// The right to run workers: the data-directory lock (embedded) and when it was taken.
pub struct Takeover {
    lock: Option<DataDirLock>,
    /// Embedded: when this process took the data directory; `None` on AWS, where other
    /// workers may be alive and only leases protect their claims.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Drop for Local {
    /// `SLUICE_AWS_REQUEST_LOG=FILE`: the AWS requests this command made, by service and
    /// operation (the cost measurements of docs/cost.md).
    fn drop(&mut self) {
        if let Store::Aws(env) = &self.store {
            crate::aws::write_request_log(env);
        }
    }
}

/// Running workers and the data-directory lock they hold (embedded).
pub struct Workers {
    pool: WorkerPool,
    _lock: Option<DataDirLock>,
}

impl Workers {
    /// Stops polling and lets running steps finish.
    pub async fn shutdown(self) {
        self.pool.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::StartRequest;

    /// `--result-expires` reaches the runs: kept until then, purged after (the purge is
    /// driven at chosen times, nothing waits).
    #[tokio::test]
    async fn result_expires_sets_how_long_runs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let registry = sluice_steps::builtin_registry();
        let local = Local::open(dir.path(), Some(60), &registry).unwrap();
        let app: sluice_core::model::Application = serde_json::from_value(serde_json::json!({
            "name": "keep", "author": "t",
            "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]
        }))
        .unwrap();
        local.runtime.put_application(&app).await.unwrap();
        let run = local
            .runtime
            .start(StartRequest {
                application: "keep".into(),
                ..StartRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(
            run.expires_at - run.created_at,
            chrono::Duration::seconds(60)
        );
        let Store::Embedded(store) = &local.store else {
            unreachable!()
        };
        let before = run.created_at + chrono::Duration::seconds(59);
        assert_eq!(store.purge_expired_at(before).await.unwrap().runs, 0);
        let after = run.created_at + chrono::Duration::seconds(61);
        assert_eq!(store.purge_expired_at(after).await.unwrap().runs, 1);

        let default = Local::open(&dir.path().join("other"), None, &registry).unwrap();
        let run = default
            .runtime
            .start(StartRequest {
                application: "keep".into(),
                snapshot: Some(app),
                ..StartRequest::default()
            })
            .await
            .unwrap();
        assert_eq!(run.expires_at - run.created_at, chrono::Duration::days(7));
    }

    #[test]
    fn result_expires_is_range_checked() {
        use clap::Parser;
        for bad in ["0", "59", "1e300", "-1", "315360001"] {
            assert!(
                crate::Cli::try_parse_from(["sluice", "run", "x", "--result-expires", bad])
                    .is_err(),
                "{bad}"
            );
        }
        let cli =
            crate::Cli::try_parse_from(["sluice", "serve", "--result-expires", "3600"]).unwrap();
        assert_eq!(cli.result_expires, Some(3600));
    }
}
