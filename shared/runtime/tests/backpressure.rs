//! Backpressure: while the step queue holds `max_queued_steps` messages, new runs
//! (starts, replays) are refused with `StartError::Overloaded`, while the children of
//! accepted runs still start; once the queue drains, starts are accepted again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sluice_core::model::{Application, Run, RunState};
use sluice_core::ports::{Queue, RunQuery};
use sluice_core::step::{StepContext, StepError, StepOutput, StepRegistry, StepType};
use sluice_embedded::EmbeddedStore;
use sluice_runtime::{
    Disposition, Runtime, RuntimeConfig, StartError, StartRequest, OVERLOADED_RETRY_AFTER,
    PRIORITY_HEADROOM_PERCENT,
};

struct Noop;

#[async_trait]
impl StepType for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "does nothing"
    }
    fn parameter_schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn execute(&self, _: Value, _: &StepContext) -> Result<StepOutput, StepError> {
        Ok(StepOutput::value(json!(null)))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: EmbeddedStore,
    runtime: Arc<Runtime>,
}

/// A runtime refusing new runs at `limit` queued steps, reading the depth every time.
async fn fixture(limit: u64) -> Fixture {
    fixture_refreshing(limit, Duration::ZERO).await
}

/// A runtime refusing new runs at `limit` queued steps, reusing a depth for `refresh`.
async fn fixture_refreshing(limit: u64, refresh: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let mut registry = StepRegistry::new();
    registry.register(Noop);
    let config = RuntimeConfig {
        max_queued_steps: Some(limit),
        queued_steps_refresh: refresh,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(store.backend(), registry, config);
    for doc in [
        json!({"name": "leaf", "author": "t",
               "steps": [{"id": "A", "type": "noop", "parameters": {}}]}),
        json!({"name": "parent", "author": "t", "steps": [
            {"id": "A", "type": "noop", "parameters": {}},
            {"id": "T", "type": "trigger_application", "depends_on": ["A"],
             "parameters": {"application": "leaf"}}]}),
    ] {
        let app: Application = serde_json::from_value(doc).unwrap();
        runtime.put_application(&app).await.unwrap();
    }
    Fixture {
        _dir: dir,
        store,
        runtime,
    }
}

impl Fixture {
    async fn start(&self, application: &str) -> Result<sluice_core::model::Run, StartError> {
        self.runtime
            .start(StartRequest {
                application: application.into(),
                ..StartRequest::default()
            })
            .await
    }

    /// Delivers every queued message once (what a worker would do).
    async fn deliver_queued(&self) {
        for handled in self.runtime.deliver_queued(1).await.unwrap() {
            assert_eq!(handled, Disposition::Ack);
        }
    }
}

#[tokio::test]
async fn new_runs_are_refused_while_the_queue_is_full_and_accepted_once_it_drains() {
    let f = fixture(2).await;
    let first = f.start("leaf").await.unwrap();
    f.start("leaf").await.unwrap();
    assert_eq!(f.runtime.queued_steps().await.unwrap(), 2);

    match f.start("leaf").await {
        Err(StartError::Overloaded {
            queued,
            limit,
            retry_after,
        }) => {
            assert_eq!((queued, limit), (2, 2));
            assert_eq!(retry_after, OVERLOADED_RETRY_AFTER);
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert!(
        matches!(
            f.runtime.replay(&first.id).await,
            Err(StartError::Overloaded { .. })
        ),
        "a replay is new work too"
    );
    let stored = f
        .runtime
        .backend()
        .runs
        .list_runs(&RunQuery {
            limit: 10,
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "a refused start stores no run");

    f.deliver_queued().await;
    assert_eq!(f.runtime.queued_steps().await.unwrap(), 0);
    let accepted = f.start("leaf").await.unwrap();
    assert_eq!(accepted.state, RunState::Running);
}

#[tokio::test]
async fn a_start_of_an_existing_run_is_answered_even_while_the_queue_is_full() {
    let f = fixture(1).await;
    let request = StartRequest {
        application: "leaf".into(),
        run_id: Some("fixed-id".into()),
        ..StartRequest::default()
    };
    let first = f.runtime.start(request.clone()).await.unwrap();
    let again = f.runtime.start(request).await.unwrap();
    assert_eq!(again.id, first.id, "idempotent, not refused");
}

#[tokio::test]
async fn children_of_an_accepted_run_start_while_the_queue_is_full() {
    let f = fixture(1).await;
    let parent = f.start("parent").await.unwrap();
    assert!(matches!(
        f.start("leaf").await,
        Err(StartError::Overloaded { .. })
    ));
    // Delivering A (its message still counts) runs the trigger inline: the child starts.
    f.deliver_queued().await;
    let parent = f.runtime.get_run(&parent.id).await.unwrap();
    assert_eq!(parent.state, RunState::Success);
    let children = f
        .runtime
        .backend()
        .runs
        .list_runs(&RunQuery {
            application: Some("leaf".into()),
            limit: 10,
            ..RunQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(children.len(), 1, "the child was not refused");
    assert_eq!(
        children[0].parent.as_ref().map(|p| p.run_id.as_str()),
        Some(parent.id.as_str())
    );
}

#[tokio::test]
async fn the_depth_is_read_once_per_refresh_period_not_per_start() {
    let f = fixture_refreshing(1, Duration::from_secs(3600)).await;
    // The first start reads the depth (0) and keeps it for the hour: the second start is
    // judged by that read, not by a count of its own (the bound is soft by one period).
    f.start("leaf").await.unwrap();
    f.start("leaf").await.unwrap();
    assert_eq!(
        f.runtime.queued_steps().await.unwrap(),
        0,
        "the depth read first"
    );
    assert_eq!(f.store.queue().depth("steps").await.unwrap(), 2);
}

impl Fixture {
    async fn start_in(&self, application: &str, queue: &str) -> Result<Run, StartError> {
        let mut params = serde_json::Map::new();
        params.insert("queue".into(), json!(queue));
        self.runtime
            .start(StartRequest {
                application: application.into(),
                params,
                ..StartRequest::default()
            })
            .await
    }
}

#[tokio::test]
async fn a_priority_run_has_headroom_past_the_bound_and_is_still_bounded() {
    let f = fixture(2).await;
    f.start("leaf").await.unwrap();
    f.start("leaf").await.unwrap();
    assert!(matches!(
        f.start_in("leaf", "nightly").await,
        Err(StartError::Overloaded { .. })
    ));
    // 10 % of 2, at least one step: one priority start more.
    assert_eq!(PRIORITY_HEADROOM_PERCENT, 10);
    f.start_in("leaf", "high").await.unwrap();
    match f.start_in("leaf", "priority.high").await {
        Err(StartError::Overloaded { queued, limit, .. }) => assert_eq!((queued, limit), (3, 3)),
        other => panic!("expected Overloaded, got {other:?}"),
    }
}

/// The runtime puts each message in its run's lane: the `queue` label, else the
/// application; the queue serves a priority lane first.
#[tokio::test]
async fn messages_carry_the_lane_of_their_run_and_priority_lanes_go_first() {
    let f = fixture(100).await;
    let plain = f.start("leaf").await.unwrap();
    let labelled = f.start_in("leaf", "nightly").await.unwrap();
    let urgent = f.start_in("leaf", "high").await.unwrap();
    let got = f
        .store
        .queue()
        .receive("steps", 10, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    let lanes: Vec<_> = got
        .iter()
        .map(|d| (d.message.run_id.as_str(), d.message.lane.as_deref()))
        .collect();
    assert_eq!(
        lanes,
        [
            (urgent.id.as_str(), Some("high")),
            (plain.id.as_str(), Some("leaf")),
            (labelled.id.as_str(), Some("nightly")),
        ]
    );
}
