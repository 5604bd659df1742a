//! Parsing user documents: malformed JSON is reported with its line and column, a
//! document of the wrong shape with the path of the offending field.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// One problem in a document, located by its JSON path (`steps[2].depends_on[0]`) and,
/// for syntax errors, its line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// JSON path of the field; empty for the whole document.
    pub path: String,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub issues: Vec<Issue>,
}

impl Invalid {
    pub fn one(issue: Issue) -> Self {
        Self {
            issues: vec![issue],
        }
    }

    /// The first issue's path, for APIs that report one `field`.
    pub fn field(&self) -> Option<&str> {
        self.issues
            .first()
            .map(|i| i.path.as_str())
            .filter(|p| !p.is_empty())
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Parses `text` as a `T`, reporting syntax errors with line and column and shape errors
/// (unknown fields, wrong types, missing fields) with the field's path and position.
pub fn parse_document<T: DeserializeOwned>(text: &str) -> Result<T, Invalid> {
    // A syntax pass first, so that malformed JSON is never reported as a shape error.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(Invalid::one(Issue {
            path: String::new(),
            message: format!("malformed JSON: {}", strip_position(&e)),
            line: Some(e.line()),
            column: Some(e.column()),
        }));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = display_path(e.path());
        let inner = e.into_inner();
        Invalid::one(Issue {
            path,
            message: strip_position(&inner),
            line: Some(inner.line()),
            column: Some(inner.column()),
        })
    })
}

/// Converts a JSON value into a `T`, naming the offending field on failure.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, Invalid> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = display_path(e.path());
        Invalid::one(Issue::new(path, e.into_inner().to_string()))
    })
}

fn display_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        String::new()
    } else {
        text
    }
}

/// serde_json appends " at line L column C"; we report the position separately.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Application;

    #[test]
    fn malformed_json_names_line_and_column() {
        let err = parse_document::<Application>("{\n  \"author\": \"a\",\n  \"steps\": [,]\n}")
            .unwrap_err();
        let issue = &err.issues[0];
        assert_eq!(issue.line, Some(3));
        assert!(issue.message.starts_with("malformed JSON"), "{issue}");
        assert!(err.to_string().starts_with("line 3, column"), "{err}");
    }

    #[test]
    fn unknown_field_names_its_path() {
        let text =
            r#"{"name": "a", "author": "x", "steps": [{"id": "A", "type": "echo", "bogus": 1}]}"#;
        let err = parse_document::<Application>(text).unwrap_err();
        assert_eq!(err.issues[0].path, "steps[0].bogus");
        assert!(
            err.issues[0].message.contains("unknown field `bogus`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_its_path() {
        let text = r#"{"name": "a", "author": "x", "steps": [{"id": "A", "type": "echo", "timeout_seconds": "x"}]}"#;
        let err = parse_document::<Application>(text).unwrap_err();
        assert_eq!(err.issues[0].path, "steps[0].timeout_seconds");
    }
}
