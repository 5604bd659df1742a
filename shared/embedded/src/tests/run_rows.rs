//! A run kept as rows (`run_rows`): the split of runs stored before it, the copy a
//! store keeps of its runs staying true to what another store on the same data directory
//! wrote, and deltas that write only their rows.

use chrono::Utc;
use serde_json::json;
use sluice_core::engine::RunDelta;
use sluice_core::model::{StepRun, Unit, UnitState};
use sluice_core::ports::RunStore;

use super::{app, run, temp_store};
use crate::EmbeddedStore;

fn fanned_run(id: &str) -> sluice_core::model::Run {
    let mut one = run(id, "app", Utc::now());
    one.steps = vec![StepRun::new("A"), StepRun::new("B")];
    one.steps[1].fan_out = Some(3);
    one.steps[1].units = vec![Unit::pending(); 3];
    one.steps[1].units[2].output = Some(json!({"k": 2}));
    one
}

#[tokio::test]
async fn runs_stored_as_one_document_are_split_by_the_migration() {
    let (dir, store) = temp_store();
    let original = fanned_run("isapp-old");
    store.create_run(&original, &app("app")).await.unwrap();
    drop(store);
    // Make it look like a data directory of the previous schema: the whole run in
    // `runs.doc`, no rows.
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    conn.execute(
        "UPDATE runs SET doc = ?1 WHERE id = 'isapp-old'",
        [serde_json::to_string(&original).unwrap()],
    )
    .unwrap();
    conn.execute_batch("DROP TABLE run_steps; DROP TABLE run_units;")
        .unwrap();
    conn.pragma_update(None, "user_version", 7) // the schema before run rows
        .unwrap();
    drop(conn);

    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.get_run("isapp-old").await.unwrap(), Some(original));
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    let (steps, units): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM run_steps), (SELECT count(*) FROM run_units)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((steps, units), (2, 3));
}

#[tokio::test]
async fn a_delta_writes_its_rows_and_other_stores_read_the_new_version() {
    let (dir, ours) = temp_store();
    let theirs = EmbeddedStore::open(dir.path()).unwrap();
    let mut current = fanned_run("isapp-1");
    ours.create_run(&current, &app("app")).await.unwrap();
    assert_eq!(
        theirs.get_run("isapp-1").await.unwrap().as_ref(),
        Some(&current)
    );

    // Ours changes one unit; theirs (with its own copy of version 0) sees version 1.
    current.steps[1].units[1].state = UnitState::Queued;
    current.version = 1;
    let delta = RunDelta {
        units: [(1, 1)].into(),
        ..RunDelta::default()
    };
    ours.update_run_delta(&current, 0, &delta).await.unwrap();
    assert_eq!(
        theirs.get_run("isapp-1").await.unwrap().as_ref(),
        Some(&current)
    );

    // Theirs changes the header and a step; ours reads that, not its own copy.
    current.params.insert("by".into(), json!("theirs"));
    current.steps[0].attempts = 1;
    current.version = 2;
    let delta = RunDelta {
        header: true,
        steps: [0].into(),
        ..RunDelta::default()
    };
    theirs.update_run_delta(&current, 1, &delta).await.unwrap();
    assert_eq!(
        ours.get_run("isapp-1").await.unwrap().as_ref(),
        Some(&current)
    );

    // A delta writes only what it names: a change it does not name is not stored.
    let mut unnamed = current.clone();
    unnamed.steps[1].units[0].attempt = 7;
    unnamed.version = 3;
    ours.update_run_delta(&unnamed, 2, &RunDelta::default())
        .await
        .unwrap();
    let fresh = EmbeddedStore::open(dir.path()).unwrap();
    let stored = fresh.get_run("isapp-1").await.unwrap().unwrap();
    assert_eq!(stored.version, 3);
    assert_eq!(stored.steps[1].units[0].attempt, 0);
}

#[tokio::test]
async fn purging_an_expired_run_deletes_its_rows() {
    let (dir, store) = temp_store();
    let one = fanned_run("isapp-gone");
    store.create_run(&one, &app("app")).await.unwrap();
    let report = store
        .purge_expired_at(one.expires_at + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(report.runs, 1);
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM run_steps) + (SELECT count(*) FROM run_units)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(rows, 0);
}
