//! The configuration document (SPEC §3): a PowerFlow-compatible `data` array of named
//! variables, some encrypted.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::application::default_version;

/// Named variables that applications reference as `${config.NAME}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Configuration {
    /// Identifier, `^[a-z0-9][a-z0-9_-]{0,63}$`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub author: String,
    #[serde(default = "default_version")]
    pub version: String,
    #[serde(default)]
    pub data: Vec<ConfigVariable>,
}

/// One configuration variable. Encrypted values are never returned: reads show `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigVariable {
    pub name: String,
    /// Any JSON; may reference other configuration variables. For an encrypted entry,
    /// `null` on upload keeps the stored secret.
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Configuration {
    pub fn variable(&self, name: &str) -> Option<&ConfigVariable> {
        self.data.iter().find(|v| v.name == name)
    }

    /// The same document with every encrypted value replaced by `null`: the only shape
    /// that may leave the secret store.
    pub fn redacted(&self) -> Configuration {
        let mut copy = self.clone();
        for variable in &mut copy.data {
            if variable.encrypted {
                variable.value = Value::Null;
            }
        }
        copy
    }
}
