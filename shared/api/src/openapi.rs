//! The OpenAPI 3.0 document, generated from the route table ([`ROUTES`]) and the
//! documents' own types (their `JsonSchema` derives): served at
//! `/api/v1/openapi.json` and checked in as `docs/openapi.json` (a test keeps the two
//! equal; `SLUICE_UPDATE_OPENAPI=1 cargo test -p sluice-api openapi` rewrites the file).

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use sluice_core::model::{Application, Configuration, Role, RoleBinding, Schedule};

use crate::handlers::{EntryId, OwnerRef, RunRequest, StepRunRequest, TokenRequest};
use crate::routes::{RouteSpec, ROUTES};
use crate::versions::RollbackRequest;
use sluice_core::versions::{DefinitionVersion, DiffEntry, VersionInfo};

fn add<T: JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
    schemas: &mut Map<String, Value>,
    name: &str,
) {
    let schema = generator.subschema_for::<T>().to_value();
    // A named type comes back as a `$ref` to its definition; anything else inline.
    if schema.get("$ref").and_then(Value::as_str) != Some(&format!("#/components/schemas/{name}")) {
        schemas.insert(name.to_string(), schema);
    }
}

/// Response shapes that are built as JSON by the handlers.
fn response_schemas() -> Map<String, Value> {
    let time = json!({"type": "string", "format": "date-time", "nullable": true});
    let step = json!({
        "type": "object",
        "properties": {
            "state": {"type": "string", "enum": ["pending", "queued", "running", "waiting", "success", "warning", "failed", "skipped", "cancelled"]},
            "attempts": {"type": "integer"},
            "started_at": time, "finished_at": time,
            "error": {"type": "string", "nullable": true},
            "child_run": {"type": "string", "nullable": true},
            "child_runs": {"type": "array", "items": {"type": "string"}, "description": "The child runs of a fanned-out trigger_application, one per started item."},
            "logs_href": {"type": "string"}, "data_href": {"type": "string"},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "items": {"type": "integer", "description": "Number of for_each units."},
            "version": {"type": "string", "description": "Version of the step's type, recorded when the run was created."},
            "output": {"description": "With ?outputs=true."}
        }
    });
    let log = json!({
        "type": "object",
        "properties": {
            "seq": {"type": "integer"}, "ts": {"type": "string", "format": "date-time"},
            "level": {"type": "string", "enum": ["DEBUG", "INFO", "WARNING", "ERROR", "FLOW"]},
            "step": {"type": "string"}, "attempt": {"type": "integer"}, "message": {"type": "string"}
        }
    });
    let schemas = json!({
        "Any": {"description": "Any JSON value."},
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "field": {"type": "string", "description": "Path of the offending field."},
                "request_id": {"type": "string", "description": "500 answers: the request id (also the x-request-id header) under which the server logged the failure."}
            }}}
        },
        "Status": {"type": "object", "properties": {"status": {"type": "string", "enum": ["ok"]}}},
        "About": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "backend": {"type": "string"}, "api": {"type": "string"}, "openapi": {"type": "string"}}},
        "Health": {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["ok", "error"]}, "backend": {"type": "string"},
            "components": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["ok", "error"]}, "latency_ms": {"type": "number"}, "error": {"type": "string"}
            }}}
        }},
        "Deleted": {"type": "object", "properties": {"deleted": {"type": "boolean"}, "kind": {"type": "string"}, "name": {"type": "string"}}},
        "VersionList": {"type": "object", "properties": {
            "kind": {"type": "string", "enum": ["application", "configuration"]}, "name": {"type": "string"},
            "versions": {"type": "array", "items": {"$ref": "#/components/schemas/VersionInfo"}}
        }},
        "VersionDiff": {"type": "object", "properties": {
            "kind": {"type": "string", "enum": ["application", "configuration"]}, "name": {"type": "string"},
            "from": {"type": "integer"}, "to": {"type": "integer"},
            "changes": {"type": "array", "items": {"$ref": "#/components/schemas/DiffEntry"}}
        }},
        "RolledBack": {"type": "object", "properties": {
            "kind": {"type": "string", "enum": ["application", "configuration"]}, "name": {"type": "string"},
            "rolled_back_to": {"type": "integer"},
            "version": {"type": "integer", "description": "The version the definition is now at."},
            "created": {"type": "boolean", "description": "false when the document equalled the latest version's: nothing was stored."}
        }},
        "ApplicationList": {"type": "array", "items": {"$ref": "#/components/schemas/Application"}},
        "ConfigurationList": {"type": "array", "items": {"$ref": "#/components/schemas/Configuration"}},
        "Task": {
            "type": "object",
            "properties": {
                "task_id": {"type": "string"}, "href": {"type": "string"}, "application": {"type": "string"},
                "application_version": {"type": "integer", "description": "The stored version of the application the run executes; absent when its document is no stored version."},
                "state": {"type": "string", "enum": ["pending", "running", "success", "failure", "revoked"]},
                "configuration": {"type": "string", "nullable": true}, "queue": {"type": "string", "nullable": true},
                "params": {"type": "object"}, "created_at": {"type": "string", "format": "date-time"},
                "started_at": time, "finished_at": time,
                "parent": {"type": "object", "nullable": true, "properties": {"task_id": {"type": "string"}, "step": {"type": "string"}}},
                "replay_of": {"type": "string"},
                "alert_of": {"type": "object", "description": "On an alert run (and the runs it triggers): the run whose failure or warnings it handles.", "properties": {"run_id": {"type": "string"}, "event": {"type": "string", "enum": ["failure", "warning"]}}},
                "steps": {"type": "object", "additionalProperties": step}
            }
        },
        "TaskList": {"type": "object", "properties": {
            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
            "count": {"type": "integer"},
            "next_cursor": {"type": "string", "nullable": true, "description": "Pass as cursor for the next page; null on the last page."}
        }},
        "Logs": {"type": "object", "properties": {
            "task_id": {"type": "string", "nullable": true}, "application": {"type": "string"},
            "state": {"type": "string", "nullable": true},
            "logs": {"type": "array", "items": log},
            "next_after": {"type": "integer", "description": "Pass as after to read on."},
            "more": {"type": "boolean"}
        }},
        "StepType": {"type": "object", "properties": {"name": {"type": "string"}, "kind": {"type": "string", "enum": ["step", "operator"]}, "version": {"type": "string", "description": "Semver version of the step type (an operator's is the engine's)."}, "description": {"type": "string"}, "parameters": {"type": "object", "description": "JSON Schema of the parameters."}}},
        "StepTypeList": {"type": "array", "items": {"$ref": "#/components/schemas/StepType"}},
        "StepRunResult": {"type": "object", "properties": {
            "name": {"type": "string"}, "state": {"type": "string", "enum": ["success", "warning", "failed"]},
            "output": {}, "warnings": {"type": "array", "items": {"type": "string"}},
            "error": {"type": "string", "nullable": true}, "seconds": {"type": "number"},
            "logs": {"type": "array", "items": log}
        }},
        "ScheduleEntry": {"allOf": [{"$ref": "#/components/schemas/Schedule"}, {"type": "object", "properties": {
            "total_runs": {"type": "integer"},
            "last_run": {"type": "object", "nullable": true, "properties": {"href": {"type": "string"}, "task_id": {"type": "string"}, "start_time": {"type": "string", "format": "date-time"}}},
            "next_run": time,
            "last_error": {"type": "object", "nullable": true, "description": "Why the latest tick could not start a run; null once a tick starts one.", "properties": {"message": {"type": "string"}, "time": {"type": "string", "format": "date-time"}}}
        }}]},
        "ScheduleList": {"type": "array", "items": {"$ref": "#/components/schemas/ScheduleEntry"}},
        "CacheEntry": {"type": "object", "properties": {"key": {"type": "string"}, "value": {}}},
        "CacheKeyList": {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "string"}}, "count": {"type": "integer"}, "next_after": {"type": "string", "nullable": true}}},
        "CacheDeleted": {"type": "object", "properties": {"prefix": {"type": "string"}, "deleted": {"type": "integer"}}},
        "Revoked": {"type": "object", "properties": {"application": {"type": "string"}, "revoked": {"type": "integer"}}},
        "RoleList": {"type": "array", "items": {"type": "object", "properties": {"name": {"$ref": "#/components/schemas/Role"}, "description": {"type": "string"}, "includes": {"type": "array", "items": {"$ref": "#/components/schemas/Role"}}}}},
        "RoleBindingList": {"type": "array", "items": {"$ref": "#/components/schemas/RoleBinding"}},
        "Token": {"type": "object", "properties": {"name": {"type": "string"}, "role": {"$ref": "#/components/schemas/Role"}, "created_at": {"type": "string", "format": "date-time"}}},
        "TokenList": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}},
        "NewToken": {"allOf": [{"$ref": "#/components/schemas/Token"}, {"type": "object", "properties": {"token": {"type": "string", "description": "The bearer token; shown only in this response."}}}]}
    });
    match schemas {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
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
        "{}{}",
        spec.method.to_ascii_lowercase(),
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
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut schemas = Map::new();
    add::<Application>(&mut generator, &mut schemas, "Application");
    add::<Configuration>(&mut generator, &mut schemas, "Configuration");
    add::<Schedule>(&mut generator, &mut schemas, "Schedule");
    add::<RoleBinding>(&mut generator, &mut schemas, "RoleBinding");
    add::<Role>(&mut generator, &mut schemas, "Role");
    add::<RunRequest>(&mut generator, &mut schemas, "RunRequest");
    add::<StepRunRequest>(&mut generator, &mut schemas, "StepRunRequest");
    add::<EntryId>(&mut generator, &mut schemas, "EntryId");
    add::<OwnerRef>(&mut generator, &mut schemas, "OwnerRef");
    add::<TokenRequest>(&mut generator, &mut schemas, "TokenRequest");
    add::<RollbackRequest>(&mut generator, &mut schemas, "RollbackRequest");
    add::<VersionInfo>(&mut generator, &mut schemas, "VersionInfo");
    add::<DefinitionVersion>(&mut generator, &mut schemas, "DefinitionVersion");
    add::<DiffEntry>(&mut generator, &mut schemas, "DiffEntry");
    schemas.extend(generator.take_definitions(true));
    schemas.extend(response_schemas());
    schemas.sort_keys();

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

    #[test]
    fn every_reference_resolves_and_every_route_is_documented() {
        let doc = document();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "missing schema {name}"
            );
        }
        for spec in ROUTES {
            let op = &doc["paths"][spec.path][spec.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {}", spec.method, spec.path);
        }
    }
}
