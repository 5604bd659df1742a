//! Sluice core: the application model, validation, references and templates, the engine as
//! a pure state machine, and the ports through which runtimes reach the world.
//!
//! Nothing in this crate performs I/O: every decision is a function of its inputs, so the
//! semantics are tested fast and exhaustively here, and every adapter (embedded SQLite,
//! AWS) inherits them unchanged.

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod json;
pub mod logs;
pub mod model;
pub mod ports;
pub mod redact;
pub mod step;

pub use json::{Invalid, Issue};
pub mod alert;
pub mod condition;
pub mod engine;
pub mod operators;
pub mod pack;
pub mod plan;
pub mod reference;
pub mod report;
pub mod schedule;
pub mod schema_check;
pub mod task;
pub mod template;
pub mod validate;
pub mod versions;
