//! Sluice runtime: drives the pure engine through the ports.
//!
//! The same code runs embedded (SQLite adapters, one process) and on AWS (DynamoDB, SQS,
//! Secrets Manager adapters, one Lambda per step type): a runtime is a [`Backend`] (the
//! ports), a [`StepRegistry`] and a queue routing. It stores every engine transition with
//! a compare-and-swap and only then carries out the effects, so a crash at any point is
//! repaired by redelivery (see `sluice_core::engine`).

mod execute;
mod runtime;
pub mod sandbox;
pub mod schedule;
mod service;
mod worker;

pub use runtime::{
    Backend, Progress, Runtime, RuntimeConfig, RuntimeError, DEFAULT_VISIBILITY_MARGIN,
};
pub use service::{StartError, StartRequest};
pub use worker::{AttemptOutcome, AttemptReport, Disposition, Handled, WorkerPool, VISIBILITY};
