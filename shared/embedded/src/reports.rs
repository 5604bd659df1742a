//! [`ReportStore`] on the data directory's database: one row per step unit that
//! reported, keyed by (run, step, unit) so that a re-executed attempt replaces its row,
//! carrying the run's expiry (reads ignore expired rows, the purge deletes them).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, OptionalExtension};
use sluice_core::ports::{ReportQuery, ReportStore, StoreError};
use sluice_core::report::{ReportOwner, ReportPart, ReportSection, ReportSummary};

use crate::db::{json_error, nanos, sql};
use crate::store::DEFAULT_LIST_LIMIT;
use crate::EmbeddedStore;

/// Report parts: the sections of one step unit as JSON, with their run's application,
/// creation time and expiry.
pub(crate) const SCHEMA_REPORTS: &str = r#"
CREATE TABLE report_parts (
    run_id         TEXT NOT NULL,
    step_id        TEXT NOT NULL,
    unit           INTEGER NOT NULL,
    application    TEXT NOT NULL,
    run_created_at INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    recorded_at    INTEGER NOT NULL,
    sections       TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id, unit)
);
CREATE INDEX report_parts_application ON report_parts (application, run_id);
CREATE INDEX report_parts_expires     ON report_parts (expires_at);
"#;

/// The statement a purge runs in batches (`?1` now, `?2` the batch size).
pub(crate) const PURGE_EXPIRED: &str = "DELETE FROM report_parts WHERE rowid IN \
     (SELECT rowid FROM report_parts WHERE expires_at <= ?1 LIMIT ?2)";

fn time(nanos: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(nanos)
}

#[async_trait]
impl ReportStore for EmbeddedStore {
    async fn put_report_part(
        &self,
        owner: &ReportOwner,
        step_id: &str,
        unit: u32,
        sections: &[ReportSection],
    ) -> Result<(), StoreError> {
        let recorded_at = self.now_nanos();
        if sections.is_empty() {
            self.shared
                .write(|conn| {
                    conn.prepare_cached(
                        "DELETE FROM report_parts WHERE run_id = ?1 AND step_id = ?2 AND unit = ?3",
                    )?
                    .execute(params![owner.run_id, step_id, unit])
                })
                .await
                .map_err(sql)?;
            return Ok(());
        }
        let text = serde_json::to_string(sections).map_err(json_error)?;
        self.shared
            .write(|conn| {
                conn.prepare_cached(
                    "INSERT INTO report_parts (run_id, step_id, unit, application, \
                     run_created_at, expires_at, recorded_at, sections) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (run_id, step_id, unit) DO UPDATE SET \
                     application = excluded.application, \
                     run_created_at = excluded.run_created_at, \
                     expires_at = excluded.expires_at, recorded_at = excluded.recorded_at, \
                     sections = excluded.sections",
                )?
                .execute(params![
                    owner.run_id,
                    step_id,
                    unit,
                    owner.application,
                    nanos(owner.run_created_at),
                    nanos(owner.expires_at),
                    recorded_at,
                    text,
                ])
            })
            .await
            .map_err(sql)?;
        Ok(())
    }

    async fn get_report(
        &self,
        run_id: &str,
    ) -> Result<Option<(ReportOwner, Vec<ReportPart>)>, StoreError> {
        type Row = (String, u32, String, i64, i64, i64, String);
        let rows: Vec<Row> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT step_id, unit, application, run_created_at, expires_at, \
                     recorded_at, sections FROM report_parts \
                     WHERE run_id = ?1 AND expires_at > ?2",
                )?
                .query_map(params![run_id, self.now_nanos()], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                    ))
                })?
                .collect()
            })
            .map_err(sql)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let owner = ReportOwner {
            run_id: run_id.to_string(),
            application: first.2.clone(),
            run_created_at: time(first.3),
            expires_at: time(first.4),
        };
        let parts = rows
            .into_iter()
            .map(|(step_id, unit, _, _, _, recorded_at, text)| {
                Ok(ReportPart {
                    step_id,
                    unit,
                    recorded_at: time(recorded_at),
                    sections: serde_json::from_str(&text).map_err(json_error)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Some((owner, parts)))
    }

    async fn list_reports(&self, query: &ReportQuery) -> Result<Vec<ReportSummary>, StoreError> {
        let mut statement = String::from(
            "SELECT run_id, MIN(application), MIN(run_created_at), MIN(expires_at) \
             FROM report_parts WHERE expires_at > ?1",
        );
        let mut values: Vec<SqlValue> = vec![SqlValue::Integer(self.now_nanos())];
        if let Some(application) = &query.application {
            values.push(SqlValue::Text(application.clone()));
            statement.push_str(&format!(" AND application = ?{}", values.len()));
        }
        if let Some(before) = &query.before_run_id {
            values.push(SqlValue::Text(before.clone()));
            statement.push_str(&format!(" AND run_id < ?{}", values.len()));
        }
        let limit = if query.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            query.limit
        };
        values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        statement.push_str(&format!(
            " GROUP BY run_id ORDER BY run_id DESC LIMIT ?{}",
            values.len()
        ));
        let rows: Vec<(String, String, i64, i64)> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(&statement)?
                    .query_map(rusqlite::params_from_iter(values), |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })?
                    .collect()
            })
            .map_err(sql)?;
        Ok(rows
            .into_iter()
            .map(|(run_id, application, created, expires)| {
                ReportSummary::of(&ReportOwner {
                    run_id,
                    application,
                    run_created_at: time(created),
                    expires_at: time(expires),
                })
            })
            .collect())
    }

    async fn delete_report(&self, run_id: &str) -> Result<bool, StoreError> {
        let now = self.now_nanos();
        let live: Option<i64> = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT 1 FROM report_parts WHERE run_id = ?1 AND expires_at > ?2 LIMIT 1",
                )?
                .query_row(params![run_id, now], |row| row.get(0))
                .optional()
            })
            .map_err(sql)?;
        self.shared
            .write(|conn| {
                conn.prepare_cached("DELETE FROM report_parts WHERE run_id = ?1")?
                    .execute([run_id])
            })
            .await
            .map_err(sql)?;
        Ok(live.is_some())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use sluice_core::ports::ReportStore;
    use sluice_core::report::{ReportOwner, ReportSection};

    use crate::tests::temp_store;

    #[tokio::test]
    async fn the_purge_deletes_expired_report_parts_only() {
        let (_dir, store) = temp_store();
        let now = chrono::Utc::now();
        let owner = |run: &str, expires| ReportOwner {
            run_id: run.into(),
            application: "app".into(),
            run_created_at: now,
            expires_at: expires,
        };
        let section = [ReportSection::new("s")];
        store
            .put_report_part(
                &owner("isapp-1", now + Duration::hours(1)),
                "A",
                0,
                &section,
            )
            .await
            .unwrap();
        store
            .put_report_part(&owner("isapp-2", now + Duration::days(2)), "A", 0, &section)
            .await
            .unwrap();
        let purged = store
            .purge_expired_at(now + Duration::days(1))
            .await
            .unwrap();
        assert_eq!(purged.report_parts, 1);
        assert!(store.get_report("isapp-2").await.unwrap().is_some());
        let rows: i64 = store
            .shared
            .read(|conn| conn.query_row("SELECT COUNT(*) FROM report_parts", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(rows, 1, "the expired part's row is gone");
    }
}
