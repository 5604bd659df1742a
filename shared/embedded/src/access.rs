//! API tokens, role bindings and schedule statistics (the [`AccessStore`] and
//! [`ScheduleStatsStore`] ports) on the data directory's database. Schema versions 2 and 3.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use sluice_core::model::{ApiToken, OwnerType, RoleBinding};
use sluice_core::ports::{
    AccessStore, ScheduleError, ScheduleStats, ScheduleStatsStore, ScheduledRun, StoreError,
};

use crate::db::{json_error, nanos, sql};
use crate::store::EmbeddedStore;

/// Migration 1 -> 2. Token rows hold only the SHA-256 of the token. `last_tick` is the
/// last handled tick in nanoseconds: the conditional `UPDATE ... WHERE last_tick < ?`
/// is what makes a tick fire once even across restarts.
pub(crate) const SCHEMA_V2: &str = r#"
CREATE TABLE api_tokens (
    name TEXT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    doc  TEXT NOT NULL
);
CREATE TABLE role_bindings (
    owner_type TEXT NOT NULL,
    owner      TEXT NOT NULL,
    role       TEXT NOT NULL,
    PRIMARY KEY (owner_type, owner)
);
CREATE TABLE schedule_stats (
    entry_id   TEXT PRIMARY KEY NOT NULL,
    total_runs INTEGER NOT NULL DEFAULT 0,
    last_run   TEXT,
    last_tick  INTEGER
);
"#;

/// Migration 2 -> 3: why the latest failed tick could not start its run (JSON
/// `{message, time}`), cleared by the next run.
pub(crate) const SCHEMA_V3: &str = "ALTER TABLE schedule_stats ADD COLUMN last_error TEXT;";

impl EmbeddedStore {
    /// The API tokens and role bindings of this data directory.
    pub fn access(&self) -> std::sync::Arc<dyn AccessStore> {
        std::sync::Arc::new(self.clone())
    }

    /// The schedules' run statistics and tick bookkeeping.
    pub fn schedule_stats(&self) -> std::sync::Arc<dyn ScheduleStatsStore> {
        std::sync::Arc::new(self.clone())
    }
}

fn from_nanos(n: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(n)
}

#[async_trait]
impl AccessStore for EmbeddedStore {
    async fn create_token(&self, token: &ApiToken) -> Result<bool, StoreError> {
        let doc = serde_json::to_string(token).map_err(json_error)?;
        let inserted = self
            .shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO api_tokens (name, hash, doc) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![token.name, token.hash, doc])
            })
            .await
            .map_err(sql)?;
        Ok(inserted > 0)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let doc: Option<String> = self
            .shared
            .read(|conn| {
                conn.prepare_cached("SELECT doc FROM api_tokens WHERE hash = ?1")?
                    .query_row([hash], |row| row.get(0))
                    .optional()
            })
            .map_err(sql)?;
        doc.map(|d| serde_json::from_str(&d).map_err(json_error))
            .transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        let docs: Vec<String> = self
            .shared
            .read(|conn| {
                conn.prepare_cached("SELECT doc FROM api_tokens ORDER BY name")?
                    .query_map([], |row| row.get(0))?
                    .collect()
            })
            .map_err(sql)?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(json_error))
            .collect()
    }

    async fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = self
            .shared
            .write(|conn| {
                conn.prepare_cached("DELETE FROM api_tokens WHERE name = ?1")?
                    .execute([name])
            })
            .await
            .map_err(sql)?;
        Ok(deleted > 0)
    }

    async fn put_binding(&self, binding: &RoleBinding) -> Result<(), StoreError> {
        self.shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO role_bindings (owner_type, owner, role) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (owner_type, owner) DO UPDATE SET role = excluded.role",
                )?
                .execute(params![
                    binding.owner_type.as_str(),
                    binding.owner,
                    binding.role.as_str()
                ])
            })
            .await
            .map_err(sql)?;
        Ok(())
    }

    async fn list_bindings(&self) -> Result<Vec<RoleBinding>, StoreError> {
        let rows: Vec<(String, String, String)> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT owner_type, owner, role FROM role_bindings ORDER BY owner_type, owner",
                )?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
            })
            .map_err(sql)?;
        rows.into_iter()
            .map(|(owner_type, owner, role)| {
                Ok(RoleBinding {
                    owner,
                    owner_type: if owner_type == "group" {
                        OwnerType::Group
                    } else {
                        OwnerType::User
                    },
                    role: role.parse().map_err(StoreError::Backend)?,
                })
            })
            .collect()
    }

    async fn delete_binding(&self, owner_type: OwnerType, owner: &str) -> Result<bool, StoreError> {
        let deleted = self
            .shared
            .write(|conn| {
                conn.prepare_cached(
                    "DELETE FROM role_bindings WHERE owner_type = ?1 AND owner = ?2",
                )?
                .execute([owner_type.as_str(), owner])
            })
            .await
            .map_err(sql)?;
        Ok(deleted > 0)
    }
}

type StatsRow = (String, i64, Option<String>, Option<i64>, Option<String>);

fn stats_of(row: StatsRow) -> Result<ScheduleStats, StoreError> {
    let (entry_id, total_runs, last_run, last_tick, last_error) = row;
    Ok(ScheduleStats {
        entry_id,
        total_runs: total_runs.max(0) as u64,
        last_run: last_run
            .map(|t| serde_json::from_str(&t).map_err(json_error))
            .transpose()?,
        last_tick: last_tick.map(from_nanos),
        last_error: last_error
            .map(|t| serde_json::from_str(&t).map_err(json_error))
            .transpose()?,
    })
}

const STATS_COLUMNS: &str =
    "SELECT entry_id, total_runs, last_run, last_tick, last_error FROM schedule_stats";

fn stats_row(r: &rusqlite::Row) -> rusqlite::Result<StatsRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

#[async_trait]
impl ScheduleStatsStore for EmbeddedStore {
    async fn get_stats(&self, entry_id: &str) -> Result<Option<ScheduleStats>, StoreError> {
        let row: Option<StatsRow> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(&format!("{STATS_COLUMNS} WHERE entry_id = ?1"))?
                    .query_row([entry_id], stats_row)
                    .optional()
            })
            .map_err(sql)?;
        row.map(stats_of).transpose()
    }

    async fn list_stats(&self) -> Result<Vec<ScheduleStats>, StoreError> {
        let rows: Vec<StatsRow> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(&format!("{STATS_COLUMNS} ORDER BY entry_id"))?
                    .query_map([], stats_row)?
                    .collect()
            })
            .map_err(sql)?;
        rows.into_iter().map(stats_of).collect()
    }

    async fn claim_tick(&self, entry_id: &str, tick: DateTime<Utc>) -> Result<bool, StoreError> {
        let tick = nanos(tick);
        let changed = self
            .shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO schedule_stats (entry_id, last_tick) VALUES (?1, ?2) \
                     ON CONFLICT (entry_id) DO UPDATE SET last_tick = excluded.last_tick \
                     WHERE schedule_stats.last_tick IS NULL OR schedule_stats.last_tick < excluded.last_tick",
                )?
                .execute(params![entry_id, tick])
            })
            .await
            .map_err(sql)?;
        Ok(changed > 0)
    }

    async fn record_run(&self, entry_id: &str, run: &ScheduledRun) -> Result<(), StoreError> {
        let doc = serde_json::to_string(run).map_err(json_error)?;
        self.shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO schedule_stats (entry_id, total_runs, last_run) VALUES (?1, 1, ?2) \
                     ON CONFLICT (entry_id) DO UPDATE SET total_runs = total_runs + 1, \
                     last_run = excluded.last_run, last_error = NULL",
                )?
                .execute(params![entry_id, doc])
            })
            .await
            .map_err(sql)?;
        Ok(())
    }

    async fn record_error(&self, entry_id: &str, error: &ScheduleError) -> Result<(), StoreError> {
        let doc = serde_json::to_string(error).map_err(json_error)?;
        self.shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO schedule_stats (entry_id, last_error) VALUES (?1, ?2) \
                     ON CONFLICT (entry_id) DO UPDATE SET last_error = excluded.last_error",
                )?
                .execute(params![entry_id, doc])
            })
            .await
            .map_err(sql)?;
        Ok(())
    }

    async fn delete_stats(&self, entry_id: &str) -> Result<(), StoreError> {
        self.shared
            .write(|conn| {
                conn.prepare_cached("DELETE FROM schedule_stats WHERE entry_id = ?1")?
                    .execute([entry_id])
            })
            .await
            .map_err(sql)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::model::Role;

    #[tokio::test]
    async fn tokens_bindings_and_ticks() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let token = ApiToken {
            name: "ci".into(),
            role: Role::Execute,
            hash: "ab".repeat(32),
            created_at: Utc::now(),
        };
        assert!(store.create_token(&token).await.unwrap());
        assert!(
            !store.create_token(&token).await.unwrap(),
            "names are unique"
        );
        assert_eq!(
            store
                .token_by_hash(&token.hash)
                .await
                .unwrap()
                .unwrap()
                .name,
            "ci"
        );
        assert_eq!(store.list_tokens().await.unwrap().len(), 1);
        assert!(store.delete_token("ci").await.unwrap());
        assert!(store.token_by_hash(&token.hash).await.unwrap().is_none());

        let binding = RoleBinding {
            owner: "ops".into(),
            owner_type: OwnerType::Group,
            role: Role::Developer,
        };
        store.put_binding(&binding).await.unwrap();
        store
            .put_binding(&RoleBinding {
                role: Role::View,
                ..binding.clone()
            })
            .await
            .unwrap();
        let bindings = store.list_bindings().await.unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].role, Role::View);
        assert!(store.delete_binding(OwnerType::Group, "ops").await.unwrap());
        assert!(!store.delete_binding(OwnerType::Group, "ops").await.unwrap());

        let t1 = Utc::now();
        let t2 = t1 + chrono::Duration::seconds(60);
        assert!(store.claim_tick("nightly", t1).await.unwrap());
        assert!(
            !store.claim_tick("nightly", t1).await.unwrap(),
            "a tick is claimed once"
        );
        assert!(store.claim_tick("nightly", t2).await.unwrap());
        assert!(
            !store.claim_tick("nightly", t1).await.unwrap(),
            "never backwards"
        );
        let run = ScheduledRun {
            run_id: "isapp-1".into(),
            start_time: t2,
        };
        store.record_run("nightly", &run).await.unwrap();
        store.record_run("nightly", &run).await.unwrap();
        let stats = store.get_stats("nightly").await.unwrap().unwrap();
        assert_eq!(stats.total_runs, 2);
        assert_eq!(stats.last_run, Some(run));
        assert_eq!(
            stats.last_tick.map(|t| t.timestamp_micros()),
            Some(t2.timestamp_micros())
        );
        drop(store);
        // Survives a reopen (the schema migrates once).
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(store.list_stats().await.unwrap().len(), 1);
        store.delete_stats("nightly").await.unwrap();
        assert!(store.get_stats("nightly").await.unwrap().is_none());
    }
}
