//! `sluice` with the built-in step types: run integration applications on this machine
//! (embedded SQLite data directory) or on AWS, and manage their documents, runs and cache.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: sluice_cli::Allocator = sluice_cli::Allocator;

fn main() -> ExitCode {
    sluice_cli::main(sluice_steps::builtin_registry())
}
