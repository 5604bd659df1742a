//! Installed packs and their activations (the [`PackStore`] port) on the data
//! directory's database. Schema version 5.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use sluice_core::pack::{InstalledPack, PackActivation, PackArchive, PackVersionInfo};
use sluice_core::ports::{PackStore, StoreError};

use crate::db::{json_error, sql};
use crate::store::EmbeddedStore;

/// Migration 4 -> 5. A version's listing fields (`info`) apart from its archive, so
/// that a listing never reads the archives; one activation row per pack.
pub(crate) const SCHEMA_V5: &str = r#"
CREATE TABLE pack_versions (
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    info    TEXT NOT NULL,
    archive TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE pack_activations (
    name TEXT PRIMARY KEY NOT NULL,
    doc  TEXT NOT NULL
);
"#;

impl EmbeddedStore {
    /// The installed packs of this data directory.
    pub fn packs(&self) -> Arc<dyn PackStore> {
        Arc::new(self.clone())
    }
}

#[async_trait]
impl PackStore for EmbeddedStore {
    async fn install_pack(&self, pack: &InstalledPack) -> Result<bool, StoreError> {
        let info = serde_json::to_string(&pack.info).map_err(json_error)?;
        let archive = serde_json::to_string(&pack.archive).map_err(json_error)?;
        let (name, version) = (pack.info.name.clone(), pack.info.version.clone());
        let inserted = self
            .shared
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO pack_versions (name, version, info, archive) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )?
                .execute(params![name, version, info, archive])
            })
            .await
            .map_err(sql)?;
        Ok(inserted > 0)
    }

    async fn get_pack(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<InstalledPack>, StoreError> {
        let row: Option<(String, String)> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT info, archive FROM pack_versions WHERE name = ?1 AND version = ?2",
                )?
                .query_row(params![name, version], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
            })
            .map_err(sql)?;
        row.map(|(info, archive)| {
            Ok(InstalledPack {
                info: serde_json::from_str::<PackVersionInfo>(&info).map_err(json_error)?,
                archive: serde_json::from_str::<PackArchive>(&archive).map_err(json_error)?,
            })
        })
        .transpose()
    }

    async fn list_packs(&self) -> Result<Vec<PackVersionInfo>, StoreError> {
        let rows: Vec<String> = self
            .shared
            .read(|conn| {
                conn.prepare_cached("SELECT info FROM pack_versions ORDER BY name, version")?
                    .query_map([], |row| row.get(0))?
                    .collect()
            })
            .map_err(sql)?;
        rows.iter()
            .map(|info| serde_json::from_str(info).map_err(json_error))
            .collect()
    }

    async fn delete_pack(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        let (name, version) = (name.to_string(), version.to_string());
        let deleted = self
            .shared
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM pack_versions WHERE name = ?1 AND version = ?2")?
                    .execute(params![name, version])
            })
            .await
            .map_err(sql)?;
        Ok(deleted > 0)
    }

    async fn get_activation(&self, name: &str) -> Result<Option<PackActivation>, StoreError> {
        let doc: Option<String> = self
            .shared
            .read(|conn| {
                conn.prepare_cached("SELECT doc FROM pack_activations WHERE name = ?1")?
                    .query_row(params![name], |row| row.get(0))
                    .optional()
            })
            .map_err(sql)?;
        doc.map(|doc| serde_json::from_str(&doc).map_err(json_error))
            .transpose()
    }

    async fn list_activations(&self) -> Result<Vec<PackActivation>, StoreError> {
        let rows: Vec<String> = self
            .shared
            .read(|conn| {
                conn.prepare_cached("SELECT doc FROM pack_activations ORDER BY name")?
                    .query_map([], |row| row.get(0))?
                    .collect()
            })
            .map_err(sql)?;
        rows.iter()
            .map(|doc| serde_json::from_str(doc).map_err(json_error))
            .collect()
    }

    async fn put_activation(&self, activation: &PackActivation) -> Result<(), StoreError> {
        let doc = serde_json::to_string(activation).map_err(json_error)?;
        let name = activation.name.clone();
        self.shared
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO pack_activations (name, doc) VALUES (?1, ?2) \
                     ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
                )?
                .execute(params![name, doc])
            })
            .await
            .map_err(sql)?;
        Ok(())
    }

    async fn delete_activation(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        let deleted = self
            .shared
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM pack_activations WHERE name = ?1")?
                    .execute(params![name])
            })
            .await
            .map_err(sql)?;
        Ok(deleted > 0)
    }
}
