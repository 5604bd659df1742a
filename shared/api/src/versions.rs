//! Versions of applications and configurations: history, one version, the diff of two,
//! rollback (`/applications/{name}/versions…` and the same under `/configurations`).

use axum::extract::{Path, State};
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Deserialize;
use sluice_core::versions::{DefinitionKind, DefinitionVersion};

use crate::auth::Identity;
use crate::body::{Body, Params};
use crate::documents::{RolledBack, VersionDiff, VersionList};
use crate::error::ApiError;
use crate::Shared;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Body of `POST …/rollback`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose document becomes current again (as a new version).
    pub version: u64,
}

fn version_number(text: &str, field: &str) -> Result<u64> {
    text.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{field}: \"{text}\" is not a version number (1, 2, ...)"
        ))
        .with_field(field)
    })
}

async fn history(state: &Shared, kind: DefinitionKind, name: String) -> Result<Json<VersionList>> {
    let versions = state.runtime.versions(kind, &name).await?;
    Ok(Json(VersionList {
        kind,
        name,
        versions,
    }))
}

async fn one(
    state: &Shared,
    kind: DefinitionKind,
    (name, version): (String, String),
) -> Result<Json<DefinitionVersion>> {
    let version = version_number(&version, "version")?;
    let stored = state.runtime.version(kind, &name, version).await?;
    Ok(Json(stored))
}

async fn diff(
    state: &Shared,
    kind: DefinitionKind,
    name: String,
    params: Params,
) -> Result<Json<VersionDiff>> {
    let number = |field: &str| -> Result<u64> {
        let text = params.get(field).ok_or_else(|| {
            ApiError::bad_request(format!("{field}: a version number is required"))
                .with_field(field)
        })?;
        version_number(text, field)
    };
    let (from, to) = (number("from")?, number("to")?);
    let changes = state.runtime.diff_versions(kind, &name, from, to).await?;
    Ok(Json(VersionDiff {
        kind,
        name,
        from,
        to,
        changes,
    }))
}

async fn rollback(
    state: &Shared,
    kind: DefinitionKind,
    name: String,
    identity: Identity,
    body: Body,
) -> Result<Json<RolledBack>> {
    let request: RollbackRequest = body.parse()?;
    if request.version == 0 {
        return Err(
            ApiError::bad_request("version: versions are numbered from 1").with_field("version"),
        );
    }
    let outcome = state
        .runtime
        .rollback(kind, &name, request.version, &identity.name)
        .await?;
    Ok(Json(RolledBack {
        kind,
        name,
        rolled_back_to: request.version,
        version: outcome.version,
        created: outcome.created,
    }))
}

pub(crate) async fn application_history(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>> {
    history(&state, DefinitionKind::Application, name).await
}

pub(crate) async fn application_version(
    State(state): State<Shared>,
    Path(path): Path<(String, String)>,
) -> Result<Json<DefinitionVersion>> {
    one(&state, DefinitionKind::Application, path).await
}

pub(crate) async fn application_diff(
    State(state): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<VersionDiff>> {
    diff(&state, DefinitionKind::Application, name, params).await
}

pub(crate) async fn application_rollback(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Json<RolledBack>> {
    rollback(&state, DefinitionKind::Application, name, identity, body).await
}

pub(crate) async fn configuration_history(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>> {
    history(&state, DefinitionKind::Configuration, name).await
}

pub(crate) async fn configuration_version(
    State(state): State<Shared>,
    Path(path): Path<(String, String)>,
) -> Result<Json<DefinitionVersion>> {
    one(&state, DefinitionKind::Configuration, path).await
}

pub(crate) async fn configuration_diff(
    State(state): State<Shared>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<VersionDiff>> {
    diff(&state, DefinitionKind::Configuration, name, params).await
}

pub(crate) async fn configuration_rollback(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Json<RolledBack>> {
    rollback(&state, DefinitionKind::Configuration, name, identity, body).await
}
