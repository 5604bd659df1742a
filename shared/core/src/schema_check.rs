//! Checking a step's literal parameters against its published parameter schema, so that
//! `url: 5` or `mode: "drop"` fails validation (naming the field) rather than the run.
//!
//! The schemas are the ones schemars generates from step types' parameter structs (and
//! that a catalogue may carry as data), so this covers the keywords they use: `type`,
//! `format` (integer widths), `minimum`/`maximum` (and exclusive), `enum`, `const`,
//! `properties`, `required`, `additionalProperties`, `items`, `minLength`, `maxLength`,
//! `$ref` into `$defs`, `anyOf`/`oneOf`/`allOf` and `if`/`then`/`else`. A full JSON Schema
//! validator would add its regex and URL stacks to every function for keywords these
//! schemas never use.
//!
//! A string holding a `${…}` reference matches anything here: its value is only known at
//! run time, where the step type checks it. A field marked `"x-sluice-literal": true`
//! refuses references altogether (a SQL `query`: values go in bound `params`).

use serde_json::{Map, Value};

use crate::reference::{self, Segment};

/// Schema keyword marking a field that must not contain `${…}` references.
pub const LITERAL_KEYWORD: &str = "x-sluice-literal";

/// How every literal-field problem starts.
const LITERAL_PREFIX: &str = "must not contain ${…} references";

/// Why a field marked literal refuses references, by default.
const LITERAL_MESSAGE: &str =
    "must not contain ${…} references: they would be spliced into the text";

/// Schema keyword with a field's own explanation of why it is literal (after
/// the literal prefix).
pub const LITERAL_REASON_KEYWORD: &str = "x-sluice-literal-reason";

/// A problem: the field's path and what is wrong.
pub type Problem = (String, String);

/// The problems that are references in a field marked literal (what the runtime refuses
/// even in an application stored before the rule existed).
pub fn literal_problems(root: &Value, schema: &Value, value: &Value, path: &str) -> Vec<Problem> {
    let mut problems = check(root, schema, value, path);
    problems.retain(|(_, message)| message.starts_with(LITERAL_PREFIX));
    problems
}

/// Checks `value` at `path` against `schema` (whose `$defs` are in `root`).
pub fn check(root: &Value, schema: &Value, value: &Value, path: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    Checker { root, depth: 0 }.check(schema, value, path, &mut problems);
    problems
}

/// Whether a string holds at least one `${…}` reference (`$${` is a literal `${`).
pub fn has_reference(text: &str) -> bool {
    text.contains("${")
        && reference::parse(text)
            .map(|segments| segments.iter().any(|s| matches!(s, Segment::Ref(_))))
            .unwrap_or(true)
}

struct Checker<'a> {
    root: &'a Value,
    depth: usize,
}

/// Deeper `$ref` chains than this are a broken schema, not a document error.
const MAX_DEPTH: usize = 64;

/// Follows `$ref`s into the root's `$defs`.
fn resolve<'s>(root: &'s Value, schema: &'s Value) -> &'s Value {
    {
        let mut schema = schema;
        for _ in 0..MAX_DEPTH {
            let Some(target) = schema.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let found = target
                .strip_prefix("#/$defs/")
                .and_then(|name| root.get("$defs")?.get(name))
                .or_else(|| {
                    target
                        .strip_prefix("#/definitions/")
                        .and_then(|name| root.get("definitions")?.get(name))
                });
            match found {
                Some(next) => schema = next,
                None => break,
            }
        }
        schema
    }
}

impl Checker<'_> {
    fn check(&mut self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Problem>) {
        if self.depth > MAX_DEPTH {
            return;
        }
        let literal = schema.get(LITERAL_KEYWORD) == Some(&Value::Bool(true));
        let root = self.root;
        let schema = resolve(root, schema);
        if let Value::String(text) = value {
            if has_reference(text) {
                if literal || schema.get(LITERAL_KEYWORD) == Some(&Value::Bool(true)) {
                    let message = match schema.get(LITERAL_REASON_KEYWORD).and_then(Value::as_str) {
                        Some(reason) => format!("{LITERAL_PREFIX}: {reason}"),
                        None => LITERAL_MESSAGE.to_string(),
                    };
                    out.push((path.to_string(), message));
                }
                return;
            }
        }
        let Value::Object(keywords) = schema else {
            if schema == &Value::Bool(false) {
                out.push((path.to_string(), "is not allowed here".into()));
            }
            return;
        };
        self.depth += 1;
        self.check_object(keywords, value, path, out);
        self.depth -= 1;
    }

    fn check_object(
        &mut self,
        keywords: &Map<String, Value>,
        value: &Value,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        if let Some(types) = keywords.get("type") {
            if !type_matches(types, value) {
                out.push((
                    path.to_string(),
                    format!("expected {}, got {}", describe_types(types), shown(value)),
                ));
                return;
            }
        }
        if let Some(Value::Array(choices)) = keywords.get("enum") {
            if !choices.contains(value) {
                out.push((path.to_string(), one_of(choices, value)));
                return;
            }
        }
        if let Some(expected) = keywords.get("const") {
            if expected != value {
                out.push((
                    path.to_string(),
                    format!("must be {expected} (got {})", shown(value)),
                ));
                return;
            }
        }
        if let Value::Number(n) = value {
            self.check_number(keywords, n, path, out);
        }
        if let Value::String(s) = value {
            let chars = s.chars().count() as u64;
            if let Some(min) = keywords.get("minLength").and_then(Value::as_u64) {
                if chars < min {
                    out.push((
                        path.to_string(),
                        format!("must have at least {min} characters"),
                    ));
                }
            }
            if let Some(max) = keywords.get("maxLength").and_then(Value::as_u64) {
                if chars > max {
                    out.push((
                        path.to_string(),
                        format!("must have at most {max} characters"),
                    ));
                }
            }
        }
        if let Value::Object(fields) = value {
            self.check_fields(keywords, fields, path, out);
        }
        if let (Value::Array(items), Some(item_schema)) = (value, keywords.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
        for branches_key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = keywords.get(branches_key) {
                self.check_alternatives(branches, value, path, out);
            }
        }
        if let Some(Value::Array(all)) = keywords.get("allOf") {
            for schema in all {
                self.check(schema, value, path, out);
            }
        }
        if let Some(condition) = keywords.get("if") {
            let mut probe = Vec::new();
            self.check(condition, value, path, &mut probe);
            let branch = if probe.is_empty() { "then" } else { "else" };
            if let Some(schema) = keywords.get(branch) {
                self.check(schema, value, path, out);
            }
        }
    }

    fn check_number(
        &self,
        keywords: &Map<String, Value>,
        n: &serde_json::Number,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        if let Some(format) = keywords.get("format").and_then(Value::as_str) {
            if let Some((min, max)) = integer_range(format) {
                let fits = match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => i128::from(i) >= min && i128::from(i) <= max,
                    (None, Some(u)) => i128::from(u) <= max,
                    _ => false,
                };
                if !fits {
                    out.push((
                        path.to_string(),
                        format!("must be an integer between {min} and {max} (got {n})"),
                    ));
                    return;
                }
            }
        }
        let x = n.as_f64().unwrap_or(f64::NAN);
        let bound = |key: &str| keywords.get(key).and_then(Value::as_f64);
        if let Some(min) = bound("minimum") {
            if x.is_nan() || x < min {
                out.push((
                    path.to_string(),
                    format!("must be at least {min} (got {n})"),
                ));
            }
        }
        if let Some(max) = bound("maximum") {
            if x.is_nan() || x > max {
                out.push((path.to_string(), format!("must be at most {max} (got {n})")));
            }
        }
        if let Some(min) = bound("exclusiveMinimum") {
            if x.is_nan() || x <= min {
                out.push((
                    path.to_string(),
                    format!("must be more than {min} (got {n})"),
                ));
            }
        }
        if let Some(max) = bound("exclusiveMaximum") {
            if x.is_nan() || x >= max {
                out.push((
                    path.to_string(),
                    format!("must be less than {max} (got {n})"),
                ));
            }
        }
    }

    fn check_fields(
        &mut self,
        keywords: &Map<String, Value>,
        fields: &Map<String, Value>,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        let properties = keywords.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = keywords.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    out.push((
                        path.to_string(),
                        format!("missing required field \"{name}\""),
                    ));
                }
            }
        }
        for (name, field) in fields {
            let field_path = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(schema) => self.check(schema, field, &field_path, out),
                None => match keywords.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = properties
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        out.push((
                            field_path,
                            format!("unknown field \"{name}\" (known: {})", known.join(", ")),
                        ));
                    }
                    Some(schema @ Value::Object(_)) => self.check(schema, field, &field_path, out),
                    _ => {}
                },
            }
        }
    }

    fn check_alternatives(
        &mut self,
        branches: &[Value],
        value: &Value,
        path: &str,
        out: &mut Vec<Problem>,
    ) {
        let mut best: Option<Vec<Problem>> = None;
        for branch in branches {
            let mut problems = Vec::new();
            self.check(branch, value, path, &mut problems);
            if problems.is_empty() {
                return;
            }
            if best.as_ref().is_none_or(|b| problems.len() < b.len()) {
                best = Some(problems);
            }
        }
        // Alternatives that are each one constant read as a list of choices.
        let constants: Option<Vec<Value>> = branches
            .iter()
            .map(|b| resolve(self.root, b).get("const").cloned())
            .collect();
        match constants {
            Some(choices) if !choices.is_empty() => {
                out.push((path.to_string(), one_of(&choices, value)))
            }
            _ => out.extend(best.unwrap_or_default()),
        }
    }
}

fn type_matches(types: &Value, value: &Value) -> bool {
    let matches_one = |name: &str| match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    };
    match types {
        Value::String(name) => matches_one(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(matches_one),
        _ => true,
    }
}

fn describe_types(types: &Value) -> String {
    let article = |name: &str| match name {
        "null" => "null".to_string(),
        "integer" | "array" | "object" => format!("an {name}"),
        other => format!("a {other}"),
    };
    match types {
        Value::String(name) => article(name),
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .map(article)
            .collect::<Vec<_>>()
            .join(" or "),
        other => other.to_string(),
    }
}

/// The inclusive range of an integer `format` schemars emits.
fn integer_range(format: &str) -> Option<(i128, i128)> {
    Some(match format {
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "uint64" | "uint" => (0, u64::MAX.into()),
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "int64" | "int" => (i64::MIN.into(), i64::MAX.into()),
        _ => return None,
    })
}

fn one_of(choices: &[Value], value: &Value) -> String {
    let listed: Vec<String> = choices.iter().map(Value::to_string).collect();
    format!(
        "must be one of {} (got {})",
        listed.join(", "),
        shown(value)
    )
}

/// A value as shown in a message: short.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "url": {"type": "string"},
                "mode": {"$ref": "#/$defs/Mode"},
                "ttl": {"type": ["integer", "null"], "format": "uint64", "minimum": 1},
                "timeout": {"type": "number", "minimum": 0.001, "maximum": 900},
                "codes": {"type": ["array", "null"], "items": {"type": "integer", "format": "uint16"}},
                "query": {"type": ["string", "null"], "x-sluice-literal": true},
                "auth": {"anyOf": [{"$ref": "#/$defs/Auth"}, {"type": "null"}]}
            },
            "required": ["url"],
            "if": {"properties": {"mode": {"const": "describe"}}, "required": ["mode"]},
            "then": {"required": ["table"]},
            "else": {"required": ["query"]},
            "$defs": {
                "Mode": {"oneOf": [{"const": "select"}, {"const": "describe"}]},
                "Auth": {"type": "object", "properties": {"bearer": {"type": "string"}},
                         "required": ["bearer"], "additionalProperties": false}
            }
        })
    }

    fn problems(params: Value) -> Vec<String> {
        let schema = schema();
        check(&schema, &schema, &params, "p")
            .into_iter()
            .map(|(path, message)| format!("{path}: {message}"))
            .collect()
    }

    #[test]
    fn literal_values_are_checked_with_the_field_named() {
        assert_eq!(
            problems(json!({"url": "x", "query": "q"})),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(json!({"url": 5, "query": "q"})),
            ["p.url: expected a string, got 5"]
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "q", "mode": "drop"})),
            ["p.mode: must be one of \"select\", \"describe\" (got \"drop\")"]
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "q", "ttl": -1})),
            ["p.ttl: must be an integer between 0 and 18446744073709551615 (got -1)"]
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "q", "ttl": 0})),
            ["p.ttl: must be at least 1 (got 0)"]
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "q", "timeout": 1e300})),
            ["p.timeout: must be at most 900 (got 1e+300)"]
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "q", "codes": [200, 70000]})),
            ["p.codes[1]: must be an integer between 0 and 65535 (got 70000)"]
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "q", "auth": {"bearer": 1}})),
            ["p.auth.bearer: expected a string, got 1"]
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "q", "nope": 1})),
            ["p.nope: unknown field \"nope\" (known: url, mode, ttl, timeout, codes, query, auth)"]
        );
        assert_eq!(
            problems(json!({"url": "x"})),
            ["p: missing required field \"query\""]
        );
        assert_eq!(
            problems(json!({"url": "x", "mode": "describe"})),
            ["p: missing required field \"table\""]
        );
    }

    #[test]
    fn references_are_checked_at_run_time_except_in_literal_fields() {
        assert_eq!(
            problems(
                json!({"url": "${config.u}", "query": "q", "ttl": "${vars.t}",
                            "timeout": "${vars.t}", "auth": "${config.auth}"})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(json!({"url": "x", "query": "select '${vars.who}'"})),
            [format!("p.query: {LITERAL_MESSAGE}")]
        );
        // `$${` is a literal `${`, not a reference.
        assert_eq!(
            problems(json!({"url": "x", "query": "select '$${x}'"})),
            Vec::<String>::new()
        );
    }
}
