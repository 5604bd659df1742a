//! `POST /api/v1/validate/application`: checks an application document exactly as
//! `POST /api/v1/applications` does, without storing it, and answers every problem with
//! its path — the Builder marks the field at fault as the user types.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use sluice_core::validate::parse_application;

use crate::body::Body;
use crate::error::ApiError;
use crate::Shared;

/// `{"valid": true, "issues": []}`, or `valid: false` with each issue's `path` (empty for
/// the whole document), `message` and, for malformed JSON, `line` and `column`.
pub(crate) async fn application(
    State(state): State<Shared>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("a JSON request body is required"));
    }
    let issues: Vec<Value> = match parse_application(body.text()?, state.runtime.catalog()) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid
            .issues
            .iter()
            .map(|i| {
                let mut issue = json!({"path": i.path, "message": i.message});
                if let (Some(line), Some(column)) = (i.line, i.column) {
                    issue["line"] = json!(line);
                    issue["column"] = json!(column);
                }
                issue
            })
            .collect(),
    };
    Ok(Json(json!({"valid": issues.is_empty(), "issues": issues})))
}
