//! How the embedded store keeps a run: its own fields in `runs.doc` (with `steps` empty),
//! one row per step (`run_steps`) and one per unit of a fan-out (`run_units`; the one unit
//! of a step that does not fan out stays in its step's row, which every change of that
//! unit rewrites anyway). A transition rewrites the rows its [`RunDelta`] names, so its
//! cost does not grow with the run; readers get the whole run assembled from the rows.
//!
//! A bounded in-process copy of recently written runs ([`RunCache`]) saves the assembly
//! when nobody else changed the run since: a read compares the stored version (one
//! indexed row) with the copy's and clones the copy.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use sluice_core::engine::RunDelta;
use sluice_core::model::{Run, StepRun, Unit};

/// Schema step: steps and units apart from the run's own fields. Existing runs are
/// split in place, so a data directory keeps its runs across the upgrade.
pub(crate) const SCHEMA_RUN_ROWS: &str = r#"
-- A run's steps and the units of its fan-outs, apart from `runs.doc`, whose `steps` is
-- empty: a transition rewrites the rows it changed, not the whole run. A step that does
-- not fan out keeps its one unit in its own row.
CREATE TABLE run_steps (
    run_id TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    doc    TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
CREATE TABLE run_units (
    run_id TEXT NOT NULL,
    step   INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    doc    TEXT NOT NULL,
    PRIMARY KEY (run_id, step, idx)
) WITHOUT ROWID;
INSERT INTO run_steps (run_id, idx, doc)
    SELECT r.id, s.key, CASE WHEN json_extract(s.value, '$.fan_out') IS NULL
                             THEN s.value ELSE json_remove(s.value, '$.units') END
    FROM runs r, json_each(r.doc, '$.steps') s;
INSERT INTO run_units (run_id, step, idx, doc)
    SELECT r.id, s.key, u.key, u.value
    FROM runs r, json_each(r.doc, '$.steps') s, json_each(s.value, '$.units') u
    WHERE json_extract(s.value, '$.fan_out') IS NOT NULL;
UPDATE runs SET doc = json_set(doc, '$.steps', json('[]'));
"#;

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

/// The JSON of the run's own fields (`runs.doc`).
pub(crate) fn header_doc(run: &Run) -> rusqlite::Result<String> {
    to_json(&run.header())
}

/// Whether a step's units have rows of their own (a fan-out's) rather than riding in its
/// step's row.
fn units_apart(step: &StepRun) -> bool {
    step.fan_out.is_some()
}

fn put_step(conn: &Connection, run_id: &str, i: usize, step: &StepRun) -> rusqlite::Result<()> {
    let doc = if units_apart(step) {
        to_json(&step.record())?
    } else {
        to_json(step)?
    };
    conn.prepare_cached(
        "INSERT INTO run_steps (run_id, idx, doc) VALUES (?1, ?2, ?3) \
         ON CONFLICT (run_id, idx) DO UPDATE SET doc = excluded.doc",
    )?
    .execute(params![run_id, i as i64, doc])?;
    Ok(())
}

fn put_unit(
    conn: &Connection,
    run_id: &str,
    i: usize,
    u: usize,
    unit: &Unit,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO run_units (run_id, step, idx, doc) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (run_id, step, idx) DO UPDATE SET doc = excluded.doc",
    )?
    .execute(params![run_id, i as i64, u as i64, to_json(unit)?])?;
    Ok(())
}

/// Deletes a run's step and unit rows.
pub(crate) fn delete_rows(conn: &Connection, run_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM run_steps WHERE run_id = ?1")?
        .execute([run_id])?;
    conn.prepare_cached("DELETE FROM run_units WHERE run_id = ?1")?
        .execute([run_id])?;
    Ok(())
}

/// Replaces every step and unit row of `run`.
pub(crate) fn put_all_rows(conn: &Connection, run: &Run) -> rusqlite::Result<()> {
    delete_rows(conn, &run.id)?;
    for (i, step) in run.steps.iter().enumerate() {
        put_step(conn, &run.id, i, step)?;
        if units_apart(step) {
            for (u, unit) in step.units.iter().enumerate() {
                put_unit(conn, &run.id, i, u, unit)?;
            }
        }
    }
    Ok(())
}

/// Writes the step and unit rows `delta` names.
pub(crate) fn put_delta_rows(
    conn: &Connection,
    run: &Run,
    delta: &RunDelta,
) -> rusqlite::Result<()> {
    // A unit that rides in its step's row is written with the step.
    let steps = delta.steps.iter().copied().chain(
        delta
            .units
            .iter()
            .filter(|&&(i, _)| run.steps.get(i).is_some_and(|s| !units_apart(s)))
            .map(|&(i, _)| i),
    );
    let steps: std::collections::BTreeSet<usize> = steps.collect();
    for i in steps {
        if let Some(step) = run.steps.get(i) {
            put_step(conn, &run.id, i, step)?;
        }
    }
    for &(i, u) in &delta.units {
        let Some(step) = run.steps.get(i).filter(|s| units_apart(s)) else {
            continue;
        };
        if let Some(unit) = step.units.get(u) {
            put_unit(conn, &run.id, i, u, unit)?;
        }
    }
    Ok(())
}

/// The whole run from its header JSON (`runs.doc`) and its rows; `version` is the
/// column's (the authoritative one).
pub(crate) fn assemble(conn: &Connection, header: &str, version: u64) -> rusqlite::Result<Run> {
    let mut run: Run = from_json(header)?;
    run.version = version;
    let mut steps =
        conn.prepare_cached("SELECT doc FROM run_steps WHERE run_id = ?1 ORDER BY idx")?;
    run.steps = steps
        .query_map([&run.id], |row| row.get::<_, String>(0))?
        .map(|doc| doc.and_then(|doc| from_json::<StepRun>(&doc)))
        .collect::<rusqlite::Result<_>>()?;
    let mut units = conn.prepare_cached(
        "SELECT step, idx, doc FROM run_units WHERE run_id = ?1 ORDER BY step, idx",
    )?;
    let rows = units.query_map([&run.id], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (i, u, doc) = row?;
        let Some(step) = run.steps.get_mut(i as usize) else {
            continue;
        };
        let u = u as usize;
        if step.units.len() <= u {
            step.units.resize(u + 1, Unit::pending());
        }
        step.units[u] = from_json(&doc)?;
    }
    Ok(run)
}

/// The stored version and creation time (nanoseconds) of a live run.
pub(crate) fn stored_version(
    conn: &Connection,
    id: &str,
    now: i64,
) -> rusqlite::Result<Option<(u64, i64)>> {
    conn.prepare_cached("SELECT version, created_at FROM runs WHERE id = ?1 AND expires_at > ?2")?
        .query_row(params![id, now], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)?))
        })
        .optional()
}

/// Most runs kept in a [`RunCache`], and most steps plus units over all of them: a
/// bound on memory whatever the workload.
const CACHE_RUNS: usize = 256;
const CACHE_PARTS: usize = 400_000;

/// Copies of the runs this process wrote last, by id. Only a copy whose version (and
/// creation time) matches the stored one is ever used.
#[derive(Default)]
pub(crate) struct RunCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Shared so that a reader copies a run outside the lock; the writer of the next
    /// transition (the same task, as a run's transitions take turns) finds it unshared
    /// and changes it in place.
    runs: HashMap<String, Arc<Run>>,
    /// Ids in insertion order, for eviction (may name ids no longer held).
    order: VecDeque<String>,
    parts: usize,
}

fn parts_of(run: &Run) -> usize {
    run.steps.len() + run.steps.iter().map(|s| s.units.len()).sum::<usize>()
}

impl CacheInner {
    fn remove(&mut self, id: &str) {
        if let Some(run) = self.runs.remove(id) {
            self.parts -= parts_of(&run);
        }
    }

    fn insert(&mut self, run: Run) {
        self.remove(&run.id);
        if run.state.is_terminal() {
            // Ended: nobody transitions it any more.
            return;
        }
        self.parts += parts_of(&run);
        self.order.push_back(run.id.clone());
        self.runs.insert(run.id.clone(), Arc::new(run));
        while self.runs.len() > CACHE_RUNS || self.parts > CACHE_PARTS {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
        if self.order.len() > 4 * CACHE_RUNS {
            let runs = &self.runs;
            self.order.retain(|id| runs.contains_key(id));
        }
    }
}

impl RunCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the run if the cache holds exactly this stored version.
    pub(crate) fn get(&self, id: &str, version: u64, created_at: i64) -> Option<Run> {
        let run = {
            let inner = self.lock();
            let run = inner.runs.get(id)?;
            (run.version == version && crate::db::nanos(run.created_at) == created_at)
                .then(|| run.clone())?
        };
        Some(Run::clone(&run))
    }

    /// Remembers a run as read or written.
    pub(crate) fn put(&self, run: &Run) {
        if run.state.is_terminal() {
            self.lock().remove(&run.id);
            return;
        }
        self.lock().insert(run.clone());
    }

    /// After a stored transition from `expected_version` to `run.version`: brings the
    /// copy up to date with what `delta` names, or forgets a copy of another version.
    pub(crate) fn advance(&self, run: &Run, expected_version: u64, delta: &RunDelta) {
        let mut inner = self.lock();
        if run.state.is_terminal() {
            inner.remove(&run.id);
            return;
        }
        let Some(cached) = inner.runs.get_mut(&run.id) else {
            return;
        };
        if cached.version != expected_version {
            // Not the run this write started from (another process wrote it, or a write
            // whose commit failed advanced it): a copy at `run.version` could hold that
            // failed write's content, so none is kept.
            inner.remove(&run.id);
            return;
        }
        let cached = Arc::make_mut(cached);
        let before = parts_of(cached);
        if !delta.copy_into(run, cached) {
            inner.remove(&run.id);
            return;
        }
        let after = parts_of(cached);
        inner.parts = (inner.parts + after).saturating_sub(before);
    }
}

impl crate::store::EmbeddedStore {
    /// Compare-and-swap of a run on `version`: the header, then every step and unit row
    /// (`delta` `None`) or only those `delta` names, in one transaction. A missing or
    /// expired run is a conflict too.
    pub(crate) async fn write_run(
        &self,
        run: &Run,
        expected_version: u64,
        delta: Option<&RunDelta>,
    ) -> Result<(), sluice_core::ports::StoreError> {
        use sluice_core::ports::StoreError;
        if run.version == expected_version {
            return Err(StoreError::Backend(format!(
                "update_run of {}: run.version must be the new version, not the expected one \
                 ({expected_version})",
                run.id
            )));
        }
        let now = self.now_nanos();
        let changed = self
            .shared
            .write(|conn| {
                let changed = match delta {
                    // Only the version: the indexed columns (state, terminal, expiry) are
                    // not set, so their indexes' pages are not rewritten (most
                    // transitions change a step or a unit and nothing of the run's own).
                    Some(delta) if !delta.header => conn
                        .prepare_cached(
                            "UPDATE runs SET version = ?1 \
                             WHERE id = ?2 AND version = ?3 AND expires_at > ?4",
                        )?
                        .execute(params![
                            run.version as i64,
                            run.id,
                            expected_version as i64,
                            now,
                        ])?,
                    _ => conn
                        .prepare_cached(
                            "UPDATE runs SET state = ?1, terminal = ?2, expires_at = ?3, \
                             version = ?4, doc = ?5 \
                             WHERE id = ?6 AND version = ?7 AND expires_at > ?8",
                        )?
                        .execute(params![
                            run.state.as_str(),
                            run.state.is_terminal(),
                            crate::db::nanos(run.expires_at),
                            run.version as i64,
                            header_doc(run)?,
                            run.id,
                            expected_version as i64,
                            now,
                        ])?,
                };
                if changed == 1 {
                    match delta {
                        Some(delta) => put_delta_rows(conn, run, delta)?,
                        None => put_all_rows(conn, run)?,
                    }
                    // Under the connection's lock, like the rows: a reader sees the copy
                    // and the rows change together. (Should the commit fail, the copy's
                    // version is not the stored one, and readers ignore it.)
                    match delta {
                        Some(delta) => self.run_cache.advance(run, expected_version, delta),
                        None => self.run_cache.put(run),
                    }
                }
                Ok(changed)
            })
            .await
            .map_err(crate::db::sql)?;
        if changed != 1 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }
}
