//! `sluice infra`: a project's generated deployment files follow its step types. The
//! function list (`infra/functions.toml`) must give every registered step type a
//! `kind = "step"` function and hold no step function of an unknown type; from it come
//! `template.yaml` and the IAM table of `docs/aws.md`, and from the registry the step
//! catalogue (`infra/catalogue.json`) that the project's `api`, `start` and `dead_letter`
//! functions embed (`sluice_steps::catalogue::registry_from_json`).
//!
//! A project's suite fails when they are stale with a test such as:
//!
//! ```no_run
//! # fn registry() -> sluice_cli::StepRegistry { sluice_steps::builtin_registry() }
//! use sluice_cli::infra::{generate, Mode};
//!
//! let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
//! let done = generate(&registry(), &root, "infra/catalogue.json".as_ref(), Mode::Check).unwrap();
//! assert!(done.stale.is_empty(), "stale: {:?}; run `cargo run -- infra`", done.stale);
//! ```

use std::path::{Path, PathBuf};

use clap::Args;
use sluice_core::step::StepRegistry;
use sluice_infra::generate::{GeneratedFile, Paths};

pub use sluice_infra::generate::{GenerateError, Generated, Mode, RegistryMismatch};

use crate::InvalidInput;

/// Where `sluice infra` writes the step catalogue by default, relative to the root.
const DEFAULT_CATALOGUE: &str = "infra/catalogue.json";

/// Exit code of `sluice infra --check` when a file is stale.
const EXIT_STALE: u8 = 1;

/// The arguments of `sluice infra`.
#[derive(Args)]
pub(crate) struct InfraArgs {
    /// Compare instead of writing; exit 1 naming the stale files.
    #[arg(long)]
    check: bool,
    /// The project root (holding `infra/functions.toml`).
    #[arg(long, default_value = ".", value_name = "DIR")]
    root: PathBuf,
    /// Where the step catalogue goes, relative to the root.
    #[arg(long, default_value = DEFAULT_CATALOGUE, value_name = "FILE")]
    catalogue_out: PathBuf,
}

/// Cross-checks `infra/functions.toml` under `root` against `registry`, then writes (or,
/// with [`Mode::Check`], compares) `template.yaml`, the catalogue of `registry` at
/// `catalogue_out` (relative to `root`) and the IAM table of `docs/aws.md` when that
/// file exists. Nothing is written when the cross-check fails
/// ([`GenerateError::Registry`]).
pub fn generate(
    registry: &StepRegistry,
    root: &Path,
    catalogue_out: &Path,
    mode: Mode,
) -> Result<Generated, GenerateError> {
    let registered: Vec<&str> = registry.names().collect();
    let catalogue = GeneratedFile {
        path: catalogue_out.to_path_buf(),
        contents: sluice_steps::catalogue::catalogue_json(registry),
    };
    sluice_infra::generate::generate(
        root,
        &Paths::default(),
        Some(&registered),
        std::slice::from_ref(&catalogue),
        mode,
    )
}

/// `sluice infra`: exit 0 when everything is current (or was written), 1 when `--check`
/// finds stale files, 2 when the function list and the registry disagree.
pub(crate) fn run(args: InfraArgs, registry: &StepRegistry) -> anyhow::Result<u8> {
    let mode = if args.check { Mode::Check } else { Mode::Write };
    let done = match generate(registry, &args.root, &args.catalogue_out, mode) {
        Ok(done) => done,
        Err(e @ (GenerateError::Registry { .. } | GenerateError::Stack(_))) => {
            return Err(InvalidInput(e.to_string()).into())
        }
        Err(e) => return Err(e.into()),
    };
    for path in &done.written {
        println!("wrote {}", path.display());
    }
    let step_types: Vec<&str> = registry.names().collect();
    match mode {
        Mode::Check if !done.stale.is_empty() => {
            let regenerate = regenerate_command(&args);
            for path in &done.stale {
                eprintln!(
                    "{} is out of date with infra/functions.toml and the step types: run `{regenerate}`",
                    path.display()
                );
            }
            Ok(EXIT_STALE)
        }
        Mode::Check => {
            println!(
                "the deployment files agree with infra/functions.toml and the step types ({})",
                step_types.join(", ")
            );
            Ok(0)
        }
        Mode::Write => Ok(0),
    }
}

/// The command that rewrites what `args` checked: `sluice infra` with the same paths.
fn regenerate_command(args: &InfraArgs) -> String {
    let mut command = String::from("sluice infra");
    if args.root != Path::new(".") {
        command.push_str(&format!(" --root {}", args.root.display()));
    }
    if args.catalogue_out != Path::new(DEFAULT_CATALOGUE) {
        command.push_str(&format!(
            " --catalogue-out {}",
            args.catalogue_out.display()
        ));
    }
    command
}
