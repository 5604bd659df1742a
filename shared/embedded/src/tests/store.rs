//! The embedded store beyond the ports' contract (`super::conformance`): purging,
//! output files, persistence across reopening, schema versions.

use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{json, Value};
use sluice_core::clock::{Clock, ManualClock};
use sluice_core::model::{Configuration, LogEntry, LogLevel};
use sluice_core::ports::{Cache, DefinitionStore, OutputKey, RunQuery, RunStore, StoreError};

use super::{app, run, temp_store};
use crate::{EmbeddedStore, INLINE_OUTPUT_LIMIT};

fn key(run_id: &str, step: &str, unit: u32) -> OutputKey {
    OutputKey {
        run_id: run_id.into(),
        step_id: step.into(),
        unit,
    }
}

fn entry(message: &str) -> LogEntry {
    LogEntry {
        ts: Utc::now(),
        level: LogLevel::Info,
        step: "A".into(),
        attempt: 1,
        message: message.into(),
    }
}

fn output_files(store: &EmbeddedStore) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.data_dir().join("outputs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn expired_records_are_absent_and_purged() {
    let (_dir, store) = temp_store();
    let clock = ManualClock::starting_now();
    let store = store.with_clock(clock.clone());
    let past = clock.now() - ChronoDuration::seconds(1);
    let future = clock.now() + ChronoDuration::days(1);

    let mut old = run("isapp-1", "app", Utc::now());
    old.expires_at = past;
    store.create_run(&old, &app("app")).await.unwrap();
    assert!(store.get_run("isapp-1").await.unwrap().is_none());
    assert!(store.get_snapshot("isapp-1").await.unwrap().is_none());
    assert!(store
        .list_runs(&RunQuery::default())
        .await
        .unwrap()
        .is_empty());
    assert!(store.unfinished_runs().await.unwrap().is_empty());
    let mut bumped = old.clone();
    bumped.version = 1;
    assert!(matches!(
        store.update_run(&bumped, 0).await,
        Err(StoreError::Conflict)
    ));

    store
        .put_output(&key("isapp-1", "A", 0), &json!({"x": 1}), past)
        .await
        .unwrap();
    assert!(store
        .get_output(&key("isapp-1", "A", 0))
        .await
        .unwrap()
        .is_none());
    let big = json!("y".repeat(INLINE_OUTPUT_LIMIT + 10));
    store
        .put_output(&key("isapp-1", "A", 1), &big, past)
        .await
        .unwrap();
    assert!(store
        .get_output(&key("isapp-1", "A", 1))
        .await
        .unwrap()
        .is_none());

    store
        .append_logs("isapp-1", &[entry("old")], past)
        .await
        .unwrap();
    store
        .append_logs("isapp-1", &[entry("new")], future)
        .await
        .unwrap();
    let logs = store.get_logs("isapp-1", 0, 0).await.unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].1.message, "new");

    store
        .put("short", &json!(1), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    store.put("forever", &json!(2), None).await.unwrap();
    assert_eq!(store.get("short").await.unwrap(), Some(json!(1)));
    clock.advance(ChronoDuration::milliseconds(350));
    assert_eq!(store.get("short").await.unwrap(), None);
    assert_eq!(store.get("forever").await.unwrap(), Some(json!(2)));
    // Deleting an expired entry reports that nothing (live) was there.
    store
        .put("gone", &json!(3), Some(Duration::from_millis(1)))
        .await
        .unwrap();
    clock.advance(ChronoDuration::milliseconds(5));
    assert!(!store.delete("gone").await.unwrap());

    assert_eq!(output_files(&store).len(), 1);
    let report = store.purge_expired().await.unwrap();
    assert_eq!(report.runs, 1);
    assert_eq!(report.outputs, 2);
    assert_eq!(report.logs, 1);
    assert_eq!(report.cache_entries, 1);
    assert_eq!(report.files, 1);
    assert!(output_files(&store).is_empty());
    let snapshots: i64 = rusqlite::Connection::open(store.data_dir().join("sluice.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM run_snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(snapshots, 0);
    assert_eq!(store.get("forever").await.unwrap(), Some(json!(2)));
    assert_eq!(store.get_logs("isapp-1", 0, 0).await.unwrap().len(), 1);

    // An expired run counts as absent for creation too.
    let mut again = run("isapp-1", "app", Utc::now());
    again.expires_at = future;
    assert!(store.create_run(&again, &app("app2")).await.unwrap());
    assert_eq!(
        store.get_snapshot("isapp-1").await.unwrap().unwrap().name,
        "app2"
    );
}

#[tokio::test]
async fn outputs_overwrite_and_large_ones_live_in_files() {
    let (_dir, store) = temp_store();
    let expires = Utc::now() + ChronoDuration::days(1);
    let k = key("isapp-1", "A", 0);
    store
        .put_output(&k, &json!({"n": 1}), expires)
        .await
        .unwrap();
    store
        .put_output(&k, &json!({"n": 2}), expires)
        .await
        .unwrap();
    assert_eq!(store.get_output(&k).await.unwrap(), Some(json!({"n": 2})));
    assert!(output_files(&store).is_empty());
    assert_eq!(
        store.get_output(&key("isapp-1", "A", 1)).await.unwrap(),
        None
    );

    // 10 MB, as SPEC §7 requires.
    let items: Vec<Value> = (0..100_000)
        .map(|i| json!({"i": i, "pad": "p".repeat(80)}))
        .collect();
    let big = Value::Array(items);
    assert!(serde_json::to_string(&big).unwrap().len() > 10_000_000);
    store.put_output(&k, &big, expires).await.unwrap();
    let files = output_files(&store);
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with(".json"));
    assert_eq!(store.get_output(&k).await.unwrap(), Some(big.clone()));
    // The database holds only the file name.
    let db_size = std::fs::metadata(store.data_dir().join("sluice.db"))
        .unwrap()
        .len()
        + std::fs::metadata(store.data_dir().join("sluice.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    assert!(db_size < 2_000_000, "database grew to {db_size} bytes");

    // Overwriting replaces the file; a small value removes it.
    store.put_output(&k, &big, expires).await.unwrap();
    let replaced = output_files(&store);
    assert_eq!(replaced.len(), 1);
    assert_ne!(replaced, files);
    store
        .put_output(&k, &json!("small"), expires)
        .await
        .unwrap();
    assert!(output_files(&store).is_empty());
    assert_eq!(store.get_output(&k).await.unwrap(), Some(json!("small")));

    // Exactly at the limit stays inline.
    let text_len = INLINE_OUTPUT_LIMIT - 2; // the quotes
    store
        .put_output(&k, &json!("z".repeat(text_len)), expires)
        .await
        .unwrap();
    assert!(output_files(&store).is_empty());
}

/// Beyond the contract's few keys (moto would make thousands slow): a prefix delete
/// spanning several of its pages, and a listing read to its end page by page.
#[tokio::test]
async fn cache_prefix_delete_and_listing_span_pages() {
    let (_dir, store) = temp_store();
    for i in 0..2_500 {
        store
            .put(&format!("bulk:{i:05}"), &json!(i), None)
            .await
            .unwrap();
    }
    store.put("keep", &json!(0), None).await.unwrap();
    let (mut seen, mut after) = (0, None);
    loop {
        let page = store.list("bulk:", 5_000, after.as_deref()).await.unwrap();
        assert!(page.keys.len() <= sluice_core::ports::MAX_CACHE_PAGE);
        seen += page.keys.len();
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 2_500);
    assert_eq!(store.delete_prefix("bulk:").await.unwrap(), 2_500);
    assert_eq!(store.list("", 10, None).await.unwrap().keys, ["keep"]);
}

/// The round trips themselves are the store contract (`sluice_core::conformance`); what
/// only a data directory has is that its definitions survive reopening it.
#[tokio::test]
async fn definitions_survive_reopening_the_directory() {
    let (dir, store) = temp_store();
    for name in ["zeta", "alpha"] {
        store.put_application(&app(name)).await.unwrap();
    }
    let config: Configuration = serde_json::from_value(json!({
        "name": "acme",
        "data": [{"name": "token", "value": "s3cr3t-token", "encrypted": true}]
    }))
    .unwrap();
    store.put_configuration(&config).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.list_applications().await.unwrap().len(), 2);
    assert_eq!(
        store.get_configuration("acme").await.unwrap(),
        Some(config.redacted())
    );
}

#[tokio::test]
async fn reopening_keeps_schema_and_rejects_newer_versions() {
    let (dir, store) = temp_store();
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, crate::SCHEMA_VERSION);
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let Err(error) = EmbeddedStore::open(dir.path()) else {
        panic!("a newer schema must be refused");
    };
    assert!(error.to_string().contains("newer"), "{error}");
}

/// A database of the schema whose `logs` had `AUTOINCREMENT` keeps its entries, and
/// the entries appended after the upgrade come after them.
#[tokio::test]
async fn logs_keep_their_numbers_across_dropping_autoincrement() {
    let (dir, store) = temp_store();
    let expires = Utc::now() + ChronoDuration::days(7);
    store
        .append_logs("isapp-1", &[entry("before")], expires)
        .await
        .unwrap();
    drop(store);
    // Back to the table as schema 9 had it, entry and number unchanged.
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE logs_v9 (seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
                               expires_at INTEGER NOT NULL, entry TEXT NOT NULL);
         INSERT INTO logs_v9 SELECT seq, run_id, expires_at, entry FROM logs;
         DROP TABLE logs;
         ALTER TABLE logs_v9 RENAME TO logs;
         CREATE INDEX logs_run ON logs (run_id, seq);
         CREATE INDEX logs_expires ON logs (expires_at);",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 9).unwrap();
    drop(conn);

    let store = EmbeddedStore::open(dir.path()).unwrap();
    store
        .append_logs("isapp-1", &[entry("after")], expires)
        .await
        .unwrap();
    let logs = store.get_logs("isapp-1", 0, 0).await.unwrap();
    let messages: Vec<&str> = logs.iter().map(|(_, e)| e.message.as_str()).collect();
    assert_eq!(messages, ["before", "after"]);
    assert!(logs[0].0 < logs[1].0);
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'logs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!sql.contains("AUTOINCREMENT"), "{sql}");
}
