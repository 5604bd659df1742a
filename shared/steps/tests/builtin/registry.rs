use serde_json::{json, Value};
use sluice_steps::builtin_registry;

fn required(schema: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn registers_the_builtin_types_with_their_required_parameters() {
    let registry = builtin_registry();
    assert_eq!(
        registry.names().collect::<Vec<_>>(),
        [
            "cache",
            "echo",
            "graphql",
            "http_request",
            "sql",
            "ssh_command"
        ]
    );
    let schema = |name: &str| registry.get(name).unwrap().parameter_schema();
    assert_eq!(required(&schema("echo")), ["value"]);
    assert_eq!(required(&schema("http_request")), ["url"]);
    assert_eq!(required(&schema("sql")), ["url"]);
    assert_eq!(required(&schema("graphql")), ["endpoint", "query"]);
    assert_eq!(
        required(&schema("ssh_command")),
        ["command", "host", "user"]
    );
    assert_eq!(required(&schema("cache")), ["action", "key"]);
    for step in registry.iter() {
        let schema = step.parameter_schema();
        assert_eq!(
            schema["additionalProperties"],
            json!(false),
            "{}",
            step.name()
        );
        assert!(!step.description().is_empty());
        // Every parameter is documented.
        for (name, property) in schema["properties"].as_object().unwrap() {
            let documented = property.get("description").is_some()
                || property.get("$ref").is_some()
                || property.get("anyOf").is_some()
                || property.get("oneOf").is_some();
            assert!(
                documented,
                "{}.{name} has no description: {property}",
                step.name()
            );
        }
    }
    let http = schema("http_request");
    assert_eq!(http["properties"]["method"]["default"], json!("GET"));
    assert_eq!(
        http["properties"]["timeout_seconds"]["default"],
        json!(30.0)
    );
}

#[tokio::test]
async fn unknown_and_missing_parameters_are_refused_as_fatal() {
    let registry = builtin_registry();
    let echo = registry.get("echo").unwrap();
    let ctx = super::context(std::sync::Arc::new(super::MemoryCache::default()), &[]);
    let e = echo
        .execute(json!({"value": 1, "colour": "red"}), &ctx)
        .await
        .unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.message().contains("colour"), "{e}");
    let e = echo.execute(json!({"log": "x"}), &ctx).await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.message().contains("value"), "{e}");
}
