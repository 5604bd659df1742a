//! @project@'s `sluice`: every Sluice subcommand (`run`, `serve`, `validate`, `schema`,
//! `--backend aws`, `infra`, `new step`…) with the project's step types.

#[global_allocator]
static ALLOCATOR: sluice_cli::Allocator = sluice_cli::Allocator;

fn main() -> std::process::ExitCode {
    sluice_cli::main(@project_crate@_cli::registry())
}
