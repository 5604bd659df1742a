//! Validation of applications and configurations, and the checks a run must pass before
//! it starts. Every problem is reported with its path (`steps[2].depends_on[0]: unknown
//! step "Ghost"`), all at once, so a user fixes a document in one pass.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use crate::json::{parse_document, Invalid, Issue};
use crate::model::{
    Application, Condition, ConditionKind, Configuration, StepSpec, VariableType,
    MAX_FRIENDLY_NAME, MAX_TIMEOUT_SECONDS,
};
use crate::operators::{self, TRIGGER_APPLICATION};
use crate::reference::{self, Reference, RootKind};
use crate::schema_check;
use crate::step::StepRegistry;
use crate::template;

/// Params with a meaning of their own in a run request (SPEC §4).
pub const RESERVED_PARAMS: [&str; 3] = ["configuration", "queue", "loglevel"];

/// Most attempts a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest first retry delay (a day; later delays are capped at a day as well).
pub const MAX_BACKOFF_SECONDS: f64 = 86_400.0;
/// Largest backoff growth factor.
pub const MAX_BACKOFF_RATE: f64 = 100.0;
/// Largest `for_each` batch size and concurrency.
pub const MAX_FOR_EACH: usize = 10_000;

/// Step ids that would shadow reference roots or template names.
const RESERVED_STEP_IDS: [&str; 5] = ["config", "vars", "run", "item", "input"];

/// What validation knows of a step type's parameters.
#[derive(Debug, Clone, Default)]
struct ParamRules {
    /// Known parameter names; `None` when the schema allows any.
    known: Option<BTreeSet<String>>,
    required: BTreeSet<String>,
    /// The whole schema: literal values are checked against it.
    schema: Value,
}

impl ParamRules {
    fn from_schema(schema: &Value) -> Self {
        let properties: BTreeSet<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
        let required = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            known: closed.then_some(properties),
            required,
            schema: schema.clone(),
        }
    }
}

/// The step types and operators an application may use, with their parameter rules.
#[derive(Debug, Clone, Default)]
pub struct StepCatalog {
    entries: BTreeMap<String, ParamRules>,
    /// The longest `timeout_seconds` the runtime can honour; `None`: the embedded
    /// maximum ([`MAX_TIMEOUT_SECONDS`]).
    max_timeout_seconds: Option<u64>,
}

impl StepCatalog {
    /// The registry's step types plus the operators.
    pub fn new(registry: &StepRegistry) -> Self {
        let mut catalog = Self::default();
        for step_type in registry.iter() {
            catalog.add(step_type.name(), &step_type.parameter_schema());
        }
        for (name, _, schema) in operators::operator_catalog() {
            catalog.add(name, &schema);
        }
        catalog
    }

    /// The same catalog where steps may take at most `seconds` (AWS:
    /// [`LAMBDA_MAX_TIMEOUT_SECONDS`](crate::model::LAMBDA_MAX_TIMEOUT_SECONDS)).
    pub fn with_max_timeout(mut self, seconds: u64) -> Self {
        self.max_timeout_seconds = Some(seconds);
        self
    }

    /// The longest step timeout this catalog's runtime honours.
    pub fn max_timeout_seconds(&self) -> u64 {
        self.max_timeout_seconds.unwrap_or(MAX_TIMEOUT_SECONDS)
    }

    /// Adds a step type by name and parameter schema.
    pub fn add(&mut self, name: &str, schema: &Value) {
        self.entries
            .insert(name.to_string(), ParamRules::from_schema(schema));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// References a step's parameters hold in fields that refuse them (a SQL `query`),
    /// as one message naming the fields; checked again before each attempt, so that an
    /// application stored before the rule cannot splice values into such a field.
    pub fn refused_references(&self, step: &StepSpec, path: &str) -> Option<String> {
        let schema = &self.entries.get(&step.step_type)?.schema;
        let properties = schema.get("properties")?.as_object()?;
        let mut problems = Vec::new();
        for (name, value) in &step.parameters {
            if let Some(field_schema) = properties.get(name) {
                let at = format!("{path}.parameters.{name}");
                problems.extend(schema_check::literal_problems(
                    schema,
                    field_schema,
                    value,
                    &at,
                ));
            }
        }
        (!problems.is_empty()).then(|| {
            problems
                .iter()
                .map(|(at, message)| format!("{at}: {message}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn names(&self) -> String {
        self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A configuration name, `^[a-z0-9][a-z0-9_-]{0,63}$`.
fn is_config_name(name: &str) -> bool {
    is_app_name(name) && !name.bytes().any(|b| b.is_ascii_uppercase())
}

/// An application id, `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$` (SPEC §2: PowerFlow has ids
/// like `CreateServiceNowCI`).
fn is_app_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_identifier(id: &str) -> bool {
    let mut chars = id.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses, normalizes and validates an application document.
pub fn parse_application(text: &str, catalog: &StepCatalog) -> Result<Application, Invalid> {
    let mut app: Application = parse_document(text)?;
    app.normalize();
    validate_application(&app, catalog)?;
    Ok(app)
}

/// Parses and validates a configuration document.
pub fn parse_configuration(text: &str) -> Result<Configuration, Invalid> {
    let config: Configuration = parse_document(text)?;
    validate_configuration(&config)?;
    Ok(config)
}

/// Checks an application; reports every problem found.
pub fn validate_application(app: &Application, catalog: &StepCatalog) -> Result<(), Invalid> {
    let mut issues = Vec::new();
    let mut issue = |path: String, message: String| issues.push(Issue::new(path, message));

    if app.name.is_empty() {
        issue(
            "name".into(),
            "required (or give a friendly_name to derive it from)".into(),
        );
    } else if !is_app_name(&app.name) {
        issue(
            "name".into(),
            format!(
                "\"{}\" must match ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$",
                app.name
            ),
        );
    }
    if let Some(friendly) = &app.friendly_name {
        let len = friendly.chars().count();
        if len > MAX_FRIENDLY_NAME {
            issue(
                "friendly_name".into(),
                format!("at most {MAX_FRIENDLY_NAME} characters (got {len})"),
            );
        }
    }
    if app.author.trim().is_empty() {
        issue("author".into(), "must not be empty".into());
    }
    if let Some(config) = &app.configuration {
        if !is_config_name(config) {
            issue(
                "configuration".into(),
                format!("\"{config}\" is not a valid configuration name"),
            );
        }
    }

    // Alerts. Their application need not exist yet (as a trigger's target): it is
    // checked when an alert starts, and deleting it is refused while it is named here.
    for (field, alert) in [
        ("on_failure", &app.on_failure),
        ("on_warning", &app.on_warning),
    ] {
        let Some(alert) = alert else { continue };
        if !is_app_name(&alert.application) {
            issue(
                format!("{field}.application"),
                format!(
                    "\"{}\" must match ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$",
                    alert.application
                ),
            );
        }
        for name in alert.params.keys() {
            if crate::alert::ALERT_PARAMS.contains(&name.as_str()) {
                issue(
                    format!("{field}.params.{name}"),
                    format!("\"{name}\" is an alert param: the failed run sets it"),
                );
            }
        }
    }

    // App variables.
    let mut var_names: HashMap<&str, usize> = HashMap::new();
    for (i, var) in app.app_variables.iter().enumerate() {
        let path = format!("app_variables[{i}]");
        if !is_identifier(&var.name) {
            issue(
                format!("{path}.name"),
                format!("\"{}\" must match ^[A-Za-z_][A-Za-z0-9_]*$", var.name),
            );
        } else if RESERVED_PARAMS.contains(&var.name.as_str()) {
            issue(
                format!("{path}.name"),
                format!("\"{}\" is a reserved run parameter", var.name),
            );
        }
        if let Some(first) = var_names.insert(&var.name, i) {
            issue(
                format!("{path}.name"),
                format!(
                    "duplicate app variable \"{}\" (also app_variables[{first}])",
                    var.name
                ),
            );
        }
        if var.var_type == VariableType::Enum && var.choices.as_ref().is_none_or(Vec::is_empty) {
            issue(
                format!("{path}.choices"),
                "an enum variable needs choices".into(),
            );
        }
        if let Some(value) = &var.value {
            if let Err(message) = check_variable_value(var.var_type, var.choices.as_deref(), value)
            {
                issue(format!("{path}.value"), message);
            }
        }
    }

    check_variable_references(app, &mut issue);

    // Steps: ids and types first, so later checks can rely on the index.
    if app.steps.is_empty() {
        issue(
            "steps".into(),
            "an application needs at least one step".into(),
        );
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in app.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        if !is_identifier(&step.id) {
            issue(
                format!("{path}.id"),
                format!("\"{}\" must match ^[A-Za-z_][A-Za-z0-9_]*$", step.id),
            );
        } else if RESERVED_STEP_IDS.contains(&step.id.as_str()) {
            issue(
                format!("{path}.id"),
                format!("\"{}\" is a reserved name", step.id),
            );
        }
        if let Some(first) = index.insert(&step.id, i) {
            issue(
                format!("{path}.id"),
                format!("duplicate step id \"{}\" (also steps[{first}])", step.id),
            );
            index.insert(&step.id, first);
        }
    }
    for (i, step) in app.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        if !catalog.contains(&step.step_type) {
            issue(
                format!("{path}.type"),
                format!(
                    "unknown step type \"{}\" (known: {})",
                    step.step_type,
                    catalog.names()
                ),
            );
        } else {
            check_parameters(step, &path, &catalog.entries[&step.step_type], &mut issue);
        }
        let mut seen = BTreeSet::new();
        for (j, dep) in step.depends_on.iter().enumerate() {
            let dep_path = format!("{path}.depends_on[{j}]");
            if dep == &step.id {
                issue(dep_path, "a step cannot depend on itself".into());
            } else if !index.contains_key(dep.as_str()) {
                issue(dep_path, format!("unknown step \"{dep}\""));
            } else if !seen.insert(dep) {
                issue(dep_path, format!("duplicate dependency \"{dep}\""));
            }
        }
        if let Some(retry) = &step.retry {
            if !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts) {
                issue(
                    format!("{path}.retry.max_attempts"),
                    format!(
                        "must be between 1 and {MAX_ATTEMPTS} (got {})",
                        retry.max_attempts
                    ),
                );
            }
            if !(0.0..=MAX_BACKOFF_SECONDS).contains(&retry.backoff_seconds) {
                issue(
                    format!("{path}.retry.backoff_seconds"),
                    format!(
                        "must be between 0 and {MAX_BACKOFF_SECONDS} (got {})",
                        shown_number(retry.backoff_seconds)
                    ),
                );
            }
            if !(1.0..=MAX_BACKOFF_RATE).contains(&retry.backoff_rate) {
                issue(
                    format!("{path}.retry.backoff_rate"),
                    format!(
                        "must be between 1 and {MAX_BACKOFF_RATE} (got {})",
                        shown_number(retry.backoff_rate)
                    ),
                );
            }
        }
        if let Some(timeout) = step.timeout_seconds {
            let max = catalog.max_timeout_seconds();
            if !(1..=max).contains(&timeout) {
                let why = if max < MAX_TIMEOUT_SECONDS {
                    " here: an attempt is one Lambda invocation, at most 15 minutes"
                } else {
                    ""
                };
                issue(
                    format!("{path}.timeout_seconds"),
                    format!("must be between 1 and {max} (got {timeout}){why}"),
                );
            }
        }
        if let Some(for_each) = &step.for_each {
            if !(1..=MAX_FOR_EACH).contains(&for_each.batch_size) {
                issue(
                    format!("{path}.for_each.batch_size"),
                    format!(
                        "must be between 1 and {MAX_FOR_EACH} (got {})",
                        for_each.batch_size
                    ),
                );
            }
            if !(1..=MAX_FOR_EACH).contains(&for_each.max_concurrency) {
                issue(
                    format!("{path}.for_each.max_concurrency"),
                    format!(
                        "must be between 1 and {MAX_FOR_EACH} (got {})",
                        for_each.max_concurrency
                    ),
                );
            }
            if !matches!(for_each.items, Value::Array(_) | Value::String(_)) {
                issue(
                    format!("{path}.for_each.items"),
                    "must be a list or a reference to one".into(),
                );
            }
            if step.step_type == TRIGGER_APPLICATION
                && step.parameters.get("blocking") == Some(&Value::Bool(true))
            {
                issue(
                    format!("{path}.for_each"),
                    "a blocking trigger_application cannot fan out; trigger without blocking, or wrap the fan-out in the child application".into(),
                );
            }
        }
        if let Some(when) = &step.when {
            check_condition(when, &format!("{path}.when"), &mut issue);
        }
    }

    if let Some(cycle) = find_cycle(app, &index) {
        issue(
            "steps".into(),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    } else {
        // References need an acyclic graph to know each step's ancestors.
        let plan = crate::engine::Plan::new(app.clone());
        for (i, step) in app.steps.iter().enumerate() {
            check_references(app, &plan, step, i, &mut issue);
        }
    }

    if issues.is_empty() {
        Ok(())
    } else {
        Err(Invalid { issues })
    }
}

/// References between app variables: every `${vars.NAME}` in a variable's value names a
/// variable, and no variable reaches itself.
fn check_variable_references(app: &Application, issue: &mut impl FnMut(String, String)) {
    let mut edges: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, var) in app.app_variables.iter().enumerate() {
        let Some(value) = &var.value else { continue };
        let Ok(refs) = reference::references_in(value) else {
            continue; // reported with the step references that use it, or at run time
        };
        for r in refs {
            if r.kind() != RootKind::Vars {
                continue;
            }
            match r.path.first() {
                Some(name) if app.variable(name).is_some() => edges
                    .entry(var.name.as_str())
                    .or_default()
                    .push(name.clone()),
                Some(name) => issue(
                    format!("app_variables[{i}].value"),
                    format!("{r}: unknown app variable \"{name}\""),
                ),
                None => issue(
                    format!("app_variables[{i}].value"),
                    format!("{r}: name an app variable: ${{vars.NAME}}"),
                ),
            }
        }
    }
    // Depth-first, each variable finished once: linear in the references.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for (i, var) in app.app_variables.iter().enumerate() {
        if done.contains(var.name.as_str()) {
            continue;
        }
        if let Some(cycle) = variable_cycle(&edges, &var.name, &mut done) {
            issue(
                format!("app_variables[{i}].value"),
                format!("app variable reference cycle: {}", cycle.join(" -> ")),
            );
        }
    }
}

/// A cycle reachable from `start`, as the names along it. Variables in `done` are known
/// to reach no cycle (or one already reported); every variable visited ends there.
fn variable_cycle<'a>(
    edges: &'a BTreeMap<&str, Vec<String>>,
    start: &'a str,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<String>> {
    // The path being explored, each with the index of its next edge to follow.
    let mut chain: Vec<(&str, usize)> = vec![(start, 0)];
    let mut on_chain: BTreeSet<&str> = BTreeSet::from([start]);
    while let Some((name, next_edge)) = chain.last_mut() {
        let targets = edges.get(*name).map(Vec::as_slice).unwrap_or_default();
        let Some(next) = targets.get(*next_edge) else {
            done.insert(name);
            on_chain.remove(name);
            chain.pop();
            continue;
        };
        *next_edge += 1;
        let next = next.as_str();
        if on_chain.contains(next) {
            let from = chain.iter().position(|(c, _)| *c == next).unwrap_or(0);
            let mut cycle: Vec<String> = chain[from..].iter().map(|(c, _)| c.to_string()).collect();
            cycle.push(next.to_string());
            done.extend(chain.iter().map(|(c, _)| *c));
            return Some(cycle);
        }
        if !done.contains(next) {
            on_chain.insert(next);
            chain.push((next, 0));
        }
    }
    None
}

/// A number as JSON writes it (`1e300`, not three hundred digits).
fn shown_number(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| x.to_string(), |n| n.to_string())
}

fn check_variable_value(
    var_type: VariableType,
    choices: Option<&[Value]>,
    value: &Value,
) -> Result<(), String> {
    // A reference is checked when the run resolves it.
    if value.as_str().is_some_and(|s| s.contains("${")) || value.is_null() {
        return Ok(());
    }
    let ok = match var_type {
        VariableType::String => value.is_string(),
        VariableType::Number => value.is_number(),
        VariableType::Boolean => value.is_boolean(),
        VariableType::Json => true,
        VariableType::Enum => {
            return match choices {
                Some(choices) if !choices.contains(value) => Err(format!(
                    "{value} is not one of the choices {}",
                    Value::Array(choices.to_vec())
                )),
                _ => Ok(()),
            }
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{value} is not a {}", type_name(var_type)))
    }
}

fn type_name(var_type: VariableType) -> &'static str {
    match var_type {
        VariableType::String => "string",
        VariableType::Number => "number",
        VariableType::Boolean => "boolean",
        VariableType::Enum => "enum",
        VariableType::Json => "json",
    }
}

fn check_parameters(
    step: &StepSpec,
    path: &str,
    rules: &ParamRules,
    issue: &mut impl FnMut(String, String),
) {
    if let Some(known) = &rules.known {
        for name in step.parameters.keys() {
            if !known.contains(name) {
                let known_list: Vec<&str> = known.iter().map(String::as_str).collect();
                issue(
                    format!("{path}.parameters.{name}"),
                    format!(
                        "unknown parameter \"{name}\" for step type \"{}\" (known: {})",
                        step.step_type,
                        known_list.join(", ")
                    ),
                );
            }
        }
    }
    for name in &rules.required {
        if !step.parameters.contains_key(name) {
            issue(
                format!("{path}.parameters"),
                format!(
                    "missing required parameter \"{name}\" for step type \"{}\"",
                    step.step_type
                ),
            );
        }
    }
    check_literal_parameters(step, path, &rules.schema, issue);
    if operators::renders_template(&step.step_type) {
        if let Some(Value::String(t)) = step.parameters.get("template") {
            if let Err(e) = template::check_template(t) {
                issue(
                    format!("{path}.parameters.template"),
                    format!("invalid template: {e}"),
                );
            }
        }
    }
}

/// Checks each literal parameter against its schema (a `${…}` value is checked by the
/// step at run time), and the schema's conditional rules (`if`/`then`/`else`, `allOf`)
/// against the whole parameters object. Unknown and missing names are reported above.
fn check_literal_parameters(
    step: &StepSpec,
    path: &str,
    schema: &Value,
    issue: &mut impl FnMut(String, String),
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, value) in &step.parameters {
        if let Some(field_schema) = properties.and_then(|p| p.get(name)) {
            let field_path = format!("{path}.parameters.{name}");
            for (at, message) in schema_check::check(schema, field_schema, value, &field_path) {
                issue(at, message);
            }
        }
    }
    let mut rules = Map::new();
    for keyword in ["if", "then", "else", "allOf"] {
        if let Some(rule) = schema.get(keyword) {
            rules.insert(keyword.to_string(), rule.clone());
        }
    }
    if !rules.is_empty() {
        let object = Value::Object(step.parameters.clone());
        let at = format!("{path}.parameters");
        for (at, message) in schema_check::check(schema, &Value::Object(rules), &object, &at) {
            issue(at, message);
        }
    }
}

fn check_condition(condition: &Condition, path: &str, issue: &mut impl FnMut(String, String)) {
    let kinds = condition.kinds();
    if kinds.len() != 1 {
        issue(
            path.to_string(),
            format!(
                "a condition needs exactly one of equal, numeric, template, and, or, not (found {})",
                kinds.len()
            ),
        );
        return;
    }
    match kinds[0] {
        ConditionKind::Template(expression) => {
            if let Err(e) = template::check_expression(expression) {
                issue(
                    format!("{path}.template"),
                    format!("invalid expression: {e}"),
                );
            }
        }
        ConditionKind::And(list) => {
            for (k, c) in list.iter().enumerate() {
                check_condition(c, &format!("{path}.and[{k}]"), issue);
            }
        }
        ConditionKind::Or(list) => {
            for (k, c) in list.iter().enumerate() {
                check_condition(c, &format!("{path}.or[{k}]"), issue);
            }
        }
        ConditionKind::Not(inner) => check_condition(inner, &format!("{path}.not"), issue),
        ConditionKind::Numeric(n) => {
            if let (Some(a), Some(b)) = (n.above, n.below) {
                if a >= b {
                    issue(
                        format!("{path}.numeric"),
                        format!("above ({a}) must be less than below ({b})"),
                    );
                }
            }
        }
        ConditionKind::Equal(_) => {}
    }
}

/// A dependency cycle, as the ids along it with the first repeated at the end.
fn find_cycle(app: &Application, index: &HashMap<&str, usize>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        app: &Application,
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<String>> {
        marks[i] = Mark::Active;
        stack.push(i);
        for dep in &app.steps[i].depends_on {
            let Some(&d) = index.get(dep.as_str()) else {
                continue;
            };
            if d == i {
                continue; // reported as a self-dependency
            }
            match marks[d] {
                Mark::Active => {
                    let start = stack.iter().position(|&s| s == d).unwrap_or(0);
                    // depends_on points backwards: print the flow direction.
                    let first = app.steps[d].id.clone();
                    let mut cycle = vec![first.clone()];
                    cycle.extend(
                        stack[start + 1..]
                            .iter()
                            .rev()
                            .map(|&s| app.steps[s].id.clone()),
                    );
                    cycle.push(first);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(d, app, index, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; app.steps.len()];
    for i in 0..app.steps.len() {
        if marks[i] == Mark::New {
            if let Some(cycle) = visit(i, app, index, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

fn check_references(
    app: &Application,
    plan: &crate::engine::Plan,
    step: &StepSpec,
    i: usize,
    issue: &mut impl FnMut(String, String),
) {
    let path = format!("steps[{i}]");
    let ancestors: BTreeSet<String> = plan.ancestors(&step.id).into_iter().collect();
    let has_item = step.for_each.is_some();
    let mut check = |value: &Value, field: String, item_allowed: bool| {
        let refs = match reference::references_in(value) {
            Ok(refs) => refs,
            Err(e) => {
                issue(field, e.to_string());
                return;
            }
        };
        for r in refs {
            if let Some(message) = reference_problem(app, &ancestors, &r, item_allowed) {
                issue(field.clone(), message);
            }
        }
    };
    for (name, value) in &step.parameters {
        check(value, format!("{path}.parameters.{name}"), has_item);
    }
    if let Some(for_each) = &step.for_each {
        check(&for_each.items, format!("{path}.for_each.items"), false);
    }
    if let Some(when) = &step.when {
        for (field, value) in condition_values(when, &format!("{path}.when")) {
            check(&value, field, false);
        }
    }
}

/// The values inside a condition that may hold references, with their paths.
fn condition_values(condition: &Condition, path: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    match condition.kind() {
        Some(ConditionKind::Equal(e)) => {
            out.push((format!("{path}.equal.value"), e.value.clone()));
            out.push((format!("{path}.equal.to"), e.to.clone()));
        }
        Some(ConditionKind::Numeric(n)) => {
            out.push((format!("{path}.numeric.value"), n.value.clone()))
        }
        Some(ConditionKind::Template(t)) => {
            out.push((format!("{path}.template"), Value::String(t.to_string())))
        }
        Some(ConditionKind::And(list)) => {
            for (k, c) in list.iter().enumerate() {
                out.extend(condition_values(c, &format!("{path}.and[{k}]")));
            }
        }
        Some(ConditionKind::Or(list)) => {
            for (k, c) in list.iter().enumerate() {
                out.extend(condition_values(c, &format!("{path}.or[{k}]")));
            }
        }
        Some(ConditionKind::Not(inner)) => {
            out.extend(condition_values(inner, &format!("{path}.not")))
        }
        None => {}
    }
    out
}

fn reference_problem(
    app: &Application,
    ancestors: &BTreeSet<String>,
    r: &Reference,
    item_allowed: bool,
) -> Option<String> {
    match r.kind() {
        RootKind::Config => r
            .path
            .is_empty()
            .then(|| format!("{r}: name a configuration variable: ${{config.NAME}}")),
        RootKind::Vars => match r.path.first() {
            None => Some(format!("{r}: name an app variable: ${{vars.NAME}}")),
            Some(name) if app.variable(name).is_none() => {
                Some(format!("{r}: unknown app variable \"{name}\""))
            }
            Some(_) => None,
        },
        RootKind::Run => match r.path.first().map(String::as_str) {
            Some("id") | Some("application") | None => None,
            Some(other) => Some(format!(
                "{r}: unknown run field \"{other}\" (known: id, application)"
            )),
        },
        RootKind::Item => {
            (!item_allowed).then(|| format!("{r}: ${{item}} is only defined inside for_each"))
        }
        RootKind::Step(id) => {
            if app.step(id).is_none() {
                Some(format!("{r}: unknown step \"{id}\""))
            } else if !ancestors.contains(id) {
                Some(format!(
                    "{r}: step \"{id}\" is not a predecessor; add it to depends_on"
                ))
            } else {
                None
            }
        }
    }
}

/// Checks a configuration: names, duplicates, and references between its variables
/// (unknown names and cycles, naming the chain).
pub fn validate_configuration(config: &Configuration) -> Result<(), Invalid> {
    let mut issues = Vec::new();
    if !is_config_name(&config.name) {
        issues.push(Issue::new(
            "name",
            format!(
                "\"{}\" must match ^[a-z0-9][a-z0-9_-]{{0,63}}$",
                config.name
            ),
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, var) in config.data.iter().enumerate() {
        let valid = var
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && var
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            issues.push(Issue::new(
                format!("data[{i}].name"),
                format!("\"{}\" must match ^[A-Za-z_][A-Za-z0-9_-]*$", var.name),
            ));
        }
        if let Some(first) = names.insert(&var.name, i) {
            issues.push(Issue::new(
                format!("data[{i}].name"),
                format!("duplicate variable \"{}\" (also data[{first}])", var.name),
            ));
        }
    }
    // References among plain values: resolve each once to find unknown names and cycles.
    let mut values = crate::reference::ConfigValues::default();
    for var in &config.data {
        if var.encrypted {
            values.withheld.push(var.name.clone());
        } else {
            values
                .values
                .entry(var.name.clone())
                .or_insert_with(|| var.value.clone());
        }
    }
    for (i, var) in config.data.iter().enumerate() {
        if var.encrypted {
            continue;
        }
        let probe = Reference {
            root: "config".into(),
            path: vec![var.name.clone()],
        };
        if let Err(e) = values.get(&var.name, &mut Vec::new(), &probe) {
            // Withheld (encrypted) values are only known at run time.
            if !matches!(e, crate::reference::RefError::Withheld { .. }) {
                issues.push(Issue::new(format!("data[{i}].value"), e.to_string()));
            }
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Invalid { issues })
    }
}

/// The settings of a run after its request params are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub configuration: Option<String>,
    pub queue: Option<String>,
    pub loglevel: u8,
}

/// Checks a run request's params against the application: reserved params, unknown
/// variables, types, and required variables left without a value.
pub fn check_run_params(
    app: &Application,
    params: &Map<String, Value>,
) -> Result<RunSettings, Invalid> {
    let mut issues = Vec::new();
    let mut settings = RunSettings {
        configuration: app.configuration.clone(),
        queue: None,
        loglevel: 20,
    };
    for (name, value) in params {
        let path = format!("params.{name}");
        match name.as_str() {
            "configuration" => match value {
                Value::String(s) if is_config_name(s) => settings.configuration = Some(s.clone()),
                Value::Null => settings.configuration = None,
                _ => issues.push(Issue::new(path, "must be a configuration name")),
            },
            "queue" => match value {
                Value::String(s) => settings.queue = Some(s.clone()),
                _ => issues.push(Issue::new(path, "must be a string")),
            },
            "loglevel" => {
                let level = match value {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                match level {
                    Some(l @ (10 | 20 | 30 | 40)) => settings.loglevel = l as u8,
                    _ => issues.push(Issue::new(
                        path,
                        "must be 10 (debug), 20 (info), 30 (warning) or 40 (error)",
                    )),
                }
            }
            _ => match app.variable(name) {
                None => issues.push(Issue::new(
                    path,
                    format!(
                        "unknown app variable \"{name}\" of application \"{}\"",
                        app.name
                    ),
                )),
                Some(var) => {
                    if let Err(message) =
                        check_variable_value(var.var_type, var.choices.as_deref(), value)
                    {
                        issues.push(Issue::new(path, message));
                    }
                }
            },
        }
    }
    for var in &app.app_variables {
        let value = params.get(&var.name).or(var.value.as_ref());
        if var.required && value.is_none_or(Value::is_null) {
            issues.push(Issue::new(
                format!("vars.{}", var.name),
                "required app variable has no value; pass it as a param",
            ));
        }
    }
    if issues.is_empty() {
        Ok(settings)
    } else {
        Err(Invalid { issues })
    }
}

/// App variables after run params override them.
pub fn run_variables(app: &Application, params: &Map<String, Value>) -> Map<String, Value> {
    app.app_variables
        .iter()
        .map(|var| {
            let value = params
                .get(&var.name)
                .or(var.value.as_ref())
                .cloned()
                .unwrap_or(Value::Null);
            (var.name.clone(), value)
        })
        .collect()
}

/// Checks that every `${config.NAME}` in the application names a variable of the
/// configuration (or that a configuration is given at all).
pub fn check_config_references(
    app: &Application,
    configuration: Option<&Configuration>,
) -> Result<(), Invalid> {
    let mut issues = Vec::new();
    let mut check = |value: &Value, path: String| {
        let Ok(refs) = reference::references_in(value) else {
            return;
        };
        for r in refs {
            if r.kind() != RootKind::Config {
                continue;
            }
            let Some(name) = r.path.first() else { continue };
            match configuration {
                None => issues.push(Issue::new(
                    path.clone(),
                    format!("{r}: the run has no configuration; set \"configuration\" in the application or pass -p configuration=NAME"),
                )),
                Some(config) if config.variable(name).is_none() => issues.push(Issue::new(
                    path.clone(),
                    format!("{r}: configuration \"{}\" has no variable \"{name}\"", config.name),
                )),
                Some(_) => {}
            }
        }
    };
    for (i, step) in app.steps.iter().enumerate() {
        for (name, value) in &step.parameters {
            check(value, format!("steps[{i}].parameters.{name}"));
        }
        if let Some(f) = &step.for_each {
            check(&f.items, format!("steps[{i}].for_each.items"));
        }
        if let Some(when) = &step.when {
            for (field, value) in condition_values(when, &format!("steps[{i}].when")) {
                check(&value, field);
            }
        }
    }
    for (i, var) in app.app_variables.iter().enumerate() {
        if let Some(value) = &var.value {
            check(value, format!("app_variables[{i}].value"));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Invalid { issues })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> StepCatalog {
        let mut catalog = StepCatalog::new(&StepRegistry::new());
        catalog.add(
            "echo",
            &json!({"type": "object", "properties": {"value": {}, "log": {}, "warning": {}}, "required": ["value"], "additionalProperties": false}),
        );
        catalog.add(
            "http_request",
            &json!({"type": "object", "properties": {"url": {}, "method": {}, "body": {}, "auth": {}}, "required": ["url"], "additionalProperties": false}),
        );
        catalog
    }

    fn problems(doc: Value) -> Vec<String> {
        match parse_application(&doc.to_string(), &catalog()) {
            Ok(_) => vec![],
            Err(e) => e.issues.iter().map(|i| i.to_string()).collect(),
        }
    }

    fn spec_example() -> Value {
        json!({
          "name": "device_sync", "friendly_name": "Device Sync", "author": "Acme",
          "configuration": "acme-prod",
          "app_variables": [{"name": "page_size", "type": "number", "value": 100}],
          "steps": [
            {"id": "GetDevices", "type": "http_request",
             "parameters": {"url": "https://${config.inv_host}/api/device?limit=${vars.page_size}", "auth": {"bearer": "${config.inv_token}"}},
             "retry": {"max_attempts": 3, "backoff_seconds": 5, "backoff_rate": 2.0}, "timeout_seconds": 60},
            {"id": "Shape", "type": "transform", "depends_on": ["GetDevices"],
             "parameters": {"template": "{{ input.devices | map(attribute='name') | list | tojson }}"}},
            {"id": "Push", "type": "http_request", "depends_on": ["Shape"],
             "when": {"numeric": {"value": "${GetDevices.total}", "above": 0}},
             "parameters": {"method": "POST", "url": "https://${config.cmdb_host}/import", "body": "${Shape}"}}
          ]
        })
    }

    #[test]
    fn the_spec_example_is_valid() {
        assert_eq!(problems(spec_example()), Vec::<String>::new());
    }

    #[test]
    fn name_is_derived_from_friendly_name() {
        let mut doc = spec_example();
        doc.as_object_mut().unwrap().remove("name");
        let app = parse_application(&doc.to_string(), &catalog()).unwrap();
        assert_eq!(app.name, "device_sync");
    }

    #[test]
    fn application_ids_may_have_capitals_but_configuration_names_may_not() {
        for name in ["CreateServiceNowCI", "9Lives", "a-B_c"] {
            let mut doc = spec_example();
            doc["name"] = json!(name);
            assert_eq!(problems(doc), Vec::<String>::new(), "{name}");
        }
        let mut doc = spec_example();
        doc["name"] = json!("_Leading");
        assert_eq!(problems(doc.clone()).len(), 1);
        doc["name"] = json!("A".repeat(65));
        assert_eq!(problems(doc).len(), 1);
        let mut doc = spec_example();
        doc["configuration"] = json!("Acme-Prod");
        assert_eq!(problems(doc).len(), 1);
        // A derived id is still lowercase.
        let mut doc = spec_example();
        doc.as_object_mut().unwrap().remove("name");
        doc["friendly_name"] = json!("Create ServiceNow CI");
        let app = parse_application(&doc.to_string(), &catalog()).unwrap();
        assert_eq!(app.name, "create_servicenow_ci");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let doc = json!({
            "name": "Bad Name", "friendly_name": "x".repeat(67), "author": "",
            "steps": [
                {"id": "A", "type": "echo", "parameters": {"value": 1, "colour": "red"}},
                {"id": "A", "type": "nope"},
                {"id": "9x", "type": "echo", "depends_on": ["Ghost", "9x"], "parameters": {}},
                {"id": "B", "type": "echo", "parameters": {"value": "${C.x} ${vars.missing} ${item}"}, "timeout_seconds": 86401,
                 "retry": {"max_attempts": 0}},
                {"id": "C", "type": "echo", "parameters": {"value": 1}, "when": {"template": "a >"}}
            ]
        });
        let found = problems(doc);
        let expected = [
            "name: \"Bad Name\" must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
            "friendly_name: at most 66 characters (got 67)",
            "author: must not be empty",
            "steps[1].id: duplicate step id \"A\" (also steps[0])",
            "steps[2].id: \"9x\" must match ^[A-Za-z_][A-Za-z0-9_]*$",
            "steps[0].parameters.colour: unknown parameter \"colour\" for step type \"echo\" (known: log, value, warning)",
            "steps[1].type: unknown step type \"nope\"",
            "steps[2].parameters: missing required parameter \"value\" for step type \"echo\"",
            "steps[2].depends_on[0]: unknown step \"Ghost\"",
            "steps[2].depends_on[1]: a step cannot depend on itself",
            "steps[3].retry.max_attempts: must be between 1 and 100 (got 0)",
            "steps[3].timeout_seconds: must be between 1 and 86400 (got 86401)",
            "steps[4].when.template: invalid expression",
            "steps[3].parameters.value: ${C.x}: step \"C\" is not a predecessor; add it to depends_on",
            "steps[3].parameters.value: ${vars.missing}: unknown app variable \"missing\"",
            "steps[3].parameters.value: ${item}: ${item} is only defined inside for_each",
        ];
        for e in expected {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn cycles_name_the_steps_on_the_cycle() {
        let found = problems(json!({"name": "c", "author": "a", "steps": [
            {"id": "A", "type": "echo", "parameters": {"value": 1}, "depends_on": ["C"]},
            {"id": "B", "type": "echo", "parameters": {"value": 1}, "depends_on": ["A"]},
            {"id": "C", "type": "echo", "parameters": {"value": 1}, "depends_on": ["B"]},
            {"id": "D", "type": "echo", "parameters": {"value": 1}}
        ]}));
        assert_eq!(found, vec!["steps: dependency cycle: A -> B -> C -> A"]);
    }

    #[test]
    fn step_timeouts_are_capped_by_where_they_run() {
        let app = json!({"name": "t", "author": "a", "steps": [
            {"id": "Long", "type": "echo", "parameters": {"value": 1}, "timeout_seconds": 3600}
        ]});
        assert!(problems(app.clone()).is_empty(), "an hour runs embedded");
        let on_lambda = catalog().with_max_timeout(crate::model::LAMBDA_MAX_TIMEOUT_SECONDS);
        let refused = parse_application(&app.to_string(), &on_lambda).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "steps[0].timeout_seconds: must be between 1 and 900 (got 3600) here: an attempt is one Lambda invocation, at most 15 minutes"
        );
    }

    #[test]
    fn malformed_conditions_are_reported() {
        let found = problems(json!({"name": "c", "author": "a", "steps": [
            {"id": "A", "type": "echo", "parameters": {"value": 1},
             "when": {"and": [{"equal": {"value": 1, "to": 1}, "numeric": {"value": 1}}, {"numeric": {"value": 1, "above": 5, "below": 2}}]}}
        ]}));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("steps[0].when.and[0]: a condition needs exactly one"));
        assert!(found[1]
            .starts_with("steps[0].when.and[1].numeric: above (5) must be less than below (2)"));
    }

    #[test]
    fn configuration_references_are_checked() {
        let config: Configuration = serde_json::from_value(json!({"name": "c", "data": [
            {"name": "a", "value": "${config.b}"}, {"name": "b", "value": "${config.a}"},
            {"name": "c", "value": "${config.nope}"}, {"name": "c", "value": 1},
            {"name": "s", "value": "x", "encrypted": true}, {"name": "t", "value": "${config.s}"}
        ]}))
        .unwrap();
        let err = validate_configuration(&config).unwrap_err().to_string();
        assert!(
            err.contains("data[0].value: configuration reference cycle: a -> b -> a"),
            "{err}"
        );
        assert!(err.contains("data[2].value: ${config.nope}: unknown configuration variable \"nope\" (via c -> nope)"), "{err}");
        assert!(
            err.contains("data[3].name: duplicate variable \"c\" (also data[2])"),
            "{err}"
        );
        assert!(
            !err.contains("data[5]"),
            "references to encrypted values resolve at run time: {err}"
        );
    }

    #[test]
    fn run_params_are_checked() {
        let app: Application =
            serde_json::from_value(json!({"name": "a", "author": "x", "steps": [],
            "app_variables": [
                {"name": "size", "type": "number", "value": 10},
                {"name": "mode", "type": "enum", "choices": ["full", "delta"], "value": "full"},
                {"name": "token", "type": "string", "required": true}
            ]}))
            .unwrap();
        let err = check_run_params(
            &app,
            &json!({"size": "big", "mode": "other", "extra": 1, "loglevel": 15})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "params.size: \"big\" is not a number",
            "params.mode: \"other\" is not one of the choices [\"full\",\"delta\"]",
            "params.extra: unknown app variable \"extra\"",
            "params.loglevel: must be 10 (debug), 20 (info), 30 (warning) or 40 (error)",
            "vars.token: required app variable has no value",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in {err}");
        }
        let ok = check_run_params(
            &app,
            &json!({"token": "t", "configuration": "prod", "queue": "nightly", "loglevel": 10})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(
            ok,
            RunSettings {
                configuration: Some("prod".into()),
                queue: Some("nightly".into()),
                loglevel: 10
            }
        );
        let vars = run_variables(&app, &json!({"size": 5}).as_object().unwrap().clone());
        assert_eq!(
            Value::Object(vars),
            json!({"size": 5, "mode": "full", "token": null})
        );
    }

    #[test]
    fn config_references_must_exist_before_a_run_starts() {
        let app: Application = serde_json::from_value(spec_example()).unwrap();
        let config: Configuration = serde_json::from_value(json!({"name": "acme-prod", "data": [
            {"name": "inv_host", "value": "h"}, {"name": "inv_token", "value": null, "encrypted": true}
        ]}))
        .unwrap();
        let err = check_config_references(&app, Some(&config))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "steps[2].parameters.url: ${config.cmdb_host}: configuration \"acme-prod\" has no variable \"cmdb_host\""
        );
        assert!(check_config_references(&app, None)
            .unwrap_err()
            .to_string()
            .contains("the run has no configuration"));
    }
}
