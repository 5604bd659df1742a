//! `sluice` with the built-in step types: run integration applications on this machine
//! (embedded SQLite data directory) or on AWS, and manage their documents, runs and cache.

use std::process::ExitCode;

fn main() -> ExitCode {
    sluice_cli::main(sluice_steps::builtin_registry())
}
