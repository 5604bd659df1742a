//! The embedded environment: a data directory's adapters wired into a runtime.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use sluice_embedded::{DataDirLock, EmbeddedStore};
use sluice_runtime::{Backend, Runtime, RuntimeConfig, WorkerPool};

/// An opened data directory and a runtime over it.
pub struct Local {
    pub store: EmbeddedStore,
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
        let runtime = Runtime::new(backend, sluice_steps::builtin_registry(), RuntimeConfig::default());
        Ok(Self { store, runtime })
    }

    /// Takes the data directory for this process's workers: only one process may run
    /// steps on a data directory, so messages a dead process held are released at once.
    pub async fn start_workers(&self, concurrency: usize) -> anyhow::Result<Workers> {
        let lock = DataDirLock::acquire(self.store.data_dir())?;
        self.store.queue().release_inflight().await?;
        let pool = WorkerPool::start(self.runtime.clone(), concurrency);
        Ok(Workers { pool, _lock: lock })
    }
}

/// Running workers and the data-directory lock they hold.
pub struct Workers {
    pool: WorkerPool,
    _lock: DataDirLock,
}

impl Workers {
    /// Stops polling and lets running steps finish.
    pub async fn shutdown(self) {
        self.pool.shutdown().await;
    }
}
