//! Validation of applications against the built-in step types' parameter schemas: a
//! literal that breaks a schema, a number out of range or a reference where a value
//! would be spliced as text fails `validate` naming the field, not the run.

use serde_json::{json, Value};
use sluice_core::validate::{parse_application, StepCatalog};

fn problems(steps: Value) -> Vec<String> {
    problems_of(json!({"name": "probe", "author": "tests", "steps": steps}))
}

fn problems_of(doc: Value) -> Vec<String> {
    let catalog = StepCatalog::new(&sluice_steps::builtin_registry());
    match parse_application(&doc.to_string(), &catalog) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.issues.iter().map(ToString::to_string).collect(),
    }
}

fn one(step_type: &str, parameters: Value) -> Vec<String> {
    problems(json!([{"id": "S", "type": step_type, "parameters": parameters}]))
}

#[test]
fn literal_parameters_must_fit_the_step_schema() {
    assert_eq!(
        one("http_request", json!({"url": 5})),
        ["steps[0].parameters.url: expected a string, got 5"]
    );
    assert_eq!(
        one("sql", json!({"url": "sqlite::memory:", "query": "select 1", "mode": "drop"})),
        ["steps[0].parameters.mode: must be one of \"select\", \"execute\", \"describe\" (got \"drop\")"]
    );
    assert_eq!(
        one("cache", json!({"action": "save", "key": "k", "value": 1, "ttl_seconds": -1})),
        ["steps[0].parameters.ttl_seconds: must be an integer between 0 and 18446744073709551615 (got -1)"]
    );
    assert_eq!(
        one("sql", json!({"url": "sqlite::memory:"})),
        ["steps[0].parameters: missing required field \"query\""]
    );
    assert_eq!(
        one("sql", json!({"url": "sqlite::memory:", "mode": "describe"})),
        ["steps[0].parameters: missing required field \"table\""]
    );
    assert_eq!(
        one(
            "http_request",
            json!({"url": "http://x", "auth": {"basic": {"username": 7}}})
        ),
        ["steps[0].parameters.auth.basic.username: expected a string, got 7"]
    );
    // What is right stays right; references are checked when the run resolves them.
    assert!(one("sql", json!({"url": "${config.db}", "query": "select ?", "params": ["${config.x}"], "mode": "select"})).iter().all(|p| !p.contains("parameters.")));
    assert!(one(
        "http_request",
        json!({"url": "${config.u}", "timeout_seconds": "${config.t}"})
    )
    .iter()
    .all(|p| !p.contains("parameters.")));
}

#[test]
fn numbers_from_documents_are_range_checked() {
    assert_eq!(
        one(
            "http_request",
            json!({"url": "http://x", "timeout_seconds": 1e300})
        ),
        ["steps[0].parameters.timeout_seconds: must be at most 900 (got 1e+300)"]
    );
    assert_eq!(
        one(
            "http_request",
            json!({"url": "http://x", "expected_status": [200, 1e3]})
        ),
        ["steps[0].parameters.expected_status[1]: expected an integer, got 1000.0"]
    );
    assert_eq!(
        one(
            "cache",
            json!({"action": "save", "key": "k", "value": 1, "ttl_seconds": 1e300})
        ),
        ["steps[0].parameters.ttl_seconds: expected an integer or null, got 1e+300"]
    );
    let step = |extra: Value| {
        let mut step = json!({"id": "S", "type": "echo", "parameters": {"value": 1}});
        for (k, v) in extra.as_object().unwrap() {
            step[k] = v.clone();
        }
        problems(json!([step]))
    };
    let problems = step(json!({"timeout_seconds": 1e300}));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("steps[0].timeout_seconds: invalid type: floating point"),
        "{problems:?}"
    );
    assert_eq!(
        step(
            json!({"retry": {"max_attempts": 1000000, "backoff_seconds": 1e300, "backoff_rate": 1e300}})
        ),
        [
            "steps[0].retry.max_attempts: must be between 1 and 100 (got 1000000)",
            "steps[0].retry.backoff_seconds: must be between 0 and 86400 (got 1e+300)",
            "steps[0].retry.backoff_rate: must be between 1 and 100 (got 1e+300)",
        ]
    );
    assert_eq!(
        step(
            json!({"for_each": {"items": [1], "batch_size": 18446744073709551615u64, "max_concurrency": 0}})
        ),
        [
            "steps[0].for_each.batch_size: must be between 1 and 10000 (got 18446744073709551615)",
            "steps[0].for_each.max_concurrency: must be between 1 and 10000 (got 0)",
        ]
    );
    let problems = step(json!({"for_each": {"items": [1], "batch_size": 1.5}}));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("steps[0].for_each.batch_size: invalid type: floating point"),
        "{problems:?}"
    );
}

#[test]
fn a_reference_inside_a_sql_query_is_refused() {
    let problems = one(
        "sql",
        json!({"url": "sqlite::memory:", "query": "select * from users where name = '${config.who}'"}),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("steps[0].parameters.query: must not contain ${…} references"),
        "{problems:?}"
    );
    assert!(problems[0].contains("\"params\""), "{problems:?}");
    // `$${` is a literal `${`, not a reference.
    assert_eq!(
        one(
            "sql",
            json!({"url": "sqlite::memory:", "query": "select '$${x}'"})
        ),
        Vec::<String>::new()
    );
}

#[test]
fn app_variable_cycles_and_unknown_names_fail_validation() {
    let doc = |vars: Value| {
        problems_of(json!({
            "name": "probe", "author": "tests", "app_variables": vars,
            "steps": [{"id": "S", "type": "echo", "parameters": {"value": "${vars.a}"}}]
        }))
    };
    assert_eq!(
        doc(json!([
            {"name": "a", "value": "${vars.b}"},
            {"name": "b", "value": "x-${vars.c}"},
            {"name": "c", "type": "json", "value": {"deep": ["${vars.a}"]}}
        ])),
        ["app_variables[0].value: app variable reference cycle: a -> b -> c -> a"]
    );
    assert_eq!(
        doc(json!([{"name": "a", "value": "${vars.a}"}])),
        ["app_variables[0].value: app variable reference cycle: a -> a"]
    );
    assert_eq!(
        doc(json!([{"name": "a", "value": "${vars.ghost}"}])),
        ["app_variables[0].value: ${vars.ghost}: unknown app variable \"ghost\""]
    );
    assert_eq!(
        doc(
            json!([{"name": "a", "value": "${vars.b}"}, {"name": "b", "type": "number", "value": 1}])
        ),
        Vec::<String>::new()
    );
}
