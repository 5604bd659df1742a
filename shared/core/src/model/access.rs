//! Access control records (SPEC §6): roles, role bindings and API tokens.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The five roles, each including the ones before it (`Ord` follows the inclusion, so
/// "highest wins" is `max`).
/// Written lowercase; read in any case (`Developer`), as the CLI reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything but secrets.
    View,
    /// Start, replay and revoke runs.
    Execute,
    /// Write configurations and app variables.
    Configuration,
    /// Write applications and run step types.
    Developer,
    /// Delete, manage roles, tokens and schedules.
    Administrator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::View,
        Role::Execute,
        Role::Configuration,
        Role::Developer,
        Role::Administrator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Execute => "execute",
            Role::Configuration => "configuration",
            Role::Developer => "developer",
            Role::Administrator => "administrator",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Role::View => "Read everything but secrets.",
            Role::Execute => "View, and start, replay and revoke runs.",
            Role::Configuration => "Execute, and write configurations and app variables.",
            Role::Developer => "Configuration, and write applications and run step types.",
            Role::Administrator => "Developer, and delete, manage roles, tokens and schedules.",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Role {
    type Err = String;

    /// Case-insensitive (`Developer`, `developer`), with `admin` for `administrator`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == lower)
            .or((lower == "admin").then_some(Role::Administrator))
            .ok_or_else(|| {
                format!("unknown role \"{s}\" (expected view, execute, configuration, developer or administrator)")
            })
    }
}

/// Whom a role binding names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OwnerType {
    User,
    Group,
}

impl OwnerType {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerType::User => "user",
            OwnerType::Group => "group",
        }
    }
}

/// A role given to a user name or a group (of JWT identities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBinding {
    /// The user name or group name.
    pub owner: String,
    #[serde(default = "user")]
    pub owner_type: OwnerType,
    pub role: Role,
}

fn user() -> OwnerType {
    OwnerType::User
}

/// An API token as stored: its SHA-256 hash, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Unique name (`sluice tokens create NAME`), used to list and revoke it.
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the token.
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::View < Role::Execute && Role::Developer < Role::Administrator);
        assert_eq!("Developer".parse::<Role>().unwrap(), Role::Developer);
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Administrator);
        assert!("root".parse::<Role>().is_err());
        assert_eq!(
            serde_json::to_string(&Role::Configuration).unwrap(),
            "\"configuration\""
        );
    }

    #[test]
    fn roles_in_documents_are_read_in_any_case() {
        let role: Role = serde_json::from_str("\"Developer\"").unwrap();
        assert_eq!(role, Role::Developer);
        let role: Role = serde_json::from_value(serde_json::json!("VIEW")).unwrap();
        assert_eq!(role, Role::View);
        let err = serde_json::from_str::<Role>("\"root\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown role"), "{err}");
    }
}
