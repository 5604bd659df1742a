//! Sluice runtime: drives the pure engine through the ports.
//!
//! The same code runs embedded (SQLite adapters, one process) and on AWS (DynamoDB, SQS,
//! Secrets Manager adapters, one Lambda per step type): a runtime is a [`Backend`] (the
//! ports), a [`StepRegistry`](sluice_core::step::StepRegistry) and a queue routing. It
//! stores every engine transition with a compare-and-swap and only then carries out the
//! effects, so a crash at any point is repaired by redelivery (see `sluice_core::engine`).
//!
//! # Layers
//!
//! Each module calls only the ones below it; none calls back into its caller:
//!
//! ```text
//! worker    queue consumption: handle_delivery / handle_message, reports   ┐
//! schedule  firing a schedule tick ──> service                             │ entry
//! service   start, replay, revoke, resume, logs, definitions               ┘ points
//!    ├── backpressure  refusing new runs while the step queues are full
//!    │
//! execute   process: the event loop; execute: claim → attempt → report;
//!    │      inline operators and trigger_application children
//!    ├── resolve    scopes, secrets, `when` / `for_each`, parameters ──> render
//!    ├── render     transform and template conditions in the sandbox
//!    ├── create     checking a start request, storing the new run
//!    │
//! transitions  load, apply, compare-and-swap, publish; effects that need no
//!    │         execution (sends, revocations, a blocking child's end)
//! outputs      reading step outputs, inline or stored
//! runtime      the Runtime: ports, settings, errors, plan and secret caches
//! ```
//!
//! Where an effect needs execution (evaluating a step, an inline operator), transitions
//! return it as a follow-up and the executor's loop carries it out: the worker's path is
//! worker → transitions (claim) → executor (scope, attempt, report) → transitions
//! (finished, effects) → queue.

mod backpressure;
mod create;
mod execute;
mod outputs;
pub mod packs;
mod render;
mod resolve;
mod runtime;
pub mod sandbox;
pub mod schedule;
mod service;
mod single;
mod transitions;
mod versions;
mod worker;

pub use backpressure::{
    DEFAULT_MAX_QUEUED_STEPS, DEFAULT_QUEUED_STEPS_REFRESH, OVERLOADED_RETRY_AFTER,
    PRIORITY_HEADROOM_PERCENT,
};
pub use create::{StartError, StartRequest};
pub use runtime::{
    Backend, Progress, Runtime, RuntimeConfig, RuntimeError, DEFAULT_VISIBILITY_MARGIN,
};
pub use single::{SingleStepError, SingleStepOutcome, SingleStepRequest};
pub use worker::{AttemptOutcome, AttemptReport, Disposition, Handled, WorkerPool, VISIBILITY};
