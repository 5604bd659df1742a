//! Conditions (SPEC §2, PowerFlow's Condition operator). Exactly one kind per object,
//! plus an optional `label`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `when` condition. Exactly one of `equal`, `numeric`, `template`, `and`, `or`, `not`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equal: Option<Equal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<Numeric>,
    /// A Jinja2 expression; `${…}` references are substituted as JSON literals first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub or: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<Condition>>,
}

/// `value` equals `to` (JSON equality; numbers compare by value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Equal {
    pub value: Value,
    pub to: Value,
}

/// `value` is a number strictly between the given bounds (either optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Numeric {
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
}

/// A borrowed view of the one kind a condition holds.
#[derive(Debug, Clone, Copy)]
pub enum ConditionKind<'a> {
    Equal(&'a Equal),
    Numeric(&'a Numeric),
    Template(&'a str),
    And(&'a [Condition]),
    Or(&'a [Condition]),
    Not(&'a Condition),
}

impl Condition {
    /// The kinds present, in a fixed order; a valid condition has exactly one.
    pub fn kinds(&self) -> Vec<ConditionKind<'_>> {
        let mut kinds = Vec::new();
        if let Some(c) = &self.equal {
            kinds.push(ConditionKind::Equal(c));
        }
        if let Some(c) = &self.numeric {
            kinds.push(ConditionKind::Numeric(c));
        }
        if let Some(c) = &self.template {
            kinds.push(ConditionKind::Template(c));
        }
        if let Some(c) = &self.and {
            kinds.push(ConditionKind::And(c));
        }
        if let Some(c) = &self.or {
            kinds.push(ConditionKind::Or(c));
        }
        if let Some(c) = &self.not {
            kinds.push(ConditionKind::Not(c));
        }
        kinds
    }

    /// Whether a Jinja2 template condition appears anywhere in this condition (such a
    /// condition sees every predecessor's output).
    pub fn uses_template(&self) -> bool {
        self.template_contains("")
    }

    /// Whether a Jinja2 template condition anywhere in this condition contains `text`
    /// (templates see `config` whole, so one that names it needs the secrets up front).
    pub fn template_contains(&self, text: &str) -> bool {
        self.template.as_deref().is_some_and(|t| t.contains(text))
            || self
                .and
                .iter()
                .chain(&self.or)
                .flatten()
                .any(|c| c.template_contains(text))
            || self
                .not
                .as_deref()
                .is_some_and(|c| c.template_contains(text))
    }

    /// The single kind, or `None` when the condition is malformed (validation reports it).
    pub fn kind(&self) -> Option<ConditionKind<'_>> {
        let kinds = self.kinds();
        if kinds.len() == 1 {
            Some(kinds[0])
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_template_conditions_at_any_depth() {
        let nested: Condition = serde_json::from_value(json!({"or": [
            {"equal": {"value": "template", "to": "template"}},
            {"not": {"and": [{"template": "a > 1"}]}}
        ]}))
        .unwrap();
        assert!(nested.uses_template());
        let plain: Condition =
            serde_json::from_value(json!({"equal": {"value": "\"template\"", "to": 1}})).unwrap();
        assert!(
            !plain.uses_template(),
            "a value that mentions the word is not a template"
        );
    }
}
