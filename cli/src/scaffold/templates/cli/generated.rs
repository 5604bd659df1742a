//! The generated deployment files agree with the project: `template.yaml` with
//! `infra/functions.toml`, and `infra/catalogue.json` (the step types the `api`, `start`
//! and `dead_letter` functions know without linking their code) with the registry.

use std::path::Path;

use sluice_cli::infra::{generate, Mode};

#[test]
fn template_and_catalogue_are_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let registry = @project_crate@_cli::registry();
    let done = generate(&registry, &root, "infra/catalogue.json".as_ref(), Mode::Check)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        done.stale.is_empty(),
        "stale: {:?}; regenerate them with `cargo run -- infra`",
        done.stale
    );
}
