//! Evaluation of `when` conditions.

use serde_json::{Map, Value};

use crate::model::{Condition, ConditionKind};
use crate::reference::{resolve_value, RefError, Scope};
use crate::template;

/// Why a condition could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ConditionError {
    pub message: String,
    /// An encrypted configuration value it references was withheld from the scope:
    /// evaluating again with secrets may succeed.
    pub withheld: bool,
}

impl ConditionError {
    fn new(message: String) -> Self {
        Self {
            message,
            withheld: false,
        }
    }

    /// A template condition failed to compile or evaluate.
    pub fn template(message: String) -> Self {
        Self::new(format!("template: {message}"))
    }

    fn labelled(self, label: Option<&str>) -> Self {
        match label {
            Some(label) => Self {
                message: format!("condition \"{label}\": {}", self.message),
                ..self
            },
            None => self,
        }
    }
}

impl From<RefError> for ConditionError {
    fn from(e: RefError) -> Self {
        Self {
            withheld: matches!(e, RefError::Withheld { .. }),
            message: e.to_string(),
        }
    }
}

/// Evaluates a condition. `template` evaluates a template condition's expression (the
/// runtime binds its references and evaluates it within the template limits).
pub fn evaluate(
    condition: &Condition,
    scope: &dyn Scope,
    template: &dyn Fn(&str) -> Result<bool, ConditionError>,
) -> Result<bool, ConditionError> {
    evaluate_kind(condition, scope, template).map_err(|e| e.labelled(condition.label.as_deref()))
}

/// Evaluates a template condition in this process: its `${…}` references become values
/// (never expression source) looked up in `scope`.
pub fn evaluate_template(
    expression: &str,
    scope: &dyn Scope,
    context: Map<String, Value>,
) -> Result<bool, ConditionError> {
    let bound = template::bind(expression, template::SourceKind::Expression, scope)?;
    bound
        .evaluate_truth(context)
        .map_err(|e| ConditionError::template(e.0))
}

fn evaluate_kind(
    condition: &Condition,
    scope: &dyn Scope,
    template: &dyn Fn(&str) -> Result<bool, ConditionError>,
) -> Result<bool, ConditionError> {
    let kind = condition.kind().ok_or_else(|| {
        ConditionError::new(
            "a condition needs exactly one of equal, numeric, template, and, or, not".into(),
        )
    })?;
    match kind {
        ConditionKind::Equal(eq) => {
            let value = resolve_value(&eq.value, scope)?;
            let to = resolve_value(&eq.to, scope)?;
            Ok(json_equal(&value, &to))
        }
        ConditionKind::Numeric(numeric) => {
            let value = resolve_value(&numeric.value, scope)?;
            let number = as_number(&value).ok_or_else(|| {
                ConditionError::new(format!("numeric: value {value} is not a number"))
            })?;
            Ok(numeric.above.is_none_or(|above| number > above)
                && numeric.below.is_none_or(|below| number < below))
        }
        ConditionKind::Template(expression) => template(expression),
        ConditionKind::And(all) => {
            for c in all {
                if !evaluate(c, scope, template)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        ConditionKind::Or(any) => {
            for c in any {
                if evaluate(c, scope, template)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        ConditionKind::Not(inner) => Ok(!evaluate(inner, scope, template)?),
    }
}

/// A number, or a string that parses as one.
fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`).
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::RunScope;
    use serde_json::json;

    fn scope() -> RunScope {
        let mut scope = RunScope::default();
        scope.steps.insert(
            "Check".into(),
            json!({"count": 3, "found": true, "name": "x", "n": "7"}),
        );
        scope
    }

    fn eval(condition: Value) -> Result<bool, String> {
        let condition: Condition = serde_json::from_value(condition).unwrap();
        let scope = scope();
        evaluate(&condition, &scope, &|expression| {
            evaluate_template(
                expression,
                &scope,
                scope.template_context(&["Check".to_string()]),
            )
        })
        .map_err(|e| e.message)
    }

    #[test]
    fn equal_compares_json_values() {
        assert!(eval(json!({"equal": {"value": "${Check.found}", "to": true}})).unwrap());
        assert!(eval(json!({"equal": {"value": "${Check.count}", "to": 3.0}})).unwrap());
        assert!(!eval(json!({"equal": {"value": "${Check.name}", "to": "y"}})).unwrap());
    }

    #[test]
    fn numeric_bounds_are_exclusive_and_optional() {
        assert!(eval(json!({"numeric": {"value": "${Check.count}", "above": 0}})).unwrap());
        assert!(!eval(json!({"numeric": {"value": "${Check.count}", "above": 3}})).unwrap());
        assert!(
            eval(json!({"numeric": {"value": "${Check.count}", "above": 2, "below": 4}})).unwrap()
        );
        assert!(!eval(json!({"numeric": {"value": "${Check.count}", "below": 3}})).unwrap());
        assert!(eval(json!({"numeric": {"value": "${Check.n}", "above": 6}})).unwrap());
        let err =
            eval(json!({"numeric": {"value": "${Check.name}", "above": 0}, "label": "has items"}))
                .unwrap_err();
        assert_eq!(
            err,
            "condition \"has items\": numeric: value \"x\" is not a number"
        );
    }

    #[test]
    fn template_conditions_see_steps_and_references() {
        assert!(eval(json!({"template": "Check.count > 0 and Check.found"})).unwrap());
        assert!(eval(json!({"template": "input.count == 3"})).unwrap());
        assert!(eval(json!({"template": "${Check.count} > 2 and ${Check.name} == 'x'"})).unwrap());
        assert!(!eval(json!({"template": "${Check.count} > 5"})).unwrap());
    }

    #[test]
    fn boolean_combinators() {
        let yes = json!({"equal": {"value": 1, "to": 1}});
        let no = json!({"equal": {"value": 1, "to": 2}});
        assert!(eval(json!({"and": [yes, yes]})).unwrap());
        assert!(!eval(json!({"and": [yes, no]})).unwrap());
        assert!(eval(json!({"or": [no, yes]})).unwrap());
        assert!(!eval(json!({"or": []})).unwrap());
        assert!(eval(json!({"and": []})).unwrap());
        assert!(eval(json!({"not": no})).unwrap());
    }

    #[test]
    fn malformed_conditions_fail() {
        assert!(eval(json!({})).is_err());
        assert!(eval(
            json!({"equal": {"value": 1, "to": 1}, "not": {"equal": {"value": 1, "to": 1}}})
        )
        .is_err());
    }
}
