//! Backup while the data directory is written, restore into a new directory, and the
//! refusals (existing archive, non-empty target, foreign archive).

use std::collections::BTreeMap;

use serde_json::json;
use sluice_core::ports::{DefinitionStore, OutputKey, RunStore, SecretStore};

use super::{app, temp_store};
use crate::backup::{backup, restore, BackupError};
use crate::{EmbeddedStore, INLINE_OUTPUT_LIMIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_writes_restores_everything_it_saw() {
    let (dir, store) = temp_store();
    let secrets = BTreeMap::from([("token".to_string(), json!("t0p-secret"))]);
    store.secrets().put_secrets("acme", &secrets).await.unwrap();
    store.put_application(&app("before")).await.unwrap();
    let big = json!("x".repeat(INLINE_OUTPUT_LIMIT + 1));
    let key = OutputKey {
        run_id: "r1".into(),
        step_id: "A".into(),
        unit: 0,
    };
    let expires = chrono::Utc::now() + chrono::Duration::days(1);
    store.put_output(&key, &big, expires).await.unwrap();

    // A writer keeps going while the backup runs.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                store
                    .put_application(&app(&format!("during{i}")))
                    .await
                    .unwrap();
            }
        })
    };
    let archives = tempfile::tempdir().unwrap();
    let archive = archives.path().join("backup.tar");
    let data_dir = dir.path().to_path_buf();
    let archive_path = archive.clone();
    let report = tokio::task::spawn_blocking(move || backup(&data_dir, &archive_path))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert!(report.manifest.has_secret_key);
    assert_eq!(report.manifest.output_files, 1);

    let target = archives.path().join("restored");
    restore(&archive, &target).unwrap();
    let restored = EmbeddedStore::open(&target).unwrap();
    restored.secrets().check_key().await.unwrap();
    assert_eq!(
        restored.secrets().get_secrets("acme").await.unwrap(),
        secrets
    );
    assert!(restored.get_application("before").await.unwrap().is_some());
    assert_eq!(restored.get_output(&key).await.unwrap(), Some(big));
    // Consistent: the applications written during the backup form a prefix.
    let names: Vec<String> = restored
        .list_applications()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .filter(|n| n.starts_with("during"))
        .collect();
    for i in 0..names.len() {
        assert!(names.contains(&format!("during{i}")), "{names:?}");
    }

    // Refusals: an existing archive, a non-empty target, a foreign archive.
    let again = backup(dir.path(), &archive).unwrap_err();
    assert!(matches!(again, BackupError::Refused(_)), "{again}");
    let over = restore(&archive, dir.path()).unwrap_err();
    assert!(over.to_string().contains("not empty"), "{over}");
    let foreign = archives.path().join("foreign.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&foreign).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_cksum();
        builder
            .append_data(&mut header, "escape", &b"hi"[..])
            .unwrap();
        builder.finish().unwrap();
    }
    let e = restore(&foreign, &archives.path().join("other")).unwrap_err();
    assert!(e.to_string().contains("not a sluice backup"), "{e}");
    assert!(!archives.path().join("other").exists());
    assert!(!archives.path().join("escape").exists());
}
