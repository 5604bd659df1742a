//! Packs (PowerFlow's SyncPacks): versioned bundles of applications, configuration
//! templates and schedules, described by a manifest (`pack.json`).
//!
//! Everything here is pure: the manifest and the archive with their validation (every
//! problem at once, each with its path), the checks an activation must pass (step types
//! of the registry, dependency packs active at compatible versions, the minimum Sluice
//! version), the user settings an upgrade carries over, which edits of pack-owned
//! content are allowed, and the activation plan, built with [`crate::plan`].
//!
//! Step type code never travels in an archive: a step type is compiled into the
//! deployment's functions. A pack names the step types it needs with the project that
//! builds them (`step_types[].source`), and activation refuses while any is missing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::{Application, Configuration, Schedule};
use crate::operators;
use crate::plan::{check, plan, Definition, DefinitionSet, DocumentKind, Plan};
use crate::versions::canonical_json;
use crate::{Invalid, Issue};

/// The manifest's file name in a pack directory.
pub const MANIFEST_FILE: &str = "pack.json";
/// The `format` of an archive this version writes and reads.
pub const ARCHIVE_FORMAT: &str = "sluice-pack/1";
/// Largest archive, in bytes of JSON.
pub const MAX_ARCHIVE_BYTES: usize = 4 * 1024 * 1024;
/// Most documents (applications, configurations and schedules together) in a pack.
pub const MAX_PACK_DOCUMENTS: usize = 500;
/// Most tags, step type requirements or dependencies a manifest may list (each).
pub const MAX_MANIFEST_ENTRIES: usize = 100;
/// Longest description.
const MAX_DESCRIPTION: usize = 4096;
/// Longest tag, publisher, source or other short text.
const MAX_SHORT_TEXT: usize = 256;
/// The key of `meta` an activated application carries: `{name, version}` of its pack.
pub const META_PACK: &str = "pack";

/// The manifest of a pack (`pack.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackManifest {
    /// `^[a-z0-9][a-z0-9_-]{0,63}$`.
    pub name: String,
    /// A semantic version (`1.2.0`).
    pub version: String,
    #[serde(default)]
    pub publisher: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The oldest Sluice version the pack works on (a semantic version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sluice_version: Option<String>,
    /// The step types its applications use (operators need not be listed).
    #[serde(default)]
    pub step_types: Vec<StepTypeRequirement>,
    /// Packs that must be active for this one to activate.
    #[serde(default)]
    pub dependencies: Vec<PackDependency>,
}

/// A step type a pack needs. Its code is not in the pack: `source` names the project
/// (repository, crate) that builds it into a deployment's functions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepTypeRequirement {
    #[serde(rename = "type")]
    pub step_type: String,
    /// A semver requirement on the step type's version (`^1.2`, `>=1, <3`); `*` by default.
    #[serde(default = "any_version")]
    pub version: String,
    /// Where the step type is built: a repository URL or crate name.
    pub source: String,
}

/// Another pack this one needs, active at a version matching `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackDependency {
    pub pack: String,
    /// A semver requirement; `*` by default.
    #[serde(default = "any_version")]
    pub version: String,
}

fn any_version() -> String {
    "*".into()
}

/// A built pack: one JSON document holding the manifest and every definition, with the
/// hash of its content. JSON rather than a tar: no file paths to escape through, no
/// archive parser to harden, and two versions diff as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackArchive {
    /// [`ARCHIVE_FORMAT`].
    pub format: String,
    pub manifest: PackManifest,
    #[serde(default)]
    pub applications: Vec<Application>,
    /// Templates: every encrypted value is empty (`""`).
    #[serde(default)]
    pub configurations: Vec<Configuration>,
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// `sha256:<hex>` of the canonical JSON of everything else ([`PackArchive::content_hash`]).
    #[serde(default)]
    pub hash: String,
}

impl PackArchive {
    /// An archive of these documents, its hash set. Encrypted values are emptied, so a
    /// secret written in a pack directory never reaches the archive.
    pub fn new(
        manifest: PackManifest,
        applications: Vec<Application>,
        mut configurations: Vec<Configuration>,
        schedules: Vec<Schedule>,
    ) -> Self {
        for config in &mut configurations {
            for var in config.data.iter_mut().filter(|v| v.encrypted) {
                var.value = Value::String(String::new());
            }
        }
        let mut archive = Self {
            format: ARCHIVE_FORMAT.into(),
            manifest,
            applications,
            configurations,
            schedules,
            hash: String::new(),
        };
        archive.hash = archive.content_hash();
        archive
    }

    /// `sha256:<hex>` of the canonical JSON of the archive without its `hash`.
    pub fn content_hash(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.remove("hash");
        }
        let digest = Sha256::digest(canonical_json(&value).as_bytes());
        format!("sha256:{}", hex::encode(digest))
    }

    /// Every definition of the pack.
    pub fn definitions(&self) -> DefinitionSet {
        self.configurations
            .iter()
            .cloned()
            .map(Definition::Configuration)
            .chain(
                self.applications
                    .iter()
                    .cloned()
                    .map(Definition::Application),
            )
            .chain(self.schedules.iter().cloned().map(Definition::Schedule))
            .collect()
    }

    /// The kind and name of every definition, in plan order.
    pub fn contents(&self) -> Vec<OwnedDefinition> {
        self.definitions()
            .iter()
            .map(|d| OwnedDefinition {
                kind: d.kind(),
                name: d.name().to_string(),
            })
            .collect()
    }
}

/// A definition a pack owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct OwnedDefinition {
    pub kind: DocumentKind,
    pub name: String,
}

/// An installed version of a pack, as listed (without its definitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackVersionInfo {
    pub name: String,
    /// The manifest's version, normalised (`semver::Version`'s text).
    pub version: String,
    /// The archive's content hash.
    pub hash: String,
    #[schemars(with = "String")]
    pub installed_at: DateTime<Utc>,
    pub installed_by: String,
    pub manifest: PackManifest,
}

/// An installed version with its archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstalledPack {
    pub info: PackVersionInfo,
    pub archive: PackArchive,
}

/// Which version of a pack is live, and the definitions it owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackActivation {
    pub name: String,
    pub version: String,
    #[schemars(with = "String")]
    pub activated_at: DateTime<Utc>,
    pub activated_by: String,
    /// Read-only (except through a copy) while this version is active.
    pub owned: Vec<OwnedDefinition>,
}

impl PackActivation {
    /// Whether the activation owns this definition.
    pub fn owns(&self, kind: DocumentKind, name: &str) -> bool {
        self.owned.iter().any(|o| o.kind == kind && o.name == name)
    }
}

/// `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn is_pack_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A version's normalised text, or why it is not a semantic version.
pub fn normalize_version(version: &str) -> Result<String, String> {
    semver::Version::parse(version)
        .map(|v| v.to_string())
        .map_err(|e| format!("\"{version}\" is not a semantic version (like 1.2.0): {e}"))
}

/// Semantic version order (text order for what does not parse).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Every problem of a manifest, each with its path.
pub fn validate_manifest(manifest: &PackManifest) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut issue = |path: String, message: String| issues.push(Issue::new(path, message));
    if !is_pack_name(&manifest.name) {
        issue(
            "name".into(),
            format!(
                "\"{}\" is not a pack name (1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit)",
                manifest.name
            ),
        );
    }
    if manifest.version.len() > MAX_SHORT_TEXT {
        issue(
            "version".into(),
            format!("longer than {MAX_SHORT_TEXT} bytes"),
        );
    } else if let Err(message) = normalize_version(&manifest.version) {
        issue("version".into(), message);
    }
    if manifest.publisher.len() > MAX_SHORT_TEXT {
        issue(
            "publisher".into(),
            format!("longer than {MAX_SHORT_TEXT} bytes"),
        );
    }
    if manifest.description.len() > MAX_DESCRIPTION {
        issue(
            "description".into(),
            format!("longer than {MAX_DESCRIPTION} bytes"),
        );
    }
    for (field, len) in [
        ("tags", manifest.tags.len()),
        ("step_types", manifest.step_types.len()),
        ("dependencies", manifest.dependencies.len()),
    ] {
        if len > MAX_MANIFEST_ENTRIES {
            issue(
                field.into(),
                format!("more than {MAX_MANIFEST_ENTRIES} entries"),
            );
        }
    }
    for (i, tag) in manifest.tags.iter().enumerate() {
        if tag.is_empty() || tag.len() > MAX_SHORT_TEXT {
            issue(
                format!("tags[{i}]"),
                format!("must be 1-{MAX_SHORT_TEXT} bytes"),
            );
        }
    }
    if let Some(min) = &manifest.min_sluice_version {
        if min.len() > MAX_SHORT_TEXT {
            issue(
                "min_sluice_version".into(),
                format!("longer than {MAX_SHORT_TEXT} bytes"),
            );
        } else if let Err(message) = normalize_version(min) {
            issue("min_sluice_version".into(), message);
        }
    }
    let mut seen = BTreeSet::new();
    for (i, req) in manifest.step_types.iter().enumerate() {
        if req.step_type.is_empty() || req.step_type.len() > MAX_SHORT_TEXT {
            issue(
                format!("step_types[{i}].type"),
                "must name a step type".into(),
            );
        } else if !seen.insert(req.step_type.as_str()) {
            issue(
                format!("step_types[{i}].type"),
                format!("\"{}\" is listed twice", req.step_type),
            );
        }
        if req.version.len() > MAX_SHORT_TEXT {
            issue(
                format!("step_types[{i}].version"),
                format!("longer than {MAX_SHORT_TEXT} bytes"),
            );
        } else if let Err(e) = semver::VersionReq::parse(&req.version) {
            issue(
                format!("step_types[{i}].version"),
                format!(
                    "\"{}\" is not a version requirement (like ^1.2): {e}",
                    req.version
                ),
            );
        }
        if req.source.trim().is_empty() || req.source.len() > MAX_SHORT_TEXT {
            issue(
                format!("step_types[{i}].source"),
                "must name the project that builds the step type (a repository URL or crate)"
                    .into(),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, dep) in manifest.dependencies.iter().enumerate() {
        if !is_pack_name(&dep.pack) {
            issue(
                format!("dependencies[{i}].pack"),
                format!("\"{}\" is not a pack name", dep.pack),
            );
        } else if dep.pack == manifest.name {
            issue(
                format!("dependencies[{i}].pack"),
                "a pack cannot depend on itself".into(),
            );
        } else if !seen.insert(dep.pack.as_str()) {
            issue(
                format!("dependencies[{i}].pack"),
                format!("\"{}\" is listed twice", dep.pack),
            );
        }
        if dep.version.len() > MAX_SHORT_TEXT {
            issue(
                format!("dependencies[{i}].version"),
                format!("longer than {MAX_SHORT_TEXT} bytes"),
            );
        } else if let Err(e) = semver::VersionReq::parse(&dep.version) {
            issue(
                format!("dependencies[{i}].version"),
                format!(
                    "\"{}\" is not a version requirement (like ^1.2): {e}",
                    dep.version
                ),
            );
        }
    }
    issues
}

/// Every problem of an archive that does not depend on where it is installed: its
/// format and hash, the manifest, unique names, a document count within
/// [`MAX_PACK_DOCUMENTS`], configuration templates without secrets, and every step type
/// its applications use listed in the manifest. (The documents themselves are validated
/// against the registry when the pack is activated.)
pub fn validate_archive(archive: &PackArchive) -> Result<(), Invalid> {
    let mut issues = Vec::new();
    if archive.format != ARCHIVE_FORMAT {
        issues.push(Issue::new(
            "format",
            format!(
                "\"{}\" is not a pack archive format this Sluice reads ({ARCHIVE_FORMAT})",
                archive.format
            ),
        ));
    }
    issues.extend(
        validate_manifest(&archive.manifest)
            .into_iter()
            .map(|mut i| {
                i.path = format!("manifest.{}", i.path);
                i
            }),
    );
    let count = archive.applications.len() + archive.configurations.len() + archive.schedules.len();
    if count > MAX_PACK_DOCUMENTS {
        issues.push(Issue::new(
            "",
            format!("{count} documents; a pack holds at most {MAX_PACK_DOCUMENTS}"),
        ));
    }
    let names = |kind: &str, names: Vec<&str>, issues: &mut Vec<Issue>| {
        let mut seen = BTreeSet::new();
        for (i, name) in names.into_iter().enumerate() {
            if !seen.insert(name) {
                issues.push(Issue::new(
                    format!("{kind}[{i}]"),
                    format!("\"{name}\" is in the pack twice"),
                ));
            }
        }
    };
    names(
        "applications",
        archive
            .applications
            .iter()
            .map(|a| a.name.as_str())
            .collect(),
        &mut issues,
    );
    names(
        "configurations",
        archive
            .configurations
            .iter()
            .map(|c| c.name.as_str())
            .collect(),
        &mut issues,
    );
    names(
        "schedules",
        archive
            .schedules
            .iter()
            .map(|s| s.entry_id.as_str())
            .collect(),
        &mut issues,
    );
    for (c, config) in archive.configurations.iter().enumerate() {
        for (v, var) in config.data.iter().enumerate() {
            let empty = var.value.is_null() || var.value.as_str() == Some("");
            if var.encrypted && !empty {
                issues.push(Issue::new(
                    format!("configurations[{c}].data[{v}].value"),
                    format!(
                        "encrypted variable \"{}\" has a value; a pack's configuration is a template whose encrypted values are empty",
                        var.name
                    ),
                ));
            }
        }
    }
    let declared: BTreeSet<&str> = archive
        .manifest
        .step_types
        .iter()
        .map(|r| r.step_type.as_str())
        .collect();
    for (a, app) in archive.applications.iter().enumerate() {
        for (s, step) in app.steps.iter().enumerate() {
            if !operators::is_operator(&step.step_type)
                && !declared.contains(step.step_type.as_str())
            {
                issues.push(Issue::new(
                    format!("applications[{a}].steps[{s}].type"),
                    format!(
                        "step type \"{}\" is not in the manifest's step_types (list it with the project that builds it)",
                        step.step_type
                    ),
                ));
            }
        }
    }
    if issues.is_empty() && archive.hash != archive.content_hash() {
        issues.push(Issue::new(
            "hash",
            "does not match the archive's content (changed after it was built?); build it again",
        ));
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Invalid { issues })
    }
}

/// What an activation is checked against.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Each registered step type's version.
    pub step_types: BTreeMap<String, String>,
    /// Each active pack's version (the pack being activated excluded).
    pub active_packs: BTreeMap<String, String>,
    /// This Sluice's version (`CARGO_PKG_VERSION`).
    pub sluice_version: String,
}

/// Why a pack cannot be activated here: every missing or incompatible step type and
/// dependency, and a too-old Sluice, each with the manifest path it concerns.
pub fn activation_problems(manifest: &PackManifest, env: &Environment) -> Vec<Issue> {
    let mut issues = Vec::new();
    if let Some(min) = &manifest.min_sluice_version {
        if let (Ok(min), Ok(have)) = (
            semver::Version::parse(min),
            semver::Version::parse(&env.sluice_version),
        ) {
            if have < min {
                issues.push(Issue::new(
                    "min_sluice_version",
                    format!("the pack needs Sluice {min} or later; this is {have}"),
                ));
            }
        }
    }
    for (i, req) in manifest.step_types.iter().enumerate() {
        let path = format!("step_types[{i}]");
        let Ok(wanted) = semver::VersionReq::parse(&req.version) else {
            continue; // refused by validate_manifest
        };
        match env.step_types.get(&req.step_type) {
            None => issues.push(Issue::new(
                path,
                format!(
                    "step type \"{}\" ({}) is not registered here; its code is not part of the pack: build it into this deployment from {}",
                    req.step_type, req.version, req.source
                ),
            )),
            Some(have) => {
                let matches = semver::Version::parse(have).is_ok_and(|v| wanted.matches(&v));
                if !matches {
                    issues.push(Issue::new(
                        path,
                        format!(
                            "step type \"{}\" is at version {have} here; the pack needs {} (from {})",
                            req.step_type, req.version, req.source
                        ),
                    ));
                }
            }
        }
    }
    for (i, dep) in manifest.dependencies.iter().enumerate() {
        let path = format!("dependencies[{i}]");
        let Ok(wanted) = semver::VersionReq::parse(&dep.version) else {
            continue;
        };
        match env.active_packs.get(&dep.pack) {
            None => issues.push(Issue::new(
                path,
                format!(
                    "needs pack \"{}\" ({}) active; it is not",
                    dep.pack, dep.version
                ),
            )),
            Some(have) => {
                if !semver::Version::parse(have).is_ok_and(|v| wanted.matches(&v)) {
                    issues.push(Issue::new(
                        path,
                        format!(
                            "needs pack \"{}\" {}; version {have} is active",
                            dep.pack, dep.version
                        ),
                    ));
                }
            }
        }
    }
    issues
}

/// Copies the settings a user made on an activated application (`live`, as stored) onto
/// the next version's document: its configuration alignment and the value of each app
/// variable the next version still has, where they differ from what the active version
/// (`previous`) shipped. Returns what it kept, one line each.
pub fn carry_user_settings(
    previous: &Application,
    live: &Application,
    next: &mut Application,
) -> Vec<String> {
    let mut kept = Vec::new();
    if live.configuration != previous.configuration {
        next.configuration = live.configuration.clone();
        kept.push(format!(
            "application \"{}\": configuration {}",
            next.name,
            live.configuration
                .as_deref()
                .map_or("none".to_string(), |c| format!("\"{c}\""))
        ));
    }
    for var in &mut next.app_variables {
        let find = |app: &Application| {
            app.app_variables
                .iter()
                .find(|v| v.name == var.name)
                .map(|v| v.value.clone())
        };
        if let (Some(shipped), Some(set)) = (find(previous), find(live)) {
            if set != shipped {
                var.value = set;
                kept.push(format!(
                    "application \"{}\": app variable \"{}\"",
                    next.name, var.name
                ));
            }
        }
    }
    kept
}

/// Whether `pushed` differs from the stored pack-owned `live` only in what a user may
/// set on a pack's application: its configuration and its app variables' values.
pub fn only_user_settings_differ(live: &Application, pushed: &Application) -> bool {
    if live.app_variables.len() != pushed.app_variables.len() {
        return false;
    }
    let mut normalized = pushed.clone();
    normalized.configuration = live.configuration.clone();
    for (var, stored) in normalized.app_variables.iter_mut().zip(&live.app_variables) {
        var.value = stored.value.clone();
    }
    normalized == *live
}

/// The application as a pack version ships it, marked with its pack in `meta.pack`.
pub fn mark_owned(app: &mut Application, manifest: &PackManifest) {
    let version = normalize_version(&manifest.version).unwrap_or_else(|_| manifest.version.clone());
    app.meta.insert(
        META_PACK.into(),
        serde_json::json!({"name": manifest.name, "version": version}),
    );
}

/// Applications in `after` aligned to a configuration that `stored` has and `after`
/// no longer has: what deleting a pack's configurations would break (the plan's own
/// checks cover schedules, triggers and alerts).
pub fn orphaned_alignments(stored: &DefinitionSet, after: &DefinitionSet) -> Vec<Issue> {
    after
        .iter()
        .filter_map(|d| match d {
            Definition::Application(app) => app.configuration.as_deref().map(|c| (app, c)),
            _ => None,
        })
        .filter(|(_, c)| {
            stored.contains(DocumentKind::Configuration, c)
                && !after.contains(DocumentKind::Configuration, c)
        })
        .map(|(app, c)| {
            Issue::new(
                format!("applications[\"{}\"].configuration", app.name),
                format!("is aligned to configuration \"{c}\", which would be deleted; align it to another first"),
            )
        })
        .collect()
}

/// What activating a version does.
#[derive(Debug, Clone, Default)]
pub struct Activation {
    /// The writes, in order: the version's definitions created or changed, then the
    /// definitions of the previously active version it no longer has deleted.
    pub plan: Plan,
    /// What the version owns once active.
    pub owned: Vec<OwnedDefinition>,
    /// The user settings carried over ([`carry_user_settings`]).
    pub kept_settings: Vec<String>,
}

/// The plan that makes `archive` the live content of its pack. `stored` is every stored
/// definition (configurations redacted); `previous` the archive of the pack's active
/// version and `owned` what that activation owns (none on a first activation);
/// `owner_of` names the pack owning any stored definition. Refused, with every problem,
/// when the version's definitions would overwrite definitions it does not own or break
/// references of others (a schedule naming an application the upgrade removes).
pub fn activation_plan(
    archive: &PackArchive,
    previous: Option<&PackArchive>,
    owned: &[OwnedDefinition],
    stored: &DefinitionSet,
    owner_of: impl Fn(DocumentKind, &str) -> Option<String>,
) -> Result<Activation, Invalid> {
    let mut issues = Vec::new();
    let mut kept_settings = Vec::new();
    let mut content = DefinitionSet::default();
    for definition in archive.definitions().iter() {
        let kind = definition.kind();
        let name = definition.name();
        let path = format!("{}[\"{name}\"]", kind.directory());
        let mine = owned.iter().any(|o| o.kind == kind && o.name == name);
        if stored.contains(kind, name) && !mine {
            let owner = owner_of(kind, name).map_or_else(
                || "a user's".to_string(),
                |other| format!("owned by pack \"{other}\""),
            );
            issues.push(Issue::new(
                path,
                format!(
                    "{} \"{name}\" exists ({owner}); the pack would overwrite it — rename or delete it first",
                    kind.as_str()
                ),
            ));
            continue;
        }
        let mut definition = definition.clone();
        if let Definition::Application(next) = &mut definition {
            mark_owned(next, &archive.manifest);
            let shipped = previous.and_then(|p| p.applications.iter().find(|a| a.name == name));
            let live = stored.get(DocumentKind::Application, name);
            if let (Some(shipped), Some(Definition::Application(live)), true) =
                (shipped, live, mine)
            {
                kept_settings.extend(carry_user_settings(shipped, live, next));
            }
        }
        content.insert(definition);
    }
    // After: everything stored, less what the active version owns, plus the new content.
    let after: DefinitionSet = stored
        .iter()
        .filter(|d| {
            !owned
                .iter()
                .any(|o| o.kind == d.kind() && o.name == d.name())
        })
        .cloned()
        .chain(content.iter().cloned())
        .collect();
    // Only problems the activation introduces count, not ones the store already had.
    let before: Vec<_> = check(stored, stored, true)
        .into_iter()
        .map(|p| (p.kind, p.name, p.issue.path))
        .collect();
    for problem in check(stored, &after, true) {
        let key = (
            problem.kind,
            problem.name.clone(),
            problem.issue.path.clone(),
        );
        if !before.contains(&key) {
            issues.push(Issue::new(
                format!(
                    "{}[\"{}\"].{}",
                    problem.kind.directory(),
                    problem.name,
                    problem.issue.path
                ),
                problem.issue.message,
            ));
        }
    }
    issues.extend(orphaned_alignments(stored, &after));
    if !issues.is_empty() {
        return Err(Invalid { issues });
    }
    Ok(Activation {
        plan: plan(stored, &after, true),
        owned: archive.contents(),
        kept_settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Action;
    use serde_json::json;

    fn manifest(value: Value) -> PackManifest {
        serde_json::from_value(value).unwrap()
    }

    fn app(name: &str, step_type: &str, config: Option<&str>, limit: i64) -> Application {
        serde_json::from_value(json!({
            "name": name,
            "author": "acme",
            "configuration": config,
            "app_variables": [{"name": "limit", "type": "number", "value": limit}],
            "steps": [{"id": "A", "type": step_type, "parameters": {}}],
        }))
        .unwrap()
    }

    fn base_manifest(version: &str) -> PackManifest {
        manifest(json!({
            "name": "inventory",
            "version": version,
            "step_types": [{"type": "http_request", "version": "^1", "source": "https://github.com/sluice-rs/sluice"}],
        }))
    }

    fn archive(version: &str, apps: Vec<Application>) -> PackArchive {
        PackArchive::new(base_manifest(version), apps, vec![], vec![])
    }

    #[test]
    fn manifest_problems_are_listed_with_paths() {
        let m = manifest(json!({
            "name": "Bad Name",
            "version": "1.0",
            "min_sluice_version": "x",
            "step_types": [
                {"type": "http_request", "version": "^^1", "source": ""},
                {"type": "http_request", "source": "repo"}
            ],
            "dependencies": [{"pack": "Bad Name", "version": "1"}, {"pack": "other", "version": "nope"}],
        }));
        let paths: Vec<String> = validate_manifest(&m).into_iter().map(|i| i.path).collect();
        assert_eq!(
            paths,
            [
                "name",
                "version",
                "min_sluice_version",
                "step_types[0].version",
                "step_types[0].source",
                "step_types[1].type",
                "dependencies[0].pack",
                "dependencies[1].version",
            ]
        );
        assert!(validate_manifest(&base_manifest("1.0.0")).is_empty());
    }

    #[test]
    fn unknown_manifest_fields_are_refused() {
        let err = crate::json::from_value::<PackManifest>(
            json!({"name": "a", "version": "1.0.0", "steps": []}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("steps"), "{err}");
    }

    #[test]
    fn archive_checks_hash_secrets_and_undeclared_step_types() {
        let mut a = archive("1.0.0", vec![app("Sync", "sql_query", None, 1)]);
        let config: Configuration = serde_json::from_value(json!({
            "name": "inv-config",
            "data": [{"name": "password", "value": "s3cret", "encrypted": true}],
        }))
        .unwrap();
        a.configurations.push(config.clone());
        a.hash = a.content_hash();
        let err = validate_archive(&a).unwrap_err();
        let paths: Vec<&str> = err.issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "configurations[0].data[0].value",
                "applications[0].steps[0].type"
            ]
        );
        // Built archives never carry a secret.
        let built = PackArchive::new(base_manifest("1.0.0"), vec![], vec![config], vec![]);
        assert_eq!(built.configurations[0].data[0].value, json!(""));
        validate_archive(&built).unwrap();
        let mut tampered = built.clone();
        tampered.manifest.description = "changed".into();
        assert_eq!(
            validate_archive(&tampered).unwrap_err().issues[0].path,
            "hash"
        );
    }

    fn env() -> Environment {
        Environment {
            step_types: BTreeMap::from([("http_request".into(), "1.2.0".into())]),
            active_packs: BTreeMap::from([("base".into(), "1.4.0".into())]),
            sluice_version: "0.1.0".into(),
        }
    }

    #[test]
    fn activation_names_every_missing_step_type_and_dependency() {
        let m = manifest(json!({
            "name": "inventory",
            "version": "1.0.0",
            "min_sluice_version": "9.0.0",
            "step_types": [
                {"type": "http_request", "version": "^1", "source": "a"},
                {"type": "servicenow", "version": "^2", "source": "https://github.com/acme/sn-steps"},
                {"type": "http_request2", "source": "b"}
            ],
            "dependencies": [{"pack": "base", "version": "^2"}, {"pack": "cmdb", "version": "*"}],
        }));
        let problems = activation_problems(&m, &env());
        let text: Vec<String> = problems.iter().map(|i| i.to_string()).collect();
        assert_eq!(problems.len(), 5, "{text:#?}");
        assert!(text[0].contains("9.0.0"));
        assert!(text[1].starts_with("step_types[1]") && text[1].contains("\"servicenow\""));
        assert!(
            text[1].contains("https://github.com/acme/sn-steps"),
            "{}",
            text[1]
        );
        assert!(text[2].contains("\"http_request2\""));
        assert!(
            text[3].contains("\"base\" ^2; version 1.4.0 is active"),
            "{}",
            text[3]
        );
        assert!(text[4].contains("\"cmdb\""));
        // A version outside the requirement is named with both versions.
        let mut old = env();
        old.step_types.insert("http_request".into(), "0.9.0".into());
        let text = activation_problems(&base_manifest("1.0.0"), &old)[0].to_string();
        assert!(text.contains("0.9.0") && text.contains("^1"), "{text}");
        assert!(activation_problems(&base_manifest("1.0.0"), &env()).is_empty());
    }

    fn stored_of(defs: Vec<Definition>) -> DefinitionSet {
        defs.into_iter().collect()
    }

    #[test]
    fn upgrade_keeps_user_settings_and_removes_dropped_content() {
        let v1 = archive(
            "1.0.0",
            vec![
                app("Sync", "http_request", Some("inv-config"), 10),
                app("Old", "http_request", None, 1),
            ],
        );
        let first =
            activation_plan(&v1, None, &[], &DefinitionSet::default(), |_, _| None).unwrap();
        assert_eq!(first.plan.counts().create, 2);
        // The user aligns Sync to their configuration and sets its limit.
        let desired = |name: &str| match first.plan.changes.iter().find(|c| c.name == name) {
            Some(change) => change.desired.clone().unwrap(),
            None => panic!("{name} not planned"),
        };
        let Definition::Application(mut live_sync) = desired("Sync") else {
            panic!("Sync is an application")
        };
        live_sync.configuration = Some("my-config".into());
        live_sync.app_variables[0].value = Some(json!(99));
        let stored = stored_of(vec![desired("Old"), Definition::Application(live_sync)]);
        // v2 changes a step and the default limit, and drops Old.
        let mut next = app("Sync", "http_request", Some("inv-config"), 20);
        next.steps[0]
            .parameters
            .insert("url".into(), json!("https://x"));
        let v2 = archive("2.0.0", vec![next]);
        let upgrade = activation_plan(&v2, Some(&v1), &first.owned, &stored, |_, _| {
            Some("inventory".into())
        })
        .unwrap();
        assert_eq!(
            upgrade.kept_settings.len(),
            2,
            "{:?}",
            upgrade.kept_settings
        );
        let writes: Vec<(&str, bool)> = upgrade
            .plan
            .writes()
            .map(|c| (c.name.as_str(), matches!(c.action, Action::Delete)))
            .collect();
        assert_eq!(writes, [("Sync", false), ("Old", true)]);
        let Some(Definition::Application(after)) = &upgrade.plan.changes[0].desired else {
            panic!()
        };
        assert_eq!(after.configuration.as_deref(), Some("my-config"));
        assert_eq!(after.app_variables[0].value, Some(json!(99)));
        assert_eq!(after.steps[0].parameters["url"], json!("https://x"));
        assert_eq!(after.meta[META_PACK]["version"], json!("2.0.0"));
    }

    #[test]
    fn activation_refuses_to_overwrite_content_it_does_not_own() {
        let v1 = archive("1.0.0", vec![app("Sync", "http_request", None, 1)]);
        let stored = stored_of(vec![Definition::Application(app("Sync", "echo", None, 1))]);
        let err = activation_plan(&v1, None, &[], &stored, |_, _| None).unwrap_err();
        assert_eq!(err.issues.len(), 1);
        assert!(err.issues[0].message.contains("a user's"), "{err}");
        let err =
            activation_plan(&v1, None, &[], &stored, |_, _| Some("other".into())).unwrap_err();
        assert!(err.issues[0].message.contains("pack \"other\""), "{err}");
    }

    #[test]
    fn an_upgrade_cannot_delete_a_configuration_an_application_is_aligned_to() {
        let config: Configuration =
            serde_json::from_value(json!({"name": "inv-config", "data": []})).unwrap();
        let v1 = PackArchive::new(base_manifest("1.0.0"), vec![], vec![config.clone()], vec![]);
        let first =
            activation_plan(&v1, None, &[], &DefinitionSet::default(), |_, _| None).unwrap();
        let users = app("Mine", "http_request", Some("inv-config"), 1);
        let stored = stored_of(vec![
            Definition::Configuration(config),
            Definition::Application(users),
        ]);
        let v2 = archive("2.0.0", vec![]);
        let err = activation_plan(&v2, Some(&v1), &first.owned, &stored, |_, _| None).unwrap_err();
        assert_eq!(err.issues.len(), 1, "{err}");
        assert_eq!(err.issues[0].path, "applications[\"Mine\"].configuration");
    }

    #[test]
    fn only_user_settings_may_change_on_a_pack_application() {
        let live = app("Sync", "http_request", Some("inv-config"), 10);
        let mut settings = live.clone();
        settings.configuration = Some("mine".into());
        settings.app_variables[0].value = Some(json!(5));
        assert!(only_user_settings_differ(&live, &settings));
        let mut edited = live.clone();
        edited.steps[0].step_type = "echo".into();
        assert!(!only_user_settings_differ(&live, &edited));
        let mut renamed_var = live.clone();
        renamed_var.app_variables[0].name = "other".into();
        assert!(!only_user_settings_differ(&live, &renamed_var));
    }
}
