//! [`EmbeddedQueue`]: a durable queue with SQS semantics in the data directory's SQLite
//! database — visibility timeout, receive count, dead-letter queue, fresh receipts.
//! When a message becomes visible is judged by the store's [`Clock`] (tests move it);
//! a `receive`'s long-poll wait is real time.
//!
//! Visible messages are served in *fair* order across **lanes**, not oldest first. A
//! message's lane is its run's `queue` label, else its application
//! ([`lane_of`](sluice_core::ports::lane_of)); a message queued before lanes existed is
//! a lane of its run's own.
//!
//! - *Across lanes*, start-time fair queuing: each message gets a fair key when sent —
//!   one more than the latest key of its lane still queued, but never below the key of
//!   its tier's next turn (the tier's virtual clock). A lane with 100,000 queued steps
//!   thus takes one turn in each round like any other lane, and a run of another lane
//!   has its steps served next instead of after the whole backlog.
//! - *Priority*: the [`PRIORITY_LANES`](sluice_core::ports::PRIORITY_LANES) (`high`,
//!   `priority.high`) are a tier of their own, served before every other lane whenever
//!   they have a visible message (fair among themselves).
//! - *Within a lane*, the oldest run first: a lane's turn goes to the visible message of
//!   its oldest run (run ids are time-ordered, so the smallest run id), in the order sent
//!   within that run — unless that run has [`RUN_SHARE`] steps in flight already, then to
//!   the next-oldest run below its share (the oldest again when there is none, so no
//!   worker idles while a step waits). A lane's backlog thus drains a few runs at a time
//!   instead of all its runs advancing in lockstep, and a fresh run does not overtake
//!   the runs queued before it in its lane while they can use the workers (like a
//!   PowerFlow queue, first in first out by run; an urgent run takes another lane, or
//!   `high`). The turn's key is swapped onto the message served, so a lane keeps exactly
//!   one key per queued message.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use sluice_core::clock::Clock;
use sluice_core::ports::{
    dead_letter_queue, is_priority_lane, Delivery, Queue, QueueError, TaskMessage,
    MAX_RECEIVE_COUNT,
};
use tokio::time::Instant;

use crate::db::{add_duration, nanos, DbError, Shared};

/// A `receive` waiter re-reads the table at least this often, so that messages sent by
/// another process (which cannot wake this one's in-process waiters) are still picked up.
const CROSS_PROCESS_POLL: Duration = Duration::from_secs(1);

/// The queue of one data directory (all queue names share one table). Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedQueue {
    pub(crate) shared: Arc<Shared>,
    /// What delays and visibility timeouts are measured by: the store's clock
    /// ([`crate::EmbeddedStore::with_clock`]), the system clock by default.
    pub(crate) clock: Arc<dyn Clock>,
}

fn queue_error(error: DbError) -> QueueError {
    QueueError(error.to_string())
}

/// Where the message a receipt names is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receipted {
    /// `<id>.<random>`: row `id` of `messages`.
    Queued(i64),
    /// `h<id>.<random>`: row `id` of `held_messages` (sent already received).
    Held(i64),
}

/// Splits a receipt into where its message is and its id (so acks are primary-key
/// lookups) and checks its shape.
fn parse_receipt(receipt: &str) -> Result<Receipted, QueueError> {
    let (id, _) = receipt
        .split_once('.')
        .ok_or_else(|| QueueError(format!("malformed receipt {receipt:?}")))?;
    let parsed = match id.strip_prefix('h') {
        Some(held) => held.parse().ok().map(Receipted::Held),
        None => id.parse().ok().map(Receipted::Queued),
    };
    parsed.ok_or_else(|| QueueError(format!("malformed receipt {receipt:?}")))
}

/// What one pass over the table found.
struct Received {
    deliveries: Vec<Delivery>,
    /// Messages moved to the dead-letter queue in this pass.
    dead_lettered: usize,
    /// The earliest time (nanoseconds) a currently invisible message becomes visible.
    next_visible_at: Option<i64>,
}

impl EmbeddedQueue {
    /// Now, by this queue's clock, in the database's unit.
    fn now_nanos(&self) -> i64 {
        nanos(self.clock.now())
    }

    /// Messages of `queue`, visible or not.
    pub async fn depth(&self, queue: &str) -> Result<u64, QueueError> {
        let count: i64 = self
            .shared
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT (SELECT COUNT(*) FROM messages WHERE queue = ?1) \
                          + (SELECT COUNT(*) FROM held_messages WHERE queue = ?1)",
                )?
                .query_row([queue], |row| row.get(0))
            })
            .map_err(queue_error)?;
        Ok(count as u64)
    }

    /// Makes every received-but-unacknowledged message of every queue visible now (their
    /// receipts stop working; receive counts are kept). Only for a process that holds the
    /// [`crate::DataDirLock`] at startup: no other worker can be processing them. Messages
    /// delayed by `send` or `release` keep their delay. Returns how many were released.
    pub async fn release_inflight(&self) -> Result<u64, QueueError> {
        let now = self.now_nanos();
        let released = self
            .shared
            .write(|conn| {
                let queued = conn
                    .prepare_cached(
                        "UPDATE messages SET visible_at = ?1, receipt = NULL, tier = tier % 2 \
                         WHERE receipt IS NOT NULL AND visible_at > ?1",
                    )?
                    .execute([now])?;
                let held = held_rows(conn, "SELECT * FROM held_messages", [])?;
                let count = held.len();
                for row in held {
                    requeue_held(conn, row, now, Requeue::Visible(now))?;
                }
                Ok(queued + count)
            })
            .await
            .map_err(queue_error)?;
        if released > 0 {
            self.shared.notify_all();
        }
        Ok(released as u64)
    }

    /// One non-blocking pass: claims up to `max` visible messages in fair order (see the
    /// module), dead-lettering those received too often.
    async fn receive_now(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
    ) -> Result<Received, QueueError> {
        let now = self.now_nanos();
        let invisible_until = add_duration(now, visibility);
        let dlq = dead_letter_queue(queue);
        self.shared
            .write(|conn| {
                // Held messages whose hold ran out join the overdue ones in `messages`.
                let overdue = held_rows(
                    conn,
                    "SELECT * FROM held_messages WHERE queue = ?1 AND visible_at <= ?2",
                    params![queue, now],
                )?;
                for row in overdue {
                    requeue_held(conn, row, now, Requeue::Overdue)?;
                }
                let mut deliveries = Vec::new();
                let mut dead_lettered = 0;
                // Ids handled in this pass: with a zero visibility a delivered message is
                // still visible, and must not be delivered twice in one batch.
                let mut handled = HashSet::new();
                loop {
                    let Some((id, body, receive_count)) = next_turn(conn, queue, now, &handled)?
                    else {
                        break;
                    };
                    handled.insert(id);
                    let message = match serde_json::from_str::<TaskMessage>(&body) {
                        Ok(message) if receive_count < MAX_RECEIVE_COUNT => Some(message),
                        Ok(_) => None,
                        Err(e) => {
                            tracing::error!(queue, id, error = %e, "undecodable queue message");
                            None
                        }
                    };
                    let Some(message) = message else {
                        conn.prepare_cached(
                            "UPDATE messages SET queue = ?1, receive_count = 0, \
                             receipt = NULL, visible_at = ?2, tier = tier % 2 WHERE id = ?3",
                        )?
                        .execute(params![dlq, now, id])?;
                        tracing::warn!(
                            queue,
                            dead_letter_queue = %dlq,
                            id,
                            receive_count,
                            "message moved to the dead-letter queue"
                        );
                        dead_lettered += 1;
                        continue;
                    };
                    let receipt = format!("{id}.{}", new_receipt_token());
                    conn.prepare_cached(
                        "UPDATE messages SET visible_at = ?1, receive_count = ?2, \
                         receipt = ?3, tier = tier % 2 + ?5 WHERE id = ?4",
                    )?
                    .execute(params![
                        invisible_until,
                        receive_count + 1,
                        receipt,
                        id,
                        IN_FLIGHT
                    ])?;
                    deliveries.push(Delivery {
                        message,
                        receipt,
                        receive_count: receive_count + 1,
                    });
                    if deliveries.len() >= max {
                        break;
                    }
                }
                let next_visible_at = if deliveries.is_empty() {
                    conn.prepare_cached(
                        "SELECT MIN(visible_at) FROM (\
                         SELECT MIN(visible_at) AS visible_at FROM messages \
                         WHERE queue = ?1 AND visible_at > ?2 UNION ALL \
                         SELECT MIN(visible_at) FROM held_messages \
                         WHERE queue = ?1 AND visible_at > ?2)",
                    )?
                    .query_row(params![queue, now], |row| row.get(0))
                    .optional()?
                    .flatten()
                } else {
                    None
                };
                Ok(Received {
                    deliveries,
                    dead_lettered,
                    next_visible_at,
                })
            })
            .await
            .map_err(queue_error)
    }
}

/// The random part of a receipt (`<id>.<token>`): a receipt is valid for one receive.
fn new_receipt_token() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// Inserts a message of `queue` in fair order (see the module), visible at
/// `visible_at`.
fn insert_message(
    conn: &rusqlite::Connection,
    queue: &str,
    message: &TaskMessage,
    body: &str,
    now: i64,
    visible_at: i64,
) -> rusqlite::Result<()> {
    let (lane, tier) = lane_and_tier(message);
    let fair_key = next_fair_key(conn, queue, lane, tier, now)?;
    conn.prepare_cached(
        "INSERT INTO messages (queue, body, visible_at, sent_at, run_id, fair_key, lane, tier) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        queue,
        body,
        visible_at,
        now,
        message.run_id,
        fair_key,
        lane,
        tier
    ])?;
    Ok(())
}

/// Schema step: messages sent already received (`Queue::send_received`: the ready
/// successor a worker handles itself) are kept in a table of their own, without
/// indexes. A worker holds at most one at a time, so the table stays a page or two, its
/// lookups scan it, and the hand-off that every step of a chain does writes one row in
/// one B-tree rather than in `messages` and its six indexes. A held message goes into
/// `messages` when it is released, when its hold runs out, or when the data directory
/// is taken over (`release_inflight`). `IF NOT EXISTS`, so that the step also applies to
/// a database that has the table already, as the other steps do.
pub(crate) const SCHEMA_HELD_MESSAGES: &str = r#"
CREATE TABLE IF NOT EXISTS held_messages (
    id            INTEGER PRIMARY KEY,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    receipt       TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    run_id        TEXT NOT NULL,
    lane          TEXT NOT NULL,
    tier          INTEGER NOT NULL
);
"#;

/// A row of `held_messages`.
struct HeldRow {
    id: i64,
    queue: String,
    body: String,
    visible_at: i64,
    receive_count: i64,
    receipt: String,
    sent_at: i64,
    run_id: String,
    lane: String,
    tier: i64,
}

/// The rows of `held_messages` that `sql` (a `SELECT *`) selects.
fn held_rows(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<HeldRow>> {
    conn.prepare_cached(sql)?
        .query_map(params, |row| {
            Ok(HeldRow {
                id: row.get("id")?,
                queue: row.get("queue")?,
                body: row.get("body")?,
                visible_at: row.get("visible_at")?,
                receive_count: row.get("receive_count")?,
                receipt: row.get("receipt")?,
                sent_at: row.get("sent_at")?,
                run_id: row.get("run_id")?,
                lane: row.get("lane")?,
                tier: row.get("tier")?,
            })
        })?
        .collect()
}

/// How a held message goes into `messages`.
#[derive(Debug, Clone, Copy)]
enum Requeue {
    /// Released: queued, visible at this time, its receipt void.
    Visible(i64),
    /// Its hold ran out: in flight as it was, so that it is served before any turn, as
    /// every overdue message is (its receipt, naming the held row, acks nothing).
    Overdue,
}

/// Moves a held message into `messages`, in fair order, its receive count kept.
fn requeue_held(
    conn: &rusqlite::Connection,
    row: HeldRow,
    now: i64,
    how: Requeue,
) -> rusqlite::Result<()> {
    let fair_key = next_fair_key(conn, &row.queue, &row.lane, row.tier, now)?;
    let (visible_at, receipt, tier) = match how {
        Requeue::Visible(at) => (at, None, row.tier),
        Requeue::Overdue => (row.visible_at, Some(&row.receipt), row.tier + IN_FLIGHT),
    };
    conn.prepare_cached(
        "INSERT INTO messages (queue, body, visible_at, receive_count, receipt, sent_at, \
         run_id, fair_key, lane, tier) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        row.queue,
        row.body,
        visible_at,
        row.receive_count,
        receipt,
        row.sent_at,
        row.run_id,
        fair_key,
        row.lane,
        tier
    ])?;
    conn.prepare_cached("DELETE FROM held_messages WHERE id = ?1")?
        .execute([row.id])?;
    Ok(())
}

/// What a message's tier gains while it is in flight (received, its receipt current):
/// tiers 2 and 3 hold the messages in flight, out of the way of the turns, which look at
/// tiers 0 and 1 only. A message whose visibility ran out is found by
/// `messages_inflight` instead, and served before any turn (it had its turn).
const IN_FLIGHT: i64 = 2;

/// Where a message is queued: its lane, and that lane's tier (0 for the
/// [`PRIORITY_LANES`](sluice_core::ports::PRIORITY_LANES), served first; 1 for every other lane).
fn lane_and_tier(message: &TaskMessage) -> (&str, i64) {
    match message.lane.as_deref().filter(|l| !l.is_empty()) {
        Some(lane) => (lane, if is_priority_lane(lane) { 0 } else { 1 }),
        // Queued before lanes existed: the run is its own lane, as it was its own
        // tenant then.
        None => (&message.run_id, 1),
    }
}

/// The fair key of a new message of `lane` in `tier` on `queue` (see the module): after
/// the lane's own queued messages, and no earlier than the tier's virtual clock — the key
/// of its next turn, the smallest key of a visible message (when none is visible, of
/// those in flight, else of those delayed) — so that a lane idle for a
/// while does not come back with credit. Messages in flight or delayed do not hold the
/// clock back while others are visible: they hold the smallest keys, and a new lane
/// keyed at theirs would be served before every lane until it caught up. Two to four
/// indexed lookups.
fn next_fair_key(
    conn: &rusqlite::Connection,
    queue: &str,
    lane: &str,
    tier: i64,
    now: i64,
) -> rusqlite::Result<i64> {
    let next_turn: Option<i64> = conn
        .prepare_cached(
            "SELECT fair_key FROM messages INDEXED BY messages_turns \
             WHERE queue = ?1 AND tier = ?2 AND visible_at <= ?3 \
             ORDER BY fair_key LIMIT 1",
        )?
        .query_row(params![queue, tier, now], |row| row.get(0))
        .optional()?;
    let smallest = |tier: i64| -> rusqlite::Result<Option<i64>> {
        conn.prepare_cached(
            "SELECT MIN(fair_key) FROM messages INDEXED BY messages_turns \
             WHERE queue = ?1 AND tier = ?2",
        )?
        .query_row(params![queue, tier], |row| row.get(0))
    };
    // Nothing visible: the keys served last (in flight), else those delayed.
    let virtual_now = match next_turn {
        Some(key) => Some(key),
        None => match smallest(tier + IN_FLIGHT)? {
            Some(key) => Some(key),
            None => smallest(tier)?,
        },
    };
    let lane_latest: Option<i64> = conn
        .prepare_cached("SELECT MAX(fair_key) FROM messages WHERE queue = ?1 AND lane = ?2")?
        .query_row(params![queue, lane], |row| row.get(0))?;
    let virtual_now = virtual_now.unwrap_or(0);
    Ok(lane_latest.map_or(virtual_now, |latest| (latest + 1).max(virtual_now)))
}

/// How many steps of one run may be in flight before a turn of its lane passes to the
/// next-oldest run with a visible step (when there is none, the turn stays with the
/// oldest). The runtime takes the transitions of one run one at a time: every worker on
/// the oldest run of a backlog would wait on that run's turn, so that a lane's backlog
/// drains a few runs at a time instead of one.
pub(crate) const RUN_SHARE: i64 = 2;

/// How many runs of a lane a turn looks at, at most, for one below [`RUN_SHARE`].
const RUNS_PASSED: usize = 16;

/// The next visible message to serve on `queue`, not among `handled` (with a zero
/// visibility a delivered message stays visible, and must not be served twice in one
/// batch). A message whose visibility ran out goes first; otherwise the turn is the
/// visible message with the smallest (tier, fair key), and it goes to the first visible
/// message of the oldest run of the turn's lane with fewer than [`RUN_SHARE`] steps in
/// flight (of the oldest run when none has), which takes the turn's key in exchange for
/// its own (see the module). Returns its id, body and receive count.
///
/// The lookups name their index: left to itself SQLite picks `messages_visible` and
/// sorts every visible message, which at 100,000 queued is most of a receive's cost.
/// Messages in flight are out of their way ([`IN_FLIGHT`]); the indexes end with
/// `visible_at`, so delayed messages are skipped without reading their rows.
fn next_turn(
    conn: &rusqlite::Connection,
    queue: &str,
    now: i64,
    handled: &HashSet<i64>,
) -> rusqlite::Result<Option<(i64, String, u32)>> {
    let skip = handled.len() as i64 + 1;
    let body_of = |id: i64| -> rusqlite::Result<(String, u32)> {
        conn.prepare_cached("SELECT body, receive_count FROM messages WHERE id = ?1")?
            .query_row(params![id], |row| Ok((row.get(0)?, row.get(1)?)))
    };
    // Overdue: received, its visibility run out (a worker died or gave up on it).
    let overdue: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM messages INDEXED BY messages_inflight \
             WHERE receipt IS NOT NULL AND visible_at <= ?2 AND queue = ?1 \
             ORDER BY visible_at LIMIT ?3",
        )?
        .query_map(params![queue, now, skip], |row| row.get::<_, i64>(0))?
        .find(|row| !matches!(row, Ok(id) if handled.contains(id)))
        .transpose()?;
    if let Some(id) = overdue {
        let (body, receive_count) = body_of(id)?;
        return Ok(Some((id, body, receive_count)));
    }
    let turn = conn
        .prepare_cached(
            "SELECT id, lane, tier, fair_key FROM messages INDEXED BY messages_turns \
             WHERE queue = ?1 AND tier < ?2 AND visible_at <= ?3 \
             ORDER BY tier, fair_key, id LIMIT ?4",
        )?
        .query_map(params![queue, IN_FLIGHT, now, skip], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?
        .find(|row| !matches!(row, Ok((id, ..)) if handled.contains(id)))
        .transpose()?;
    let Some((turn_id, lane, tier, turn_key)) = turn else {
        return Ok(None);
    };
    // The chosen message, and the oldest run's.
    let mut chosen = None;
    let mut oldest = None;
    let mut passed: Option<String> = None;
    for _ in 0..RUNS_PASSED {
        let lane = (lane.as_str(), tier);
        let Some(head) = lane_head(conn, queue, lane, passed.as_deref(), now, handled)? else {
            break;
        };
        let in_flight: i64 = conn
            .prepare_cached(
                // Counted only up to the share: a run may hold thousands in flight.
                "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM messages \
                 INDEXED BY messages_run_in_flight \
                 WHERE queue = ?1 AND run_id = ?2 AND visible_at > ?3 \
                 AND receipt IS NOT NULL LIMIT ?4)) \
                 + (SELECT COUNT(*) FROM held_messages \
                 WHERE queue = ?1 AND run_id = ?2 AND visible_at > ?3)",
            )?
            .query_row(params![queue, head.run_id, now, RUN_SHARE], |row| {
                row.get(0)
            })?;
        if in_flight < RUN_SHARE {
            chosen = Some(head);
            break;
        }
        passed = Some(head.run_id.clone());
        oldest.get_or_insert(head);
    }
    // The turn itself is a visible message of the lane, so the lane has a head.
    let Some(head) = chosen.or(oldest) else {
        return Ok(None);
    };
    if head.id != turn_id && head.fair_key != turn_key {
        let mut swap = conn.prepare_cached("UPDATE messages SET fair_key = ?1 WHERE id = ?2")?;
        swap.execute(params![head.fair_key, turn_id])?;
        swap.execute(params![turn_key, head.id])?;
    }
    let (body, receive_count) = body_of(head.id)?;
    Ok(Some((head.id, body, receive_count)))
}

/// A visible message of a lane, as [`next_turn`] weighs it.
struct Head {
    id: i64,
    run_id: String,
    fair_key: i64,
}

/// The first visible message not among `handled` and not in flight of the oldest run of
/// `lane` (of a run after `passed`, when given), with the lane's tier.
fn lane_head(
    conn: &rusqlite::Connection,
    queue: &str,
    (lane, tier): (&str, i64),
    passed: Option<&str>,
    now: i64,
    handled: &HashSet<i64>,
) -> rusqlite::Result<Option<Head>> {
    let skip = handled.len() as i64 + 1;
    let head = |row: &rusqlite::Row<'_>| {
        Ok(Head {
            id: row.get(0)?,
            run_id: row.get(1)?,
            fair_key: row.get(2)?,
        })
    };
    let unhandled = |row: &rusqlite::Result<Head>| !matches!(row, Ok(h) if handled.contains(&h.id));
    match passed {
        None => conn
            .prepare_cached(
                "SELECT id, run_id, fair_key FROM messages INDEXED BY messages_lane_heads \
                 WHERE queue = ?1 AND lane = ?2 AND tier = ?3 AND visible_at <= ?4 \
                 ORDER BY run_id, id LIMIT ?5",
            )?
            .query_map(params![queue, lane, tier, now, skip], head)?
            .find(unhandled)
            .transpose(),
        Some(run) => conn
            .prepare_cached(
                "SELECT id, run_id, fair_key FROM messages INDEXED BY messages_lane_heads \
                 WHERE queue = ?1 AND lane = ?2 AND tier = ?3 AND run_id > ?4 \
                 AND visible_at <= ?5 ORDER BY run_id, id LIMIT ?6",
            )?
            .query_map(params![queue, lane, tier, run, now, skip], head)?
            .find(unhandled)
            .transpose(),
    }
}

/// Schema step: the columns and indexes of fair order (existing messages keep key 0,
/// and are served first).
pub(crate) const SCHEMA_FAIR_QUEUE: &str = r#"
ALTER TABLE messages ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN fair_key INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_fair ON messages (queue, fair_key, id);
CREATE INDEX messages_run  ON messages (run_id, queue, fair_key);
"#;

/// Schema step: lanes. A message queued before it is a lane of its run's own (its fair
/// key, counted per run until now, stays valid as a key of that lane) in the ordinary
/// tier (or its in-flight tier, 3, when it has a receipt); the per-run indexes give way to those of turns, lane keys, lane heads and the
/// steps of a run in flight. The table is rebuilt rather than altered, so the step also
/// applies to a table that has the columns already.
pub(crate) const SCHEMA_QUEUE_LANES: &str = r#"
CREATE TABLE messages_with_lanes (
    id            INTEGER PRIMARY KEY,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    sent_at       INTEGER NOT NULL,
    run_id        TEXT NOT NULL DEFAULT '',
    fair_key      INTEGER NOT NULL DEFAULT 0,
    lane          TEXT NOT NULL DEFAULT '',
    tier          INTEGER NOT NULL DEFAULT 1
);
INSERT INTO messages_with_lanes
    (id, queue, body, visible_at, receive_count, receipt, sent_at, run_id, fair_key, lane, tier)
    SELECT id, queue, body, visible_at, receive_count, receipt, sent_at, run_id, fair_key,
           run_id, CASE WHEN receipt IS NULL THEN 1 ELSE 3 END
    FROM messages;
DROP TABLE messages;
ALTER TABLE messages_with_lanes RENAME TO messages;
CREATE INDEX messages_visible    ON messages (queue, visible_at, id);
CREATE INDEX messages_inflight   ON messages (visible_at) WHERE receipt IS NOT NULL;
CREATE INDEX messages_turns      ON messages (queue, tier, fair_key, id, visible_at);
CREATE INDEX messages_lane_keys  ON messages (queue, lane, fair_key);
CREATE INDEX messages_lane_heads ON messages (queue, lane, tier, run_id, id, visible_at);
CREATE INDEX messages_run_in_flight ON messages (queue, run_id, visible_at)
    WHERE receipt IS NOT NULL;
"#;

#[async_trait]
impl Queue for EmbeddedQueue {
    /// A dropped receive can leave messages invisible, but only one process runs workers
    /// on a data directory and it releases every in-flight message when it starts.
    fn receive_is_cancel_safe(&self) -> bool {
        true
    }

    async fn approximate_depth(&self, queue: &str) -> Result<Option<u64>, QueueError> {
        EmbeddedQueue::depth(self, queue).await.map(Some)
    }

    async fn send(
        &self,
        queue: &str,
        message: &TaskMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.send_many(queue, std::slice::from_ref(message), delay)
            .await
    }

    /// All in one write (one commit, or the staged one), then a waiter woken for each: it
    /// takes a message, or (delayed) re-arms its sleep for it.
    async fn send_many(
        &self,
        queue: &str,
        messages: &[TaskMessage],
        delay: Duration,
    ) -> Result<(), QueueError> {
        let bodies = messages
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| QueueError(format!("json: {e}")))?;
        let now = self.now_nanos();
        self.shared
            .write(|conn| {
                let visible_at = add_duration(now, delay);
                for (message, body) in messages.iter().zip(&bodies) {
                    insert_message(conn, queue, message, body, now, visible_at)?;
                }
                Ok(())
            })
            .await
            .map_err(queue_error)?;
        let notifier = self.shared.notifier(queue);
        for _ in messages {
            notifier.notify_one();
        }
        Ok(())
    }

    /// Stores the message in flight, with a receipt of its own, in `held_messages`
    /// (see `SCHEMA_HELD_MESSAGES`); no waiter is woken (none could take it). Should the
    /// caller die, it comes back when its visibility runs out, or at once when the data
    /// directory is opened again (`release_inflight`).
    async fn send_received(
        &self,
        queue: &str,
        message: &TaskMessage,
        visibility: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let body = serde_json::to_string(message).map_err(|e| QueueError(format!("json: {e}")))?;
        let now = self.now_nanos();
        let receipt = self
            .shared
            .write(|conn| {
                let visible_at = add_duration(now, visibility);
                let (lane, tier) = lane_and_tier(message);
                let id: i64 = conn
                    .prepare_cached("SELECT IFNULL(MAX(id), 0) + 1 FROM held_messages")?
                    .query_row([], |row| row.get(0))?;
                let receipt = format!("h{id}.{}", new_receipt_token());
                conn.prepare_cached(
                    "INSERT INTO held_messages (id, queue, body, visible_at, receive_count, \
                     receipt, sent_at, run_id, lane, tier) \
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    id,
                    queue,
                    body,
                    visible_at,
                    receipt,
                    now,
                    message.run_id,
                    lane,
                    tier
                ])?;
                Ok(receipt)
            })
            .await
            .map_err(queue_error)?;
        Ok(Some(Delivery {
            message: message.clone(),
            receipt,
            receive_count: 1,
        }))
    }

    /// Waits for the first message on an in-process [`tokio::sync::Notify`] (woken by
    /// `send` and `release`) or until the earliest delayed/invisible message becomes
    /// visible, never longer than `wait`; no busy polling. `max` 0 is taken as 1.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        let notify = self.shared.notifier(queue);
        loop {
            // Registered before reading the table, so a send in between is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let received = self.receive_now(queue, max, visibility).await?;
            if received.dead_lettered > 0 {
                self.shared.notifier(&dead_letter_queue(queue)).notify_one();
            }
            if !received.deliveries.is_empty() {
                return Ok(received.deliveries);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline.min(now + CROSS_PROCESS_POLL);
            if let Some(at) = received.next_visible_at {
                let in_nanos = at.saturating_sub(self.now_nanos()).max(0) as u64;
                until = until.min(now + Duration::from_nanos(in_nanos));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Deletes the message if `receipt` is still its current one. A stale receipt (the
    /// message was received again, or released) deletes nothing and is not an error, as
    /// on SQS where a late ack must not fail the worker.
    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        let receipted = parse_receipt(receipt)?;
        let deleted = self
            .shared
            .write(|conn| {
                let (sql, id) = match receipted {
                    Receipted::Queued(id) => (
                        "DELETE FROM messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3",
                        id,
                    ),
                    Receipted::Held(id) => (
                        "DELETE FROM held_messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3",
                        id,
                    ),
                };
                conn.prepare_cached(sql)?
                    .execute(params![id, queue, receipt])
            })
            .await
            .map_err(queue_error)?;
        if deleted == 0 {
            tracing::debug!(queue, receipt, "ack with a stale receipt ignored");
        }
        Ok(())
    }

    /// Makes the message visible after `delay` and invalidates `receipt`. A stale receipt
    /// changes nothing.
    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let receipted = parse_receipt(receipt)?;
        let now = self.now_nanos();
        let visible_at = add_duration(now, delay);
        let changed = self
            .shared
            .write(|conn| match receipted {
                Receipted::Queued(id) => conn
                    .prepare_cached(
                        "UPDATE messages SET visible_at = ?1, receipt = NULL, tier = tier % 2 \
                         WHERE id = ?2 AND queue = ?3 AND receipt = ?4",
                    )?
                    .execute(params![visible_at, id, queue, receipt]),
                Receipted::Held(id) => {
                    let rows = held_rows(
                        conn,
                        "SELECT * FROM held_messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3",
                        params![id, queue, receipt],
                    )?;
                    let count = rows.len();
                    for row in rows {
                        requeue_held(conn, row, now, Requeue::Visible(visible_at))?;
                    }
                    Ok(count)
                }
            })
            .await
            .map_err(queue_error)?;
        if changed > 0 {
            self.shared.notifier(queue).notify_one();
        } else {
            tracing::debug!(queue, receipt, "release with a stale receipt ignored");
        }
        Ok(())
    }

    /// Moves the message's `visible_at` to `visibility` from now; the receipt stays the
    /// current one. A stale receipt changes nothing.
    async fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        let receipted = parse_receipt(receipt)?;
        let visible_at = add_duration(self.now_nanos(), visibility);
        let changed = self
            .shared
            .write(|conn| {
                let (sql, id) = match receipted {
                    Receipted::Queued(id) => (
                        "UPDATE messages SET visible_at = ?1 \
                         WHERE id = ?2 AND queue = ?3 AND receipt = ?4",
                        id,
                    ),
                    Receipted::Held(id) => (
                        "UPDATE held_messages SET visible_at = ?1 \
                         WHERE id = ?2 AND queue = ?3 AND receipt = ?4",
                        id,
                    ),
                };
                conn.prepare_cached(sql)?
                    .execute(params![visible_at, id, queue, receipt])
            })
            .await
            .map_err(queue_error)?;
        if changed > 0 {
            // A waiter sleeping until the old visibility re-arms for the new one. A
            // visibility longer than a waiter's own re-read interval is found by that
            // re-read: no wake-up (a worker holds every message for its step's timeout).
            if visibility < CROSS_PROCESS_POLL {
                self.shared.notifier(queue).notify_one();
            }
        } else {
            tracing::debug!(
                queue,
                receipt,
                "visibility change with a stale receipt ignored"
            );
        }
        Ok(())
    }
}
