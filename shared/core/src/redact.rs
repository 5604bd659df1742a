//! Redaction of secret values: the last line of defence that keeps decrypted
//! configuration values out of logs, errors and stored outputs.

use std::sync::Arc;

use serde_json::Value;

/// Text that replaces a secret.
pub const REDACTED: &str = "***";

/// Secrets shorter than this are not searched for in text: masking every `1` or `a`
/// would destroy output without protecting anything worth protecting.
pub const MIN_REDACTED_LEN: usize = 4;

/// Replaces every occurrence of the run's secret values with `***`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Builds a redactor from decrypted values; a non-string value is redacted by its
    /// compact JSON text as well as by each string inside it.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut secrets = Vec::new();
        for value in values {
            collect_strings(value, &mut secrets);
            if !value.is_string() {
                secrets.push(value.to_string());
            }
        }
        secrets.retain(|s| s.len() >= MIN_REDACTED_LEN);
        // Longest first, so that a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn redact_str(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redacts every string (and object key) inside a JSON value.
    pub fn redact_value(&self, value: &Value) -> Value {
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.redact_str(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_value(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact_str(k), self.redact_value(v)))
                    .collect(),
            ),
            Value::Number(n) => {
                if self.secrets.iter().any(|s| *s == n.to_string()) {
                    Value::String(REDACTED.to_string())
                } else {
                    value.clone()
                }
            }
            other => other.clone(),
        }
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_strings_inside_values_and_text() {
        let secret = json!("s3cr3t-token");
        let redactor = Redactor::new([&secret]);
        assert_eq!(
            redactor.redact_str("Authorization: Bearer s3cr3t-token"),
            "Authorization: Bearer ***"
        );
        assert_eq!(
            redactor.redact_value(&json!({"h": ["x s3cr3t-token y"], "n": 1})),
            json!({"h": ["x *** y"], "n": 1})
        );
    }

    #[test]
    fn longer_secret_wins_and_short_ones_are_ignored() {
        let a = json!("abcd");
        let b = json!("abcdefgh");
        let short = json!("ab");
        let redactor = Redactor::new([&a, &b, &short]);
        assert_eq!(redactor.redact_str("abcdefgh abcd ab"), "*** *** ab");
    }

    #[test]
    fn numeric_secrets_are_redacted() {
        let pin = json!(84431234);
        let redactor = Redactor::new([&pin]);
        assert_eq!(redactor.redact_value(&json!([84431234])), json!(["***"]));
        assert_eq!(redactor.redact_str("pin=84431234"), "pin=***");
    }
}
