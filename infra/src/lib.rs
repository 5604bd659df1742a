//! Sluice's deployment description. A [`Stack`] is the list of the stack's functions (a
//! catalogue such as `infra/functions.toml`); [`template::render`] turns it into the SAM
//! template (`template.yaml`), and [`iam`] holds what each function's role may do, which
//! both the template and the IAM table of `docs/aws.md` are generated from.
//!
//! [`generate::generate`] writes (or checks) all of a project's generated files at once;
//! it is what the `sluice-infra` binary and `sluice infra` (which also cross-checks the
//! function list against the project's step registry and writes its step catalogue) run.
//! The pieces work alone too:
//!
//! ```no_run
//! let stack = sluice_infra::Stack::load("infra/functions.toml".as_ref()).unwrap();
//! std::fs::write("template.yaml", sluice_infra::template::render(&stack)).unwrap();
//! ```

use std::path::Path;

use serde::Deserialize;

pub mod generate;
pub mod iam;
pub mod template;

/// What a function does in the stack, which decides its event sources and its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A step type: fed by its own queue (with a dead-letter queue).
    Step,
    /// The REST API behind API Gateway.
    Api,
    /// The EventBridge Scheduler target starting a run per schedule tick.
    Start,
    /// Consumes every dead-letter queue.
    DeadLetter,
}

/// One Lambda function of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    /// `echo`, `http_request`, `api`…: the step type (queue `<stack>-<name>`) or role.
    pub name: String,
    pub kind: Kind,
    /// MB.
    pub memory: u32,
    /// Seconds.
    pub timeout: u32,
    pub description: String,
    /// The step type reads and writes the cache table.
    #[serde(default)]
    pub cache: bool,
    /// The binary `sam build` builds; `sluice-<name with dashes>` when absent.
    #[serde(default)]
    pub binary: Option<String>,
    /// The package directory (`CodeUri`); `functions/<name>` when absent.
    #[serde(default)]
    pub code_uri: Option<String>,
}

impl Function {
    pub fn binary(&self) -> String {
        self.binary
            .clone()
            .unwrap_or_else(|| format!("sluice-{}", self.name.replace('_', "-")))
    }

    pub fn code_uri(&self) -> String {
        self.code_uri
            .clone()
            .unwrap_or_else(|| format!("functions/{}", self.name))
    }

    /// `HttpRequest` for `http_request`: the stem of the function's logical ids.
    pub fn camel(&self) -> String {
        camel(&self.name)
    }

    /// `HttpRequestFunction`.
    pub fn logical_id(&self) -> String {
        format!("{}Function", self.camel())
    }

    /// `HttpRequestFunctionRole`.
    pub fn role_id(&self) -> String {
        format!("{}Role", self.logical_id())
    }

    /// `HttpRequestFunctionLogs`.
    pub fn logs_id(&self) -> String {
        format!("{}Logs", self.logical_id())
    }

    /// The deployed function's name without the stack prefix: `http-request`.
    pub fn short_name(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// `HttpRequest` for `http_request`.
pub fn camel(name: &str) -> String {
    name.split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalogue {
    function: Vec<Function>,
}

/// The functions of one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub functions: Vec<Function>,
}

impl Stack {
    /// A stack from a catalogue file (`[[function]]` tables, see `infra/functions.toml`).
    pub fn load(path: &Path) -> Result<Self, StackError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StackError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            StackError::Parse { source, .. } => StackError::Parse {
                path: shown.clone(),
                source,
            },
            StackError::Invalid { message, .. } => StackError::Invalid {
                path: shown.clone(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, StackError> {
        let catalogue: Catalogue = toml::from_str(text).map_err(|source| StackError::Parse {
            path: String::new(),
            source,
        })?;
        Self::new(catalogue.function).map_err(|message| StackError::Invalid {
            path: String::new(),
            message,
        })
    }

    /// Checks there is exactly one `api`, `start` and `dead_letter` function, at least one
    /// step type, and that names are unique and usable in queue names.
    pub fn new(functions: Vec<Function>) -> Result<Self, String> {
        for kind in [Kind::Api, Kind::Start, Kind::DeadLetter] {
            let count = functions.iter().filter(|f| f.kind == kind).count();
            if count != 1 {
                return Err(format!(
                    "function: expected exactly one of kind {kind:?}, found {count}"
                ));
            }
        }
        if !functions.iter().any(|f| f.kind == Kind::Step) {
            return Err("function: no step type (kind = \"step\")".into());
        }
        let mut names: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("function.name: {} appears twice", pair[0]));
        }
        for f in &functions {
            let valid = !f.name.is_empty()
                && f.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(format!(
                    "function.name: {:?} must be lowercase letters, digits and _",
                    f.name
                ));
            }
            if !(1..=900).contains(&f.timeout) {
                return Err(format!(
                    "function.timeout: {} of {} is outside 1..=900 seconds",
                    f.timeout, f.name
                ));
            }
            if !(128..=10240).contains(&f.memory) {
                return Err(format!(
                    "function.memory: {} of {} is outside 128..=10240 MB",
                    f.memory, f.name
                ));
            }
        }
        Ok(Self { functions })
    }

    /// The step types, in catalogue order.
    pub fn step_types(&self) -> impl Iterator<Item = &Function> {
        self.functions.iter().filter(|f| f.kind == Kind::Step)
    }

    pub fn function(&self, kind: Kind) -> &Function {
        self.functions
            .iter()
            .find(|f| f.kind == kind)
            .expect("Stack::new checked every kind is present")
    }
}
