//! Step logs as readers see them: the entries stores keep, merged with the `FLOW` start
//! and stop entries of running and successful units, which are derived from the run
//! record instead of being stored.
//!
//! Deriving them saves a write per step (on AWS a DynamoDB write unit, the largest part
//! of a step's price): a successful attempt that logs nothing else at the run's
//! `loglevel` stores no log entry at all. A failed attempt stores its `FLOW` entries
//! with the rest, since its unit is re-queued (or failed) and no longer dates it.
//!
//! Sequence numbers are time-based in every store ([`sequence`]), so derived and stored
//! entries interleave in time order. Entries become visible in roughly, not exactly,
//! sequence order (a batch is numbered when it is appended, a derived stop when the run
//! record records it), so a follower should re-read a short window behind its cursor and
//! skip numbers it has seen ([`FOLLOW_OVERLAP`]).

use chrono::{DateTime, Utc};

use crate::model::{LogEntry, LogLevel, Run, UnitState};
use crate::task::rfc3339;

/// A log entry as readers get it (`GET /tasks/{id}/logs`, `POST /steps/run`): its
/// sequence number (0 outside a run's log), time, level, step, attempt and message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogDocument {
    pub seq: u64,
    pub ts: String,
    pub level: &'static str,
    pub step: String,
    pub attempt: u32,
    pub message: String,
}

impl LogDocument {
    pub fn new(seq: u64, entry: &LogEntry) -> Self {
        Self {
            seq,
            ts: rfc3339(&entry.ts),
            level: entry.level.as_str(),
            step: entry.step.clone(),
            attempt: entry.attempt,
            message: entry.message.clone(),
        }
    }
}

/// Sequence numbers per microsecond: a batch appended at one instant numbers its
/// entries `base..base + SEQUENCE_PER_MICROSECOND`.
pub const SEQUENCE_PER_MICROSECOND: u64 = 1000;

/// How far behind its cursor a follower re-reads (10 s of sequence numbers).
pub const FOLLOW_OVERLAP: u64 = 10_000_000 * SEQUENCE_PER_MICROSECOND;

/// The sequence number of the `index`-th entry of a batch appended at `at`.
pub fn sequence(at: DateTime<Utc>, index: u64) -> u64 {
    (at.timestamp_micros().max(0) as u64) * SEQUENCE_PER_MICROSECOND
        + index.min(SEQUENCE_PER_MICROSECOND - 1)
}

/// The message of the entry that opens an attempt.
pub fn start_message(step: &str) -> String {
    format!("Start {step}")
}

/// The message of the entry that closes an attempt, with its duration in seconds.
pub fn stop_message(step: &str, seconds: f64) -> String {
    format!("stop {step}|{seconds:.3}")
}

/// The `FLOW` entries of every unit that is running (its start) or whose last attempt
/// succeeded (its start and stop), in sequence order.
pub fn derived_flow(run: &Run) -> Vec<(u64, LogEntry)> {
    let mut entries = Vec::new();
    for (step_index, step) in run.steps.iter().enumerate() {
        for (unit_index, unit) in step.units.iter().enumerate() {
            let Some(claimed_at) = unit.claimed_at else {
                continue;
            };
            let finished_at = match unit.state {
                UnitState::Running => None,
                UnitState::Done => unit.finished_at,
                _ => continue,
            };
            // Spreads units that started in the same microsecond over distinct numbers.
            let offset = ((step_index * 31 + unit_index) % 500) as u64;
            let entry = |ts, message| LogEntry {
                ts,
                level: LogLevel::Flow,
                step: step.id.clone(),
                attempt: unit.attempt,
                message,
            };
            entries.push((
                sequence(claimed_at, offset),
                entry(claimed_at, start_message(&step.id)),
            ));
            if let Some(finished_at) = finished_at {
                let seconds = (finished_at - claimed_at)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64();
                entries.push((
                    sequence(finished_at, 500 + offset),
                    entry(finished_at, stop_message(&step.id, seconds)),
                ));
            }
        }
    }
    entries.sort_by_key(|(seq, _)| *seq);
    entries
}

/// Up to `limit` entries after `after`: `stored` (a store's answer to the same `after`
/// and `limit`, in order) merged with `derived`. When the store filled its page, derived
/// entries beyond its last one wait for the next page, so paging skips nothing.
pub fn merge(
    stored: Vec<(u64, LogEntry)>,
    derived: Vec<(u64, LogEntry)>,
    after: u64,
    limit: usize,
) -> Vec<(u64, LogEntry)> {
    let horizon = if stored.len() >= limit {
        stored.last().map_or(u64::MAX, |(seq, _)| *seq)
    } else {
        u64::MAX
    };
    let mut merged: Vec<(u64, LogEntry)> = stored
        .into_iter()
        .chain(
            derived
                .into_iter()
                .filter(|(seq, _)| *seq > after && *seq <= horizon),
        )
        .collect();
    merged.sort_by_key(|(seq, _)| *seq);
    merged.truncate(limit);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RunState, StepRun, StepState, Unit};
    use chrono::{Duration, TimeZone};

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap() + Duration::milliseconds(ms)
    }

    fn run(units: Vec<(&str, Unit)>) -> Run {
        Run {
            id: "isapp-1".into(),
            application: "a".into(),
            configuration: None,
            queue: None,
            loglevel: 20,
            params: Default::default(),
            state: RunState::Running,
            created_at: t(0),
            started_at: Some(t(0)),
            finished_at: None,
            parent: None,
            replay_of: None,
            alert_of: None,
            expires_at: t(1_000_000),
            steps: units
                .into_iter()
                .map(|(id, unit)| {
                    let mut step = StepRun::new(id);
                    step.state = StepState::Running;
                    step.units = vec![unit];
                    step
                })
                .collect(),
            version: 1,
            application_version: None,
        }
    }

    fn unit(state: UnitState, claimed: Option<i64>, finished: Option<i64>) -> Unit {
        Unit {
            state,
            attempt: 2,
            claimed_at: claimed.map(t),
            finished_at: finished.map(t),
            ..Unit::pending()
        }
    }

    fn stored(seq: u64, message: &str) -> (u64, LogEntry) {
        (
            seq,
            LogEntry {
                ts: t(0),
                level: LogLevel::Info,
                step: "A".into(),
                attempt: 1,
                message: message.into(),
            },
        )
    }

    #[test]
    fn running_units_have_a_start_and_done_units_a_stop_too() {
        let run = run(vec![
            ("A", unit(UnitState::Done, Some(10), Some(1510))),
            ("B", unit(UnitState::Running, Some(20), None)),
            ("C", unit(UnitState::Queued, None, None)),
            ("D", unit(UnitState::Failed, None, None)),
        ]);
        let entries = derived_flow(&run);
        let messages: Vec<&str> = entries.iter().map(|(_, e)| e.message.as_str()).collect();
        assert_eq!(messages, ["Start A", "Start B", "stop A|1.500"]);
        assert!(entries.iter().all(|(_, e)| e.level == LogLevel::Flow));
        assert_eq!(entries[0].1.attempt, 2);
        assert_eq!(entries[0].1.ts, t(10));
        assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn stored_entries_sit_between_their_start_and_stop() {
        let run = run(vec![("A", unit(UnitState::Done, Some(10), Some(30)))]);
        let logged = stored(sequence(t(20), 0), "hello");
        let merged = merge(vec![logged], derived_flow(&run), 0, 100);
        let messages: Vec<&str> = merged.iter().map(|(_, e)| e.message.as_str()).collect();
        assert_eq!(messages, ["Start A", "hello", "stop A|0.020"]);
    }

    #[test]
    fn paging_through_a_merge_skips_and_repeats_nothing() {
        let run = run(vec![
            ("A", unit(UnitState::Done, Some(10), Some(50))),
            ("B", unit(UnitState::Done, Some(15), Some(45))),
        ]);
        let all_stored: Vec<_> = (0..6)
            .map(|i| stored(sequence(t(12 + i * 6), 0), &format!("s{i}")))
            .collect();
        let store = |after: u64, limit: usize| -> Vec<(u64, LogEntry)> {
            all_stored
                .iter()
                .filter(|(seq, _)| *seq > after)
                .take(limit)
                .cloned()
                .collect()
        };
        let everything = merge(store(0, 100), derived_flow(&run), 0, 100);
        assert_eq!(everything.len(), 10);
        for limit in 1..=4 {
            let mut after = 0;
            let mut paged = Vec::new();
            loop {
                let page = merge(store(after, limit), derived_flow(&run), after, limit);
                if page.is_empty() {
                    break;
                }
                after = page.last().unwrap().0;
                paged.extend(page);
            }
            assert_eq!(paged, everything, "limit {limit}");
        }
    }

    #[test]
    fn sequence_orders_by_time_then_index() {
        assert!(sequence(t(1), 999) < sequence(t(2), 0));
        assert_eq!(sequence(t(1), 5_000), sequence(t(1), 999));
    }
}
