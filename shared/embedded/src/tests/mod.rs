//! Tests against real SQLite files in temporary data directories.

mod backup;
mod conformance;
mod db;
mod lock;
mod perf;
mod queue;
mod run_rows;
mod secrets;
mod store;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde_json::json;
use sluice_core::model::{Application, Run, RunState, StepRun};

use crate::EmbeddedStore;

pub(crate) fn temp_store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path()).expect("open store");
    (dir, store)
}

pub(crate) fn app(name: &str) -> Application {
    serde_json::from_value(json!({
        "name": name,
        "author": "tests",
        "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]
    }))
    .expect("application")
}

pub(crate) fn run(id: &str, application: &str, created_at: DateTime<Utc>) -> Run {
    Run {
        id: id.to_string(),
        application: application.to_string(),
        configuration: None,
        queue: None,
        loglevel: 20,
        params: Default::default(),
        state: RunState::Pending,
        created_at,
        started_at: None,
        finished_at: None,
        parent: None,
        replay_of: None,
        alert_of: None,
        expires_at: Utc::now() + ChronoDuration::days(7),
        steps: vec![StepRun::new("A")],
        version: 0,
        application_version: None,
    }
}
