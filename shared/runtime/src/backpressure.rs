//! Backpressure: refusing new runs while the step queues hold more than
//! [`RuntimeConfig::max_queued_steps`](crate::RuntimeConfig::max_queued_steps).
//!
//! Starting runs faster than the workers serve them would otherwise grow the queue (and
//! the store) without bound, and every run's latency with it. A start is refused with
//! [`StartError::Overloaded`] instead, which the API answers with 429 and `Retry-After`.
//!
//! Only *new* work is refused (starts, replays, schedule ticks): the children a
//! `trigger_application` step creates and the alert runs of ended runs are part of work
//! already accepted, and refusing them mid-run would fail runs that were admitted.
//!
//! A start in a priority lane (`queue` set to one of
//! [`PRIORITY_LANES`](sluice_core::ports::PRIORITY_LANES)) has
//! [`PRIORITY_HEADROOM_PERCENT`] more room: it is refused only beyond the bound plus that
//! share, so urgent runs still start while other work holds the queue at its bound — and
//! are still bounded.
//!
//! The depth is read at most once per
//! [`queued_steps_refresh`](crate::RuntimeConfig::queued_steps_refresh), so a start costs
//! no `COUNT(*)` of its own; the bound is therefore soft by the starts of one refresh
//! period.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_core::ports::is_priority_lane;

use crate::create::{StartError, StartRequest};
use crate::runtime::{Runtime, RuntimeError};

/// The default [`RuntimeConfig::max_queued_steps`](crate::RuntimeConfig::max_queued_steps)
/// of the embedded runtime: a few seconds to tens of seconds of work at its step rate,
/// and a queue table SQLite still serves in fair order without slowing down.
pub const DEFAULT_MAX_QUEUED_STEPS: u64 = 100_000;

/// The default [`RuntimeConfig::queued_steps_refresh`](crate::RuntimeConfig::queued_steps_refresh).
pub const DEFAULT_QUEUED_STEPS_REFRESH: Duration = Duration::from_millis(250);

/// What a refused caller is told to wait before it tries again: long enough for the
/// workers to serve a good part of a short burst, short enough that a drained queue is
/// not left idle.
pub const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How much more room (in percent of the bound, at least one step) a start in a
/// priority lane has.
pub const PRIORITY_HEADROOM_PERCENT: u64 = 10;

/// The queue depth read last, and when.
#[derive(Default)]
pub(crate) struct QueuedSteps {
    read: Mutex<Option<(Instant, u64)>>,
}

impl QueuedSteps {
    fn fresh(&self, refresh: Duration) -> Option<u64> {
        let read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        read.filter(|(at, _)| at.elapsed() < refresh)
            .map(|(_, depth)| depth)
    }

    fn remember(&self, depth: u64) {
        *self.read.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), depth));
    }
}

impl Runtime {
    /// Steps queued now (visible, delayed or in flight) over every queue this runtime
    /// sends to, as of at most `queued_steps_refresh` ago. A queue whose adapter cannot
    /// tell its depth counts as empty.
    pub async fn queued_steps(&self) -> Result<u64, RuntimeError> {
        if let Some(depth) = self.queued.fresh(self.config.queued_steps_refresh) {
            return Ok(depth);
        }
        let mut depth = 0;
        for queue in self.queues() {
            depth += self
                .backend
                .queue
                .approximate_depth(&queue)
                .await?
                .unwrap_or(0);
        }
        self.queued.remember(depth);
        Ok(depth)
    }

    /// Refuses new work while the queues hold more than the bound (see the module doc).
    /// A start of `run_id` that exists already is no new work: it is answered.
    pub(crate) async fn admit(&self, request: &StartRequest) -> Result<(), StartError> {
        let Some(bound) = self.config.max_queued_steps else {
            return Ok(());
        };
        let priority = request
            .params
            .get("queue")
            .and_then(|q| q.as_str())
            .is_some_and(is_priority_lane);
        let limit = if priority {
            bound.saturating_add((bound.saturating_mul(PRIORITY_HEADROOM_PERCENT) / 100).max(1))
        } else {
            bound
        };
        let queued = self.queued_steps().await?;
        if queued >= limit {
            if let Some(id) = request.run_id.as_deref() {
                if self.backend.runs.get_run(id).await?.is_some() {
                    return Ok(());
                }
            }
            tracing::debug!(queued, limit, "start refused: step queue full");
            return Err(StartError::Overloaded {
                queued,
                limit,
                retry_after: OVERLOADED_RETRY_AFTER,
            });
        }
        Ok(())
    }
}
