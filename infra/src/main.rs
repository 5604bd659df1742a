//! `sluice-infra`: writes `template.yaml` and the IAM table of `docs/aws.md` from the
//! function catalogue; `--check` only compares and fails (exit 1) when either is stale.
//!
//!     cargo run -p sluice-infra              # rewrite both
//!     cargo run -p sluice-infra -- --check   # what scripts/test.sh runs

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sluice_infra::{iam, template, Stack};

#[derive(Parser)]
#[command(about = "Generate the SAM template and the IAM table of the Sluice stack.")]
struct Args {
    /// Compare instead of writing; exit 1 when a file is out of date.
    #[arg(long)]
    check: bool,
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
    let stack = Stack::load(&args.catalogue)?;
    let mut files = vec![(args.template.clone(), template::render(&stack))];
    if args.doc.exists() {
        let doc = std::fs::read_to_string(&args.doc)
            .with_context(|| format!("reading {}", args.doc.display()))?;
        let updated = iam::replace_markdown_table(&doc, &stack)
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.doc.display()))?;
        files.push((args.doc.clone(), updated));
    }
    let mut stale = false;
    for (path, text) in files {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == text {
            continue;
        }
        if args.check {
            eprintln!(
                "{} is out of date with {}: run `cargo run -p sluice-infra`",
                path.display(),
                args.catalogue.display()
            );
            stale = true;
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    let names: Vec<&str> = stack.step_types().map(|t| t.name.as_str()).collect();
    if stale {
        return Ok(ExitCode::FAILURE);
    }
    if args.check {
        println!(
            "template.yaml and the IAM table agree with the catalogue (step types: {})",
            names.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
