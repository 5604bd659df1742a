//! `GET /api/v1/dashboard`: what the runs list cannot tell the console's Dashboard — the
//! depth of each step queue (and of its dead-letter queue), this server's worker slots
//! and how many steps are running now. Runs by state over time, running runs and recent
//! failures come from `GET /api/v1/tasks` with its filters, as every client reads them.

use axum::extract::State;
use axum::Json;
use futures_util::future::join_all;
use serde_json::{json, Value};
use sluice_core::model::{RunState, StepState};
use sluice_core::ports::{dead_letter_queue, RunQuery};

use crate::error::ApiError;
use crate::Shared;

/// Most unfinished runs read to count running steps (the answer says when it is capped).
const MAX_UNFINISHED_READ: usize = 1000;

/// The summary document.
pub(crate) async fn summary(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let backend = state.runtime.backend();
    // A depth that cannot be read (a missing permission, a queue not yet created) is shown
    // as unknown: the dashboard is informative and must not fail as a whole.
    let depth = |queue: String| async move {
        backend
            .queue
            .approximate_depth(&queue)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%queue, error = %e, "queue depth unavailable");
                None
            })
    };
    // Every queue at once: on AWS each is a round trip, and there is one per step type.
    let names = state.runtime.queues();
    let depths = join_all(
        names
            .iter()
            .flat_map(|name| [depth(name.clone()), depth(dead_letter_queue(name))]),
    )
    .await;
    let queues: Vec<Value> = names
        .iter()
        .zip(depths.chunks(2))
        .map(|(name, d)| json!({"name": name, "depth": d[0], "dead_letter": d[1]}))
        .collect();

    let mut counts = serde_json::Map::new();
    let mut busy = 0usize;
    let mut capped = false;
    for run_state in [RunState::Pending, RunState::Running] {
        let runs = backend
            .runs
            .list_runs(&RunQuery {
                state: Some(run_state),
                limit: MAX_UNFINISHED_READ + 1,
                ..RunQuery::default()
            })
            .await?;
        capped |= runs.len() > MAX_UNFINISHED_READ;
        let runs = &runs[..runs.len().min(MAX_UNFINISHED_READ)];
        busy += runs
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|s| s.state == StepState::Running)
            .count();
        counts.insert(run_state.as_str().to_string(), json!(runs.len()));
    }
    Ok(Json(json!({
        "queues": queues,
        "runs": counts,
        "workers": {"slots": state.worker_slots, "busy": busy},
        "capped": capped,
    })))
}
