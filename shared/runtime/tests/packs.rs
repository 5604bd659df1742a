//! Pack activation in the runtime: all or nothing when a write fails midway (the writes
//! done are undone, no activation is recorded), and a concurrent-looking reinstall of a
//! version with other content refused.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;
use sluice_core::model::Schedule;
use sluice_core::pack::PackArchive;
use sluice_core::ports::StoreError;
use sluice_core::step::StepRegistry;
use sluice_embedded::EmbeddedStore;
use sluice_runtime::packs::ScheduleWriter;
use sluice_runtime::{Runtime, RuntimeConfig, RuntimeError};

/// Schedules in memory; `fail` makes every put fail as a store outage would.
#[derive(Default)]
struct Schedules {
    stored: Mutex<Vec<Schedule>>,
    fail: bool,
}

#[async_trait]
impl ScheduleWriter for Schedules {
    async fn list(&self) -> Result<Vec<Schedule>, RuntimeError> {
        Ok(self.stored.lock().unwrap().clone())
    }
    async fn put(&self, _: &Runtime, schedule: &Schedule) -> Result<(), RuntimeError> {
        if self.fail {
            return Err(StoreError::Backend("schedule store unavailable".into()).into());
        }
        let mut stored = self.stored.lock().unwrap();
        stored.retain(|s| s.entry_id != schedule.entry_id);
        stored.push(schedule.clone());
        Ok(())
    }
    async fn delete(&self, entry_id: &str) -> Result<(), RuntimeError> {
        self.stored
            .lock()
            .unwrap()
            .retain(|s| s.entry_id != entry_id);
        Ok(())
    }
}

fn archive(version: &str, value: i64) -> PackArchive {
    let manifest = serde_json::from_value(json!({"name": "demo", "version": version})).unwrap();
    let app = serde_json::from_value(json!({
        "name": "demo_app", "author": "pack", "configuration": "demo-config",
        "steps": [{"id": "T", "type": "transform", "parameters": {"template": format!("{{{{ {value} }}}}")}}]
    }))
    .unwrap();
    let config = serde_json::from_value(
        json!({"name": "demo-config", "data": [{"name": "url", "value": "x"}]}),
    )
    .unwrap();
    let schedule = serde_json::from_value(json!({
        "application_id": "demo_app", "entry_id": "demo_hourly", "enabled": false,
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 3600}}
    }))
    .unwrap();
    PackArchive::new(manifest, vec![app], vec![config], vec![schedule])
}

fn runtime(dir: &std::path::Path) -> Arc<Runtime> {
    let backend = EmbeddedStore::open(dir).unwrap().backend();
    Runtime::new(backend, StepRegistry::new(), RuntimeConfig::default())
}

#[tokio::test]
async fn a_failed_write_undoes_the_activation() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.install_pack(archive("1.0.0", 1), "admin").await.unwrap();
    let failing = Schedules {
        fail: true,
        ..Schedules::default()
    };
    let err = rt
        .activate_pack(&failing, "demo", "1.0.0", "admin")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unavailable"), "{err}");
    let definitions = &rt.backend().definitions;
    assert!(definitions.list_applications().await.unwrap().is_empty());
    assert!(definitions.list_configurations().await.unwrap().is_empty());
    assert!(rt
        .backend()
        .packs
        .get_activation("demo")
        .await
        .unwrap()
        .is_none());

    let schedules = Schedules::default();
    let done = rt
        .activate_pack(&schedules, "demo", "1.0.0", "admin")
        .await
        .unwrap();
    assert_eq!(done.changes.len(), 3);
    assert_eq!(schedules.stored.lock().unwrap().len(), 1);
    // An upgrade whose schedule write fails leaves version 1 live and recorded.
    let mut v2 = archive("2.0.0", 2);
    v2.schedules[0].enabled = true;
    v2.hash = v2.content_hash();
    rt.install_pack(v2, "admin").await.unwrap();
    let failing = Schedules {
        stored: Mutex::new(schedules.stored.lock().unwrap().clone()),
        fail: true,
    };
    rt.activate_pack(&failing, "demo", "2.0.0", "admin")
        .await
        .unwrap_err();
    let app = definitions
        .get_application("demo_app")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.meta["pack"]["version"], "1.0.0");
    let active = rt
        .backend()
        .packs
        .get_activation("demo")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.version, "1.0.0");
}

#[tokio::test]
async fn a_version_is_installed_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    assert!(
        rt.install_pack(archive("1.0.0", 1), "admin")
            .await
            .unwrap()
            .created
    );
    assert!(
        !rt.install_pack(archive("1.0.0", 1), "admin")
            .await
            .unwrap()
            .created
    );
    let err = rt
        .install_pack(archive("1.0.0", 2), "admin")
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Conflict(_)), "{err}");
    // A tampered archive is refused naming its hash.
    let mut tampered = archive("1.1.0", 1);
    tampered.manifest.description = "changed".into();
    let err = rt.install_pack(tampered, "admin").await.unwrap_err();
    assert!(err.to_string().contains("hash"), "{err}");
}
