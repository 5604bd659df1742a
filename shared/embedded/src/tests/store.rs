use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{json, Value};
use sluice_core::model::{Configuration, LogEntry, LogLevel, RunState, Schedule};
use sluice_core::ports::{
    Cache, DefinitionStore, OutputKey, RunQuery, RunStore, ScheduleStore, StoreError,
};

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
async fn create_run_is_insert_if_absent_with_snapshot() {
    let (_dir, store) = temp_store();
    let first = run("isapp-1", "app", Utc::now());
    assert!(store.create_run(&first, &app("app")).await.unwrap());

    let mut second = first.clone();
    second.state = RunState::Running;
    assert!(!store.create_run(&second, &app("other")).await.unwrap());

    assert_eq!(store.get_run("isapp-1").await.unwrap().unwrap(), first);
    assert_eq!(
        store.get_snapshot("isapp-1").await.unwrap().unwrap().name,
        "app"
    );
    assert!(store.get_run("isapp-2").await.unwrap().is_none());
    assert!(store.get_snapshot("isapp-2").await.unwrap().is_none());
}

#[tokio::test]
async fn update_run_is_compare_and_swap() {
    let (_dir, store) = temp_store();
    let mut r = run("isapp-1", "app", Utc::now());
    store.create_run(&r, &app("app")).await.unwrap();

    r.state = RunState::Running;
    r.version = 1;
    store.update_run(&r, 0).await.unwrap();
    assert_eq!(store.get_run("isapp-1").await.unwrap().unwrap().version, 1);

    // A writer that still believes version 0 loses.
    let mut stale = r.clone();
    stale.state = RunState::Failure;
    stale.version = 1;
    assert!(matches!(
        store.update_run(&stale, 0).await,
        Err(StoreError::Conflict)
    ));
    let stored = store.get_run("isapp-1").await.unwrap().unwrap();
    assert_eq!(stored.state, RunState::Running);

    r.state = RunState::Success;
    r.version = 2;
    store.update_run(&r, 1).await.unwrap();
    assert_eq!(store.get_run("isapp-1").await.unwrap().unwrap(), r);

    // A missing run cannot be updated either.
    let mut ghost = run("isapp-9", "app", Utc::now());
    ghost.version = 1;
    assert!(matches!(
        store.update_run(&ghost, 0).await,
        Err(StoreError::Conflict)
    ));
    // Forgetting to bump the version is a programming error, reported as such.
    assert!(matches!(
        store.update_run(&r, 2).await,
        Err(StoreError::Backend(_))
    ));
}

#[tokio::test]
async fn unfinished_runs_lists_non_terminal_ones() {
    let (_dir, store) = temp_store();
    for (id, state) in [
        ("isapp-1", RunState::Pending),
        ("isapp-2", RunState::Running),
        ("isapp-3", RunState::Success),
        ("isapp-4", RunState::Failure),
        ("isapp-5", RunState::Revoked),
    ] {
        let mut r = run(id, "app", Utc::now());
        r.state = state;
        store.create_run(&r, &app("app")).await.unwrap();
    }
    assert_eq!(
        store.unfinished_runs().await.unwrap(),
        vec!["isapp-1".to_string(), "isapp-2".to_string()]
    );
    let mut r = store.get_run("isapp-2").await.unwrap().unwrap();
    r.state = RunState::Success;
    r.version = 1;
    store.update_run(&r, 0).await.unwrap();
    assert_eq!(store.unfinished_runs().await.unwrap(), vec!["isapp-1"]);
}

#[tokio::test]
async fn expired_records_are_absent_and_purged() {
    let (_dir, store) = temp_store();
    let past = Utc::now() - ChronoDuration::seconds(1);
    let future = Utc::now() + ChronoDuration::days(1);

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
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(store.get("short").await.unwrap(), None);
    assert_eq!(store.get("forever").await.unwrap(), Some(json!(2)));
    // Deleting an expired entry reports that nothing (live) was there.
    store
        .put("gone", &json!(3), Some(Duration::from_millis(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
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
async fn expired_but_unpurged_run_is_replaced_on_create() {
    let (_dir, store) = temp_store();
    let mut old = run("isapp-1", "app", Utc::now());
    old.expires_at = Utc::now() - ChronoDuration::seconds(1);
    store.create_run(&old, &app("app")).await.unwrap();
    let fresh = run("isapp-1", "app", Utc::now());
    assert!(store.create_run(&fresh, &app("new")).await.unwrap());
    assert_eq!(store.get_run("isapp-1").await.unwrap().unwrap(), fresh);
    assert_eq!(
        store.get_snapshot("isapp-1").await.unwrap().unwrap().name,
        "new"
    );
}

#[tokio::test]
async fn list_runs_filters_orders_and_pages() {
    let (_dir, store) = temp_store();
    let base = Utc::now() - ChronoDuration::hours(1);
    for i in 0..10u32 {
        let mut r = run(
            &format!("isapp-{i:02}"),
            if i % 2 == 0 { "even" } else { "odd" },
            base + ChronoDuration::minutes(i64::from(i)),
        );
        r.state = if i < 3 {
            RunState::Success
        } else {
            RunState::Running
        };
        r.configuration = Some(if i < 5 { "c1" } else { "c2" }.to_string());
        r.queue = (i == 7).then(|| "urgent".to_string());
        store.create_run(&r, &app("x")).await.unwrap();
    }
    let ids = |runs: Vec<sluice_core::model::Run>| -> Vec<String> {
        runs.into_iter().map(|r| r.id).collect()
    };

    let all = ids(store.list_runs(&RunQuery::default()).await.unwrap());
    assert_eq!(all.len(), 10);
    assert_eq!(all[0], "isapp-09");
    assert_eq!(all[9], "isapp-00");

    let q = RunQuery {
        application: Some("even".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_runs(&q).await.unwrap()),
        ["isapp-08", "isapp-06", "isapp-04", "isapp-02", "isapp-00"]
    );

    let q = RunQuery {
        state: Some(RunState::Success),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_runs(&q).await.unwrap()),
        ["isapp-02", "isapp-01", "isapp-00"]
    );

    let q = RunQuery {
        configuration: Some("c2".into()),
        application: Some("odd".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_runs(&q).await.unwrap()),
        ["isapp-09", "isapp-07", "isapp-05"]
    );

    let q = RunQuery {
        queue: Some("urgent".into()),
        ..Default::default()
    };
    assert_eq!(ids(store.list_runs(&q).await.unwrap()), ["isapp-07"]);

    // since is inclusive, until exclusive.
    let q = RunQuery {
        since: Some(base + ChronoDuration::minutes(3)),
        until: Some(base + ChronoDuration::minutes(6)),
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_runs(&q).await.unwrap()),
        ["isapp-05", "isapp-04", "isapp-03"]
    );

    // Pages of 4 with the cursor.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = ids(store
            .list_runs(&RunQuery {
                before_id: before.clone(),
                limit: 4,
                ..Default::default()
            })
            .await
            .unwrap());
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        before = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, all);
}

#[tokio::test]
async fn list_runs_default_limit_is_50() {
    let (_dir, store) = temp_store();
    for i in 0..60 {
        store
            .create_run(&run(&format!("isapp-{i:03}"), "a", Utc::now()), &app("a"))
            .await
            .unwrap();
    }
    assert_eq!(
        store.list_runs(&RunQuery::default()).await.unwrap().len(),
        50
    );
    let q = RunQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list_runs(&q).await.unwrap().len(), 60);
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

#[tokio::test]
async fn logs_have_increasing_sequence_numbers() {
    let (_dir, store) = temp_store();
    let expires = Utc::now() + ChronoDuration::days(1);
    store
        .append_logs("r1", &[entry("a"), entry("b")], expires)
        .await
        .unwrap();
    store
        .append_logs("r2", &[entry("other")], expires)
        .await
        .unwrap();
    store
        .append_logs("r1", &[entry("c")], expires)
        .await
        .unwrap();
    store.append_logs("r1", &[], expires).await.unwrap();

    let all = store.get_logs("r1", 0, 0).await.unwrap();
    let messages: Vec<_> = all.iter().map(|(_, e)| e.message.as_str()).collect();
    assert_eq!(messages, ["a", "b", "c"]);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(all[0].1, store.get_logs("r1", 0, 1).await.unwrap()[0].1);

    let after_first = store.get_logs("r1", all[0].0, 0).await.unwrap();
    assert_eq!(after_first.len(), 2);
    assert_eq!(after_first[0].1.message, "b");
    let page = store.get_logs("r1", all[0].0, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(store.get_logs("r1", all[2].0, 0).await.unwrap().is_empty());
}

#[tokio::test]
async fn definitions_round_trip_sorted() {
    let (dir, store) = temp_store();
    for name in ["zeta", "alpha", "mid"] {
        store.put_application(&app(name)).await.unwrap();
    }
    let mut changed = app("mid");
    changed.description = "changed".into();
    store.put_application(&changed).await.unwrap();
    let names: Vec<_> = store
        .list_applications()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(store.get_application("mid").await.unwrap(), Some(changed));
    assert!(store.delete_application("alpha").await.unwrap());
    assert!(!store.delete_application("alpha").await.unwrap());
    assert!(store.get_application("alpha").await.unwrap().is_none());

    let config: Configuration = serde_json::from_value(json!({
        "name": "acme",
        "data": [
            {"name": "host", "value": "h.example"},
            {"name": "token", "value": "s3cr3t-token", "encrypted": true}
        ]
    }))
    .unwrap();
    store.put_configuration(&config).await.unwrap();
    let stored = store.get_configuration("acme").await.unwrap().unwrap();
    assert_eq!(stored, config.redacted());
    assert_eq!(store.list_configurations().await.unwrap().len(), 1);
    assert!(store.delete_configuration("acme").await.unwrap());
    assert!(store.list_configurations().await.unwrap().is_empty());

    // Everything survives reopening the directory.
    drop(store);
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.list_applications().await.unwrap().len(), 2);
}

#[tokio::test]
async fn schedules_round_trip() {
    let (_dir, store) = temp_store();
    let schedule: Schedule = serde_json::from_value(json!({
        "application_id": "device_sync",
        "entry_id": "nightly",
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 300}}
    }))
    .unwrap();
    store.put_schedule(&schedule).await.unwrap();
    let mut other = schedule.clone();
    other.entry_id = "hourly".into();
    store.put_schedule(&other).await.unwrap();
    assert_eq!(store.get_schedule("nightly").await.unwrap(), Some(schedule));
    let ids: Vec<_> = store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.entry_id)
        .collect();
    assert_eq!(ids, ["hourly", "nightly"]);
    assert!(store.delete_schedule("nightly").await.unwrap());
    assert!(!store.delete_schedule("nightly").await.unwrap());
}

#[tokio::test]
async fn cache_round_trip() {
    let (_dir, store) = temp_store();
    let cache = store.cache();
    assert_eq!(cache.get("k").await.unwrap(), None);
    cache.put("k", &json!({"a": [1, 2]}), None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(json!({"a": [1, 2]})));
    cache
        .put("k", &json!("v2"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(json!("v2")));
    assert!(cache.delete("k").await.unwrap());
    assert!(!cache.delete("k").await.unwrap());
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
