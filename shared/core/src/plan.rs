//! Definitions as code: what applying a directory of documents to a store would do.
//!
//! [`plan`] is a pure function from the stored definitions and the desired ones to an
//! ordered list of changes (create, change with a field diff, unchanged, delete), and
//! [`check`] finds what would be broken after applying it (a schedule or a
//! `trigger_application` naming an application that would not exist, an encrypted
//! variable with no value to keep). `sluice plan`, `sluice apply` and `sluice export`
//! share it, embedded and through the API alike.
//!
//! Encrypted configuration values are compared by presence only: both sides are compared
//! in their redacted form (every encrypted value `null`), so no secret is ever read,
//! compared or shown.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{Application, Configuration, Schedule};
use crate::validate::check_run_params;
use crate::Issue;

/// The kinds of definition, in the order their writes must happen so that references
/// resolve (applications name configurations, schedules name applications).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// A configuration (`data`).
    Configuration,
    /// An application (`steps`).
    Application,
    /// A schedule (`schedule`).
    Schedule,
}

impl DocumentKind {
    /// `configuration`, `application`, `schedule`.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Configuration => "configuration",
            DocumentKind::Application => "application",
            DocumentKind::Schedule => "schedule",
        }
    }

    /// The directory an export writes this kind to.
    pub fn directory(self) -> &'static str {
        match self {
            DocumentKind::Configuration => "configurations",
            DocumentKind::Application => "applications",
            DocumentKind::Schedule => "schedules",
        }
    }
}

/// One definition document of any kind.
// Definitions are few and rarely moved; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    /// A configuration; stored ones are redacted (encrypted values `null`).
    Configuration(Configuration),
    /// An application.
    Application(Application),
    /// A schedule.
    Schedule(Schedule),
}

impl Definition {
    /// The document's kind.
    pub fn kind(&self) -> DocumentKind {
        match self {
            Definition::Configuration(_) => DocumentKind::Configuration,
            Definition::Application(_) => DocumentKind::Application,
            Definition::Schedule(_) => DocumentKind::Schedule,
        }
    }

    /// The identifier: a configuration's or application's name, a schedule's entry id.
    pub fn name(&self) -> &str {
        match self {
            Definition::Configuration(c) => &c.name,
            Definition::Application(a) => &a.name,
            Definition::Schedule(s) => &s.entry_id,
        }
    }

    /// The document as it is compared and shown: configurations redacted, so encrypted
    /// values count by presence only and never appear in a diff.
    pub fn comparable(&self) -> Value {
        match self {
            Definition::Configuration(c) => serde_json::to_value(c.redacted()),
            Definition::Application(a) => serde_json::to_value(a),
            Definition::Schedule(s) => serde_json::to_value(s),
        }
        .unwrap_or(Value::Null)
    }
}

/// A set of definitions keyed by kind and identifier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DefinitionSet {
    definitions: BTreeMap<(DocumentKind, String), Definition>,
}

impl DefinitionSet {
    /// Adds a definition; returns the one it replaced with the same kind and identifier.
    pub fn insert(&mut self, definition: Definition) -> Option<Definition> {
        self.definitions.insert(
            (definition.kind(), definition.name().to_string()),
            definition,
        )
    }

    /// The definition of this kind and identifier.
    pub fn get(&self, kind: DocumentKind, name: &str) -> Option<&Definition> {
        self.definitions.get(&(kind, name.to_string()))
    }

    /// Whether the set holds a definition of this kind and identifier.
    pub fn contains(&self, kind: DocumentKind, name: &str) -> bool {
        self.get(kind, name).is_some()
    }

    /// Every definition, configurations first, then applications, then schedules, each
    /// kind in identifier order.
    pub fn iter(&self) -> impl Iterator<Item = &Definition> {
        self.definitions.values()
    }

    /// How many definitions the set holds.
    pub fn len(&self) -> usize {
        self.definitions.len()
    }

    /// Whether the set holds none.
    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }
}

impl FromIterator<Definition> for DefinitionSet {
    fn from_iter<I: IntoIterator<Item = Definition>>(iter: I) -> Self {
        let mut set = DefinitionSet::default();
        for definition in iter {
            set.insert(definition);
        }
        set
    }
}

/// One field that differs: its path in the document and its value before and after
/// (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// `steps[1].parameters.url`; empty for the whole document.
    pub path: String,
    /// The stored value.
    pub before: Option<Value>,
    /// The desired value.
    pub after: Option<Value>,
}

/// What applying does to one definition.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Not stored yet.
    Create,
    /// The fields that differ, in document order.
    Change(Vec<FieldChange>),
    /// Stored exactly so: nothing is written.
    Unchanged,
    /// Stored but absent from the desired set (only with `prune`).
    Delete,
}

/// One definition's entry in a plan, with the documents to write and to restore.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    /// The definition's kind.
    pub kind: DocumentKind,
    /// The definition's identifier.
    pub name: String,
    /// What applying does to it.
    pub action: Action,
    /// The stored document (`None` for a create): what a failed apply writes back.
    pub previous: Option<Definition>,
    /// The document to write (`None` for a delete).
    pub desired: Option<Definition>,
}

/// What applying the desired set would do, in the order it must be done: creates and
/// changes of configurations, applications, schedules, then deletes in the reverse kind
/// order (nothing is deleted while something still to be written names it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Every desired definition (and, with `prune`, every deleted one), in execution order.
    pub changes: Vec<PlannedChange>,
}

/// How many definitions each action concerns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCounts {
    /// Definitions to create.
    pub create: usize,
    /// Definitions to change.
    pub change: usize,
    /// Definitions to delete.
    pub delete: usize,
    /// Definitions left as they are.
    pub unchanged: usize,
}

impl Plan {
    /// Whether applying would write anything.
    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|c| !matches!(c.action, Action::Unchanged))
    }

    /// The changes that write (everything but the unchanged), in execution order.
    pub fn writes(&self) -> impl Iterator<Item = &PlannedChange> {
        self.changes
            .iter()
            .filter(|c| !matches!(c.action, Action::Unchanged))
    }

    /// How many definitions each action concerns.
    pub fn counts(&self) -> PlanCounts {
        let mut counts = PlanCounts::default();
        for change in &self.changes {
            match change.action {
                Action::Create => counts.create += 1,
                Action::Change(_) => counts.change += 1,
                Action::Delete => counts.delete += 1,
                Action::Unchanged => counts.unchanged += 1,
            }
        }
        counts
    }
}

/// The plan that turns `stored` into `desired`: every desired definition is created,
/// changed or left unchanged; with `prune`, every stored definition absent from `desired`
/// is deleted (without it, such definitions are left alone and not listed).
pub fn plan(stored: &DefinitionSet, desired: &DefinitionSet, prune: bool) -> Plan {
    let mut changes = Vec::new();
    for definition in desired.iter() {
        let previous = stored.get(definition.kind(), definition.name());
        let action = match previous {
            None => Action::Create,
            Some(previous) => {
                let mut fields = Vec::new();
                diff(
                    &previous.comparable(),
                    &definition.comparable(),
                    String::new(),
                    &mut fields,
                );
                if fields.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Change(fields)
                }
            }
        };
        changes.push(PlannedChange {
            kind: definition.kind(),
            name: definition.name().to_string(),
            action,
            previous: previous.cloned(),
            desired: Some(definition.clone()),
        });
    }
    if prune {
        let mut deletes: Vec<&Definition> = stored
            .iter()
            .filter(|s| !desired.contains(s.kind(), s.name()))
            .collect();
        // Schedules before the applications they name, applications before configurations.
        deletes.sort_by_key(|d| std::cmp::Reverse(d.kind()));
        changes.extend(deletes.into_iter().map(|d| PlannedChange {
            kind: d.kind(),
            name: d.name().to_string(),
            action: Action::Delete,
            previous: Some(d.clone()),
            desired: None,
        }));
    }
    Plan { changes }
}

/// A problem [`check`] found, about one desired definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The kind of the desired definition the problem is about.
    pub kind: DocumentKind,
    /// Its identifier.
    pub name: String,
    /// The field (a path into the document) and what is wrong.
    pub issue: Issue,
}

/// What would be broken once `desired` is applied over `stored` (with `prune`, the
/// stored definitions absent from it deleted), about the desired definitions: a
/// schedule, `trigger_application` step or alert naming an application that would not
/// exist, a schedule's params its application refuses, and an encrypted variable given
/// without a value (`null` keeps the stored secret) where no stored one exists. Everything else is each document's own
/// validation, done when it was read.
pub fn check(stored: &DefinitionSet, desired: &DefinitionSet, prune: bool) -> Vec<Problem> {
    // The application a name would denote after the apply.
    let application = |name: &str| {
        desired.get(DocumentKind::Application, name).or_else(|| {
            stored
                .get(DocumentKind::Application, name)
                .filter(|_| !prune)
        })
    };
    let application_exists = |name: &str| application(name).is_some();
    let mut problems = Vec::new();
    let mut problem = |definition: &Definition, path: String, message: String| {
        problems.push(Problem {
            kind: definition.kind(),
            name: definition.name().to_string(),
            issue: Issue::new(path, message),
        })
    };
    for definition in desired.iter() {
        match definition {
            Definition::Schedule(schedule) => {
                if let Some(Definition::Application(app)) = application(&schedule.application_id) {
                    // Its params against the application it will run, as a start checks
                    // them; a required variable without a value is a param to give.
                    if let Err(invalid) = check_run_params(app, &schedule.params) {
                        for issue in invalid.issues {
                            let path = match issue.path.strip_prefix("vars.") {
                                Some(name) => format!("params.{name}"),
                                None => issue.path,
                            };
                            problem(definition, path, issue.message);
                        }
                    }
                } else {
                    problem(
                        definition,
                        "application_id".to_string(),
                        format!(
                            "application \"{}\" would not exist after the apply",
                            schedule.application_id
                        ),
                    );
                }
            }
            Definition::Application(app) => {
                for (field, target) in app.started_applications() {
                    if !application_exists(target) {
                        problem(
                            definition,
                            field,
                            format!("application \"{target}\" would not exist after the apply"),
                        );
                    }
                }
            }
            Definition::Configuration(config) => {
                let stored_encrypted =
                    |name: &str| match stored.get(DocumentKind::Configuration, &config.name) {
                        Some(Definition::Configuration(stored)) => stored
                            .variable(name)
                            .is_some_and(|variable| variable.encrypted),
                        _ => false,
                    };
                for (i, variable) in config.data.iter().enumerate() {
                    if variable.encrypted
                        && variable.value.is_null()
                        && !stored_encrypted(&variable.name)
                    {
                        problem(
                            definition,
                            format!("data[{i}].value"),
                            format!(
                                "encrypted variable \"{}\" has no stored value to keep; give its value",
                                variable.name
                            ),
                        );
                    }
                }
            }
        }
    }
    problems
}

/// Appends to `out` the fields where `before` and `after` differ, recursing into objects
/// and arrays (`steps[1].parameters.url`).
fn diff(before: &Value, after: &Value, path: String, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, b_value) in b {
                let child = join(&path, key);
                match a.get(key) {
                    Some(a_value) => diff(b_value, a_value, child, out),
                    None => out.push(FieldChange {
                        path: child,
                        before: Some(b_value.clone()),
                        after: None,
                    }),
                }
            }
            for (key, a_value) in a {
                if !b.contains_key(key) {
                    out.push(FieldChange {
                        path: join(&path, key),
                        before: None,
                        after: Some(a_value.clone()),
                    });
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for i in 0..b.len().max(a.len()) {
                let child = format!("{path}[{i}]");
                match (b.get(i), a.get(i)) {
                    (Some(b), Some(a)) => diff(b, a, child, out),
                    (b, a) => out.push(FieldChange {
                        path: child,
                        before: b.cloned(),
                        after: a.cloned(),
                    }),
                }
            }
        }
        (b, a) if b == a => {}
        (b, a) => out.push(FieldChange {
            path,
            before: Some(b.clone()),
            after: Some(a.clone()),
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(name: &str, value: Value) -> Definition {
        Definition::Application(
            serde_json::from_value(json!({"name": name, "author": "t", "steps": [
                {"id": "A", "type": "echo", "parameters": {"value": value}}
            ]}))
            .unwrap(),
        )
    }

    fn trigger(name: &str, target: &str) -> Definition {
        Definition::Application(
            serde_json::from_value(json!({"name": name, "author": "t", "steps": [
                {"id": "T", "type": "trigger_application", "parameters": {"application": target}}
            ]}))
            .unwrap(),
        )
    }

    fn config(name: &str, data: Value) -> Definition {
        Definition::Configuration(
            serde_json::from_value(json!({"name": name, "data": data})).unwrap(),
        )
    }

    fn schedule(id: &str, app: &str) -> Definition {
        Definition::Schedule(
            serde_json::from_value(json!({"application_id": app, "entry_id": id,
                "schedule": {"schedule_type": "frequency", "schedule_info": {"run_every": 60}}}))
            .unwrap(),
        )
    }

    fn set(definitions: Vec<Definition>) -> DefinitionSet {
        definitions.into_iter().collect()
    }

    fn actions(plan: &Plan) -> Vec<(DocumentKind, &str, &'static str)> {
        plan.changes
            .iter()
            .map(|c| {
                let action = match c.action {
                    Action::Create => "create",
                    Action::Change(_) => "change",
                    Action::Unchanged => "unchanged",
                    Action::Delete => "delete",
                };
                (c.kind, c.name.as_str(), action)
            })
            .collect()
    }

    #[test]
    fn creates_changes_and_leaves_unchanged_in_write_order() {
        use DocumentKind::*;
        let stored = set(vec![app("same", json!(1)), app("edited", json!(1))]);
        let desired = set(vec![
            schedule("nightly", "same"),
            app("same", json!(1)),
            app("edited", json!(2)),
            config("crm", json!([{"name": "url", "value": "x"}])),
        ]);
        let plan = plan(&stored, &desired, false);
        assert_eq!(
            actions(&plan),
            vec![
                (Configuration, "crm", "create"),
                (Application, "edited", "change"),
                (Application, "same", "unchanged"),
                (Schedule, "nightly", "create"),
            ]
        );
        let Action::Change(fields) = &plan.changes[1].action else {
            panic!()
        };
        assert_eq!(
            fields,
            &vec![FieldChange {
                path: "steps[0].parameters.value".into(),
                before: Some(json!(1)),
                after: Some(json!(2)),
            }]
        );
        assert_eq!(
            plan.changes[1].previous,
            stored.get(Application, "edited").cloned()
        );
        assert!(plan.has_changes());
    }

    #[test]
    fn the_same_set_plans_no_changes() {
        let both = set(vec![app("a", json!(1)), schedule("s", "a")]);
        let plan = plan(&both, &both, true);
        assert!(!plan.has_changes());
        assert_eq!(plan.counts().unchanged, 2);
    }

    #[test]
    fn prune_deletes_what_is_absent_schedules_first_and_only_with_prune() {
        use DocumentKind::*;
        let stored = set(vec![
            config("old", json!([])),
            app("gone", json!(1)),
            schedule("gone-nightly", "gone"),
            app("kept", json!(1)),
        ]);
        let desired = set(vec![app("kept", json!(1))]);
        assert!(!plan(&stored, &desired, false).has_changes());
        let pruned = plan(&stored, &desired, true);
        assert_eq!(
            actions(&pruned),
            vec![
                (Application, "kept", "unchanged"),
                (Schedule, "gone-nightly", "delete"),
                (Application, "gone", "delete"),
                (Configuration, "old", "delete"),
            ]
        );
    }

    #[test]
    fn encrypted_values_compare_by_presence_and_never_appear_in_a_diff() {
        let stored = set(vec![config(
            "crm",
            json!([{"name": "password", "value": null, "encrypted": true}]),
        )]);
        let same = set(vec![config(
            "crm",
            json!([{"name": "password", "value": "hunter2", "encrypted": true}]),
        )]);
        assert!(!plan(&stored, &same, false).has_changes());
        let added = set(vec![config(
            "crm",
            json!([
                {"name": "password", "value": "hunter2", "encrypted": true},
                {"name": "token", "value": "s3cret", "encrypted": true}
            ]),
        )]);
        let plan = plan(&stored, &added, false);
        let text = format!("{plan:?}");
        let Action::Change(fields) = &plan.changes[0].action else {
            panic!()
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].path, "data[1]");
        assert!(!format!("{fields:?}").contains("s3cret"));
        // The desired document still carries the value to write.
        assert!(text.contains("s3cret"));
    }

    #[test]
    fn check_finds_missing_applications_and_secrets_without_a_value() {
        let stored = set(vec![
            app("stored-only", json!(1)),
            config(
                "crm",
                json!([{"name": "password", "value": null, "encrypted": true}]),
            ),
        ]);
        let desired = set(vec![
            schedule("nightly", "stored-only"),
            trigger("parent", "missing"),
            config(
                "crm",
                json!([
                    {"name": "password", "value": null, "encrypted": true},
                    {"name": "token", "value": null, "encrypted": true}
                ]),
            ),
        ]);
        let paths = |problems: Vec<Problem>| -> Vec<(String, String)> {
            problems
                .into_iter()
                .map(|p| (p.name, p.issue.path))
                .collect()
        };
        assert_eq!(
            paths(check(&stored, &desired, false)),
            vec![
                ("crm".to_string(), "data[1].value".to_string()),
                (
                    "parent".to_string(),
                    "steps[0].parameters.application".to_string()
                ),
            ]
        );
        let mut bad_params = desired.clone();
        let Some(Definition::Schedule(mut nightly)) =
            bad_params.get(DocumentKind::Schedule, "nightly").cloned()
        else {
            panic!()
        };
        nightly.params.insert("loglevel".into(), json!(7));
        bad_params.insert(Definition::Schedule(nightly));
        assert!(paths(check(&stored, &bad_params, false))
            .contains(&("nightly".to_string(), "params.loglevel".to_string())));
        // With prune, the stored-only application is deleted: the schedule would dangle.
        assert_eq!(
            paths(check(&stored, &desired, true)),
            vec![
                ("crm".to_string(), "data[1].value".to_string()),
                (
                    "parent".to_string(),
                    "steps[0].parameters.application".to_string()
                ),
                ("nightly".to_string(), "application_id".to_string()),
            ]
        );
    }
}
