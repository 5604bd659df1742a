//! Versions of definitions: every push of an application or configuration that changes
//! its content is kept as a numbered version (who, when, a content hash), so that a
//! definition can be listed, compared and rolled back. Pure: the hashing, the diff and
//! the retention setting; the stores keep the versions (see
//! [`DefinitionStore::push_definition`](crate::ports::DefinitionStore::push_definition)).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::{Application, Configuration};
use crate::ports::StoreError;

/// Versions kept per definition unless configured otherwise.
pub const DEFAULT_VERSIONS_KEPT: usize = 50;
/// The most versions a deployment may keep per definition (retention stays bounded).
pub const MAX_VERSIONS_KEPT: usize = 1000;
/// Environment variable overriding [`DEFAULT_VERSIONS_KEPT`].
pub const VERSIONS_KEPT_ENV: &str = "SLUICE_VERSIONS_KEPT";
/// The author of a push that names none (a store written to directly, not through the
/// runtime's service).
pub const UNATTRIBUTED: &str = "system";

/// How many versions to keep: [`VERSIONS_KEPT_ENV`] when set, else the default. An
/// unusable value is an error naming the variable.
pub fn versions_kept_from_env() -> Result<usize, String> {
    match std::env::var(VERSIONS_KEPT_ENV) {
        Err(_) => Ok(DEFAULT_VERSIONS_KEPT),
        Ok(text) => parse_versions_kept(&text),
    }
}

/// Parses a retention setting: a whole number from 1 to [`MAX_VERSIONS_KEPT`].
pub fn parse_versions_kept(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_VERSIONS_KEPT).contains(&n) => Ok(n),
        _ => Err(format!(
            "{VERSIONS_KEPT_ENV} must be a whole number from 1 to {MAX_VERSIONS_KEPT}, not \"{text}\""
        )),
    }
}

/// Which kind of definition a version belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DefinitionKind {
    Application,
    Configuration,
}

impl DefinitionKind {
    /// `application` or `configuration`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Configuration => "configuration",
        }
    }
}

/// One stored version, without its document (a history listing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VersionInfo {
    /// 1, 2, ... per definition; never reused while the definition exists.
    pub version: u64,
    /// Who pushed it: the API identity's name, the CLI user, or `system`.
    pub author: String,
    #[schemars(with = "String")]
    pub created_at: DateTime<Utc>,
    /// `sha256:` and the hex SHA-256 of the document's canonical JSON.
    pub hash: String,
    /// Configurations: the names of the encrypted values it set (their values live only
    /// in the secret store and are never part of a version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypted: Vec<String>,
}

/// A version's number and content hash: enough to tell whether a document is that
/// version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStamp {
    pub version: u64,
    pub hash: String,
}

/// One stored version with its document (a configuration's encrypted values `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DefinitionVersion {
    #[serde(flatten)]
    pub info: VersionInfo,
    pub document: Value,
}

/// What a push hands to the store: the document and its hash, prepared here so that
/// every adapter hashes alike.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    pub kind: DefinitionKind,
    pub name: String,
    /// The document to store as the current definition (redacted for configurations).
    pub document: Value,
    pub hash: String,
    pub encrypted: Vec<String>,
    pub author: String,
    /// Versions to keep; older ones are deleted by this push (at least 1).
    pub keep: usize,
}

impl NewVersion {
    /// A push of `app` by `author`.
    pub fn application(app: &Application, author: &str, keep: usize) -> Result<Self, StoreError> {
        let document = serde_json::to_value(app).map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(Self::new(
            DefinitionKind::Application,
            &app.name,
            document,
            Vec::new(),
            author,
            keep,
        ))
    }

    /// A push of `config` by `author`: only its [`Configuration::redacted`] form is kept,
    /// with the names of its encrypted values.
    pub fn configuration(
        config: &Configuration,
        author: &str,
        keep: usize,
    ) -> Result<Self, StoreError> {
        let redacted = config.redacted();
        let document =
            serde_json::to_value(&redacted).map_err(|e| StoreError::Backend(e.to_string()))?;
        let encrypted = redacted
            .data
            .iter()
            .filter(|v| v.encrypted)
            .map(|v| v.name.clone())
            .collect();
        Ok(Self::new(
            DefinitionKind::Configuration,
            &config.name,
            document,
            encrypted,
            author,
            keep,
        ))
    }

    fn new(
        kind: DefinitionKind,
        name: &str,
        document: Value,
        encrypted: Vec<String>,
        author: &str,
        keep: usize,
    ) -> Self {
        Self {
            kind,
            name: name.to_string(),
            hash: content_hash(&document),
            document,
            encrypted,
            author: author.to_string(),
            keep: keep.clamp(1, MAX_VERSIONS_KEPT),
        }
    }

    /// The version this push stores as number `version` at `created_at`.
    pub fn info(&self, version: u64, created_at: DateTime<Utc>) -> VersionInfo {
        VersionInfo {
            version,
            author: self.author.clone(),
            created_at,
            hash: self.hash.clone(),
            encrypted: self.encrypted.clone(),
        }
    }

    /// Versions numbered at or below this are beyond retention once `version` is stored.
    pub fn expired_at_or_below(&self, version: u64) -> u64 {
        version.saturating_sub(self.keep as u64)
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushOutcome {
    /// The version the definition is now at.
    pub version: u64,
    /// `false` when the content equalled the latest version's: nothing was written.
    pub created: bool,
}

/// JSON text with object keys sorted at every level and no whitespace: equal documents
/// have equal text whatever order their fields were written in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `sha256:<hex>` of [`canonical_json`].
pub fn content_hash(value: &Value) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical_json(value).as_bytes()))
    )
}

/// How a value differs between two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiffOp {
    Added,
    Removed,
    Changed,
}

/// One difference: the path (`steps[0].parameters.url`, `""` for the whole document),
/// and the value before (`from`, absent when added) and after (`to`, absent when
/// removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiffEntry {
    pub path: String,
    pub op: DiffOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// The differences from `from` to `to`, in document order (`from`'s keys first, then
/// keys only `to` has). Objects are compared key by key and arrays index by index; a
/// value whose type changed is one `changed` entry.
pub fn diff(from: &Value, to: &Value) -> Vec<DiffEntry> {
    let mut entries = Vec::new();
    diff_at(String::new(), from, to, &mut entries);
    entries
}

fn diff_at(path: String, from: &Value, to: &Value, out: &mut Vec<DiffEntry>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                let child = key_path(&path, key);
                match b.get(key) {
                    Some(new) => diff_at(child, old, new, out),
                    None => out.push(removed(child, old)),
                }
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    out.push(added(key_path(&path, key), new));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let child = format!("{path}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(old), Some(new)) => diff_at(child, old, new, out),
                    (Some(old), None) => out.push(removed(child, old)),
                    (None, Some(new)) => out.push(added(child, new)),
                    (None, None) => {}
                }
            }
        }
        (old, new) if old != new => out.push(DiffEntry {
            path,
            op: DiffOp::Changed,
            from: Some(old.clone()),
            to: Some(new.clone()),
        }),
        _ => {}
    }
}

fn added(path: String, value: &Value) -> DiffEntry {
    DiffEntry {
        path,
        op: DiffOp::Added,
        from: None,
        to: Some(value.clone()),
    }
}

fn removed(path: String, value: &Value) -> DiffEntry {
    DiffEntry {
        path,
        op: DiffOp::Removed,
        from: Some(value.clone()),
        to: None,
    }
}

/// `parent.key`, or `parent["key"]` when the key is not a plain name.
fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (plain, parent.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{parent}.{key}"),
        (false, _) => format!("{parent}[{}]", Value::String(key.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#
        );
        let reordered: Value =
            serde_json::from_str(r#"{"a":{"y":[1,{"c":3,"d":2}],"x":null},"b":1}"#).unwrap();
        assert_eq!(content_hash(&a), content_hash(&reordered));
        assert!(content_hash(&a).starts_with("sha256:"));
        assert_ne!(content_hash(&a), content_hash(&json!({"b": 2})));
    }

    #[test]
    fn diff_names_added_removed_and_changed_paths() {
        let from = json!({
            "name": "app",
            "description": "old",
            "steps": [{"id": "A", "parameters": {"url": "a"}}, {"id": "B"}],
            "meta": {"team": "x"},
            "odd key": 1
        });
        let to = json!({
            "name": "app",
            "description": "new",
            "steps": [{"id": "A", "parameters": {"url": "b", "timeout": 5}}],
            "odd key": 1,
            "tags": ["t"]
        });
        let entries = diff(&from, &to);
        let summary: Vec<(&str, DiffOp)> =
            entries.iter().map(|e| (e.path.as_str(), e.op)).collect();
        assert_eq!(
            summary,
            [
                ("description", DiffOp::Changed),
                ("steps[0].parameters.url", DiffOp::Changed),
                ("steps[0].parameters.timeout", DiffOp::Added),
                ("steps[1]", DiffOp::Removed),
                ("meta", DiffOp::Removed),
                ("tags", DiffOp::Added),
            ]
        );
        assert_eq!(entries[0].from, Some(json!("old")));
        assert_eq!(entries[0].to, Some(json!("new")));
        assert_eq!(entries[3].to, None);
        assert_eq!(
            serde_json::to_value(&entries[5]).unwrap(),
            json!({"path": "tags", "op": "added", "to": ["t"]})
        );
        assert!(diff(&from, &from).is_empty());
    }

    #[test]
    fn diff_of_a_changed_type_or_odd_key_is_one_entry() {
        assert_eq!(
            diff(&json!({"a b": [1]}), &json!({"a b": {"x": 1}})),
            [DiffEntry {
                path: r#"["a b"]"#.into(),
                op: DiffOp::Changed,
                from: Some(json!([1])),
                to: Some(json!({"x": 1})),
            }]
        );
        assert_eq!(diff(&json!(1), &json!(2))[0].path, "");
    }

    #[test]
    fn configuration_versions_hold_no_secret() {
        let config: Configuration = serde_json::from_value(json!({
            "name": "acme",
            "data": [
                {"name": "host", "value": "h"},
                {"name": "token", "value": "s3cr3t", "encrypted": true}
            ]
        }))
        .unwrap();
        let version = NewVersion::configuration(&config, "alice", 5).unwrap();
        assert!(!version.document.to_string().contains("s3cr3t"));
        assert_eq!(version.encrypted, ["token"]);
        let mut other = config.clone();
        other.data[1].value = json!("another");
        assert_eq!(
            NewVersion::configuration(&other, "bob", 5).unwrap().hash,
            version.hash,
            "the hash is of the redacted document, so it reveals nothing of the secret"
        );
    }

    #[test]
    fn retention_is_parsed_and_bounded() {
        assert_eq!(parse_versions_kept(" 7 "), Ok(7));
        assert!(parse_versions_kept("0")
            .unwrap_err()
            .contains(VERSIONS_KEPT_ENV));
        assert!(parse_versions_kept("abc").is_err());
        assert!(parse_versions_kept("1001").is_err());
        let app: Application = serde_json::from_value(json!({
            "name": "a", "author": "t", "steps": [{"id": "A", "type": "echo"}]
        }))
        .unwrap();
        let push = NewVersion::application(&app, "x", 0).unwrap();
        assert_eq!(push.keep, 1);
        assert_eq!(push.expired_at_or_below(3), 2);
        assert_eq!(push.expired_at_or_below(1), 0);
    }
}
