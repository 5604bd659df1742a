//! Run reports (`/api/v1/reports…`): the listing, one report as JSON or CSV, deleting
//! one. A report's id is `report-<application>-<run id>`; it lives as long as its run.

use axum::extract::{Path, State};
use axum::http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{json, Value};
use sluice_core::ports::ReportQuery;
use sluice_core::report::{parse_report_id, Report, ReportSummary};

use crate::body::Params;
use crate::error::ApiError;
use crate::Shared;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Largest page of the listing.
const MAX_PAGE: usize = 1000;
/// Page size of the listing when `limit` is not given.
const DEFAULT_PAGE: usize = 50;

/// The media type of the CSV form.
pub const CSV_MEDIA_TYPE: &str = "text/csv; charset=utf-8";

/// A page of the report listing.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ReportList {
    pub reports: Vec<ReportSummary>,
    pub count: usize,
    /// The run id to pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn refuse_unknown(params: &Params, known: &[&str]) -> Result<()> {
    match params.0.keys().find(|k| !known.contains(&k.as_str())) {
        Some(name) => Err(
            ApiError::bad_request(format!("{name}: unknown query parameter"))
                .with_field(name.clone()),
        ),
        None => Ok(()),
    }
}

/// `GET /reports`: reports newest run first, `application` filters, `limit` and
/// `cursor` page as the task listing does.
pub(crate) async fn list(State(state): State<Shared>, params: Params) -> Result<Json<ReportList>> {
    refuse_unknown(&params, &["application", "limit", "cursor"])?;
    let limit = params
        .parse::<usize>("limit", "a whole number")?
        .unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            ApiError::bad_request(format!("limit: must be between 1 and {MAX_PAGE}"))
                .with_field("limit"),
        );
    }
    let query = ReportQuery {
        application: params.get("application").map(str::to_string),
        before_run_id: params.get("cursor").map(str::to_string),
        // One more than asked: tells whether there is a next page.
        limit: limit + 1,
    };
    let mut reports = state.runtime.backend().reports.list_reports(&query).await?;
    let more = reports.len() > limit;
    reports.truncate(limit);
    let next_cursor = more
        .then(|| reports.last().map(|r| r.run_id.clone()))
        .flatten();
    Ok(Json(ReportList {
        count: reports.len(),
        reports,
        next_cursor,
    }))
}

/// The report `id` names, or a 404 (a 400 when `id` is no report id at all).
async fn find(state: &Shared, id: &str) -> Result<Report> {
    let (application, run_id) = parse_report_id(id).ok_or_else(|| {
        ApiError::bad_request(format!(
            "id: \"{id}\" is not a report id (report-<application>-<run id>)"
        ))
        .with_field("id")
    })?;
    let not_found = || ApiError::not_found(format!("report \"{id}\" not found"));
    let (owner, parts) = state
        .runtime
        .backend()
        .reports
        .get_report(&run_id)
        .await?
        .ok_or_else(not_found)?;
    if owner.application != application {
        return Err(not_found());
    }
    Ok(Report::assemble(&owner, parts))
}

/// Whether the caller asked for CSV: `format=csv`, or an `Accept` preferring `text/csv`
/// when `format` is not given.
fn wants_csv(params: &Params, headers: &HeaderMap) -> Result<bool> {
    match params.get("format") {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "format: \"{other}\" is not json or csv"
        ))
        .with_field("format")),
        None => Ok(headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| {
                accept
                    .split(',')
                    .next()
                    .is_some_and(|first| first.trim().starts_with("text/csv"))
            })),
    }
}

/// `GET /reports/{id}`: the report as JSON, or as one CSV of all its tables.
pub(crate) async fn get(
    State(state): State<Shared>,
    Path(id): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Result<Response> {
    refuse_unknown(&params, &["format"])?;
    let csv = wants_csv(&params, &headers)?;
    let report = find(&state, &id).await?;
    if !csv {
        return Ok(Json(report).into_response());
    }
    // Application names and generated run ids hold only these; anything else cannot
    // break out of the header's quoted string.
    let file: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    let disposition = format!("attachment; filename=\"{file}.csv\"");
    Ok((
        [
            (CONTENT_TYPE, CSV_MEDIA_TYPE.to_string()),
            (CONTENT_DISPOSITION, disposition),
        ],
        report.to_csv(),
    )
        .into_response())
}

/// `DELETE /reports/{id}`: deletes the report (the run stays).
pub(crate) async fn delete(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let report = find(&state, &id).await?;
    state
        .runtime
        .backend()
        .reports
        .delete_report(&report.summary.run_id)
        .await?;
    Ok(Json(json!({"deleted": true, "kind": "report", "name": id})))
}
