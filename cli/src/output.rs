//! Text that local and client mode print alike, so the two stay identical.

use std::path::Path;

use sluice_core::model::{Application, Configuration};

use crate::InvalidInput;

/// One line of `apps list`.
pub fn application_line(app: &Application) -> String {
    format!(
        "{:<32} {:<10} {:>3} steps  {}",
        app.name,
        app.version,
        app.steps.len(),
        app.friendly_name.as_deref().unwrap_or(&app.description)
    )
}

/// One line of `configs list`.
pub fn configuration_line(config: &Configuration) -> String {
    format!(
        "{:<32} {:<10} {:>3} variables",
        config.name,
        config.version,
        config.data.len()
    )
}

/// The confirmation of `apps push`.
pub fn stored_application(app: &Application) -> String {
    format!(
        "Stored application {} ({} steps)",
        app.name,
        app.steps.len()
    )
}

/// The confirmation of `configs push` (given the stored, redacted document).
pub fn stored_configuration(config: &Configuration) -> String {
    let encrypted = config.data.iter().filter(|v| v.encrypted).count();
    format!(
        "Stored configuration {} ({} variables, {encrypted} encrypted)",
        config.name,
        config.data.len()
    )
}

/// Prefixes every line of an input error with the file it is about.
pub fn in_file(file: &Path, e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<InvalidInput>() {
        Ok(invalid) => prefixed(file, invalid.0.lines()),
        Err(e) => e,
    }
}

/// An input error made of `lines`, each prefixed with the file.
pub fn prefixed<'a>(file: &Path, lines: impl Iterator<Item = &'a str>) -> anyhow::Error {
    let lines: Vec<String> = lines.map(|l| format!("{}: {l}", file.display())).collect();
    InvalidInput(lines.join("\n")).into()
}
