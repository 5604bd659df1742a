//! The application document (SPEC §2): metadata, app variables and step instances wired
//! into a DAG.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::condition::Condition;

/// Default step timeout when a step does not set `timeout_seconds`.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
/// Longest step timeout a step may ask for where it runs in this process (embedded: a
/// day, beyond PowerFlow's default task limit of 3,600 s).
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;
/// Longest step timeout on AWS: a step's attempt is one invocation of its Lambda
/// function, and Lambda ends an invocation after 15 minutes.
pub const LAMBDA_MAX_TIMEOUT_SECONDS: u64 = 900;
/// Longest `friendly_name`.
pub const MAX_FRIENDLY_NAME: usize = 66;

/// An integration application: named step instances wired into a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// Identifier, `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`, case-sensitive; a second id differing only
    /// in case is refused. Derived (lowercase) from `friendly_name` when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Display name, at most 66 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Who wrote the application (required).
    pub author: String,
    #[serde(default = "default_version")]
    pub version: String,
    /// Name of the aligned configuration; a run may override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    /// Free-form metadata (e.g. `{"hidden": false}`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_variables: Vec<AppVariable>,
    /// The step instances. Order is only used for display.
    pub steps: Vec<StepSpec>,
    /// The application to start when a run of this one fails, with the failed run's id,
    /// application, failed steps and errors as params (`sluice_core::alert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Alert>,
    /// The application to start when a run of this one succeeds with warnings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_warning: Option<Alert>,
}

/// What an application starts when one of its runs fails (`on_failure`) or ends with
/// warnings (`on_warning`). The alert run gets `params` and, for each reserved alert
/// param it declares as an app variable (`alert_run_id`, `alert_steps`, ...; see
/// `sluice_core::alert::ALERT_PARAMS`), that param.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// The application to start (an application id).
    pub application: String,
    /// Params of the alert run (literal values; the reserved `configuration`, `queue`
    /// and `loglevel` included), checked against its application when it starts.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
}

pub(crate) fn default_version() -> String {
    "1.0.0".to_string()
}

/// The declared type of an app variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    #[default]
    String,
    Number,
    Boolean,
    Enum,
    Json,
}

/// An application variable; runs override `value` through their params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppVariable {
    pub name: String,
    #[serde(default, rename = "type")]
    pub var_type: VariableType,
    /// Any JSON; may hold `${config.…}` references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Allowed values when `type` is `enum`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<Value>>,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// One step instance in an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// `^[A-Za-z_][A-Za-z0-9_]*$`, unique in the application.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A registered step type or operator (`transform`, `template_render`, `trigger_application`).
    #[serde(rename = "type")]
    pub step_type: String,
    /// Ids of predecessors; none makes the step a root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// Run the step only when this condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Per-attempt timeout in seconds (default 300; at most 86400 embedded, 900 on AWS,
    /// where an attempt is one Lambda invocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
}

impl StepSpec {
    pub fn timeout_seconds(&self) -> u64 {
        self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.clone().unwrap_or_default()
    }
}

/// Retries with exponential backoff: attempt `n` (from 2) waits
/// `backoff_seconds * backoff_rate^(n-2)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(default = "one")]
    pub max_attempts: u32,
    #[serde(default = "one_f")]
    pub backoff_seconds: f64,
    #[serde(default = "two_f")]
    pub backoff_rate: f64,
}

fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn two_f() -> f64 {
    2.0
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_seconds: 1.0,
            backoff_rate: 2.0,
        }
    }
}

impl RetryPolicy {
    /// Delay before `next_attempt` (2 for the first retry), in milliseconds.
    pub fn delay_before_ms(&self, next_attempt: u32) -> u64 {
        let exponent = next_attempt.saturating_sub(2) as i32;
        let seconds = self.backoff_seconds * self.backoff_rate.powi(exponent);
        (seconds.max(0.0) * 1000.0).min(86_400_000.0) as u64
    }
}

/// Runs a step once per item (or batch of items) of a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForEach {
    /// A list, usually a reference such as `${GetDevices.devices}`.
    pub items: Value,
    #[serde(default = "one_usize")]
    pub batch_size: usize,
    #[serde(default = "ten")]
    pub max_concurrency: usize,
}

fn one_usize() -> usize {
    1
}
fn ten() -> usize {
    10
}

impl Application {
    /// Whether `meta.hidden` is `true`: listings leave the application out unless asked
    /// (PowerFlow's hidden applications); it is still found by its id.
    pub fn is_hidden(&self) -> bool {
        self.meta.get("hidden") == Some(&Value::Bool(true))
    }

    pub fn step(&self, id: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }

    pub fn variable(&self, name: &str) -> Option<&AppVariable> {
        self.app_variables.iter().find(|v| v.name == name)
    }

    /// The applications this one starts by name, each with where it is named: literal
    /// `trigger_application` targets (`steps[i].parameters.application`; a target given
    /// by a reference is only known at run time), `on_failure.application` and
    /// `on_warning.application`.
    pub fn started_applications(&self) -> Vec<(String, &str)> {
        let mut started = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            if step.step_type != crate::operators::TRIGGER_APPLICATION {
                continue;
            }
            if let Some(Value::String(name)) = step.parameters.get("application") {
                if !name.contains("${") {
                    started.push((format!("steps[{i}].parameters.application"), name.as_str()));
                }
            }
        }
        for (field, alert) in [
            ("on_failure", &self.on_failure),
            ("on_warning", &self.on_warning),
        ] {
            if let Some(alert) = alert {
                started.push((format!("{field}.application"), alert.application.as_str()));
            }
        }
        started
    }

    /// Fills in derived fields: `name` from `friendly_name` when absent.
    pub fn normalize(&mut self) {
        if self.name.is_empty() {
            if let Some(friendly) = &self.friendly_name {
                self.name = slugify(friendly);
            }
        }
    }
}

/// Lower-cases, keeps ASCII letters and digits, and turns each run of anything else into
/// one `_`, keeping to 64 characters.
pub fn slugify(text: &str) -> String {
    let mut slug = String::new();
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() {
            slug.push(ch.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let mut slug = slug.trim_end_matches('_').to_string();
    slug.truncate(64);
    slug.trim_end_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugify_friendly_names() {
        assert_eq!(slugify("Device Sync"), "device_sync");
        assert_eq!(slugify("  ACME -- Inventory!! v2 "), "acme_inventory_v2");
        assert_eq!(slugify("Ünïcode Name"), "n_code_name");
    }

    #[test]
    fn backoff_grows_exponentially() {
        let policy = RetryPolicy {
            max_attempts: 4,
            backoff_seconds: 5.0,
            backoff_rate: 2.0,
        };
        assert_eq!(policy.delay_before_ms(2), 5_000);
        assert_eq!(policy.delay_before_ms(3), 10_000);
        assert_eq!(policy.delay_before_ms(4), 20_000);
    }
}
