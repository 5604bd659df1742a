//! The contract of the store and queue ports, written once and run against every
//! adapter: the embedded one (SQLite, `sluice-embedded`'s tests) and the AWS one
//! (DynamoDB, S3, Secrets Manager and SQS on moto, `sluice-aws`'s tests). Behind the
//! `conformance` feature.
//!
//! An adapter's tests implement [`StoreFactory`] (fresh, empty stores on a
//! [`ManualClock`]) and [`QueueFactory`] (fresh, empty queues) and instantiate every
//! test with [`store_conformance!`] and [`queue_conformance!`]:
//!
//! ```ignore
//! sluice_core::store_conformance!(crate::MyFactory);
//! sluice_core::queue_conformance!(crate::MyFactory);
//! ```
//!
//! Expiry is tested by moving the clock, never by sleeping. Times are whole seconds
//! where an adapter may keep only milliseconds. The queue contract is the part that
//! needs no clock (SQS on moto cannot be given one): when a delayed or timed-out message
//! becomes visible is tested per adapter, the embedded one on a [`ManualClock`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, SubsecRound, Utc};
use serde_json::{json, Value};

use crate::clock::{Clock, ManualClock};
use crate::model::{
    Application, Configuration, LogEntry, LogLevel, Run, RunState, Schedule, StepRun,
};
use crate::ports::{
    dead_letter_queue, Cache, DefinitionStore, Delivery, OutputKey, Queue, RunQuery, RunStore,
    ScheduleError, ScheduleStatsStore, ScheduleStore, ScheduledRun, SecretStore, StoreError,
    TaskMessage, MAX_RECEIVE_COUNT,
};
use crate::versions::{DefinitionKind, NewVersion};

/// Fresh, empty stores of one adapter, all judging expiry by `clock`.
pub struct Stores {
    pub definitions: Arc<dyn DefinitionStore>,
    pub runs: Arc<dyn RunStore>,
    pub cache: Arc<dyn Cache>,
    pub secrets: Arc<dyn SecretStore>,
    pub schedules: Arc<dyn ScheduleStore>,
    pub stats: Arc<dyn ScheduleStatsStore>,
    pub reports: Arc<dyn crate::ports::ReportStore>,
    pub packs: Arc<dyn crate::ports::PackStore>,
    pub clock: Arc<ManualClock>,
    /// Whatever must outlive the stores (a temporary directory).
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

/// Makes [`Stores`] for one test.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    async fn fresh(&self) -> Stores;
}

/// Instantiates every contract test of this module as a `#[tokio::test]` calling
/// `$factory` (an expression of a type implementing [`StoreFactory`]).
#[macro_export]
macro_rules! store_conformance {
    ($factory:expr) => {
        $crate::store_conformance!(@each $factory;
            definitions_round_trip_sorted,
            configurations_are_stored_redacted,
            versions_number_pushes_and_skip_identical_content,
            versions_keep_only_the_newest,
            configuration_versions_hold_no_secret,
            deleting_a_definition_deletes_its_versions,
            concurrent_pushes_get_distinct_versions,
            runs_are_created_once_with_their_snapshot,
            update_run_is_compare_and_swap,
            concurrent_transitions_of_one_version_have_one_winner,
            transitions_stored_as_deltas_read_back_whole,
            long_runs_stored_as_deltas_read_back_whole,
            unfinished_runs_are_the_non_terminal_ones,
            list_runs_filters_orders_and_pages,
            list_runs_default_limit_is_50,
            expired_runs_are_absent_and_can_be_created_again,
            outputs_overwrite_spill_and_expire,
            logs_page_with_a_cursor_and_expire,
            cache_entries_expire_by_ttl,
            cache_lists_and_deletes_by_prefix,
            secrets_are_one_document_per_configuration,
            schedules_round_trip_sorted,
            tick_claims_move_forward_only,
            concurrent_claims_of_one_tick_have_one_winner,
            report_parts_replace_per_unit_list_and_delete,
            reports_expire_with_their_run,
            packs_install_once_list_and_delete,
            pack_activations_round_trip,
            large_pack_archives_round_trip,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::conformance::$name(&$factory).await;
            }
        )*
    };
}

/// A one-step application named `name`.
pub fn application(name: &str) -> Application {
    serde_json::from_value(json!({
        "name": name,
        "author": "conformance",
        "steps": [{"id": "A", "type": "echo", "parameters": {"value": 1}}]
    }))
    .expect("application")
}

/// A pending run of `application`, expiring a week after `created_at`.
pub fn run(id: &str, application: &str, created_at: DateTime<Utc>) -> Run {
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
        expires_at: created_at + ChronoDuration::days(7),
        steps: vec![StepRun::new("A")],
        version: 0,
        application_version: None,
    }
}

fn key(run_id: &str, step: &str, unit: u32) -> OutputKey {
    OutputKey {
        run_id: run_id.into(),
        step_id: step.into(),
        unit,
    }
}

fn entry(at: DateTime<Utc>, message: &str) -> LogEntry {
    LogEntry {
        ts: at,
        level: LogLevel::Info,
        step: "A".into(),
        attempt: 1,
        message: message.into(),
    }
}

fn messages(logs: &[(u64, LogEntry)]) -> Vec<&str> {
    logs.iter().map(|(_, e)| e.message.as_str()).collect()
}

fn ids(runs: Vec<Run>) -> Vec<String> {
    runs.into_iter().map(|r| r.id).collect()
}

/// Now by the stores' clock, in whole seconds.
fn now(s: &Stores) -> DateTime<Utc> {
    s.clock.now().trunc_subsecs(0)
}

fn is_conflict<T>(result: Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict))
}

/// Too large for a row or an item even compressed: the adapter keeps it aside (a file,
/// an S3 object).
fn large_value() -> Value {
    let text: String = (0..400_000u64)
        .map(|i| format!("{:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40))
        .collect();
    json!({"blob": text})
}

pub async fn definitions_round_trip_sorted(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let d = &s.definitions;
    for name in ["zeta", "alpha", "mid"] {
        d.put_application(&application(name)).await.unwrap();
    }
    let mut changed = application("mid");
    changed.description = "changed".into();
    d.put_application(&changed).await.unwrap();
    let names: Vec<_> = d
        .list_applications()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(d.get_application("mid").await.unwrap(), Some(changed));
    assert!(d.delete_application("alpha").await.unwrap());
    assert!(!d.delete_application("alpha").await.unwrap());
    assert!(d.get_application("alpha").await.unwrap().is_none());
    assert!(d.get_application("never").await.unwrap().is_none());
}

pub async fn configurations_are_stored_redacted(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let d = &s.definitions;
    let config: Configuration = serde_json::from_value(json!({
        "name": "acme",
        "data": [
            {"name": "host", "value": "h.example"},
            {"name": "token", "value": "s3cr3t-token", "encrypted": true}
        ]
    }))
    .unwrap();
    d.put_configuration(&config).await.unwrap();
    let mut other = config.redacted();
    other.name = "beta".into();
    d.put_configuration(&other).await.unwrap();
    assert_eq!(
        d.get_configuration("acme").await.unwrap(),
        Some(config.redacted()),
        "an encrypted value never reaches the definition store"
    );
    let names: Vec<_> = d
        .list_configurations()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["acme", "beta"]);
    assert!(d.delete_configuration("acme").await.unwrap());
    assert!(!d.delete_configuration("acme").await.unwrap());
    assert_eq!(d.list_configurations().await.unwrap().len(), 1);
}

fn push_of(app: &Application, author: &str, keep: usize) -> NewVersion {
    NewVersion::application(app, author, keep).expect("push")
}

fn numbers(infos: &[crate::versions::VersionInfo]) -> Vec<u64> {
    infos.iter().map(|i| i.version).collect()
}

pub async fn versions_number_pushes_and_skip_identical_content(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let d = &s.definitions;
    let first = application("app");
    let pushed = d
        .push_definition(&push_of(&first, "alice", 50))
        .await
        .unwrap();
    assert_eq!((pushed.version, pushed.created), (1, true));
    let at_first = now(&s);
    s.clock.advance(ChronoDuration::seconds(60));
    let again = d
        .push_definition(&push_of(&first, "bob", 50))
        .await
        .unwrap();
    assert_eq!(
        (again.version, again.created),
        (1, false),
        "identical content is no new version"
    );
    let mut second = application("app");
    second.description = "second".into();
    let pushed = d
        .push_definition(&push_of(&second, "bob", 50))
        .await
        .unwrap();
    assert_eq!((pushed.version, pushed.created), (2, true));
    assert_eq!(
        d.get_application("app").await.unwrap(),
        Some(second.clone())
    );

    let history = d
        .list_versions(DefinitionKind::Application, "app", 50)
        .await
        .unwrap();
    assert_eq!(numbers(&history), [2, 1], "newest first");
    assert_eq!(history[0].author, "bob");
    assert_eq!(history[1].author, "alice");
    assert_eq!(history[1].created_at.trunc_subsecs(0), at_first);
    assert_eq!(history[0].created_at.trunc_subsecs(0), now(&s));
    assert_eq!(history[1].hash, push_of(&first, "x", 1).hash);
    let latest = d
        .latest_version(DefinitionKind::Application, "app")
        .await
        .unwrap()
        .expect("latest");
    assert_eq!((latest.version, latest.hash), (2, history[0].hash.clone()));
    assert!(d
        .latest_version(DefinitionKind::Application, "other")
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        numbers(
            &d.list_versions(DefinitionKind::Application, "app", 1)
                .await
                .unwrap()
        ),
        [2]
    );

    let one = d
        .get_version(DefinitionKind::Application, "app", 1)
        .await
        .unwrap()
        .expect("version 1");
    assert_eq!(one.info, history[1]);
    assert_eq!(one.document, serde_json::to_value(&first).unwrap());
    assert!(d
        .get_version(DefinitionKind::Application, "app", 3)
        .await
        .unwrap()
        .is_none());
    assert!(
        d.get_version(DefinitionKind::Configuration, "app", 1)
            .await
            .unwrap()
            .is_none(),
        "kinds keep separate histories"
    );
    assert!(d
        .list_versions(DefinitionKind::Application, "other", 50)
        .await
        .unwrap()
        .is_empty());

    // Going back to earlier content is a new version, not a no-op.
    let back = d
        .push_definition(&push_of(&first, "carol", 50))
        .await
        .unwrap();
    assert_eq!((back.version, back.created), (3, true));
    assert_eq!(d.get_application("app").await.unwrap(), Some(first));
}

pub async fn versions_keep_only_the_newest(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let d = &s.definitions;
    for i in 1..=5 {
        let mut app = application("app");
        app.description = format!("push {i}");
        d.push_definition(&push_of(&app, "alice", 2)).await.unwrap();
    }
    let history = d
        .list_versions(DefinitionKind::Application, "app", 50)
        .await
        .unwrap();
    assert_eq!(numbers(&history), [5, 4]);
    assert!(d
        .get_version(DefinitionKind::Application, "app", 3)
        .await
        .unwrap()
        .is_none());
    // A larger setting keeps more from now on.
    let mut app = application("app");
    app.description = "push 6".into();
    d.push_definition(&push_of(&app, "alice", 10))
        .await
        .unwrap();
    assert_eq!(
        numbers(
            &d.list_versions(DefinitionKind::Application, "app", 50)
                .await
                .unwrap()
        ),
        [6, 5, 4]
    );
}

pub async fn configuration_versions_hold_no_secret(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let d = &s.definitions;
    let config: Configuration = serde_json::from_value(json!({
        "name": "acme",
        "data": [
            {"name": "host", "value": "h.example"},
            {"name": "token", "value": "s3cr3t-token", "encrypted": true}
        ]
    }))
    .unwrap();
    let push = NewVersion::configuration(&config, "alice", 50).unwrap();
    assert_eq!(d.push_definition(&push).await.unwrap().version, 1);
    d.put_configuration(&config).await.unwrap();
    let version = d
        .get_version(DefinitionKind::Configuration, "acme", 1)
        .await
        .unwrap()
        .expect("version 1");
    assert!(!version.document.to_string().contains("s3cr3t"));
    assert_eq!(version.info.encrypted, ["token"]);
    assert_eq!(
        version.document,
        serde_json::to_value(config.redacted()).unwrap()
    );
    assert_eq!(
        numbers(
            &d.list_versions(DefinitionKind::Configuration, "acme", 50)
                .await
                .unwrap()
        ),
        [1],
        "put_configuration of the same content is no new version"
    );
}

pub async fn deleting_a_definition_deletes_its_versions(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let d = &s.definitions;
    let mut app = application("app");
    d.push_definition(&push_of(&app, "alice", 50))
        .await
        .unwrap();
    app.description = "two".into();
    d.push_definition(&push_of(&app, "alice", 50))
        .await
        .unwrap();
    assert!(d.delete_application("app").await.unwrap());
    assert!(d
        .list_versions(DefinitionKind::Application, "app", 50)
        .await
        .unwrap()
        .is_empty());
    let again = d.push_definition(&push_of(&app, "bob", 50)).await.unwrap();
    assert_eq!((again.version, again.created), (1, true));
}

pub async fn concurrent_pushes_get_distinct_versions(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let pushes = (0..4).map(|i| {
        let d = s.definitions.clone();
        let mut app = application("app");
        app.description = format!("writer {i}");
        tokio::spawn(async move { d.push_definition(&push_of(&app, "w", 50)).await })
    });
    let mut versions: Vec<u64> = Vec::new();
    for push in pushes.collect::<Vec<_>>() {
        let outcome = push.await.unwrap().expect("every push succeeds");
        assert!(outcome.created);
        versions.push(outcome.version);
    }
    versions.sort();
    assert_eq!(versions, [1, 2, 3, 4]);
    let latest = s
        .definitions
        .get_version(DefinitionKind::Application, "app", 4)
        .await
        .unwrap()
        .expect("version 4");
    assert_eq!(
        serde_json::to_value(s.definitions.get_application("app").await.unwrap()).unwrap(),
        latest.document,
        "the current definition is the newest version's"
    );
}

pub async fn runs_are_created_once_with_their_snapshot(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.runs;
    let first = run("isapp-1", "app", now(&s));
    assert!(r.create_run(&first, &application("app")).await.unwrap());
    let mut second = first.clone();
    second.state = RunState::Running;
    assert!(
        !r.create_run(&second, &application("other")).await.unwrap(),
        "creating an existing run writes nothing"
    );
    assert_eq!(r.get_run("isapp-1").await.unwrap(), Some(first));
    assert_eq!(
        r.get_snapshot("isapp-1").await.unwrap().unwrap().name,
        "app"
    );
    assert!(r.get_run("isapp-2").await.unwrap().is_none());
    assert!(r.get_snapshot("isapp-2").await.unwrap().is_none());
}

pub async fn update_run_is_compare_and_swap(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.runs;
    let mut current = run("isapp-1", "app", now(&s));
    r.create_run(&current, &application("app")).await.unwrap();

    // A chain of transitions, each against the version it read.
    for (version, state) in [
        (1, RunState::Running),
        (2, RunState::Running),
        (3, RunState::Success),
    ] {
        let mut stale = current.clone();
        current.state = state;
        current.version = version;
        r.update_run(&current, version - 1).await.unwrap();
        assert_eq!(r.get_run("isapp-1").await.unwrap().as_ref(), Some(&current));
        // A writer that still believes the previous version loses, and changes nothing.
        stale.state = RunState::Failure;
        stale.version = version;
        assert!(is_conflict(r.update_run(&stale, version - 1).await));
        assert_eq!(r.get_run("isapp-1").await.unwrap().as_ref(), Some(&current));
    }
    // A missing run cannot be updated.
    let mut ghost = run("isapp-9", "app", now(&s));
    ghost.version = 1;
    assert!(is_conflict(r.update_run(&ghost, 0).await));
    assert!(r.get_run("isapp-9").await.unwrap().is_none());
    // Not bumping the version is a programming error, not a conflict.
    assert!(matches!(
        r.update_run(&current, 3).await,
        Err(StoreError::Backend(_))
    ));
}

pub async fn concurrent_transitions_of_one_version_have_one_winner(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let base = run("isapp-1", "app", now(&s));
    s.runs.create_run(&base, &application("app")).await.unwrap();
    let writers: Vec<_> = (0..8u32)
        .map(|i| {
            let runs = s.runs.clone();
            let mut mine = base.clone();
            mine.version = 1;
            mine.params.insert("writer".into(), json!(i));
            tokio::spawn(async move { (i, runs.update_run(&mine, 0).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for writer in writers {
        match writer.await.unwrap() {
            (i, Ok(())) => winners.push(i),
            (_, Err(StoreError::Conflict)) => {}
            (_, Err(e)) => panic!("a losing writer must see a conflict, got {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one transition of version 0 wins");
    let stored = s.runs.get_run("isapp-1").await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.params["writer"], json!(winners[0]));
}

/// A fan-out into a join driven by the engine, each transition stored with
/// `update_run_delta`: the stored run is always the engine's, whatever the store writes
/// (the whole run, or only the parts the delta names), and a delta against an older
/// version is a conflict that changes nothing.
pub async fn transitions_stored_as_deltas_read_back_whole(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let app: Application = serde_json::from_value(json!({
        "name": "fan", "author": "conformance", "steps": [
            {"id": "Source", "type": "echo"},
            {"id": "Fan", "type": "echo", "depends_on": ["Source"],
             "for_each": {"items": "${Source}", "max_concurrency": 120}},
            {"id": "Join", "type": "echo", "depends_on": ["Fan"]}]
    }))
    .expect("application");
    let current = drive_stored_as_deltas(&s, &app, 120).await;
    let stored = s.runs.get_run(&current.id).await.unwrap().unwrap();
    assert_eq!(stored.step("Fan").unwrap().units.len(), 120);
    assert_eq!(
        stored.step("Fan").unwrap().units[119].output,
        Some(json!(119))
    );
}

/// As [`transitions_stored_as_deltas_read_back_whole`], for a run of 70 steps with a
/// fan-out of 1,100 units half-way, 40 at a time: more than a store may keep in one
/// record, and wide enough that a store may keep the units not under way (ended, or not
/// started) in a form of their own while the window moves through them.
pub async fn long_runs_stored_as_deltas_read_back_whole(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let steps: Vec<Value> = (0..70)
        .map(|i| {
            let mut step = json!({"id": format!("S{i}"), "type": "echo"});
            if i > 0 {
                step["depends_on"] = json!([format!("S{}", i - 1)]);
            }
            if i == 35 {
                step["for_each"] = json!({"items": "${S34}", "max_concurrency": 40});
            }
            step
        })
        .collect();
    let app: Application =
        serde_json::from_value(json!({"name": "long", "author": "conformance", "steps": steps}))
            .expect("application");
    let current = drive_stored_as_deltas(&s, &app, 1100).await;
    assert_eq!(current.steps.len(), 70);
    assert_eq!(current.step("S35").unwrap().units.len(), 1100);
}

/// Drives a run of `app` to its end through the engine (every fan-out over `units`
/// units), storing each transition with `update_run_delta` and checking along the way
/// that the stored run is the engine's and that a stale writer loses. Returns the run.
async fn drive_stored_as_deltas(s: &Stores, app: &Application, units: u32) -> Run {
    use crate::engine::{self, AttemptResult, Decision, Effect, Event, Plan};
    let r = &s.runs;
    let plan = Plan::new(app.clone());
    let at = now(s);
    let id = format!("isapp-delta-{}", app.name);
    let mut current = plan.new_run(id, at, at + ChronoDuration::days(7));
    r.create_run(&current, app).await.unwrap();

    let mut pending = vec![Event::Start];
    let mut transitions = 0u32;
    while let Some(event) = pending.pop() {
        let before = current.clone();
        let applied = engine::apply(&plan, &mut current, &event, at);
        if !applied.changed {
            continue;
        }
        current.version += 1;
        r.update_run_delta(&current, before.version, &applied.delta)
            .await
            .unwrap();
        transitions += 1;
        if transitions % 25 == 1 || current.state.is_terminal() {
            assert_eq!(
                r.get_run(&current.id).await.unwrap().as_ref(),
                Some(&current)
            );
            // A writer holding the previous version loses and changes nothing.
            let mut stale = before.clone();
            stale.version = current.version;
            stale.params.insert("stale".into(), json!(true));
            assert!(is_conflict(
                r.update_run_delta(&stale, before.version, &applied.delta)
                    .await
            ));
            assert_eq!(
                r.get_run(&current.id).await.unwrap().as_ref(),
                Some(&current)
            );
        }
        for effect in applied.effects.into_iter().rev() {
            match effect {
                Effect::Evaluate { step } => pending.push(Event::Evaluated {
                    step,
                    decision: Decision::Run { units: Some(units) },
                }),
                Effect::Dispatch {
                    step,
                    unit,
                    attempt,
                    ..
                } => {
                    pending.push(Event::Finished {
                        step: step.clone(),
                        unit,
                        attempt,
                        result: AttemptResult::Success { warnings: vec![] },
                        output: Some(json!(unit)),
                    });
                    pending.push(Event::Claim {
                        step,
                        unit,
                        attempt,
                    });
                }
                Effect::RevokeChild { .. } | Effect::RunFinished { .. } => {}
            }
        }
    }
    assert_eq!(current.state, RunState::Success);
    let stored = r.get_run(&current.id).await.unwrap().unwrap();
    assert_eq!(stored, current);
    let listed = r
        .list_runs(&RunQuery {
            application: Some(app.name.clone()),
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![current.clone()]);
    current
}

pub async fn unfinished_runs_are_the_non_terminal_ones(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.runs;
    for (id, state) in [
        ("isapp-1", RunState::Pending),
        ("isapp-2", RunState::Running),
        ("isapp-3", RunState::Success),
        ("isapp-4", RunState::Failure),
        ("isapp-5", RunState::Revoked),
    ] {
        let mut one = run(id, "app", now(&s));
        one.state = state;
        r.create_run(&one, &application("app")).await.unwrap();
    }
    assert_eq!(r.unfinished_runs().await.unwrap(), ["isapp-1", "isapp-2"]);
    let mut finished = r.get_run("isapp-2").await.unwrap().unwrap();
    finished.state = RunState::Success;
    finished.version = 1;
    r.update_run(&finished, 0).await.unwrap();
    assert_eq!(r.unfinished_runs().await.unwrap(), ["isapp-1"]);
}

pub async fn list_runs_filters_orders_and_pages(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.runs;
    let base = now(&s) - ChronoDuration::hours(1);
    for i in 0..10u32 {
        let mut one = run(
            &format!("isapp-{i:02}"),
            if i % 2 == 0 { "even" } else { "odd" },
            base + ChronoDuration::minutes(i64::from(i)),
        );
        one.state = if i < 3 {
            RunState::Success
        } else {
            RunState::Running
        };
        one.configuration = Some(if i < 5 { "c1" } else { "c2" }.to_string());
        one.queue = (i == 7).then(|| "urgent".to_string());
        r.create_run(&one, &application("x")).await.unwrap();
    }
    let list = |q: RunQuery| async move { ids(r.list_runs(&q).await.unwrap()) };

    let all = list(RunQuery::default()).await;
    assert_eq!(all.len(), 10);
    assert_eq!((all[0].as_str(), all[9].as_str()), ("isapp-09", "isapp-00"));
    assert_eq!(
        list(RunQuery {
            application: Some("even".into()),
            ..Default::default()
        })
        .await,
        ["isapp-08", "isapp-06", "isapp-04", "isapp-02", "isapp-00"]
    );
    assert_eq!(
        list(RunQuery {
            state: Some(RunState::Success),
            ..Default::default()
        })
        .await,
        ["isapp-02", "isapp-01", "isapp-00"]
    );
    assert_eq!(
        list(RunQuery {
            configuration: Some("c2".into()),
            application: Some("odd".into()),
            ..Default::default()
        })
        .await,
        ["isapp-09", "isapp-07", "isapp-05"]
    );
    assert_eq!(
        list(RunQuery {
            queue: Some("urgent".into()),
            ..Default::default()
        })
        .await,
        ["isapp-07"]
    );
    // `since` is inclusive, `until` exclusive.
    assert_eq!(
        list(RunQuery {
            since: Some(base + ChronoDuration::minutes(3)),
            until: Some(base + ChronoDuration::minutes(6)),
            ..Default::default()
        })
        .await,
        ["isapp-05", "isapp-04", "isapp-03"]
    );
    // Pages of 4 with the cursor, with and without a filter.
    for application in [None, Some("odd")] {
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = list(RunQuery {
                application: application.map(String::from),
                before_id: before.clone(),
                limit: 4,
                ..Default::default()
            })
            .await;
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 4);
            before = page.last().cloned();
            seen.extend(page);
        }
        let expected: Vec<_> = all
            .iter()
            .filter(|id| application.is_none() || id.ends_with(['1', '3', '5', '7', '9']))
            .cloned()
            .collect();
        assert_eq!(seen, expected, "pages of {application:?}");
    }
}

pub async fn list_runs_default_limit_is_50(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let at = now(&s);
    for i in 0..60 {
        s.runs
            .create_run(&run(&format!("isapp-{i:03}"), "a", at), &application("a"))
            .await
            .unwrap();
    }
    assert_eq!(
        s.runs.list_runs(&RunQuery::default()).await.unwrap().len(),
        50
    );
    let all = RunQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(s.runs.list_runs(&all).await.unwrap().len(), 60);
}

pub async fn expired_runs_are_absent_and_can_be_created_again(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.runs;
    let mut old = run("isapp-1", "app", now(&s));
    old.expires_at = now(&s) + ChronoDuration::hours(1);
    r.create_run(&old, &application("app")).await.unwrap();
    assert!(r.get_run("isapp-1").await.unwrap().is_some());

    s.clock
        .advance(ChronoDuration::hours(1) + ChronoDuration::seconds(1));
    assert!(r.get_run("isapp-1").await.unwrap().is_none());
    assert!(r.get_snapshot("isapp-1").await.unwrap().is_none());
    assert!(r.list_runs(&RunQuery::default()).await.unwrap().is_empty());
    let by_application = RunQuery {
        application: Some("app".into()),
        ..Default::default()
    };
    assert!(r.list_runs(&by_application).await.unwrap().is_empty());
    assert!(r.unfinished_runs().await.unwrap().is_empty());
    let mut bumped = old.clone();
    bumped.version = 1;
    assert!(
        is_conflict(r.update_run(&bumped, 0).await),
        "an expired run cannot be updated"
    );

    // An expired run counts as absent for creation too: it is replaced, snapshot included.
    let fresh = run("isapp-1", "app", now(&s));
    assert!(r.create_run(&fresh, &application("app2")).await.unwrap());
    assert_eq!(r.get_run("isapp-1").await.unwrap(), Some(fresh));
    assert_eq!(
        r.get_snapshot("isapp-1").await.unwrap().unwrap().name,
        "app2"
    );
}

pub async fn outputs_overwrite_spill_and_expire(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.runs;
    let expires = now(&s) + ChronoDuration::days(1);
    let k = key("isapp-1", "A", 0);
    r.put_output(&k, &json!({"n": 1}), expires).await.unwrap();
    r.put_output(&k, &json!({"n": 2}), expires).await.unwrap();
    assert_eq!(r.get_output(&k).await.unwrap(), Some(json!({"n": 2})));
    assert_eq!(r.get_output(&key("isapp-1", "A", 1)).await.unwrap(), None);
    assert_eq!(r.get_output(&key("isapp-1", "B", 0)).await.unwrap(), None);
    r.put_output(&k, &Value::Null, expires).await.unwrap();
    assert_eq!(
        r.get_output(&k).await.unwrap(),
        Some(Value::Null),
        "a null output is an output"
    );

    // Large values round-trip (kept aside by the adapter), and can shrink again.
    let big = large_value();
    r.put_output(&k, &big, expires).await.unwrap();
    assert_eq!(r.get_output(&k).await.unwrap(), Some(big.clone()));
    r.put_output(&k, &json!("small"), expires).await.unwrap();
    assert_eq!(r.get_output(&k).await.unwrap(), Some(json!("small")));

    // Expiry, by the clock.
    let soon = key("isapp-1", "A", 2);
    let soon_big = key("isapp-1", "A", 3);
    let in_an_hour = now(&s) + ChronoDuration::hours(1);
    r.put_output(&soon, &json!(1), in_an_hour).await.unwrap();
    r.put_output(&soon_big, &big, in_an_hour).await.unwrap();
    assert_eq!(r.get_output(&soon).await.unwrap(), Some(json!(1)));
    s.clock.advance(ChronoDuration::hours(2));
    assert_eq!(r.get_output(&soon).await.unwrap(), None);
    assert_eq!(r.get_output(&soon_big).await.unwrap(), None);
    assert_eq!(r.get_output(&k).await.unwrap(), Some(json!("small")));
}

pub async fn logs_page_with_a_cursor_and_expire(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.runs;
    let expires = now(&s) + ChronoDuration::days(1);
    let at = s.clock.now();
    // The clock stands still between most appends: batches numbered at the same instant
    // (time-based numbers, on AWS) must never overwrite each other.
    let tick = || s.clock.advance(ChronoDuration::milliseconds(5));
    r.append_logs("r1", &[entry(at, "a"), entry(at, "b")], expires)
        .await
        .unwrap();
    r.append_logs("r2", &[entry(at, "other")], expires)
        .await
        .unwrap();
    r.append_logs("r1", &[entry(at, "c")], expires)
        .await
        .unwrap();
    r.append_logs("r1", &[], expires).await.unwrap();

    let all = r.get_logs("r1", 0, 0).await.unwrap();
    assert_eq!(messages(&all), ["a", "b", "c"]);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "increasing numbers"
    );
    assert_eq!(all[0].1, entry(at, "a"), "entries round-trip");
    assert_eq!(messages(&r.get_logs("r1", 0, 1).await.unwrap()), ["a"]);
    // The cursor resumes inside a batch, and pages.
    assert_eq!(
        messages(&r.get_logs("r1", all[0].0, 0).await.unwrap()),
        ["b", "c"]
    );
    assert_eq!(
        messages(&r.get_logs("r1", all[0].0, 1).await.unwrap()),
        ["b"]
    );
    assert!(r.get_logs("r1", all[2].0, 0).await.unwrap().is_empty());
    assert_eq!(messages(&r.get_logs("r2", 0, 0).await.unwrap()), ["other"]);
    assert!(r.get_logs("r3", 0, 0).await.unwrap().is_empty());

    // A later batch after the cursor is found by a follower.
    tick();
    r.append_logs("r1", &[entry(at, "d")], expires)
        .await
        .unwrap();
    assert_eq!(
        messages(&r.get_logs("r1", all[2].0, 0).await.unwrap()),
        ["d"]
    );

    // Expiry, by the clock.
    tick();
    r.append_logs(
        "r1",
        &[entry(at, "short")],
        now(&s) + ChronoDuration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(r.get_logs("r1", 0, 0).await.unwrap().len(), 5);
    s.clock.advance(ChronoDuration::hours(2));
    assert_eq!(
        messages(&r.get_logs("r1", 0, 0).await.unwrap()),
        ["a", "b", "c", "d"]
    );
}

pub async fn cache_entries_expire_by_ttl(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let c = &s.cache;
    assert_eq!(c.get("k").await.unwrap(), None);
    c.put("forever", &json!({"a": [1, 2]}), None).await.unwrap();
    c.put("minute", &json!(1), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    c.put("gone", &json!(2), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(c.get("forever").await.unwrap(), Some(json!({"a": [1, 2]})));
    assert_eq!(c.get("minute").await.unwrap(), Some(json!(1)));

    s.clock.advance(ChronoDuration::seconds(30));
    assert_eq!(c.get("minute").await.unwrap(), Some(json!(1)));
    assert_eq!(c.get("gone").await.unwrap(), None);
    assert!(
        !c.delete("gone").await.unwrap(),
        "deleting an expired entry reports that nothing live was there"
    );

    // A put replaces the value and the TTL, which counts from the put.
    c.put("minute", &json!("v2"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    s.clock.advance(ChronoDuration::seconds(45));
    assert_eq!(c.get("minute").await.unwrap(), Some(json!("v2")));
    s.clock.advance(ChronoDuration::seconds(16));
    assert_eq!(c.get("minute").await.unwrap(), None);
    assert_eq!(c.get("forever").await.unwrap(), Some(json!({"a": [1, 2]})));

    // No TTL on a put makes an entry permanent again.
    c.put("minute", &json!(3), None).await.unwrap();
    s.clock.advance(ChronoDuration::days(365));
    assert_eq!(c.get("minute").await.unwrap(), Some(json!(3)));

    assert!(c.delete("forever").await.unwrap());
    assert!(!c.delete("forever").await.unwrap());
    assert_eq!(c.get("forever").await.unwrap(), None);
}

pub async fn cache_lists_and_deletes_by_prefix(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let c = &s.cache;
    for key in ["a/1", "a/3", "a/2", "ab", "a_1", "a%", "b/1", "é/1"] {
        c.put(key, &json!(key), None).await.unwrap();
    }
    c.put("a/expiring", &json!(0), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    s.clock.advance(ChronoDuration::seconds(30));

    fn keys(page: &crate::ports::CacheKeys) -> Vec<String> {
        page.keys.clone()
    }
    // Pages in ascending key order; the prefix is literal; expired entries are absent.
    let first = c.list("a/", 2, None).await.unwrap();
    assert_eq!(keys(&first), ["a/1", "a/2"]);
    assert_eq!(first.next_after.as_deref(), Some("a/2"));
    let second = c.list("a/", 2, Some("a/2")).await.unwrap();
    assert_eq!(keys(&second), ["a/3"]);
    assert_eq!(second.next_after, None, "the last page says so");
    assert_eq!(
        keys(&c.list("a/", 3, None).await.unwrap()),
        ["a/1", "a/2", "a/3"]
    );
    assert_eq!(c.list("a/", 3, None).await.unwrap().next_after, None);
    assert_eq!(keys(&c.list("a_", 10, None).await.unwrap()), ["a_1"]);
    assert_eq!(keys(&c.list("a%", 10, None).await.unwrap()), ["a%"]);
    assert_eq!(keys(&c.list("é", 10, None).await.unwrap()), ["é/1"]);
    assert!(c.list("zz", 10, None).await.unwrap().keys.is_empty());
    assert_eq!(
        keys(&c.list("", 0, None).await.unwrap()),
        ["a%"],
        "a limit of 0 is raised to 1"
    );
    assert_eq!(
        keys(&c.list("", 5000, None).await.unwrap()),
        ["a%", "a/1", "a/2", "a/3", "a_1", "ab", "b/1", "é/1"],
        "bytewise order, every live key"
    );

    // Deleting by prefix counts the live entries it deleted (not the expired one) and
    // leaves other keys alone.
    assert_eq!(c.delete_prefix("a/").await.unwrap(), 3);
    assert_eq!(c.get("a/1").await.unwrap(), None);
    assert_eq!(c.get("ab").await.unwrap(), Some(json!("ab")));
    assert_eq!(c.delete_prefix("a/").await.unwrap(), 0);
    assert_eq!(c.delete_prefix("a_").await.unwrap(), 1);
    assert_eq!(
        keys(&c.list("", 100, None).await.unwrap()),
        ["a%", "ab", "b/1", "é/1"]
    );
    // The empty prefix clears the cache.
    assert_eq!(c.delete_prefix("").await.unwrap(), 4);
    assert!(c.list("", 100, None).await.unwrap().keys.is_empty());
}

pub async fn secrets_are_one_document_per_configuration(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let secrets = &s.secrets;
    assert!(secrets.get_secrets("none").await.unwrap().is_empty());
    let first = BTreeMap::from([
        ("token".to_string(), json!("s3cr3t")),
        ("pin".to_string(), json!(1234)),
    ]);
    secrets.put_secrets("c1", &first).await.unwrap();
    let other = BTreeMap::from([("token".to_string(), json!("other"))]);
    secrets.put_secrets("c2", &other).await.unwrap();
    assert_eq!(secrets.get_secrets("c1").await.unwrap(), first);
    assert_eq!(secrets.get_secrets("c2").await.unwrap(), other);

    // A put replaces every value of the configuration.
    let replaced = BTreeMap::from([("token".to_string(), json!("new"))]);
    secrets.put_secrets("c1", &replaced).await.unwrap();
    assert_eq!(secrets.get_secrets("c1").await.unwrap(), replaced);

    secrets.delete_secrets("c1").await.unwrap();
    assert!(secrets.get_secrets("c1").await.unwrap().is_empty());
    secrets.delete_secrets("c1").await.unwrap();
    assert_eq!(secrets.get_secrets("c2").await.unwrap(), other);
    // A configuration stored again after a delete gets its secrets again.
    secrets.put_secrets("c1", &first).await.unwrap();
    assert_eq!(secrets.get_secrets("c1").await.unwrap(), first);
}

fn schedule(entry_id: &str) -> Schedule {
    serde_json::from_value(json!({
        "application_id": "device_sync",
        "entry_id": entry_id,
        "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 300}}
    }))
    .unwrap()
}

pub async fn schedules_round_trip_sorted(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let store = &s.schedules;
    store.put_schedule(&schedule("nightly")).await.unwrap();
    store.put_schedule(&schedule("hourly")).await.unwrap();
    let mut disabled = schedule("nightly");
    disabled.enabled = false;
    store.put_schedule(&disabled).await.unwrap();
    assert_eq!(store.get_schedule("nightly").await.unwrap(), Some(disabled));
    assert!(store.get_schedule("never").await.unwrap().is_none());
    let entry_ids: Vec<_> = store
        .list_schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.entry_id)
        .collect();
    assert_eq!(entry_ids, ["hourly", "nightly"]);
    assert!(store.delete_schedule("nightly").await.unwrap());
    assert!(!store.delete_schedule("nightly").await.unwrap());
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
}

pub async fn tick_claims_move_forward_only(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let stats = &s.stats;
    let t0 = now(&s);
    let minute = ChronoDuration::minutes(1);
    assert!(stats.get_stats("e").await.unwrap().is_none());

    assert!(
        stats.claim_tick("e", t0).await.unwrap(),
        "a first claim wins"
    );
    assert!(
        !stats.claim_tick("e", t0).await.unwrap(),
        "the same tick again loses"
    );
    assert!(
        !stats.claim_tick("e", t0 - minute).await.unwrap(),
        "an earlier one too"
    );
    assert!(stats.claim_tick("e", t0 + minute).await.unwrap());
    let got = stats.get_stats("e").await.unwrap().unwrap();
    assert_eq!(got.entry_id, "e");
    assert_eq!(got.last_tick, Some(t0 + minute));
    assert_eq!((got.total_runs, got.last_run), (0, None));

    let first = ScheduledRun {
        run_id: "isapp-a".into(),
        start_time: t0 + minute,
    };
    let second = ScheduledRun {
        run_id: "isapp-b".into(),
        start_time: t0 + minute * 2,
    };
    stats.record_run("e", &first).await.unwrap();
    stats.record_run("e", &second).await.unwrap();
    let got = stats.get_stats("e").await.unwrap().unwrap();
    assert_eq!(got.total_runs, 2);
    assert_eq!(got.last_run, Some(second.clone()));
    assert_eq!(
        got.last_tick,
        Some(t0 + minute),
        "counting leaves the claim"
    );

    // A failed tick is recorded without counting, and the next run clears it.
    let failed = ScheduleError {
        message: "application \"gone\" not found".into(),
        time: t0 + minute * 3,
    };
    stats.record_error("e", &failed).await.unwrap();
    let got = stats.get_stats("e").await.unwrap().unwrap();
    assert_eq!(got.last_error, Some(failed.clone()));
    assert_eq!((got.total_runs, got.last_tick), (2, Some(t0 + minute)));
    stats.record_run("e", &second).await.unwrap();
    let got = stats.get_stats("e").await.unwrap().unwrap();
    assert_eq!((got.total_runs, got.last_error), (3, None));
    // An error of a schedule never claimed creates its record.
    stats.record_error("f", &failed).await.unwrap();
    assert_eq!(
        stats.get_stats("f").await.unwrap().unwrap().last_error,
        Some(failed)
    );
    stats.delete_stats("f").await.unwrap();

    // Counting a run of a schedule never claimed creates its record.
    stats.record_run("d", &first).await.unwrap();
    let listed: Vec<_> = stats
        .list_stats()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.entry_id, s.total_runs))
        .collect();
    assert_eq!(listed, [("d".to_string(), 1), ("e".to_string(), 3)]);

    stats.delete_stats("e").await.unwrap();
    stats.delete_stats("e").await.unwrap();
    assert!(stats.get_stats("e").await.unwrap().is_none());
    assert!(
        stats.claim_tick("e", t0).await.unwrap(),
        "a deleted schedule's ticks start over"
    );
}

pub async fn concurrent_claims_of_one_tick_have_one_winner(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let tick = now(&s);
    let claims: Vec<_> = (0..8)
        .map(|_| {
            let stats = s.stats.clone();
            tokio::spawn(async move { stats.claim_tick("e", tick).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for claim in claims {
        won += usize::from(claim.await.unwrap());
    }
    assert_eq!(won, 1, "one tick is owned by exactly one firing");
}

/// A fresh queue port of one adapter: the queues `name` and `other` exist, each with
/// its dead-letter queue, and are empty.
pub struct Queues {
    pub queue: Arc<dyn Queue>,
    pub name: String,
    pub other: String,
    /// Whatever must outlive the queue (a temporary directory).
    pub keep: Box<dyn std::any::Any + Send + Sync>,
}

/// Makes [`Queues`] for one test.
#[async_trait]
pub trait QueueFactory: Send + Sync {
    async fn fresh(&self) -> Queues;
}

/// Instantiates every queue contract test of this module as a `#[tokio::test]` calling
/// `$factory` (an expression of a type implementing [`QueueFactory`]).
#[macro_export]
macro_rules! queue_conformance {
    ($factory:expr) => {
        $crate::store_conformance!(@each $factory;
            queue_hides_a_received_message_from_every_receiver,
            queue_ack_deletes_and_a_second_ack_is_harmless,
            queue_receive_returns_at_most_max,
            queue_send_many_delivers_each_message_once,
            queue_zero_visibility_delivers_once_per_batch,
            queue_release_without_delay_redelivers_with_a_higher_count,
            queue_extend_visibility_keeps_the_message_hidden_and_its_receipt,
            queue_dead_letters_after_max_receives,
            queue_a_waiting_receive_returns_a_message_sent_meanwhile,
            queue_an_abandoned_receive_loses_nothing_when_cancel_safe,
        );
    };
}

/// Longer than any test: a message received with it stays hidden for the whole test.
const HIDDEN: Duration = Duration::from_secs(300);
/// The long-poll wait of a receive that expects a message (it returns once it has one).
const EXPECT: Duration = Duration::from_secs(1);
/// The wait of a receive that expects nothing.
const NO_WAIT: Duration = Duration::ZERO;

fn task(step: &str) -> TaskMessage {
    TaskMessage {
        run_id: "isapp-1".into(),
        step_id: step.into(),
        unit: 0,
        attempt: 1,
        lane: Some("conformance".into()),
    }
}

fn steps(deliveries: &[Delivery]) -> Vec<String> {
    let mut steps: Vec<_> = deliveries
        .iter()
        .map(|d| d.message.step_id.clone())
        .collect();
    steps.sort();
    steps
}

/// Receives from `queue` until `count` messages arrived (at most 10 receives), each
/// receive taking up to `max`, and checks that no receive returned more than `max`.
async fn receive_all(
    q: &Queues,
    queue: &str,
    count: usize,
    max: usize,
    visibility: Duration,
) -> Vec<Delivery> {
    let mut all = Vec::new();
    for _ in 0..10 {
        if all.len() >= count {
            break;
        }
        let got = q
            .queue
            .receive(queue, max, visibility, EXPECT)
            .await
            .unwrap();
        assert!(
            got.len() <= max.max(1),
            "{} messages for max {max}",
            got.len()
        );
        all.extend(got);
    }
    all
}

async fn receive_one(q: &Queues, visibility: Duration) -> Delivery {
    let mut got = receive_all(q, &q.name, 1, 1, visibility).await;
    assert_eq!(got.len(), 1, "one message expected");
    got.remove(0)
}

async fn assert_empty(q: &Queues, queue: &str) {
    let got = q.queue.receive(queue, 10, HIDDEN, NO_WAIT).await.unwrap();
    assert!(
        got.is_empty(),
        "{queue} should look empty, got {:?}",
        steps(&got)
    );
}

pub async fn queue_hides_a_received_message_from_every_receiver(f: &impl QueueFactory) {
    let q = f.fresh().await;
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    let first = receive_one(&q, HIDDEN).await;
    assert_eq!(first.message, task("A"), "the body round-trips");
    assert_eq!(first.receive_count, 1);
    assert!(!first.receipt.is_empty());
    assert_empty(&q, &q.name).await;
    assert_empty(&q, &q.other).await;
    q.queue.send(&q.other, &task("B"), NO_WAIT).await.unwrap();
    let mut other = receive_all(&q, &q.other, 1, 10, HIDDEN).await;
    assert_eq!(
        steps(&other),
        ["B"],
        "each queue sees only its own messages"
    );
    q.queue
        .ack(&q.other, &other.remove(0).receipt)
        .await
        .unwrap();
    q.queue.ack(&q.name, &first.receipt).await.unwrap();
}

pub async fn queue_ack_deletes_and_a_second_ack_is_harmless(f: &impl QueueFactory) {
    let q = f.fresh().await;
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    // With no visibility the message stays visible, so only an ack makes it go away.
    let first = receive_one(&q, Duration::ZERO).await;
    let second = receive_one(&q, Duration::ZERO).await;
    assert_eq!(
        (first.receive_count, second.receive_count),
        (1, 2),
        "unacked, it comes back"
    );
    q.queue.ack(&q.name, &second.receipt).await.unwrap();
    q.queue
        .ack(&q.name, &second.receipt)
        .await
        .expect("a receipt acked twice is not an error");
    let after = q
        .queue
        .receive(&q.name, 10, Duration::ZERO, EXPECT)
        .await
        .unwrap();
    assert!(after.is_empty(), "acked, it is gone: {:?}", steps(&after));
}

pub async fn queue_receive_returns_at_most_max(f: &impl QueueFactory) {
    let q = f.fresh().await;
    for step in ["A", "B", "C"] {
        q.queue.send(&q.name, &task(step), NO_WAIT).await.unwrap();
    }
    let got = receive_all(&q, &q.name, 3, 2, HIDDEN).await;
    assert_eq!(steps(&got), ["A", "B", "C"], "every message, each once");
    assert!(got.iter().all(|d| d.receive_count == 1));
    assert_empty(&q, &q.name).await;
    for d in got {
        q.queue.ack(&q.name, &d.receipt).await.unwrap();
    }
}

pub async fn queue_send_many_delivers_each_message_once(f: &impl QueueFactory) {
    let q = f.fresh().await;
    // More than two of SQS's batches of ten.
    let names: Vec<String> = (0..23).map(|i| format!("S{i:02}")).collect();
    let messages: Vec<_> = names.iter().map(|n| task(n)).collect();
    q.queue
        .send_many(&q.name, &messages, NO_WAIT)
        .await
        .unwrap();
    let got = receive_all(&q, &q.name, names.len(), 10, HIDDEN).await;
    assert_eq!(steps(&got), names, "every message, each once");
    assert_empty(&q, &q.name).await;
    assert_empty(&q, &q.other).await;
    for d in got {
        q.queue.ack(&q.name, &d.receipt).await.unwrap();
    }
}

pub async fn queue_zero_visibility_delivers_once_per_batch(f: &impl QueueFactory) {
    let q = f.fresh().await;
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    q.queue.send(&q.name, &task("B"), NO_WAIT).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let got = q
            .queue
            .receive(&q.name, 10, Duration::ZERO, EXPECT)
            .await
            .unwrap();
        let batch = steps(&got);
        let mut unique = batch.clone();
        unique.dedup();
        assert_eq!(batch, unique, "a batch never holds a message twice");
        seen.extend(batch);
        seen.sort();
        seen.dedup();
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen, ["A", "B"]);
}

pub async fn queue_release_without_delay_redelivers_with_a_higher_count(f: &impl QueueFactory) {
    let q = f.fresh().await;
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    let first = receive_one(&q, HIDDEN).await;
    q.queue
        .release(&q.name, &first.receipt, Duration::ZERO)
        .await
        .unwrap();
    let second = receive_one(&q, HIDDEN).await;
    assert_eq!(second.message, task("A"));
    assert_eq!(second.receive_count, 2);
    assert_ne!(
        second.receipt, first.receipt,
        "every receive has its own receipt"
    );
    assert_empty(&q, &q.name).await;
    q.queue.ack(&q.name, &second.receipt).await.unwrap();
}

pub async fn queue_extend_visibility_keeps_the_message_hidden_and_its_receipt(
    f: &impl QueueFactory,
) {
    let q = f.fresh().await;
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    let first = receive_one(&q, HIDDEN).await;
    q.queue
        .extend_visibility(&q.name, &first.receipt, HIDDEN * 2)
        .await
        .unwrap();
    assert_empty(&q, &q.name).await;
    // The receipt still works after the extension: a release brings the message back.
    q.queue
        .release(&q.name, &first.receipt, Duration::ZERO)
        .await
        .unwrap();
    let second = receive_one(&q, HIDDEN).await;
    assert_eq!((second.message, second.receive_count), (task("A"), 2));
    q.queue.ack(&q.name, &second.receipt).await.unwrap();
}

pub async fn queue_dead_letters_after_max_receives(f: &impl QueueFactory) {
    let q = f.fresh().await;
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    for count in 1..=MAX_RECEIVE_COUNT {
        let got = receive_one(&q, HIDDEN).await;
        assert_eq!(got.receive_count, count);
        q.queue
            .release(&q.name, &got.receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    let after = q.queue.receive(&q.name, 10, HIDDEN, EXPECT).await.unwrap();
    assert!(
        after.is_empty(),
        "a message received {MAX_RECEIVE_COUNT} times is not delivered again: {:?}",
        after.iter().map(|d| d.receive_count).collect::<Vec<_>>()
    );
    let dlq = dead_letter_queue(&q.name);
    let mut dead = receive_all(&q, &dlq, 1, 10, HIDDEN).await;
    assert_eq!(dead.len(), 1, "moved to the dead-letter queue");
    assert_eq!(dead[0].message, task("A"));
    q.queue.ack(&dlq, &dead.remove(0).receipt).await.unwrap();
    assert_empty(&q, &q.name).await;
}

pub async fn queue_a_waiting_receive_returns_a_message_sent_meanwhile(f: &impl QueueFactory) {
    let q = f.fresh().await;
    let waiting = {
        let (queue, name) = (q.queue.clone(), q.name.clone());
        // Whether the send lands before or during the wait, this receive gets it.
        tokio::spawn(async move {
            queue
                .receive(&name, 1, HIDDEN, Duration::from_secs(10))
                .await
                .unwrap()
        })
    };
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(steps(&got), ["A"]);
    q.queue.ack(&q.name, &got[0].receipt).await.unwrap();
}

/// [`Queue::receive_is_cancel_safe`] holds what it promises: an adapter that says so
/// loses nothing when a waiting receive is dropped. (One that does not, SQS, may hide a
/// message for the receive's visibility; its callers never drop a receive.)
pub async fn queue_an_abandoned_receive_loses_nothing_when_cancel_safe(f: &impl QueueFactory) {
    let q = f.fresh().await;
    if q.queue.receive_is_cancel_safe() {
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            q.queue
                .receive(&q.name, 10, HIDDEN, Duration::from_secs(10)),
        )
        .await;
        assert!(
            abandoned.is_err(),
            "nothing to receive: the wait was cut short"
        );
    }
    q.queue.send(&q.name, &task("A"), NO_WAIT).await.unwrap();
    let got = receive_one(&q, HIDDEN).await;
    assert_eq!((got.message, got.receive_count), (task("A"), 1));
    q.queue.ack(&q.name, &got.receipt).await.unwrap();
}

/// An installed version of pack `name` with one application.
pub fn installed_pack(name: &str, version: &str, at: DateTime<Utc>) -> crate::pack::InstalledPack {
    let manifest: crate::pack::PackManifest = serde_json::from_value(json!({
        "name": name,
        "version": version,
        "publisher": "conformance",
        "step_types": [{"type": "echo", "source": "sluice-steps"}],
    }))
    .expect("manifest");
    let archive = crate::pack::PackArchive::new(
        manifest.clone(),
        vec![application("PackApp")],
        vec![],
        vec![],
    );
    crate::pack::InstalledPack {
        info: crate::pack::PackVersionInfo {
            name: name.into(),
            version: version.into(),
            hash: archive.hash.clone(),
            installed_at: at,
            installed_by: "admin".into(),
            manifest,
        },
        archive,
    }
}

pub async fn packs_install_once_list_and_delete(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let packs = &s.packs;
    let at = now(&s);
    let v1 = installed_pack("inventory", "1.0.0", at);
    assert!(packs.install_pack(&v1).await.unwrap());
    let mut again = installed_pack("inventory", "1.0.0", at);
    again.info.installed_by = "someone else".into();
    assert!(
        !packs.install_pack(&again).await.unwrap(),
        "a version is installed once"
    );
    assert!(packs
        .install_pack(&installed_pack("inventory", "1.10.0", at))
        .await
        .unwrap());
    assert!(packs
        .install_pack(&installed_pack("base", "2.0.0", at))
        .await
        .unwrap());
    assert_eq!(
        packs.get_pack("inventory", "1.0.0").await.unwrap(),
        Some(v1.clone())
    );
    assert!(packs
        .get_pack("inventory", "3.0.0")
        .await
        .unwrap()
        .is_none());
    let listed: Vec<(String, String)> = packs
        .list_packs()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    assert_eq!(
        listed,
        [
            ("base".to_string(), "2.0.0".to_string()),
            ("inventory".into(), "1.0.0".into()),
            ("inventory".into(), "1.10.0".into()),
        ]
    );
    assert_eq!(packs.list_packs().await.unwrap()[1], v1.info);
    assert!(packs.delete_pack("inventory", "1.0.0").await.unwrap());
    assert!(!packs.delete_pack("inventory", "1.0.0").await.unwrap());
    assert_eq!(packs.list_packs().await.unwrap().len(), 2);
}

pub async fn pack_activations_round_trip(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let packs = &s.packs;
    let at = now(&s);
    assert!(packs.get_activation("inventory").await.unwrap().is_none());
    let mut activation = crate::pack::PackActivation {
        name: "inventory".into(),
        version: "1.0.0".into(),
        activated_at: at,
        activated_by: "admin".into(),
        owned: installed_pack("inventory", "1.0.0", at).archive.contents(),
    };
    packs.put_activation(&activation).await.unwrap();
    activation.version = "2.0.0".into();
    packs.put_activation(&activation).await.unwrap();
    let base = crate::pack::PackActivation {
        name: "base".into(),
        owned: vec![],
        ..activation.clone()
    };
    packs.put_activation(&base).await.unwrap();
    assert_eq!(
        packs.get_activation("inventory").await.unwrap(),
        Some(activation.clone()),
        "one activation per pack: the latest"
    );
    assert_eq!(packs.list_activations().await.unwrap(), [base, activation]);
    assert!(packs.delete_activation("inventory").await.unwrap());
    assert!(!packs.delete_activation("inventory").await.unwrap());
    assert_eq!(packs.list_activations().await.unwrap().len(), 1);
}

/// The owner of a report: run `run_id` of `application`, expiring at `expires_at`.
fn report_owner(
    run_id: &str,
    application: &str,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> crate::report::ReportOwner {
    crate::report::ReportOwner {
        run_id: run_id.into(),
        application: application.into(),
        run_created_at: created_at,
        expires_at,
    }
}

fn report_section(title: &str, rows: usize) -> crate::report::ReportSection {
    use crate::report::{ReportSection, ReportTable, RowStatus};
    let table = (0..rows).fold(ReportTable::new(["id", "note"]), |t, i| {
        t.row(RowStatus::ALL[i % 5], [json!(i), json!(format!("row {i}"))])
    });
    ReportSection::new(title).detail("k", "v").table(table)
}

fn titles(parts: &[crate::report::ReportPart]) -> Vec<(String, u32, Vec<String>)> {
    let mut out: Vec<_> = parts
        .iter()
        .map(|p| {
            let titles = p.sections.iter().map(|s| s.title.clone()).collect();
            (p.step_id.clone(), p.unit, titles)
        })
        .collect();
    out.sort();
    out
}

pub async fn report_parts_replace_per_unit_list_and_delete(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.reports;
    let t = now(&s);
    let expires = t + ChronoDuration::days(1);
    let one = report_owner("isapp-1", "x", t, expires);
    assert!(r.get_report("isapp-1").await.unwrap().is_none());
    r.put_report_part(
        &one,
        "A",
        0,
        &[report_section("first", 2), report_section("second", 1)],
    )
    .await
    .unwrap();
    // A redelivered attempt of the same unit replaces, never adds.
    let again = [report_section("again", 3)];
    let (p, q) = tokio::join!(
        r.put_report_part(&one, "A", 0, &again),
        r.put_report_part(&one, "A", 0, &again)
    );
    p.unwrap();
    q.unwrap();
    r.put_report_part(&one, "A", 1, &[report_section("unit 1", 1)])
        .await
        .unwrap();
    r.put_report_part(&one, "B", 0, &[report_section("b", 0)])
        .await
        .unwrap();
    let (owner, parts) = r.get_report("isapp-1").await.unwrap().expect("report");
    assert_eq!(owner, one);
    assert_eq!(
        titles(&parts),
        vec![
            ("A".into(), 0, vec!["again".into()]),
            ("A".into(), 1, vec!["unit 1".into()]),
            ("B".into(), 0, vec!["b".into()]),
        ]
    );
    let a0 = parts
        .iter()
        .find(|p| p.step_id == "A" && p.unit == 0)
        .unwrap();
    assert_eq!(a0.sections, again.to_vec(), "sections round-trip exactly");
    // Empty sections delete the unit's part.
    r.put_report_part(&one, "B", 0, &[]).await.unwrap();
    let (_, parts) = r.get_report("isapp-1").await.unwrap().unwrap();
    assert_eq!(parts.len(), 2);

    // A large part round-trips (kept aside by the adapter where an item is too small).
    let noise = |i: u64| -> String {
        (0..60u64)
            .map(|j| {
                format!(
                    "{:015x}",
                    (i * 60 + j).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 4
                )
            })
            .collect()
    };
    let big = (0..800u64).fold(crate::report::ReportTable::new(["id", "note"]), |t, i| {
        t.row(
            crate::report::RowStatus::Updated,
            [json!(i), json!(noise(i))],
        )
    });
    let big = crate::report::ReportSection::new("big").table(big);
    r.put_report_part(&one, "Big", 0, std::slice::from_ref(&big))
        .await
        .unwrap();
    let (_, parts) = r.get_report("isapp-1").await.unwrap().unwrap();
    let stored = parts.iter().find(|p| p.step_id == "Big").unwrap();
    assert_eq!(stored.sections, vec![big]);

    // Listings: newest run id first, by application, paged.
    r.put_report_part(
        &report_owner("isapp-2", "y", t, expires),
        "A",
        0,
        &[report_section("y", 1)],
    )
    .await
    .unwrap();
    r.put_report_part(
        &report_owner("isapp-3", "x", t, expires),
        "A",
        0,
        &[report_section("x", 1)],
    )
    .await
    .unwrap();
    let listed = |q: crate::ports::ReportQuery| async move {
        r.list_reports(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.run_id)
            .collect::<Vec<_>>()
    };
    use crate::ports::ReportQuery;
    assert_eq!(
        listed(ReportQuery::default()).await,
        ["isapp-3", "isapp-2", "isapp-1"]
    );
    assert_eq!(
        listed(ReportQuery {
            application: Some("x".into()),
            ..ReportQuery::default()
        })
        .await,
        ["isapp-3", "isapp-1"]
    );
    assert_eq!(
        listed(ReportQuery {
            before_run_id: Some("isapp-3".into()),
            limit: 1,
            ..ReportQuery::default()
        })
        .await,
        ["isapp-2"]
    );
    let summary = &r.list_reports(&ReportQuery::default()).await.unwrap()[2];
    assert_eq!(summary.id, "report-x-isapp-1");
    assert_eq!(summary.application, "x");
    assert_eq!(summary.expires_at, expires);

    // Deleting removes every part of the run's report, and only that report.
    assert!(r.delete_report("isapp-1").await.unwrap());
    assert!(r.get_report("isapp-1").await.unwrap().is_none());
    assert!(!r.delete_report("isapp-1").await.unwrap());
    assert_eq!(listed(ReportQuery::default()).await, ["isapp-3", "isapp-2"]);
}

pub async fn reports_expire_with_their_run(f: &impl StoreFactory) {
    let s = f.fresh().await;
    let r = &s.reports;
    let t = now(&s);
    let soon = report_owner("isapp-1", "x", t, t + ChronoDuration::hours(1));
    let later = report_owner("isapp-2", "x", t, t + ChronoDuration::days(1));
    r.put_report_part(&soon, "A", 0, &[report_section("soon", 1)])
        .await
        .unwrap();
    r.put_report_part(&later, "A", 0, &[report_section("later", 1)])
        .await
        .unwrap();
    s.clock.advance(ChronoDuration::hours(2));
    assert!(r.get_report("isapp-1").await.unwrap().is_none());
    assert!(r.get_report("isapp-2").await.unwrap().is_some());
    let listed = r
        .list_reports(&crate::ports::ReportQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].run_id, "isapp-2");
    assert!(
        !r.delete_report("isapp-1").await.unwrap(),
        "an expired report is absent"
    );
}

pub async fn large_pack_archives_round_trip(f: &impl StoreFactory) {
    use sha2::{Digest, Sha256};
    let s = f.fresh().await;
    let mut pack = installed_pack("big", "1.0.0", now(&s));
    // About 1 MB of hex that deflates to half: beyond an item, so an adapter keeps it aside.
    let mut block = Sha256::digest(b"seed").to_vec();
    let mut text = String::new();
    while text.len() < 1_000_000 {
        block = Sha256::digest(&block).to_vec();
        text.push_str(&hex::encode(&block));
    }
    pack.archive.applications[0].description = text;
    pack.archive.hash = pack.archive.content_hash();
    pack.info.hash = pack.archive.hash.clone();
    assert!(s.packs.install_pack(&pack).await.unwrap());
    assert!(!s.packs.install_pack(&pack).await.unwrap());
    assert_eq!(s.packs.get_pack("big", "1.0.0").await.unwrap(), Some(pack));
    assert_eq!(s.packs.list_packs().await.unwrap().len(), 1);
    assert!(s.packs.delete_pack("big", "1.0.0").await.unwrap());
    assert!(s.packs.get_pack("big", "1.0.0").await.unwrap().is_none());
}
