//! Bounded property runs (stable Rust, in the normal suite) over what comes from outside:
//! the document parser, `${…}` references and templates. Nothing panics, nothing hangs
//! (templates are bounded by fuel and output size), errors name a field, and a reference's
//! value is always data, never template source.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sluice_core::reference::{self, RunScope};
use sluice_core::step::StepRegistry;
use sluice_core::template::{self, SourceKind};
use sluice_core::validate::{parse_application, StepCatalog};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Shrinking a failure is worth a few seconds, not minutes.
        max_shrink_iters: 512,
        // Failures are reported by the test, not stored in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text made to look like template code: delimiters, quotes, escapes and references.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{%".to_string()),
        Just("%}".to_string()),
        Just("{#".to_string()),
        Just("#}".to_string()),
        Just("${".to_string()),
        Just("$${".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just(" ~ config ~ ".to_string()),
        Just("7*7".to_string()),
        Just("{% raw %}".to_string()),
        Just("{% endraw %}".to_string()),
        Just("\n".to_string()),
        "[a-z ]{0,4}",
        any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

fn scope_holding(text: &str) -> RunScope {
    let mut scope = RunScope::default();
    scope.steps.insert(
        "Fetch".into(),
        json!({"s": text, "n": 5, "list": [1, text]}),
    );
    scope.config.values.insert("host".into(), json!("h"));
    scope
}

fn render(source: &str, scope: &RunScope) -> Result<String, String> {
    let bound = template::bind(source, SourceKind::Template, scope).map_err(|e| e.to_string())?;
    bound
        .render(scope.template_context(&[]))
        .map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(config())]

    /// Whatever a reference holds is printed as it is, wherever the reference stands.
    #[test]
    fn a_reference_renders_its_value_verbatim(text in prop_oneof![tricky_text(), any::<String>()]) {
        let scope = scope_holding(&text);
        prop_assert_eq!(render("<${Fetch.s}>", &scope).unwrap(), format!("<{text}>"));
        prop_assert_eq!(render("{{ ${Fetch.s} }}", &scope).unwrap(), text.clone());
        prop_assert_eq!(render("{{ \"[${Fetch.s}]\" }}", &scope).unwrap(), format!("[{text}]"));
        prop_assert_eq!(render("{{ '${Fetch.s}' | length }}", &scope).unwrap(), text.chars().count().to_string());
        prop_assert_eq!(
            render("{% raw %}{{ x }}${Fetch.s}{% endraw %}", &scope).unwrap(),
            format!("{{{{ x }}}}{text}")
        );
        prop_assert_eq!(
            render("{% if ${Fetch.n} > 1 %}${Fetch.s}{% endif %}", &scope).unwrap(),
            text.clone()
        );
        // In an expression the value compares as a value.
        let mut context = Map::new();
        context.insert("expected".into(), Value::String(text.clone()));
        let bound = template::bind("${Fetch.s} == expected and ${Fetch.list.1} == expected", SourceKind::Expression, &scope).unwrap();
        prop_assert!(bound.evaluate_truth(context).unwrap());
    }

    /// Arbitrary template-looking text, with references in it, never panics: it renders,
    /// or fails with a message.
    #[test]
    fn templates_never_panic(source in tricky_text(), value in tricky_text()) {
        let scope = scope_holding(&value);
        if let Err(message) = render(&source, &scope) {
            prop_assert!(!message.is_empty());
        }
        let _ = template::check_template(&source);
        let _ = template::check_expression(&source);
        if let Ok(bound) = template::bind(&source, SourceKind::Expression, &scope) {
            let _ = bound.evaluate_truth(Map::new());
        }
    }

    /// Parsing and resolving references in arbitrary text never panics, and a parameter
    /// without references resolves to itself.
    #[test]
    fn references_never_panic(text in tricky_text(), value in tricky_text()) {
        let scope = scope_holding(&value);
        let _ = reference::parse(&text);
        let _ = reference::resolve_value(&Value::String(text.clone()), &scope);
        if !text.contains('$') {
            prop_assert_eq!(
                reference::resolve_value(&Value::String(text.clone()), &scope).unwrap(),
                Value::String(text)
            );
        }
    }

    /// Any JSON as an application: no panic, and every problem names where it is.
    #[test]
    fn documents_never_panic_and_name_the_field(doc in document()) {
        let catalog = StepCatalog::new(&StepRegistry::new());
        if let Err(invalid) = parse_application(&doc.to_string(), &catalog) {
            prop_assert!(!invalid.issues.is_empty());
            for issue in &invalid.issues {
                prop_assert!(
                    !issue.path.is_empty() || issue.line.is_some(),
                    "an issue that names no field: {}", issue
                );
            }
        }
    }

    /// Arbitrary bytes as a document: malformed JSON is reported with its position.
    #[test]
    fn any_text_is_parsed_without_panic(text in "\\PC{0,80}") {
        let catalog = StepCatalog::new(&StepRegistry::new());
        if let Err(invalid) = parse_application(&text, &catalog) {
            prop_assert!(invalid.issues.iter().all(|i| !i.path.is_empty() || i.line.is_some()));
        }
    }
}

/// Arbitrary JSON values.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![Just(1e300), Just(-1.0), Just(0.5), Just(f64::MAX)].prop_map(|x| json!(x)),
        tricky_text().prop_map(Value::String),
        Just(json!("${vars.a}")),
        Just(json!("${A.out}")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Applications near the valid ones: a valid skeleton with fields replaced by arbitrary
/// values, or arbitrary JSON.
fn document() -> impl Strategy<Value = Value> {
    let fields = prop::sample::select(vec![
        "name",
        "author",
        "steps",
        "app_variables",
        "configuration",
        "friendly_name",
    ]);
    let step_fields = prop::sample::select(vec![
        "id",
        "type",
        "depends_on",
        "parameters",
        "when",
        "retry",
        "timeout_seconds",
        "for_each",
    ]);
    prop_oneof![
        json_value(),
        (fields, json_value()).prop_map(|(field, value)| {
            let mut doc = skeleton();
            doc[field] = value;
            doc
        }),
        (step_fields, json_value(), 0usize..3).prop_map(|(field, value, at)| {
            let mut doc = skeleton();
            doc["steps"][at][field] = value;
            doc
        }),
    ]
}

fn skeleton() -> Value {
    json!({
        "name": "fuzz",
        "author": "tests",
        "app_variables": [{"name": "a", "value": "x"}, {"name": "b", "value": "${vars.a}"}],
        "steps": [
            {"id": "A", "type": "transform", "parameters": {"template": "{{ vars.a }}", "output": "text"}},
            {"id": "B", "type": "transform", "depends_on": ["A"],
             "when": {"template": "${A} != ''"},
             "retry": {"max_attempts": 2, "backoff_seconds": 1, "backoff_rate": 2},
             "for_each": {"items": [1, 2], "batch_size": 1},
             "parameters": {"template": "${A}-{{ item }}", "output": "text"}},
            {"id": "C", "type": "trigger_application", "depends_on": ["B"],
             "parameters": {"application": "other"}}
        ]
    })
}
