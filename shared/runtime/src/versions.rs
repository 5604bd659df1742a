//! Versions of applications and configurations as the CLI and the API use them: the
//! history, one version, the diff of two, and rolling back (pushing an old version's
//! document again, so that the rollback is itself a version).

use serde_json::Value;
use sluice_core::model::{Application, Configuration};
use sluice_core::versions::{
    content_hash, diff, DefinitionKind, DefinitionVersion, DiffEntry, PushOutcome, VersionInfo,
};

use crate::create::StartError;
use crate::runtime::{Runtime, RuntimeError};

impl Runtime {
    /// The versions of a definition, newest first (every one retention keeps). Not found
    /// when the definition neither exists nor has versions.
    pub async fn versions(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<Vec<VersionInfo>, StartError> {
        let versions = self
            .backend
            .definitions
            .list_versions(kind, name, self.config.versions_kept)
            .await?;
        if versions.is_empty() && !self.definition_exists(kind, name).await? {
            return Err(not_found(kind, name));
        }
        Ok(versions)
    }

    /// One version with its document.
    pub async fn version(
        &self,
        kind: DefinitionKind,
        name: &str,
        version: u64,
    ) -> Result<DefinitionVersion, StartError> {
        self.backend
            .definitions
            .get_version(kind, name, version)
            .await?
            .ok_or_else(|| {
                StartError::NotFound(format!(
                    "{} \"{name}\" has no version {version}",
                    kind.as_str()
                ))
            })
    }

    /// What changed from version `from` to version `to`.
    pub async fn diff_versions(
        &self,
        kind: DefinitionKind,
        name: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<DiffEntry>, StartError> {
        let old = self.version(kind, name, from).await?;
        let new = self.version(kind, name, to).await?;
        Ok(diff(&old.document, &new.document))
    }

    /// Stores version `version`'s document again, as a new version by `author` (no new
    /// version when it equals the latest). A configuration's encrypted values keep their
    /// stored secrets; one with no stored secret is refused naming it.
    pub async fn rollback(
        &self,
        kind: DefinitionKind,
        name: &str,
        version: u64,
        author: &str,
    ) -> Result<PushOutcome, StartError> {
        let stored = self.version(kind, name, version).await?;
        let corrupt = |e: serde_json::Error| {
            RuntimeError::Store(sluice_core::ports::StoreError::Backend(format!(
                "stored version {version} of {} \"{name}\" is unreadable: {e}",
                kind.as_str()
            )))
        };
        match kind {
            DefinitionKind::Application => {
                let app: Application = serde_json::from_value(stored.document).map_err(corrupt)?;
                self.push_application(&app, author).await
            }
            DefinitionKind::Configuration => {
                let config: Configuration =
                    serde_json::from_value(stored.document).map_err(corrupt)?;
                Ok(self.push_configuration(&config, author).await?.1)
            }
        }
    }

    /// The stored version a run of `app` executes: the latest one when `app` is its
    /// document (a document from elsewhere, or one pushed before versions existed, has
    /// none).
    pub(crate) async fn stored_version_of(
        &self,
        app: &Application,
    ) -> Result<Option<u64>, RuntimeError> {
        let Some(latest) = self
            .backend
            .definitions
            .latest_version(DefinitionKind::Application, &app.name)
            .await?
        else {
            return Ok(None);
        };
        let document = serde_json::to_value(app).unwrap_or(Value::Null);
        Ok((content_hash(&document) == latest.hash).then_some(latest.version))
    }

    async fn definition_exists(
        &self,
        kind: DefinitionKind,
        name: &str,
    ) -> Result<bool, RuntimeError> {
        let definitions = &self.backend.definitions;
        Ok(match kind {
            DefinitionKind::Application => definitions.get_application(name).await?.is_some(),
            DefinitionKind::Configuration => definitions.get_configuration(name).await?.is_some(),
        })
    }
}

fn not_found(kind: DefinitionKind, name: &str) -> StartError {
    StartError::NotFound(format!("{} \"{name}\" not found", kind.as_str()))
}
