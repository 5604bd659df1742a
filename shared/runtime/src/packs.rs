//! Packs as the CLI and the API use them: installing a version, activating one (the
//! upgrade and the rollback alike), deleting versions or the whole pack, listing, the
//! read-only rule for the definitions an active pack owns, and "save as" copies.
//!
//! The decisions are [`sluice_core::pack`]'s; this module reads the stores, carries
//! out an activation's plan (undoing the writes done when one fails) and records the
//! activation last, so an interrupted activation leaves the previous one recorded and
//! activating again completes it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_core::model::{Application, Configuration, Schedule};
use sluice_core::pack::{
    activation_plan, activation_problems, compare_versions, normalize_version,
    only_user_settings_differ, orphaned_alignments, validate_archive, Environment, InstalledPack,
    OwnedDefinition, PackActivation, PackArchive, PackVersionInfo, META_PACK,
};
use sluice_core::plan::{Action, Definition, DefinitionSet, DocumentKind};
use sluice_core::schedule::validate_schedule;
use sluice_core::validate::{validate_application, validate_configuration};
use sluice_core::versions::PushOutcome;
use sluice_core::{Invalid, Issue};

use crate::runtime::{Runtime, RuntimeError};

/// Where an activation reads and writes schedules: they live beside the runtime's ports
/// (the API's `Schedules`, which also tells the scheduler).
#[async_trait]
pub trait ScheduleWriter: Send + Sync {
    /// Every stored schedule.
    async fn list(&self) -> Result<Vec<Schedule>, RuntimeError>;
    /// Stores (creates or replaces) a schedule and tells the scheduler.
    async fn put(&self, runtime: &Runtime, schedule: &Schedule) -> Result<(), RuntimeError>;
    /// Deletes a schedule and tells the scheduler.
    async fn delete(&self, entry_id: &str) -> Result<(), RuntimeError>;
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackInstalled {
    pub name: String,
    pub version: String,
    pub hash: String,
    /// `false`: this version was installed already with the same content.
    pub created: bool,
}

/// A pack as listed: its versions (oldest first, by semantic version) and which one is
/// active, with what that one owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackSummary {
    pub name: String,
    /// The active version; `None` when the pack is installed but not active.
    pub active_version: Option<String>,
    #[schemars(with = "Option<String>")]
    pub activated_at: Option<DateTime<Utc>>,
    pub activated_by: Option<String>,
    /// The highest installed version.
    pub latest_version: String,
    pub versions: Vec<PackVersionInfo>,
    /// The definitions the active version owns (read-only but through a copy).
    pub owned: Vec<OwnedDefinition>,
}

/// One definition an activation wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ActivatedChange {
    pub kind: DocumentKind,
    pub name: String,
    /// `create`, `change` or `delete`.
    pub action: String,
}

/// What an activation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackActivated {
    pub name: String,
    pub version: String,
    /// The version active before (`None`: the first activation).
    pub previous_version: Option<String>,
    /// The definitions written, in order (unchanged ones are not listed).
    pub changes: Vec<ActivatedChange>,
    pub unchanged: usize,
    /// The user settings carried over from the previous version.
    pub kept_settings: Vec<String>,
}

/// What deleting a pack or one of its versions did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackDeleted {
    pub name: String,
    /// The versions deleted.
    pub versions: Vec<String>,
    /// The definitions of the active version deleted with it (uninstalling).
    pub deleted: Vec<OwnedDefinition>,
}

fn not_found(name: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("pack \"{name}\" is not installed"))
}

fn semver_order(versions: &mut [PackVersionInfo]) {
    versions.sort_by(|a, b| compare_versions(&a.version, &b.version));
}

impl Runtime {
    /// Validates and stores a version of a pack (not activating it). Installing the same
    /// version again with the same content changes nothing; with other content it is
    /// refused (a changed pack needs a new version).
    pub async fn install_pack(
        &self,
        archive: PackArchive,
        author: &str,
    ) -> Result<PackInstalled, RuntimeError> {
        validate_archive(&archive)?;
        let name = archive.manifest.name.clone();
        let version = normalize_version(&archive.manifest.version)
            .map_err(|m| Invalid::one(Issue::new("manifest.version", m)))?;
        let installed = PackInstalled {
            name: name.clone(),
            version: version.clone(),
            hash: archive.hash.clone(),
            created: true,
        };
        if let Some(existing) = self.backend.packs.get_pack(&name, &version).await? {
            if existing.info.hash == archive.hash {
                return Ok(PackInstalled {
                    created: false,
                    ..installed
                });
            }
            return Err(RuntimeError::Conflict(format!(
                "pack \"{name}\" {version} is installed with other content ({}); give the changed pack a new version",
                existing.info.hash
            )));
        }
        let pack = InstalledPack {
            info: PackVersionInfo {
                name: name.clone(),
                version: version.clone(),
                hash: archive.hash.clone(),
                installed_at: (self.config.clock)(),
                installed_by: author.to_string(),
                manifest: archive.manifest.clone(),
            },
            archive,
        };
        let created = self.backend.packs.install_pack(&pack).await?;
        if !created {
            // A concurrent install of this version won: same content or a conflict.
            let winner = self.backend.packs.get_pack(&name, &version).await?;
            if winner.is_some_and(|w| w.info.hash != pack.info.hash) {
                return Err(RuntimeError::Conflict(format!(
                    "pack \"{name}\" {version} was just installed with other content; give the changed pack a new version"
                )));
            }
        }
        tracing::info!(pack = %name, %version, created, "installed pack");
        Ok(PackInstalled {
            created,
            ..installed
        })
    }

    /// Every installed pack by name; with `only_activated`, only the active ones.
    pub async fn list_packs(&self, only_activated: bool) -> Result<Vec<PackSummary>, RuntimeError> {
        let activations = self.backend.packs.list_activations().await?;
        let mut by_name: BTreeMap<String, Vec<PackVersionInfo>> = BTreeMap::new();
        for info in self.backend.packs.list_packs().await? {
            by_name.entry(info.name.clone()).or_default().push(info);
        }
        Ok(by_name
            .into_iter()
            .map(|(name, mut versions)| {
                semver_order(&mut versions);
                let active = activations.iter().find(|a| a.name == name);
                PackSummary {
                    latest_version: versions
                        .last()
                        .map(|v| v.version.clone())
                        .unwrap_or_default(),
                    active_version: active.map(|a| a.version.clone()),
                    activated_at: active.map(|a| a.activated_at),
                    activated_by: active.map(|a| a.activated_by.clone()),
                    owned: active.map(|a| a.owned.clone()).unwrap_or_default(),
                    name,
                    versions,
                }
            })
            .filter(|p| !only_activated || p.active_version.is_some())
            .collect())
    }

    /// One installed pack.
    pub async fn get_pack(&self, name: &str) -> Result<PackSummary, RuntimeError> {
        self.list_packs(false)
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| not_found(name))
    }

    /// The archive of an installed version.
    pub async fn pack_archive(
        &self,
        name: &str,
        version: &str,
    ) -> Result<PackArchive, RuntimeError> {
        Ok(self.installed(name, version).await?.archive)
    }

    async fn installed(&self, name: &str, version: &str) -> Result<InstalledPack, RuntimeError> {
        let version = normalize_version(version).unwrap_or_else(|_| version.to_string());
        self.backend
            .packs
            .get_pack(name, &version)
            .await?
            .ok_or_else(|| {
                RuntimeError::NotFound(format!(
                    "pack \"{name}\" has no installed version {version}"
                ))
            })
    }

    /// Makes `version` the live content of its pack: refused, naming every problem, when
    /// a step type or dependency it needs is missing, Sluice is too old, or its
    /// definitions would overwrite ones it does not own or break others' references.
    /// Otherwise writes its definitions (with the user's settings on the previously
    /// active version's applications carried over), deletes what the previous version
    /// had and this one has not, and records the activation. Activating the active
    /// version again re-applies it (repairing an interrupted activation).
    pub async fn activate_pack(
        &self,
        schedules: &dyn ScheduleWriter,
        name: &str,
        version: &str,
        author: &str,
    ) -> Result<PackActivated, RuntimeError> {
        let target = self.installed(name, version).await?;
        let activations = self.backend.packs.list_activations().await?;
        let current = activations.iter().find(|a| a.name == name);
        let env = Environment {
            step_types: self
                .registry
                .iter()
                .map(|t| (t.name().to_string(), t.version().to_string()))
                .collect(),
            active_packs: activations
                .iter()
                .filter(|a| a.name != name)
                .map(|a| (a.name.clone(), a.version.clone()))
                .collect(),
            sluice_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let problems = activation_problems(&target.archive.manifest, &env);
        if !problems.is_empty() {
            return Err(Invalid {
                issues: problems
                    .into_iter()
                    .map(|mut i| {
                        i.path = format!("manifest.{}", i.path);
                        i
                    })
                    .collect(),
            }
            .into());
        }
        let previous = match current {
            Some(a) => self.backend.packs.get_pack(name, &a.version).await?,
            None => None,
        };
        let stored = self.stored_definitions(schedules).await?;
        let owner_of = |kind: DocumentKind, def: &str| {
            activations
                .iter()
                .find(|a| a.owns(kind, def))
                .map(|a| a.name.clone())
        };
        let owned = current.map(|a| a.owned.clone()).unwrap_or_default();
        let activation = activation_plan(
            &target.archive,
            previous.as_ref().map(|p| &p.archive),
            &owned,
            &stored,
            owner_of,
        )?;
        // Every document is checked before the first write, so that only a store failure
        // can interrupt the writes.
        let mut issues = Vec::new();
        for change in activation.plan.writes() {
            let result = match &change.desired {
                Some(Definition::Application(app)) => validate_application(app, &self.catalog),
                Some(Definition::Configuration(c)) => validate_configuration(c),
                Some(Definition::Schedule(s)) => validate_schedule(s).map(|_| ()),
                None => Ok(()),
            };
            if let Err(invalid) = result {
                issues.extend(invalid.issues.into_iter().map(|mut i| {
                    i.path = format!(
                        "{}[\"{}\"].{}",
                        change.kind.directory(),
                        change.name,
                        i.path
                    );
                    i
                }));
            }
        }
        if !issues.is_empty() {
            return Err(Invalid { issues }.into());
        }
        let mut done: Vec<&sluice_core::plan::PlannedChange> = Vec::new();
        for change in activation.plan.writes() {
            let result = match &change.desired {
                Some(definition) => self.write_definition(schedules, definition, author).await,
                None => {
                    self.remove_definition(schedules, change.kind, &change.name)
                        .await
                }
            };
            if let Err(error) = result {
                tracing::error!(pack = name, %error, "activation failed; undoing its writes");
                for undo in done.iter().rev() {
                    let undone = match &undo.previous {
                        Some(previous) => self.write_definition(schedules, previous, author).await,
                        None => {
                            self.remove_definition(schedules, undo.kind, &undo.name)
                                .await
                        }
                    };
                    if let Err(e) = undone {
                        tracing::error!(kind = undo.kind.as_str(), name = %undo.name, error = %e, "could not undo");
                    }
                }
                return Err(error);
            }
            done.push(change);
        }
        let record = PackActivation {
            name: name.to_string(),
            version: target.info.version.clone(),
            activated_at: (self.config.clock)(),
            activated_by: author.to_string(),
            owned: activation.owned.clone(),
        };
        self.backend.packs.put_activation(&record).await?;
        tracing::info!(pack = name, version = %record.version, "activated pack");
        Ok(PackActivated {
            name: name.to_string(),
            version: record.version,
            previous_version: current.map(|a| a.version.clone()),
            changes: activation
                .plan
                .writes()
                .map(|c| ActivatedChange {
                    kind: c.kind,
                    name: c.name.clone(),
                    action: match c.action {
                        Action::Create => "create",
                        Action::Delete => "delete",
                        _ => "change",
                    }
                    .into(),
                })
                .collect(),
            unchanged: activation.plan.counts().unchanged,
            kept_settings: activation.kept_settings,
        })
    }

    /// Deletes one installed version; refused while it is the active one.
    pub async fn delete_pack_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<PackDeleted, RuntimeError> {
        let installed = self.installed(name, version).await?;
        let version = installed.info.version;
        if let Some(active) = self.backend.packs.get_activation(name).await? {
            if active.version == version {
                return Err(RuntimeError::Conflict(format!(
                    "pack \"{name}\" {version} is active; activate another version first, or delete the whole pack to uninstall it"
                )));
            }
        }
        self.backend.packs.delete_pack(name, &version).await?;
        Ok(PackDeleted {
            name: name.to_string(),
            versions: vec![version],
            deleted: vec![],
        })
    }

    /// Uninstalls a pack: deletes the definitions its active version owns, its
    /// activation and every installed version. Refused while another active pack
    /// depends on it, or while a definition it does not own names one it does.
    pub async fn uninstall_pack(
        &self,
        schedules: &dyn ScheduleWriter,
        name: &str,
    ) -> Result<PackDeleted, RuntimeError> {
        let summary = self.get_pack(name).await?;
        let activations = self.backend.packs.list_activations().await?;
        let mut dependants = Vec::new();
        for other in activations.iter().filter(|a| a.name != name) {
            if let Some(pack) = self
                .backend
                .packs
                .get_pack(&other.name, &other.version)
                .await?
            {
                if pack
                    .info
                    .manifest
                    .dependencies
                    .iter()
                    .any(|d| d.pack == name)
                {
                    dependants.push(format!("\"{}\" {}", other.name, other.version));
                }
            }
        }
        if !dependants.is_empty() {
            return Err(RuntimeError::Conflict(format!(
                "pack \"{name}\" is needed by the active pack(s) {}; uninstall them first",
                dependants.join(", ")
            )));
        }
        let mut deleted = Vec::new();
        if let Some(active) = activations.iter().find(|a| a.name == name) {
            let stored = self.stored_definitions(schedules).await?;
            let after: DefinitionSet = stored
                .iter()
                .filter(|d| !active.owns(d.kind(), d.name()))
                .cloned()
                .collect();
            let problems = sluice_core::plan::check(&stored, &after, true);
            let before = sluice_core::plan::check(&stored, &stored, true);
            let mut introduced: Vec<Issue> = problems
                .into_iter()
                .filter(|p| !before.contains(p))
                .map(|p| {
                    Issue::new(
                        format!("{}[\"{}\"].{}", p.kind.directory(), p.name, p.issue.path),
                        p.issue.message,
                    )
                })
                .collect();
            introduced.extend(orphaned_alignments(&stored, &after));
            if !introduced.is_empty() {
                return Err(Invalid { issues: introduced }.into());
            }
            let mut owned = active.owned.clone();
            // Schedules before the applications they name, applications before
            // configurations.
            owned.sort_by_key(|o| std::cmp::Reverse(o.kind));
            for o in &owned {
                if stored.contains(o.kind, &o.name) {
                    self.remove_definition(schedules, o.kind, &o.name).await?;
                }
                deleted.push(o.clone());
            }
            self.backend.packs.delete_activation(name).await?;
        }
        let mut versions = Vec::new();
        for v in &summary.versions {
            self.backend.packs.delete_pack(name, &v.version).await?;
            versions.push(v.version.clone());
        }
        tracing::info!(pack = name, "uninstalled pack");
        Ok(PackDeleted {
            name: name.to_string(),
            versions,
            deleted,
        })
    }

    /// The active pack owning a definition, with its version.
    pub async fn pack_owner(
        &self,
        kind: DocumentKind,
        name: &str,
    ) -> Result<Option<(String, String)>, RuntimeError> {
        Ok(self
            .backend
            .packs
            .list_activations()
            .await?
            .into_iter()
            .find(|a| a.owns(kind, name))
            .map(|a| (a.name, a.version)))
    }

    /// Refuses (a conflict naming the pack) a change of a definition an active pack
    /// owns: it changes only through the pack or under a new name (a copy).
    pub async fn refuse_pack_owned(
        &self,
        kind: DocumentKind,
        name: &str,
    ) -> Result<(), RuntimeError> {
        match self.pack_owner(kind, name).await? {
            None => Ok(()),
            Some((pack, version)) => Err(read_only(kind, name, &pack, &version)),
        }
    }

    /// [`refuse_pack_owned`](Self::refuse_pack_owned) for a push of an application, which
    /// may change a pack-owned application's configuration and app variable values (the
    /// user's settings, kept across upgrades) and nothing else.
    pub(crate) async fn refuse_pack_owned_edit(
        &self,
        app: &Application,
    ) -> Result<(), RuntimeError> {
        let Some((pack, version)) = self
            .pack_owner(DocumentKind::Application, &app.name)
            .await?
        else {
            return Ok(());
        };
        let live = self.backend.definitions.get_application(&app.name).await?;
        match live {
            Some(live) if only_user_settings_differ(&live, app) => Ok(()),
            _ => Err(read_only(
                DocumentKind::Application,
                &app.name,
                &pack,
                &version,
            )),
        }
    }

    /// "Save as": stores a copy of an application under `new_name`, owned by the user
    /// (its `meta.pack` mark removed). Refused when `new_name` exists.
    pub async fn copy_application(
        &self,
        name: &str,
        new_name: &str,
        author: &str,
    ) -> Result<PushOutcome, RuntimeError> {
        let mut app = self
            .backend
            .definitions
            .get_application(name)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("application \"{name}\" not found")))?;
        if self
            .backend
            .definitions
            .get_application(new_name)
            .await?
            .is_some()
        {
            return Err(RuntimeError::Conflict(format!(
                "application \"{new_name}\" exists; copy to a new name"
            )));
        }
        app.name = new_name.to_string();
        app.meta.remove(META_PACK);
        self.store_application(&app, author)
            .await
            .map_err(start_to_runtime)
    }

    /// "Save as" for a configuration: a copy under `new_name` with the same secrets,
    /// owned by the user. Refused when `new_name` exists.
    pub async fn copy_configuration(
        &self,
        name: &str,
        new_name: &str,
        author: &str,
    ) -> Result<PushOutcome, RuntimeError> {
        let mut config = self
            .backend
            .definitions
            .get_configuration(name)
            .await?
            .ok_or_else(|| RuntimeError::NotFound(format!("configuration \"{name}\" not found")))?;
        if self
            .backend
            .definitions
            .get_configuration(new_name)
            .await?
            .is_some()
        {
            return Err(RuntimeError::Conflict(format!(
                "configuration \"{new_name}\" exists; copy to a new name"
            )));
        }
        let secrets = self.backend.secrets.get_secrets(name).await?;
        for var in config.data.iter_mut().filter(|v| v.encrypted) {
            if let Some(value) = secrets.get(&var.name) {
                var.value = value.clone();
            }
        }
        config.name = new_name.to_string();
        let (_, outcome) = self
            .store_configuration(&config, author)
            .await
            .map_err(start_to_runtime)?;
        Ok(outcome)
    }

    /// Every stored definition (configurations redacted).
    async fn stored_definitions(
        &self,
        schedules: &dyn ScheduleWriter,
    ) -> Result<DefinitionSet, RuntimeError> {
        let definitions = &self.backend.definitions;
        let configs: Vec<Configuration> = definitions.list_configurations().await?;
        Ok(configs
            .into_iter()
            .map(|c| Definition::Configuration(c.redacted()))
            .chain(
                definitions
                    .list_applications()
                    .await?
                    .into_iter()
                    .map(Definition::Application),
            )
            .chain(
                schedules
                    .list()
                    .await?
                    .into_iter()
                    .map(Definition::Schedule),
            )
            .collect())
    }

    async fn write_definition(
        &self,
        schedules: &dyn ScheduleWriter,
        definition: &Definition,
        author: &str,
    ) -> Result<(), RuntimeError> {
        match definition {
            Definition::Application(app) => self
                .store_application(app, author)
                .await
                .map(|_| ())
                .map_err(start_to_runtime),
            Definition::Configuration(config) => self
                .store_configuration(config, author)
                .await
                .map(|_| ())
                .map_err(start_to_runtime),
            Definition::Schedule(schedule) => schedules.put(self, schedule).await,
        }
    }

    async fn remove_definition(
        &self,
        schedules: &dyn ScheduleWriter,
        kind: DocumentKind,
        name: &str,
    ) -> Result<(), RuntimeError> {
        match kind {
            DocumentKind::Application => {
                self.backend.definitions.delete_application(name).await?;
            }
            DocumentKind::Configuration => {
                self.remove_configuration(name).await?;
            }
            DocumentKind::Schedule => schedules.delete(name).await?,
        }
        Ok(())
    }
}

fn read_only(kind: DocumentKind, name: &str, pack: &str, version: &str) -> RuntimeError {
    let collection = match kind {
        DocumentKind::Application => "applications",
        DocumentKind::Configuration => "configurations",
        DocumentKind::Schedule => "schedule",
    };
    let copy = match kind {
        DocumentKind::Schedule => String::new(),
        _ => format!(
            "; to change it, save a copy under a new name (POST /api/v1/{collection}/{name}/copy)"
        ),
    };
    RuntimeError::Conflict(format!(
        "{} \"{name}\" belongs to pack \"{pack}\" {version} and is read-only{copy}",
        kind.as_str()
    ))
}

fn start_to_runtime(e: crate::StartError) -> RuntimeError {
    match e {
        crate::StartError::NotFound(m) => RuntimeError::NotFound(m),
        crate::StartError::Invalid(i) => RuntimeError::Invalid(i),
        crate::StartError::Runtime(r) => r,
        // Storing definitions starts no run, so is never refused for a full queue.
        e @ crate::StartError::Overloaded { .. } => RuntimeError::Conflict(e.to_string()),
    }
}
