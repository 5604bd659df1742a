//! The environment the commands work in: a data directory's adapters (embedded) or a
//! deployment's AWS adapters (`--backend aws`), wired into a runtime.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sluice_embedded::{DataDirLock, EmbeddedStore};
use sluice_runtime::{Backend, Runtime, RuntimeConfig, WorkerPool};

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
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let store = EmbeddedStore::open(data_dir)
            .with_context(|| format!("cannot open data directory {}", data_dir.display()))?;
        let ports = store.ports();
        let backend = Backend {
            definitions: ports.definitions,
            runs: ports.runs,
            queue: ports.queue,
            secrets: ports.secrets,
            cache: ports.cache,
        };
        let runtime = Runtime::new(
            backend,
            sluice_steps::builtin_registry(),
            RuntimeConfig::default(),
        );
        Ok(Self {
            store: Store::Embedded(store),
            runtime,
        })
    }

    /// Starts this process's workers. Embedded: takes the data directory (only one
    /// process may run steps on it), so messages a dead process held are released at
    /// once. AWS: polls the step queues as the event source mappings do, beside any
    /// other worker.
    pub async fn start_workers(&self, concurrency: usize) -> anyhow::Result<Workers> {
        let lock = match &self.store {
            Store::Embedded(store) => {
                let lock = DataDirLock::acquire(store.data_dir())?;
                store.queue().release_inflight().await?;
                Some(lock)
            }
            Store::Aws(_) => None,
        };
        let pool = WorkerPool::start(self.runtime.clone(), concurrency);
        Ok(Workers { pool, _lock: lock })
    }
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
