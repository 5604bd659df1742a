//! Jinja2 templates through `minijinja` (with Python-compatible methods such as
//! `dict.items()`), used by `transform` and template conditions.

use std::sync::OnceLock;

use minijinja::Environment;
use serde_json::{Map, Value};

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
        env
    })
}

fn describe(e: &minijinja::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

/// Checks that a template compiles.
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    environment()
        .template_from_str(template)
        .map(|_| ())
        .map_err(|e| TemplateError(describe(&e)))
}

/// Checks that an expression compiles.
pub fn check_expression(expression: &str) -> Result<(), TemplateError> {
    environment()
        .compile_expression(expression)
        .map(|_| ())
        .map_err(|e| TemplateError(describe(&e)))
}

/// Renders a template in a JSON context.
pub fn render(template: &str, context: &Map<String, Value>) -> Result<String, TemplateError> {
    let env = environment();
    let compiled = env
        .template_from_str(template)
        .map_err(|e| TemplateError(describe(&e)))?;
    compiled
        .render(minijinja::Value::from_serialize(context))
        .map_err(|e| TemplateError(describe(&e)))
}

/// Evaluates an expression to its truthiness (Jinja2 rules: empty and zero are false).
pub fn evaluate_truth(
    expression: &str,
    context: &Map<String, Value>,
) -> Result<bool, TemplateError> {
    let env = environment();
    let compiled = env
        .compile_expression(expression)
        .map_err(|e| TemplateError(describe(&e)))?;
    compiled
        .eval(minijinja::Value::from_serialize(context))
        .map(|v| v.is_true())
        .map_err(|e| TemplateError(describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Map<String, Value> {
        json!({"input": {"devices": [{"name": "a"}, {"name": "b"}]}, "Check": {"count": 2, "found": true}})
            .as_object()
            .unwrap()
            .clone()
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
    }
}
