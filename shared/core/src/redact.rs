//! Redaction of secret values: the last line of defence that keeps decrypted
//! configuration values out of logs, errors and stored outputs.
//!
//! A secret is masked in the forms the platform itself produces from it
//! (docs/semantics.md, "Secrets in templates and derived forms"): as it is, in any ASCII
//! letter case, reversed, percent-encoded, JSON-escaped, as hex, and as base64 (standard
//! and URL-safe) at any alignment, which covers a Basic `Authorization` header
//! (`base64(user:password)`) echoed back by a server.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::Engine;
use serde_json::Value;

/// Text that replaces a secret.
pub const REDACTED: &str = "***";

/// Secrets shorter than this are not searched for in text: masking every `1` or `a`
/// would destroy output without protecting anything worth protecting.
pub const MIN_REDACTED_LEN: usize = 4;

/// Base64 fragments shorter than this are not searched for (they would match by chance).
const MIN_BASE64_FRAGMENT: usize = 6;

/// Replaces every occurrence of the run's secret values, and of their derived forms,
/// with `***`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// The secrets as they are (numbers compare against these).
    secrets: Arc<Vec<String>>,
    /// Every form of every secret; `None` when there is nothing to redact.
    matcher: Option<Arc<AhoCorasick>>,
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
        secrets.sort();
        secrets.dedup();
        let mut forms: Vec<String> = secrets.iter().flat_map(|s| derived_forms(s)).collect();
        forms.sort();
        forms.dedup();
        let matcher = (!forms.is_empty()).then(|| {
            Arc::new(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    // A secret containing another is replaced whole.
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&forms)
                    .expect("literal patterns always build"),
            )
        });
        Self {
            secrets: Arc::new(secrets),
            matcher,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    pub fn redact_str(&self, text: &str) -> String {
        match &self.matcher {
            None => text.to_string(),
            Some(matcher) => {
                let mut out = String::with_capacity(text.len());
                matcher.replace_all_with(text, &mut out, |_, _, dst| {
                    dst.push_str(REDACTED);
                    true
                });
                out
            }
        }
    }

    /// [`redact_value`](Self::redact_value) of a value the caller gives up: returned as
    /// it is when there is nothing to redact, so a large output is not copied for nothing.
    pub fn redact_owned(&self, value: Value) -> Value {
        if self.is_empty() {
            return value;
        }
        self.redact_value(&value)
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

/// The texts a secret may appear as (matched in any ASCII letter case).
fn derived_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_string(), secret.chars().rev().collect()];
    forms.push(
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    );
    forms.push(form_urlencoded(secret));
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.push(hex::encode(secret.as_bytes()));
    for engine in [
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        forms.extend(base64_fragments(secret.as_bytes(), engine));
    }
    forms
}

/// `application/x-www-form-urlencoded`: spaces as `+`.
fn form_urlencoded(secret: &str) -> String {
    secret
        .split(' ')
        .map(|part| {
            percent_encoding::utf8_percent_encode(part, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("+")
}

/// The part of the base64 encoding of `bytes` that is the same wherever they sit in a
/// longer input: for each of the three alignments, the characters that depend on the
/// secret's bits alone.
fn base64_fragments(bytes: &[u8], engine: &base64::engine::GeneralPurpose) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut input = vec![0u8; offset];
        input.extend_from_slice(bytes);
        let encoded = engine.encode(&input);
        // Characters holding prefix bits: none, two (8 bits over 6+6), three (16 over 6×3).
        let start = [0, 2, 3][offset];
        // The last character is partial when the input does not end on a 3-byte group.
        let end = encoded.len() - usize::from(input.len() % 3 != 0);
        if end > start && end - start >= MIN_BASE64_FRAGMENT {
            out.push(encoded[start..end].to_string());
        }
    }
    out
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
    fn derived_forms_are_redacted() {
        let secret = json!("Sw0rdf1sh/x");
        let redactor = Redactor::new([&secret]);
        for text in [
            "SW0RDF1SH/X".to_string(),
            "sw0rdf1sh/x".to_string(),
            "x/hs1fdr0wS".to_string(),
            "Sw0rdf1sh%2Fx".to_string(),
            hex::encode("Sw0rdf1sh/x"),
            hex::encode("Sw0rdf1sh/x").to_uppercase(),
        ] {
            let shown = redactor.redact_str(&format!("[{text}]"));
            assert_eq!(shown, "[***]", "{text}");
        }
    }

    #[test]
    fn a_basic_authorization_header_is_redacted_at_any_alignment() {
        use base64::Engine;
        let password = json!("correct-horse-battery");
        let redactor = Redactor::new([&password]);
        for user in ["a", "ab", "abc", "admin", "service-account"] {
            let header = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:correct-horse-battery"));
            let shown = redactor.redact_str(&format!("Authorization: Basic {header}"));
            assert!(shown.contains(REDACTED), "{user}: {shown}");
            let decoded_tail = shown.rsplit(REDACTED).next().unwrap_or_default();
            assert!(decoded_tail.len() <= 4, "{user}: {shown}");
            assert!(!shown.contains(&header), "{user}: {shown}");
        }
    }

    #[test]
    fn numeric_secrets_are_redacted() {
        let pin = json!(84431234);
        let redactor = Redactor::new([&pin]);
        assert_eq!(redactor.redact_value(&json!([84431234])), json!(["***"]));
        assert_eq!(redactor.redact_str("pin=84431234"), "pin=***");
    }
}
