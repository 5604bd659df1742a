//! Sluice embedded adapters: every port of `sluice_core::ports` on one data directory —
//! a SQLite database `sluice.db` (store, durable queue, encrypted secrets), large outputs
//! as files under `outputs/`, the AES key `secret.key`, and the process lock `lock`, all
//! private to the owner (directories 0700, files 0600). [`backup`] archives one whole.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_embedded::{DataDirLock, EmbeddedStore};
//! let dir = std::path::Path::new(".sluice");
//! let _lock = DataDirLock::acquire(dir)?; // only when this process runs workers
//! let store = EmbeddedStore::open(dir)?;
//! store.queue().release_inflight().await?; // after a crash: nobody else holds them
//! let ports = store.ports();
//! # let _ = ports; Ok(()) }
//! ```
//!
//! The semantics (insert-if-absent runs, compare-and-swap updates, expiry on every read,
//! SQS-like visibility and dead-lettering) are the contract the AWS adapters honour too.
//!
//! Throughput: one connection behind a mutex; writes use group commit (concurrent
//! operations share one transaction, each caller returning only once it is committed)
//! and a background thread checkpoints the WAL, so that commit costs, which dominate on
//! small machines, are shared.

use std::sync::Arc;

use sluice_core::ports::{Cache, DefinitionStore, Queue, RunStore, ScheduleStore, SecretStore};

mod access;
pub mod backup;
mod db;
mod lock;
mod packs;
mod queue;
mod reports;
mod run_rows;
mod secrets;
mod store;

#[cfg(test)]
mod tests;

pub use db::{DATABASE_FILE, OUTPUTS_DIR, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, SCHEMA_VERSION};
pub use lock::{DataDirLock, LockError, LOCK_FILE};
pub use queue::EmbeddedQueue;
pub use secrets::{EmbeddedSecrets, SECRET_KEY_FILE};
pub use store::{
    EmbeddedStore, PurgeReport, DEFAULT_LIST_LIMIT, DEFAULT_LOG_LIMIT, INLINE_OUTPUT_LIMIT,
};

/// Every port of one data directory as trait objects, sharing one connection.
#[derive(Clone)]
pub struct Ports {
    pub definitions: Arc<dyn DefinitionStore>,
    pub runs: Arc<dyn RunStore>,
    pub cache: Arc<dyn Cache>,
    pub schedules: Arc<dyn ScheduleStore>,
    pub queue: Arc<dyn Queue>,
    pub secrets: Arc<dyn SecretStore>,
    pub reports: Arc<dyn sluice_core::ports::ReportStore>,
}
