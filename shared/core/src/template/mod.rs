//! Jinja2 templates through `minijinja` (with Python-compatible methods such as
//! `dict.items()`), used by `transform` and template conditions.
//!
//! Two rules hold here (docs/semantics.md, "References are data" and "Template limits"):
//!
//! - A `${…}` reference inside a template is never template source. [`bind`] replaces each
//!   one by a context variable holding its resolved value, so a run parameter or a remote
//!   response that contains `{{ … }}` is printed as text, never evaluated.
//! - Rendering is bounded in work ([`FUEL`]: minijinja counts instructions) and in output
//!   size ([`MAX_OUTPUT_BYTES`]). Memory and wall time need a process boundary and are
//!   bounded by the runtime, which renders in a child process.

mod mutable;

use std::sync::OnceLock;

use minijinja::Environment;
use serde_json::{Map, Value};

use crate::reference::{self, RefError, Reference, Scope};

/// Instructions one rendering or expression may execute (minijinja's fuel). About a
/// second of work on a current CPU: nested loops over large ranges stop with an error.
pub const FUEL: u64 = 20_000_000;

/// Largest rendering a template may produce.
pub const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;

/// Prefix of the context variables that carry the values of `${…}` references.
const BOUND_PREFIX: &str = "__sluice_ref";

/// A template failed to compile or render; the message names the line where known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        mutable::register(&mut env);
        env.set_fuel(Some(FUEL));
        env
    })
}

/// Builds the shared environment now, so that a child process forked later finds it
/// ready instead of initialising it after the fork.
pub fn prepare() {
    environment();
}

fn describe(e: &minijinja::Error) -> String {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!(
            "the template did more than {FUEL} steps of work and was stopped (see \"Template limits\")"
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// Whether a source is a whole template or a single expression (a template condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Template,
    Expression,
}

/// A template or expression whose `${…}` references became context variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The source with each reference replaced by a variable.
    pub source: String,
    /// The variables' values.
    pub values: Map<String, Value>,
}

impl Bound {
    /// Renders the template in `context` (plus the bound values).
    pub fn render(&self, context: Map<String, Value>) -> Result<String, TemplateError> {
        render(&self.source, &self.with_values(context))
    }

    /// Evaluates the expression's truthiness in `context` (plus the bound values).
    pub fn evaluate_truth(&self, context: Map<String, Value>) -> Result<bool, TemplateError> {
        evaluate_truth(&self.source, &self.with_values(context))
    }

    fn with_values(&self, mut context: Map<String, Value>) -> Map<String, Value> {
        for (name, value) in &self.values {
            context.insert(name.clone(), value.clone());
        }
        context
    }
}

/// Replaces every `${…}` in `source` by a context variable holding its value (looked up in
/// `scope`), so that no value can become template code:
///
/// - in text, `${a}` prints the value (a string as it is, anything else as compact JSON);
/// - inside `{{ }}` or `{% %}`, `${a}` is the value itself (`{{ ${Get.count} + 1 }}`);
/// - inside a string literal there, the literal is split around the value's text
///   (`"id=${a}"` becomes `("id=" ~ value)`).
///
/// `$${` stays a literal `${`.
pub fn bind(source: &str, kind: SourceKind, scope: &dyn Scope) -> Result<Bound, RefError> {
    let mut binder = Binder {
        scope,
        src: source,
        out: String::with_capacity(source.len()),
        values: Map::new(),
    };
    match kind {
        SourceKind::Template => binder.text(0)?,
        SourceKind::Expression => {
            binder.code(0, None)?;
        }
    }
    Ok(Bound {
        source: binder.out,
        values: binder.values,
    })
}

struct Binder<'a> {
    scope: &'a dyn Scope,
    src: &'a str,
    out: String,
    values: Map<String, Value>,
}

impl Binder<'_> {
    fn at(&self, i: usize, pattern: &str) -> bool {
        self.src.as_bytes()[i..].starts_with(pattern.as_bytes())
    }

    /// Parses the `${…}` at `i`: the reference and the index after its `}`.
    fn reference_at(&self, i: usize) -> Result<(Reference, usize), RefError> {
        let after = &self.src[i + 2..];
        let end = after.find('}').ok_or_else(|| {
            RefError::Syntax(format!(
                "unclosed reference \"${{{}\"",
                after.chars().take(30).collect::<String>()
            ))
        })?;
        let reference = reference::parse_reference(&after[..end])?;
        Ok((reference, i + 2 + end + 1))
    }

    /// Resolves a reference into a new variable; `as_text` stores its text form.
    fn bind_value(&mut self, reference: &Reference, as_text: bool) -> Result<String, RefError> {
        let value = self.scope.lookup(reference).map_err(|e| match e {
            // Not a value to retry with secrets: templates never see them.
            RefError::Withheld { reference, name } => RefError::Other {
                reference,
                message: format!(
                    "encrypted configuration variable \"{name}\" cannot be used in a template (templates never see encrypted values): pass it in a step's parameters instead"
                ),
            },
            other => other,
        })?;
        let value = match value {
            Value::String(_) => value,
            other if as_text => Value::String(other.to_string()),
            other => other,
        };
        let name = format!("{BOUND_PREFIX}{}", self.values.len());
        self.values.insert(name.clone(), value);
        Ok(name)
    }

    /// Template text from `i` to the end.
    fn text(&mut self, mut i: usize) -> Result<(), RefError> {
        let len = self.src.len();
        let mut literal = i;
        while i < len {
            if self.at(i, "$${") {
                self.out.push_str(&self.src[literal..i]);
                self.out.push_str("${");
                i += 3;
                literal = i;
            } else if self.at(i, "${") {
                self.out.push_str(&self.src[literal..i]);
                let (reference, next) = self.reference_at(i)?;
                let name = self.bind_value(&reference, true)?;
                self.out.push_str(&format!("{{{{ {name} }}}}"));
                i = next;
                literal = i;
            } else if self.at(i, "{#") {
                // A comment is copied as it is.
                i = self.src[i + 2..].find("#}").map_or(len, |e| i + 2 + e + 2);
            } else if self.at(i, "{{") || self.at(i, "{%") {
                self.out.push_str(&self.src[literal..i]);
                if let Some(body) = self.raw_tag_end(i, "raw") {
                    self.out.push_str(&self.src[i..body]);
                    i = self.raw_body(body)?;
                } else {
                    let closer = if self.at(i, "{{") { "}}" } else { "%}" };
                    self.out.push_str(&self.src[i..i + 2]);
                    i = self.code(i + 2, Some(closer))?;
                }
                literal = i;
            } else {
                i += 1;
            }
        }
        self.out.push_str(&self.src[literal..]);
        Ok(())
    }

    /// If a `{% <name> %}` tag (with optional whitespace control) starts at `i`, the
    /// index after it.
    fn raw_tag_end(&self, i: usize, name: &str) -> Option<usize> {
        let rest = self.src[i..].strip_prefix("{%")?;
        let rest = rest.strip_prefix(['-', '+']).unwrap_or(rest).trim_start();
        let rest = rest.strip_prefix(name)?.trim_start();
        let rest = rest.strip_prefix(['-', '+']).unwrap_or(rest);
        let rest = rest.strip_prefix("%}")?;
        Some(self.src.len() - rest.len())
    }

    /// The body of a `{% raw %}` block from `i`: text Jinja does not interpret, so a
    /// reference closes the block around its value. Returns the index after `endraw`.
    fn raw_body(&mut self, mut i: usize) -> Result<usize, RefError> {
        let len = self.src.len();
        let mut literal = i;
        while i < len {
            if let Some(end) = self
                .at(i, "{%")
                .then(|| self.raw_tag_end(i, "endraw"))
                .flatten()
            {
                self.out.push_str(&self.src[literal..end]);
                return Ok(end);
            }
            if self.at(i, "$${") {
                self.out.push_str(&self.src[literal..i]);
                self.out.push_str("${");
                i += 3;
                literal = i;
            } else if self.at(i, "${") {
                self.out.push_str(&self.src[literal..i]);
                let (reference, next) = self.reference_at(i)?;
                let name = self.bind_value(&reference, true)?;
                self.out
                    .push_str(&format!("{{% endraw %}}{{{{ {name} }}}}{{% raw %}}"));
                i = next;
                literal = i;
            } else {
                i += 1;
            }
        }
        self.out.push_str(&self.src[literal..]);
        Ok(len)
    }

    /// Code inside `{{ }}` / `{% %}` (or a whole expression when `closer` is `None`) from
    /// `i`; returns the index after the closer.
    fn code(&mut self, mut i: usize, closer: Option<&str>) -> Result<usize, RefError> {
        let len = self.src.len();
        let mut literal = i;
        while i < len {
            if closer.is_some_and(|c| self.at(i, c)) {
                self.out.push_str(&self.src[literal..i + 2]);
                return Ok(i + 2);
            }
            let byte = self.src.as_bytes()[i];
            if byte == b'"' || byte == b'\'' {
                self.out.push_str(&self.src[literal..i]);
                i = self.string_literal(i)?;
                literal = i;
            } else if self.at(i, "$${") {
                self.out.push_str(&self.src[literal..i]);
                self.out.push_str("${");
                i += 3;
                literal = i;
            } else if self.at(i, "${") {
                self.out.push_str(&self.src[literal..i]);
                let (reference, next) = self.reference_at(i)?;
                let name = self.bind_value(&reference, false)?;
                self.out.push_str(&format!(" {name} "));
                i = next;
                literal = i;
            } else {
                i += 1;
            }
        }
        self.out.push_str(&self.src[literal..]);
        Ok(len)
    }

    /// A string literal starting at the quote at `start`; returns the index after it.
    fn string_literal(&mut self, start: usize) -> Result<usize, RefError> {
        let bytes = self.src.as_bytes();
        let quote = bytes[start];
        let mut pieces: Vec<String> = Vec::new();
        let mut current = String::new();
        let mut has_reference = false;
        let mut i = start + 1;
        let mut literal = i;
        let mut closed = false;
        while i < bytes.len() {
            let byte = bytes[i];
            if byte == b'\\' {
                i = (i + 2).min(bytes.len());
            } else if byte == quote {
                closed = true;
                break;
            } else if self.at(i, "$${") {
                current.push_str(&self.src[literal..i]);
                current.push_str("${");
                i += 3;
                literal = i;
            } else if self.at(i, "${") {
                current.push_str(&self.src[literal..i]);
                let (reference, next) = self.reference_at(i)?;
                pieces.push(std::mem::take(&mut current));
                pieces.push(self.bind_value(&reference, true)?);
                has_reference = true;
                i = next;
                literal = i;
            } else {
                i += 1;
            }
        }
        current.push_str(&self.src[literal..i.min(bytes.len())]);
        let q = quote as char;
        if !closed {
            // Unterminated: copy it as it is and let Jinja report the syntax error.
            self.out.push(q);
            self.out.push_str(&current);
            return Ok(bytes.len());
        }
        if has_reference {
            pieces.push(current);
            self.out.push('(');
            for (k, piece) in pieces.iter().enumerate() {
                if k > 0 {
                    self.out.push_str(" ~ ");
                }
                if k % 2 == 0 {
                    self.out.push(q);
                    self.out.push_str(piece);
                    self.out.push(q);
                } else {
                    self.out.push_str(piece);
                }
            }
            self.out.push(')');
        } else {
            self.out.push(q);
            self.out.push_str(&current);
            self.out.push(q);
        }
        Ok(i + 1)
    }
}

/// A scope where every reference is `null`: binds a source only to check its syntax.
struct PlaceholderScope;

impl Scope for PlaceholderScope {
    fn lookup(&self, _reference: &Reference) -> Result<Value, RefError> {
        Ok(Value::Null)
    }
}

/// Runs a minijinja call, turning a panic inside the engine into an error: its lexer
/// panics on some inputs (the expression `}}{{`, found by the fuzz run in the suite), and
/// a document must never take a worker or the API down.
fn guarded<T>(call: impl FnOnce() -> Result<T, TemplateError>) -> Result<T, TemplateError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|_| {
        Err(TemplateError(
            "the template engine cannot read this template (check its {{ }} and {% %} delimiters)"
                .into(),
        ))
    })
}

/// Checks that a template compiles (its references included).
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    let bound = bind(template, SourceKind::Template, &PlaceholderScope)
        .map_err(|e| TemplateError(e.to_string()))?;
    guarded(|| {
        environment()
            .template_from_str(&mutable::wrap_literals(&bound.source, false))
            .map(|_| ())
            .map_err(|e| TemplateError(describe(&e)))
    })
}

/// Checks that an expression compiles (its references included).
pub fn check_expression(expression: &str) -> Result<(), TemplateError> {
    let bound = bind(expression, SourceKind::Expression, &PlaceholderScope)
        .map_err(|e| TemplateError(e.to_string()))?;
    guarded(|| {
        environment()
            .compile_expression(&mutable::wrap_literals(&bound.source, true))
            .map(|_| ())
            .map_err(|e| TemplateError(describe(&e)))
    })
}

/// Collects a rendering, refusing to grow past [`MAX_OUTPUT_BYTES`].
struct BoundedOutput {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders a template (without `${…}` references: see [`bind`]) in a JSON context.
pub fn render(template: &str, context: &Map<String, Value>) -> Result<String, TemplateError> {
    guarded(|| render_unguarded(template, context))
}

fn render_unguarded(template: &str, context: &Map<String, Value>) -> Result<String, TemplateError> {
    let env = environment();
    let source = mutable::wrap_literals(template, false);
    let compiled = env
        .template_from_str(&source)
        .map_err(|e| TemplateError(describe(&e)))?;
    let mut output = BoundedOutput {
        bytes: Vec::new(),
        overflowed: false,
    };
    let rendered =
        compiled.render_captured_to(minijinja::Value::from_serialize(context), &mut output);
    if output.overflowed {
        return Err(TemplateError(format!(
            "the rendering is larger than {MAX_OUTPUT_BYTES} bytes (see \"Template limits\")"
        )));
    }
    rendered.map_err(|e| TemplateError(describe(&e)))?;
    String::from_utf8(output.bytes).map_err(|e| TemplateError(e.to_string()))
}

/// Evaluates an expression to its truthiness (Jinja2 rules: empty and zero are false).
pub fn evaluate_truth(
    expression: &str,
    context: &Map<String, Value>,
) -> Result<bool, TemplateError> {
    guarded(|| {
        let source = mutable::wrap_literals(expression, true);
        let compiled = environment()
            .compile_expression(&source)
            .map_err(|e| TemplateError(describe(&e)))?;
        compiled
            .eval(minijinja::Value::from_serialize(context))
            .map(|v| v.is_true())
            .map_err(|e| TemplateError(describe(&e)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::RunScope;
    use serde_json::json;

    fn ctx() -> Map<String, Value> {
        json!({"input": {"devices": [{"name": "a"}, {"name": "b"}]}, "Check": {"count": 2, "found": true}})
            .as_object()
            .unwrap()
            .clone()
    }

    fn scope_with(name: Value) -> RunScope {
        let mut scope = RunScope::default();
        scope
            .steps
            .insert("Fetch".into(), json!({"name": name, "count": 5}));
        scope
    }

    fn render_bound(template: &str, scope: &RunScope) -> String {
        bind(template, SourceKind::Template, scope)
            .unwrap()
            .render(scope.template_context(&[]))
            .unwrap()
    }

    #[test]
    fn renders_the_spec_example() {
        let out = render(
            "{{ input.devices | map(attribute='name') | list | tojson }}",
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            json!(["a", "b"])
        );
    }

    #[test]
    fn python_methods_work() {
        let out = render(
            "{% for k, v in Check.items() %}{{ k }}={{ v }};{% endfor %}",
            &ctx(),
        )
        .unwrap();
        assert_eq!(out, "count=2;found=True;");
    }

    #[test]
    fn expressions_evaluate_to_truth() {
        assert!(evaluate_truth("Check.count > 0 and Check.found", &ctx()).unwrap());
        assert!(!evaluate_truth("Check.count > 5", &ctx()).unwrap());
        assert!(!evaluate_truth("[]", &ctx()).unwrap());
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(check_template("{{ unclosed").is_err());
        assert!(check_expression("a >").is_err());
        assert!(check_expression("a > 1").is_ok());
        assert!(check_template("x ${Fetch.name} {{ ${Fetch.count} + 1 }}").is_ok());
        assert!(check_template("{{ ${Fetch.count} + }}").is_err());
    }

    #[test]
    fn a_reference_holding_template_code_prints_as_text() {
        let scope = scope_with(json!("{{ 7*7 }}"));
        assert_eq!(render_bound("${Fetch.name}", &scope), "{{ 7*7 }}");
        assert_eq!(
            render_bound("Hello ${Fetch.name} {% if true %}x{% endif %}", &scope),
            "Hello {{ 7*7 }} x"
        );
        let scope = scope_with(json!("{% for i in range(3) %}{{ i }}{% endfor %}"));
        assert_eq!(
            render_bound("<${Fetch.name}>", &scope),
            "<{% for i in range(3) %}{{ i }}{% endfor %}>"
        );
    }

    #[test]
    fn references_inside_blocks_and_strings_are_values() {
        let scope = scope_with(json!("a\"b' ~ config ~ '"));
        assert_eq!(render_bound("{{ ${Fetch.count} + 1 }}", &scope), "6");
        assert_eq!(
            render_bound("{{ \"n=${Fetch.name}!\" | length }}", &scope),
            (3 + "a\"b' ~ config ~ '".len()).to_string()
        );
        assert_eq!(
            render_bound("{% set x = 'v:${Fetch.name}' %}{{ x }}", &scope),
            "v:a\"b' ~ config ~ '"
        );
        assert_eq!(
            render_bound("{% if ${Fetch.count} > 2 %}big{% endif %}", &scope),
            "big"
        );
        // Non-string values print as compact JSON in text.
        assert_eq!(
            render_bound("[${Fetch}]", &scope),
            "[{\"name\":\"a\\\"b' ~ config ~ '\",\"count\":5}]"
        );
    }

    #[test]
    fn escapes_comments_and_raw_blocks() {
        let scope = scope_with(json!("{{ 1 }}"));
        assert_eq!(render_bound("$${Fetch.name}", &scope), "${Fetch.name}");
        assert_eq!(render_bound("a{# ${Fetch.name} #}b", &scope), "ab");
        assert_eq!(
            render_bound("{% raw %}{{ x }} ${Fetch.name}{% endraw %}", &scope),
            "{{ x }} {{ 1 }}"
        );
    }

    #[test]
    fn expressions_bind_values() {
        let scope = scope_with(json!("x"));
        let bound = bind(
            "${Fetch.count} > 2 and ${Fetch.name} == 'x' and ${Fetch.missing_is_error} is none",
            SourceKind::Expression,
            &scope,
        );
        assert!(bound.is_err(), "a missing key is an error naming it");
        let bound = bind(
            "${Fetch.count} > 2 and ${Fetch.name} == 'x'",
            SourceKind::Expression,
            &scope,
        )
        .unwrap();
        assert!(bound.evaluate_truth(Map::new()).unwrap());
        let scope = scope_with(json!("x' or 'a' == 'a"));
        let bound = bind("${Fetch.name} == 'y'", SourceKind::Expression, &scope).unwrap();
        assert!(!bound.evaluate_truth(Map::new()).unwrap());
    }

    #[test]
    fn an_engine_panic_is_an_error() {
        let err = check_expression("}}{{").unwrap_err();
        assert!(err.0.contains("cannot read this template"), "{err}");
        assert!(evaluate_truth("}}{{", &Map::new()).is_err());
    }

    #[test]
    fn nested_loops_run_out_of_fuel() {
        let err = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            &Map::new(),
        )
        .unwrap_err();
        assert!(err.0.contains("steps of work"), "{err}");
    }

    #[test]
    fn output_is_bounded() {
        let err = render(
            "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            &Map::new(),
        )
        .unwrap_err();
        assert!(err.0.contains("larger than"), "{err}");
    }
}
