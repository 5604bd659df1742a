//! The documents users write (applications, configurations, schedules) and the records
//! the engine keeps (runs, logs).

pub mod access;
pub mod application;
pub mod condition;
pub mod configuration;
pub mod run;
pub mod schedule;

pub use access::*;
pub use application::*;
pub use condition::*;
pub use configuration::*;
pub use run::*;
pub use schedule::*;
