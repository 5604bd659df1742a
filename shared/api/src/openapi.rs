//! The OpenAPI 3.0 document, generated from the route table ([`ROUTES`]) and the
//! documents' own types (their `JsonSchema` derives): served at
//! `/api/v1/openapi.json` and checked in as `docs/openapi.json` (a test keeps the two
//! equal; `SLUICE_UPDATE_OPENAPI=1 cargo test -p sluice-api openapi` rewrites the file).

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use sluice_core::model::{Application, Configuration, Role, RoleBinding, Schedule};

use crate::documents as d;
use crate::handlers::{EntryId, OwnerRef, RunRequest, StepRunRequest, TokenRequest};
use crate::routes::{RouteSpec, ROUTES};
use crate::versions::RollbackRequest;
use sluice_core::versions::{DefinitionVersion, DiffEntry, VersionInfo};

/// Registers the schema of `T` (and of every type it uses) as a component named after
/// the type.
fn register<T: JsonSchema>(generator: &mut schemars::SchemaGenerator) {
    generator.subschema_for::<T>();
}

/// A component that lists another component's documents.
fn list_of(schemas: &mut Map<String, Value>, name: &str, item: &str) {
    schemas.insert(
        name.to_string(),
        json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}}),
    );
}

/// Every component: the schemas of the documents' types (`JsonSchema` derives), and the
/// lists of them the routes answer with.
fn components() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let g = &mut generator;
    // The documents users write, and the request bodies.
    register::<Application>(g);
    register::<Configuration>(g);
    register::<Schedule>(g);
    register::<RoleBinding>(g);
    register::<Role>(g);
    register::<RunRequest>(g);
    register::<StepRunRequest>(g);
    register::<EntryId>(g);
    register::<OwnerRef>(g);
    register::<TokenRequest>(g);
    register::<RollbackRequest>(g);
    // The answers.
    register::<d::ErrorDocument>(g);
    register::<d::Status>(g);
    register::<d::About>(g);
    register::<d::Health>(g);
    register::<d::Deleted>(g);
    register::<d::Task>(g);
    register::<d::TaskList>(g);
    register::<d::Revoked>(g);
    register::<d::Revocation>(g);
    register::<d::LogPage>(g);
    register::<d::UnitPage>(g);
    register::<d::StepType>(g);
    register::<d::StepRunResult>(g);
    register::<d::ScheduleEntry>(g);
    register::<d::CacheEntry>(g);
    register::<d::CacheKeyList>(g);
    register::<d::CacheDeleted>(g);
    register::<d::RoleInfo>(g);
    register::<d::Token>(g);
    register::<d::NewToken>(g);
    register::<d::VersionList>(g);
    register::<d::VersionDiff>(g);
    register::<d::RolledBack>(g);
    register::<VersionInfo>(g);
    register::<DefinitionVersion>(g);
    register::<DiffEntry>(g);
    register::<sluice_core::pack::PackArchive>(g);
    register::<sluice_runtime::packs::PackSummary>(g);
    register::<sluice_runtime::packs::PackInstalled>(g);
    register::<sluice_runtime::packs::PackActivated>(g);
    register::<sluice_runtime::packs::PackDeleted>(g);
    register::<crate::packs::CopyRequest>(g);
    register::<crate::packs::Copied>(g);
    register::<sluice_core::report::Report>(g);
    register::<crate::reports::ReportList>(g);
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    schemas.insert("Any".into(), json!({"description": "Any JSON value."}));
    list_of(&mut schemas, "ApplicationList", "Application");
    list_of(&mut schemas, "ConfigurationList", "Configuration");
    list_of(&mut schemas, "StepTypeList", "StepType");
    list_of(&mut schemas, "ScheduleList", "ScheduleEntry");
    list_of(&mut schemas, "RoleList", "RoleInfo");
    list_of(&mut schemas, "RoleBindingList", "RoleBinding");
    list_of(&mut schemas, "TokenList", "Token");
    list_of(&mut schemas, "PackSummaryList", "PackSummary");
    schemas.sort_keys();
    schemas
}

fn operation(spec: &RouteSpec) -> Value {
    let mut parameters: Vec<Value> = spec
        .path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    parameters.extend(
        spec.query
            .iter()
            .map(|(name, description)| json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})),
    );
    let error = json!({"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", spec.response)}}}}),
    );
    if spec.body.is_some() || !spec.query.is_empty() {
        responses.insert("400".into(), error.clone());
    }
    if let Some(role) = spec.role {
        responses.insert("401".into(), error.clone());
        responses.insert("403".into(), error.clone());
        if role >= Role::View && (spec.path.contains('{') || spec.method == "DELETE") {
            responses.insert("404".into(), error.clone());
        }
    }
    if spec.body.is_some() {
        responses.insert("413".into(), error.clone());
        responses.insert("422".into(), error.clone());
    }
    // Every route: a caller over its rate (with Retry-After) and a server failure (a
    // generic message with the request id).
    responses.insert(
        "429".into(),
        json!({"description": "Too many requests; retry after the Retry-After header's seconds", "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
    );
    responses.insert("500".into(), error);
    let operation_id = format!(
        "{}{}{}",
        spec.method.to_ascii_lowercase(),
        // The few paths outside the API's base (`/healthcheck`) are told apart from
        // their namesakes under it.
        if spec.path.starts_with("/api/v1/") {
            ""
        } else {
            "Root"
        },
        spec.path
            .trim_start_matches("/api/v1")
            .split(['/', '.', '{', '}', '_'])
            .filter(|s| !s.is_empty())
            .map(|s| {
                let mut c = s.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    );
    let mut op = json!({
        "operationId": operation_id,
        "tags": [spec.tag],
        "summary": spec.summary,
        "responses": responses,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = spec.body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
    }
    match spec.role {
        None => op["security"] = json!([]),
        Some(role) => op["x-sluice-role"] = json!(role.as_str()),
    }
    op
}

/// The OpenAPI document of the API.
pub fn document() -> Value {
    let schemas = components();

    let mut paths = Map::new();
    for spec in ROUTES {
        let item = paths
            .entry(spec.path.to_string())
            .or_insert_with(|| json!({}));
        item[spec.method.to_ascii_lowercase()] = operation(spec);
    }
    let tags: Vec<Value> = [
        "health",
        "applications",
        "configurations",
        "steps",
        "runs",
        "schedule",
        "cache",
        "roles",
    ]
    .iter()
    .map(|t| json!({"name": t}))
    .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Sluice API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "PowerFlow-compatible REST API of Sluice: applications, configurations, steps, runs (tasks), schedules, cache and roles. Every operation but the health checks and /about needs HTTP Basic (the administrator) or a bearer token; x-sluice-role names the least role an operation needs (view < execute < configuration < developer < administrator).",
        },
        "servers": [{"url": "/"}],
        "security": [{"basic": []}, {"bearer": []}],
        "tags": tags,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic", "description": "The administrator (SLUICE_ADMIN_USER / SLUICE_ADMIN_PASSWORD)."},
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API token from `sluice tokens create`, or on AWS a JWT of the configured OIDC issuer."}
            },
            "schemas": schemas,
        }
    })
}

/// The checked-in document, pretty-printed as `docs/openapi.json` holds it.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("serializable");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_matches_the_checked_in_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let text = document_text();
        if std::env::var_os("SLUICE_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == text,
            "docs/openapi.json is out of date: run SLUICE_UPDATE_OPENAPI=1 cargo test -p sluice-api openapi"
        );
    }

    /// Every `$ref` anywhere in `value`.
    fn references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => out.push(target),
                        _ => references(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_openapi_reference_resolves_and_every_route_is_documented() {
        let doc = document();
        let mut targets = Vec::new();
        references(&doc, &mut targets);
        assert!(!targets.is_empty());
        for target in targets {
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{target}: not a component reference"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "missing schema {name}"
            );
        }
        for spec in ROUTES {
            let op = &doc["paths"][spec.path][spec.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {}", spec.method, spec.path);
            for name in [Some(spec.response), spec.body].into_iter().flatten() {
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{} {}: no component {name}",
                    spec.method,
                    spec.path
                );
            }
        }
    }

    #[test]
    fn openapi_operation_ids_are_unique() {
        let doc = document();
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_string();
                if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                    panic!("operation id {id} of {method} {path} is also {other}'s");
                }
            }
        }
        assert_eq!(seen["getHealthcheck"], "get /api/v1/healthcheck");
        assert_eq!(seen["getRootHealthcheck"], "get /healthcheck");
    }
}
