//! Packs (PowerFlow's SyncPacks) under PowerFlow's paths: `GET /syncpacks`
//! (`only_installed`, `only_activated`), `GET /syncpacks/{name}`, install (`POST
//! /syncpacks` with the archive as the body), activate a version, delete a version or
//! the whole pack; and "save as" copies of applications and configurations. The work is
//! [`sluice_runtime::packs`]'s.

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_core::model::Schedule;
use sluice_core::pack::{PackArchive, MAX_ARCHIVE_BYTES};
use sluice_core::plan::DocumentKind;
use sluice_core::ports::StoreError;
use sluice_core::{Invalid, Issue};
use sluice_runtime::packs::{
    PackActivated, PackDeleted, PackInstalled, PackSummary, ScheduleWriter,
};
use sluice_runtime::{Runtime, RuntimeError};

use crate::auth::Identity;
use crate::body::{Body, Params};
use crate::error::ApiError;
use crate::schedules::Schedules;
use crate::Shared;

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Body of `POST /applications/{name}/copy` and `/configurations/{name}/copy`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The copy's name (it must not exist).
    pub name: String,
}

/// Answer of a copy.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Copied {
    pub kind: DocumentKind,
    pub name: String,
    pub copied_from: String,
    /// The copy's version (1).
    pub version: u64,
}

/// An activation's schedules go through [`Schedules`], which tells the scheduler.
#[async_trait]
impl ScheduleWriter for Schedules {
    async fn list(&self) -> Result<Vec<Schedule>, RuntimeError> {
        Ok(self.store.list_schedules().await?)
    }

    async fn put(&self, runtime: &Runtime, schedule: &Schedule) -> Result<(), RuntimeError> {
        Schedules::put(self, runtime, schedule)
            .await
            .map(|_| ())
            .map_err(|e| to_runtime(e, &schedule.entry_id))
    }

    async fn delete(&self, entry_id: &str) -> Result<(), RuntimeError> {
        match Schedules::delete(self, entry_id).await {
            Ok(()) => Ok(()),
            Err(e) if e.status == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(to_runtime(e, entry_id)),
        }
    }
}

fn to_runtime(e: ApiError, entry_id: &str) -> RuntimeError {
    if e.status.is_client_error() {
        RuntimeError::Invalid(Invalid::one(Issue::new(
            format!("schedules[\"{entry_id}\"]"),
            e.message,
        )))
    } else {
        RuntimeError::Store(StoreError::Backend(e.message))
    }
}

fn schedules(state: &Shared) -> Schedules {
    Schedules {
        store: state.ports.schedules.clone(),
        stats: state.ports.schedule_stats.clone(),
        scheduler: state.ports.scheduler.clone(),
    }
}

pub(crate) async fn list(
    State(state): State<Shared>,
    params: Params,
) -> Result<Json<Vec<PackSummary>>> {
    // Sluice has no remote catalogue: every pack it lists is installed.
    let _only_installed = params.flag("only_installed")?;
    let only_activated = params.flag("only_activated")?;
    Ok(Json(state.runtime.list_packs(only_activated).await?))
}

pub(crate) async fn get_pack(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<PackSummary>> {
    Ok(Json(state.runtime.get_pack(&name).await?))
}

pub(crate) async fn install(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Json<PackInstalled>> {
    if body.0.len() > MAX_ARCHIVE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a pack archive is at most {MAX_ARCHIVE_BYTES} bytes"),
        ));
    }
    let archive: PackArchive = body.parse()?;
    Ok(Json(
        state.runtime.install_pack(archive, &identity.name).await?,
    ))
}

pub(crate) async fn get_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PackArchive>> {
    Ok(Json(state.runtime.pack_archive(&name, &version).await?))
}

pub(crate) async fn activate(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PackActivated>> {
    Ok(Json(
        state
            .runtime
            .activate_pack(&schedules(&state), &name, &version, &identity.name)
            .await?,
    ))
}

pub(crate) async fn delete_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PackDeleted>> {
    Ok(Json(
        state.runtime.delete_pack_version(&name, &version).await?,
    ))
}

pub(crate) async fn uninstall(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<PackDeleted>> {
    Ok(Json(
        state
            .runtime
            .uninstall_pack(&schedules(&state), &name)
            .await?,
    ))
}

pub(crate) async fn copy_application(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Copied>> {
    let request: CopyRequest = body.parse()?;
    let outcome = state
        .runtime
        .copy_application(&name, &request.name, &identity.name)
        .await?;
    Ok(Json(Copied {
        kind: DocumentKind::Application,
        name: request.name,
        copied_from: name,
        version: outcome.version,
    }))
}

pub(crate) async fn copy_configuration(
    State(state): State<Shared>,
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Json<Copied>> {
    let request: CopyRequest = body.parse()?;
    let outcome = state
        .runtime
        .copy_configuration(&name, &request.name, &identity.name)
        .await?;
    Ok(Json(Copied {
        kind: DocumentKind::Configuration,
        name: request.name,
        copied_from: name,
        version: outcome.version,
    }))
}

/// Refuses a write of a schedule an active pack owns (the activation itself writes
/// through [`Schedules`] directly).
pub(crate) async fn refuse_owned_schedule(state: &Shared, entry_id: &str) -> Result<()> {
    Ok(state
        .runtime
        .refuse_pack_owned(DocumentKind::Schedule, entry_id)
        .await?)
}
