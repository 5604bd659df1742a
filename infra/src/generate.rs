//! Writing, or checking, a project's generated deployment files in one pass: the SAM
//! template and the IAM table of `docs/aws.md` from the function list, plus any files the
//! caller generates itself (the `sluice` CLI adds the step catalogue). The `sluice-infra`
//! binary and `sluice infra` both run [`generate`].
//!
//! ```no_run
//! use sluice_infra::generate::{generate, Mode, Paths};
//!
//! let done = generate(".".as_ref(), &Paths::default(), None, &[], Mode::Check).unwrap();
//! for path in &done.stale {
//!     eprintln!("{} is out of date", path.display());
//! }
//! ```

use std::path::{Path, PathBuf};

use sluice_core::operators::TRANSFORM;

use crate::{iam, template, Stack, StackError};

/// Where a project keeps its deployment files, relative to its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The function list (`infra/functions.toml`).
    pub functions: PathBuf,
    /// The SAM template to write (`template.yaml`).
    pub template: PathBuf,
    /// The document holding the IAM table between its marks (`docs/aws.md`); skipped
    /// when the file does not exist.
    pub doc: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            functions: "infra/functions.toml".into(),
            template: "template.yaml".into(),
            doc: "docs/aws.md".into(),
        }
    }
}

/// A file the caller generated, written or checked with the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative to the project root.
    pub path: PathBuf,
    /// The whole expected contents.
    pub contents: String,
}

/// Whether [`generate`] rewrites stale files or only reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Compare only; nothing is written.
    Check,
    /// Rewrite every stale file.
    Write,
}

/// What [`generate`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The stack the function list describes.
    pub stack: Stack,
    /// The files whose contents differed from what is generated (or were missing),
    /// relative to the root.
    pub stale: Vec<PathBuf>,
    /// The files rewritten: the stale ones in [`Mode::Write`], none in [`Mode::Check`].
    pub written: Vec<PathBuf>,
}

/// The step types of a registry and the step functions of a function list disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct RegistryMismatch {
    /// Registered step types without a `kind = "step"` function.
    pub missing: Vec<String>,
    /// `kind = "step"` functions of no registered step type (other than `transform`).
    pub unregistered: Vec<String>,
}

impl RegistryMismatch {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "registered step types without a `kind = \"step\"` function: {}",
                self.missing.join(", ")
            ));
        }
        if !self.unregistered.is_empty() {
            parts.push(format!(
                "step functions of no registered step type: {}",
                self.unregistered.join(", ")
            ));
        }
        parts.join("; ")
    }
}

/// Why [`generate`] stopped; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The function list cannot be read or is invalid.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// The function list does not match the registered step types.
    #[error("{path}: {mismatch}")]
    Registry {
        path: String,
        mismatch: RegistryMismatch,
    },
    /// The document meant to hold the IAM table has no (valid) marks.
    #[error("{path}: {message}")]
    Doc { path: String, message: String },
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Checks that every registered step type has a `kind = "step"` function and every step
/// function a registered step type, except the operators' `transform` function (its queue
/// carries the delayed retries of operators, which are no registered step type).
///
/// ```
/// use sluice_infra::{generate::check_registered, Stack};
///
/// let stack = Stack::parse(r#"
///     [[function]]
///     name = "api"
///     kind = "api"
///     memory = 256
///     timeout = 30
///     description = "API"
///     [[function]]
///     name = "start"
///     kind = "start"
///     memory = 128
///     timeout = 60
///     description = "Start"
///     [[function]]
///     name = "dead_letter"
///     kind = "dead_letter"
///     memory = 128
///     timeout = 60
///     description = "Dead letters"
///     [[function]]
///     name = "echo"
///     kind = "step"
///     memory = 128
///     timeout = 900
///     description = "Echo"
/// "#).unwrap();
/// assert!(check_registered(&stack, &["echo"]).is_ok());
/// let mismatch = check_registered(&stack, &["echo", "greet"]).unwrap_err();
/// assert_eq!(mismatch.missing, ["greet"]);
/// ```
pub fn check_registered(stack: &Stack, registered: &[&str]) -> Result<(), RegistryMismatch> {
    let functions: Vec<&str> = stack.step_types().map(|f| f.name.as_str()).collect();
    let mut missing: Vec<String> = registered
        .iter()
        .filter(|name| !functions.contains(name))
        .map(|name| name.to_string())
        .collect();
    let mut unregistered: Vec<String> = functions
        .iter()
        .filter(|name| **name != TRANSFORM && !registered.contains(name))
        .map(|name| name.to_string())
        .collect();
    if missing.is_empty() && unregistered.is_empty() {
        return Ok(());
    }
    missing.sort();
    unregistered.sort();
    Err(RegistryMismatch {
        missing,
        unregistered,
    })
}

/// Loads the function list under `root`, cross-checks it against `registered` step types
/// when given ([`check_registered`]), renders the template, the IAM table (when the
/// document exists) and the `extra` files, and compares each with what is on disk. In
/// [`Mode::Write`] the stale ones are rewritten. Any error stops it before anything is
/// written.
pub fn generate(
    root: &Path,
    paths: &Paths,
    registered: Option<&[&str]>,
    extra: &[GeneratedFile],
    mode: Mode,
) -> Result<Generated, GenerateError> {
    let functions = root.join(&paths.functions);
    let stack = Stack::load(&functions)?;
    if let Some(registered) = registered {
        check_registered(&stack, registered).map_err(|mismatch| GenerateError::Registry {
            path: paths.functions.display().to_string(),
            mismatch,
        })?;
    }
    let mut files = vec![GeneratedFile {
        path: paths.template.clone(),
        contents: template::render(&stack),
    }];
    if let Some(doc) = read_if_exists(&root.join(&paths.doc))? {
        let contents =
            iam::replace_markdown_table(&doc, &stack).map_err(|message| GenerateError::Doc {
                path: paths.doc.display().to_string(),
                message,
            })?;
        files.push(GeneratedFile {
            path: paths.doc.clone(),
            contents,
        });
    }
    files.extend(extra.iter().cloned());

    let mut stale = Vec::new();
    for file in &files {
        let current = read_if_exists(&root.join(&file.path))?;
        if current.as_deref() != Some(file.contents.as_str()) {
            stale.push(file.clone());
        }
    }
    let mut written = Vec::new();
    if mode == Mode::Write {
        for file in &stale {
            write(&root.join(&file.path), &file.contents)?;
            written.push(file.path.clone());
        }
    }
    Ok(Generated {
        stack,
        stale: stale.into_iter().map(|f| f.path).collect(),
        written,
    })
}

fn read_if_exists(path: &Path) -> Result<Option<String>, GenerateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(GenerateError::Io {
            action: "reading",
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write(path: &Path, contents: &str) -> Result<(), GenerateError> {
    let io = |source| GenerateError::Io {
        action: "writing",
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, contents).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUNCTIONS: &str = r#"
[[function]]
name = "api"
kind = "api"
memory = 256
timeout = 30
description = "API"

[[function]]
name = "start"
kind = "start"
memory = 128
timeout = 60
description = "Start"

[[function]]
name = "dead_letter"
kind = "dead_letter"
memory = 128
timeout = 60
description = "Dead letters"

[[function]]
name = "echo"
kind = "step"
memory = 128
timeout = 900
description = "Echo"

[[function]]
name = "transform"
kind = "step"
memory = 128
timeout = 900
description = "Operators"
"#;

    fn stack() -> Stack {
        Stack::parse(FUNCTIONS).unwrap()
    }

    #[test]
    fn matching_registry_passes_and_transform_needs_no_registration() {
        check_registered(&stack(), &["echo"]).unwrap();
    }

    #[test]
    fn a_registered_step_type_without_a_function_is_named() {
        let mismatch = check_registered(&stack(), &["echo", "greet", "fetch"]).unwrap_err();
        assert_eq!(mismatch.missing, ["fetch", "greet"]);
        assert!(mismatch.unregistered.is_empty());
        assert_eq!(
            mismatch.to_string(),
            "registered step types without a `kind = \"step\"` function: fetch, greet"
        );
    }

    #[test]
    fn a_step_function_of_no_registered_step_type_is_named() {
        let mismatch = check_registered(&stack(), &[]).unwrap_err();
        assert!(mismatch.missing.is_empty());
        assert_eq!(mismatch.unregistered, ["echo"]);
        assert_eq!(
            mismatch.to_string(),
            "step functions of no registered step type: echo"
        );
    }

    fn project() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("infra")).unwrap();
        std::fs::write(root.path().join("infra/functions.toml"), FUNCTIONS).unwrap();
        root
    }

    fn catalogue(contents: &str) -> Vec<GeneratedFile> {
        vec![GeneratedFile {
            path: "infra/catalogue.json".into(),
            contents: contents.into(),
        }]
    }

    #[test]
    fn stale_files_are_reported_in_check_mode_and_rewritten_in_write_mode() {
        let root = project();
        let paths = Paths::default();
        let registered = Some(&["echo"][..]);

        // Nothing generated yet: every file is stale, and a check writes nothing.
        let checked = generate(
            root.path(),
            &paths,
            registered,
            &catalogue("[]\n"),
            Mode::Check,
        )
        .unwrap();
        assert_eq!(
            checked.stale,
            [
                PathBuf::from("template.yaml"),
                "infra/catalogue.json".into()
            ]
        );
        assert!(checked.written.is_empty());
        assert!(!root.path().join("template.yaml").exists());

        let wrote = generate(
            root.path(),
            &paths,
            registered,
            &catalogue("[]\n"),
            Mode::Write,
        )
        .unwrap();
        assert_eq!(wrote.written, checked.stale);
        assert_eq!(
            std::fs::read_to_string(root.path().join("template.yaml")).unwrap(),
            template::render(&stack())
        );
        let fresh = generate(
            root.path(),
            &paths,
            registered,
            &catalogue("[]\n"),
            Mode::Check,
        )
        .unwrap();
        assert!(fresh.stale.is_empty(), "{:?}", fresh.stale);

        // A changed registry changes the catalogue: only that file is stale.
        let changed = generate(
            root.path(),
            &paths,
            registered,
            &catalogue("[1]\n"),
            Mode::Check,
        )
        .unwrap();
        assert_eq!(changed.stale, [PathBuf::from("infra/catalogue.json")]);

        // A hand edit of the template is stale too.
        std::fs::write(root.path().join("template.yaml"), "edited\n").unwrap();
        let edited = generate(
            root.path(),
            &paths,
            registered,
            &catalogue("[]\n"),
            Mode::Check,
        )
        .unwrap();
        assert_eq!(edited.stale, [PathBuf::from("template.yaml")]);
    }

    #[test]
    fn the_iam_table_is_generated_only_where_the_document_exists() {
        let root = project();
        std::fs::create_dir(root.path().join("docs")).unwrap();
        let doc = format!("# AWS\n\n{}\n{}\nMore.\n", iam::TABLE_BEGIN, iam::TABLE_END);
        std::fs::write(root.path().join("docs/aws.md"), doc).unwrap();
        let wrote = generate(root.path(), &Paths::default(), None, &[], Mode::Write).unwrap();
        assert_eq!(
            wrote.written,
            [PathBuf::from("template.yaml"), "docs/aws.md".into()]
        );
        let updated = std::fs::read_to_string(root.path().join("docs/aws.md")).unwrap();
        assert_eq!(
            updated,
            format!("# AWS\n\n{}\nMore.\n", iam::markdown_table(&stack()))
        );
    }

    #[test]
    fn a_mismatch_stops_before_anything_is_written() {
        let root = project();
        let error = generate(
            root.path(),
            &Paths::default(),
            Some(&["echo", "greet"]),
            &[],
            Mode::Write,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "infra/functions.toml: registered step types without a `kind = \"step\"` function: greet"
        );
        assert!(!root.path().join("template.yaml").exists());
    }
}
