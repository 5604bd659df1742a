//! `sluice-infra`: writes `template.yaml` and the IAM table of `docs/aws.md` from the
//! function catalogue; `--check` only compares and fails (exit 1) when either is stale.
//! `sluice infra` runs the same generator and also checks the function list against the
//! step registry and writes the step catalogue.
//!
//!     cargo run -p sluice-infra              # rewrite both
//!     cargo run -p sluice-infra -- --check   # compare only

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_infra::generate::{generate, Mode, Paths};

#[derive(Parser)]
#[command(about = "Generate the SAM template and the IAM table of the Sluice stack.")]
struct Args {
    /// Compare instead of writing; exit 1 when a file is out of date.
    #[arg(long)]
    check: bool,
    /// The project root the other paths are relative to.
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The function catalogue.
    #[arg(long, default_value = "infra/functions.toml")]
    catalogue: PathBuf,
    /// The SAM template to write.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// The document holding the IAM table (between its marks); skipped when absent.
    #[arg(long, default_value = "docs/aws.md")]
    doc: PathBuf,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let paths = Paths {
        functions: args.catalogue,
        template: args.template,
        doc: args.doc,
    };
    let mode = if args.check { Mode::Check } else { Mode::Write };
    let done = generate(&args.root, &paths, None, &[], mode)?;
    for path in &done.written {
        println!("wrote {}", path.display());
    }
    if mode == Mode::Check {
        if !done.stale.is_empty() {
            for path in &done.stale {
                eprintln!(
                    "{} is out of date with {}: run `cargo run -p sluice-infra`",
                    path.display(),
                    paths.functions.display()
                );
            }
            return Ok(ExitCode::FAILURE);
        }
        let names: Vec<&str> = done.stack.step_types().map(|t| t.name.as_str()).collect();
        println!(
            "template.yaml and the IAM table agree with the catalogue (step types: {})",
            names.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
