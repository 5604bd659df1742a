//! Installed packs and their activations (the [`PackStore`] port) in the definitions
//! table:
//! - partition `pack_version`, sort key `<pack>#<version>` (`#` sorts before every
//!   character of a pack name, so the items list by name, then version text): the
//!   listing fields in `info`, the deflated archive's first part in `doc`;
//! - partition `pack_chunk`, sort key `<pack>#<version>#<install id>#<n>`: the rest of a
//!   large archive, one item per part. Never S3: the bucket's lifecycle rule expires
//!   objects with the run results, and an installed version must stay. The parts are
//!   written before the version's item (a conditional put: installed once), so a reader
//!   never finds a version without its parts; the install id keeps a losing concurrent
//!   install from overwriting the winner's parts;
//! - partition `pack_activation`, one item per pack.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as A;
use sluice_core::pack::{InstalledPack, PackActivation, PackVersionInfo};
use sluice_core::ports::{PackStore, StoreError};

use crate::codec::{self, blob};
use crate::dynamo::{get_s, is_conditional_failure, s, DynamoStore};
use crate::error::{backend, json_error, sdk};

const VERSION_KIND: &str = "pack_version";
const CHUNK_KIND: &str = "pack_chunk";
const ACTIVATION_KIND: &str = "pack_activation";
/// Deflated archive bytes per item: with a version's `info` (a bounded manifest, at most
/// about 150 KB) an item stays under DynamoDB's 400 KB.
const PART_BYTES: usize = 200 * 1024;

fn version_key(name: &str, version: &str) -> String {
    format!("{name}#{version}")
}

fn chunk_key(version_key: &str, install_id: &str, n: usize) -> String {
    format!("{version_key}#{install_id}#{n}")
}

fn info_of(item: &HashMap<String, A>) -> Result<PackVersionInfo, StoreError> {
    let text = get_s(item, "info").ok_or_else(|| backend("pack version item has no info"))?;
    serde_json::from_str(text).map_err(json_error)
}

fn bytes_of(item: &HashMap<String, A>) -> Result<Vec<u8>, StoreError> {
    match item.get("doc") {
        Some(A::B(bytes)) => Ok(bytes.as_ref().to_vec()),
        _ => Err(backend("pack item has no archive part")),
    }
}

/// `(install id, number of parts beyond the first)` of a version's item.
fn parts_of(item: &HashMap<String, A>) -> (String, usize) {
    let id = get_s(item, "install_id").unwrap_or_default().to_string();
    let parts = item
        .get("parts")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (id, parts)
}

impl DynamoStore {
    async fn delete_chunks(
        &self,
        key: &str,
        install_id: &str,
        parts: usize,
    ) -> Result<(), StoreError> {
        for n in 1..=parts {
            self.delete_definition(CHUNK_KIND, &chunk_key(key, install_id, n))
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl PackStore for DynamoStore {
    async fn install_pack(&self, pack: &InstalledPack) -> Result<bool, StoreError> {
        let key = version_key(&pack.info.name, &pack.info.version);
        let json = serde_json::to_vec(&pack.archive).map_err(json_error)?;
        let deflated = codec::deflate(&json);
        let mut chunks = deflated.chunks(PART_BYTES);
        let first = chunks.next().unwrap_or_default().to_vec();
        let rest: Vec<&[u8]> = chunks.collect();
        let install_id = uuid::Uuid::now_v7().simple().to_string();
        for (i, part) in rest.iter().enumerate() {
            let mut item = Self::definition_key(CHUNK_KIND, &chunk_key(&key, &install_id, i + 1));
            item.insert("doc".into(), blob(part.to_vec()));
            self.db
                .put_item()
                .table_name(&self.settings.definitions_table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| sdk("dynamodb PutItem", e))?;
        }
        let mut item = Self::definition_key(VERSION_KIND, &key);
        item.insert(
            "info".into(),
            s(serde_json::to_string(&pack.info).map_err(json_error)?),
        );
        item.insert("doc".into(), blob(first));
        item.insert("install_id".into(), s(install_id.clone()));
        item.insert("parts".into(), A::N(rest.len().to_string()));
        let put = self
            .db
            .put_item()
            .table_name(&self.settings.definitions_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", "kind")
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if is_conditional_failure(&e) => {
                self.delete_chunks(&key, &install_id, rest.len()).await?;
                Ok(false)
            }
            Err(e) => Err(sdk("dynamodb PutItem", e)),
        }
    }

    async fn get_pack(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<InstalledPack>, StoreError> {
        let key = version_key(name, version);
        let Some(item) = self
            .get_item(
                &self.settings.definitions_table,
                Self::definition_key(VERSION_KIND, &key),
            )
            .await?
        else {
            return Ok(None);
        };
        let mut deflated = bytes_of(&item)?;
        let (install_id, parts) = parts_of(&item);
        for n in 1..=parts {
            let part = self
                .get_item(
                    &self.settings.definitions_table,
                    Self::definition_key(CHUNK_KIND, &chunk_key(&key, &install_id, n)),
                )
                .await?
                .ok_or_else(|| backend(format!("pack {key}: archive part {n} is missing")))?;
            deflated.extend(bytes_of(&part)?);
        }
        Ok(Some(InstalledPack {
            info: info_of(&item)?,
            archive: codec::decode(&deflated)?,
        }))
    }

    async fn list_packs(&self) -> Result<Vec<PackVersionInfo>, StoreError> {
        self.query_kind(VERSION_KIND)
            .await?
            .iter()
            .map(info_of)
            .collect()
    }

    async fn delete_pack(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        let key = version_key(name, version);
        let Some(item) = self
            .get_item(
                &self.settings.definitions_table,
                Self::definition_key(VERSION_KIND, &key),
            )
            .await?
        else {
            return Ok(false);
        };
        let deleted = self.delete_definition(VERSION_KIND, &key).await?;
        let (install_id, parts) = parts_of(&item);
        self.delete_chunks(&key, &install_id, parts).await?;
        Ok(deleted)
    }

    async fn get_activation(&self, name: &str) -> Result<Option<PackActivation>, StoreError> {
        self.get_definition(ACTIVATION_KIND, name).await
    }

    async fn list_activations(&self) -> Result<Vec<PackActivation>, StoreError> {
        self.list_definitions(ACTIVATION_KIND).await
    }

    async fn put_activation(&self, activation: &PackActivation) -> Result<(), StoreError> {
        self.put_definition(ACTIVATION_KIND, &activation.name, activation)
            .await
    }

    async fn delete_activation(&self, name: &str) -> Result<bool, StoreError> {
        self.delete_definition(ACTIVATION_KIND, name).await
    }
}
