//! [`EmbeddedQueue`]: a durable queue with SQS semantics in the data directory's SQLite
//! database — visibility timeout, receive count, dead-letter queue, fresh receipts.
//! When a message becomes visible is judged by the store's [`Clock`] (tests move it);
//! a `receive`'s long-poll wait is real time.
//!
//! Visible messages are served in *fair* order across runs, not oldest first: each
//! message gets a fair key when sent — one more than the latest key of its run's messages
//! still queued, but never below the smallest key queued (start-time fair queuing, with
//! the smallest queued key as the virtual clock). A run with 100,000 queued steps thus
//! takes one turn in each round like any other run, and a short run started behind it
//! has its steps served next instead of after the whole backlog.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use sluice_core::clock::Clock;
use sluice_core::ports::{
    dead_letter_queue, Delivery, Queue, QueueError, TaskMessage, MAX_RECEIVE_COUNT,
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

/// Splits a receipt `<id>.<random>` into the message id (so acks are primary-key
/// lookups) and checks its shape.
fn parse_receipt(receipt: &str) -> Result<i64, QueueError> {
    receipt
        .split_once('.')
        .and_then(|(id, _)| id.parse().ok())
        .ok_or_else(|| QueueError(format!("malformed receipt {receipt:?}")))
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
                conn.prepare_cached("SELECT COUNT(*) FROM messages WHERE queue = ?1")?
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
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?1, receipt = NULL \
                     WHERE receipt IS NOT NULL AND visible_at > ?1",
                )?
                .execute([now])
            })
            .await
            .map_err(queue_error)?;
        if released > 0 {
            self.shared.notify_all();
        }
        Ok(released as u64)
    }

    /// One non-blocking pass: claims up to `max` visible messages, oldest visible first,
    /// dead-lettering those received too often.
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
                let mut deliveries = Vec::new();
                let mut dead_lettered = 0;
                // Ids handled in this pass: with a zero visibility a delivered message is
                // still visible, and must not be delivered twice in one batch.
                let mut handled = HashSet::new();
                loop {
                    let want = max - deliveries.len();
                    let candidates: Vec<(i64, String, u32)> = conn
                        .prepare_cached(
                            "SELECT id, body, receive_count FROM messages \
                             WHERE queue = ?1 AND visible_at <= ?2 \
                             ORDER BY fair_key, id LIMIT ?3",
                        )?
                        .query_map(params![queue, now, (want + handled.len()) as i64], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    let mut dead_this_round = 0;
                    let mut fresh = 0;
                    for (id, body, receive_count) in candidates {
                        if deliveries.len() >= max {
                            break;
                        }
                        if !handled.insert(id) {
                            continue;
                        }
                        fresh += 1;
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
                                 receipt = NULL, visible_at = ?2 WHERE id = ?3",
                            )?
                            .execute(params![dlq, now, id])?;
                            tracing::warn!(
                                queue,
                                dead_letter_queue = %dlq,
                                id,
                                receive_count,
                                "message moved to the dead-letter queue"
                            );
                            dead_this_round += 1;
                            continue;
                        };
                        let receipt = format!(
                            "{id}.{:016x}{:016x}",
                            rand::random::<u64>(),
                            rand::random::<u64>()
                        );
                        conn.prepare_cached(
                            "UPDATE messages SET visible_at = ?1, receive_count = ?2, \
                             receipt = ?3 WHERE id = ?4",
                        )?
                        .execute(params![
                            invisible_until,
                            receive_count + 1,
                            receipt,
                            id
                        ])?;
                        deliveries.push(Delivery {
                            message,
                            receipt,
                            receive_count: receive_count + 1,
                        });
                    }
                    dead_lettered += dead_this_round;
                    // Another round only when dead letters took places in this batch.
                    if deliveries.len() >= max || dead_this_round == 0 || fresh == 0 {
                        break;
                    }
                }
                let next_visible_at = if deliveries.is_empty() {
                    conn.prepare_cached(
                        "SELECT MIN(visible_at) FROM messages WHERE queue = ?1 AND visible_at > ?2",
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

/// The fair key of a new message of `run_id` on `queue` (see the module): after the
/// run's own queued messages, and no earlier than the smallest key queued, so that a run
/// idle for a while does not come back with credit. Two indexed lookups.
fn next_fair_key(conn: &rusqlite::Connection, queue: &str, run_id: &str) -> rusqlite::Result<i64> {
    let virtual_now: Option<i64> = conn
        .prepare_cached("SELECT MIN(fair_key) FROM messages WHERE queue = ?1")?
        .query_row(params![queue], |row| row.get(0))?;
    let run_latest: Option<i64> = conn
        .prepare_cached("SELECT MAX(fair_key) FROM messages WHERE run_id = ?1 AND queue = ?2")?
        .query_row(params![run_id, queue], |row| row.get(0))?;
    let virtual_now = virtual_now.unwrap_or(0);
    Ok(run_latest.map_or(virtual_now, |latest| (latest + 1).max(virtual_now)))
}

/// Schema step: the columns and indexes of fair order (existing messages keep key 0,
/// and are served first).
pub(crate) const SCHEMA_FAIR_QUEUE: &str = r#"
ALTER TABLE messages ADD COLUMN run_id TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN fair_key INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_fair ON messages (queue, fair_key, id);
CREATE INDEX messages_run  ON messages (run_id, queue, fair_key);
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
        let body = serde_json::to_string(message).map_err(|e| QueueError(format!("json: {e}")))?;
        let now = self.now_nanos();
        self.shared
            .write(|conn| {
                let fair_key = next_fair_key(conn, queue, &message.run_id)?;
                conn.prepare_cached(
                    "INSERT INTO messages (queue, body, visible_at, receive_count, receipt, \
                     sent_at, run_id, fair_key) VALUES (?1, ?2, ?3, 0, NULL, ?4, ?5, ?6)",
                )?
                .execute(params![
                    queue,
                    body,
                    add_duration(now, delay),
                    now,
                    message.run_id,
                    fair_key
                ])
            })
            .await
            .map_err(queue_error)?;
        // Wakes one waiter: it takes the message, or (delayed) re-arms its sleep for it.
        self.shared.notifier(queue).notify_one();
        Ok(())
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
        let id = parse_receipt(receipt)?;
        let deleted = self
            .shared
            .write(|conn| {
                conn.prepare_cached(
                    "DELETE FROM messages WHERE id = ?1 AND queue = ?2 AND receipt = ?3",
                )?
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
        let id = parse_receipt(receipt)?;
        let visible_at = add_duration(self.now_nanos(), delay);
        let changed = self
            .shared
            .write(|conn| {
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?1, receipt = NULL \
                     WHERE id = ?2 AND queue = ?3 AND receipt = ?4",
                )?
                .execute(params![visible_at, id, queue, receipt])
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
        let id = parse_receipt(receipt)?;
        let visible_at = add_duration(self.now_nanos(), visibility);
        let changed = self
            .shared
            .write(|conn| {
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?1 \
                     WHERE id = ?2 AND queue = ?3 AND receipt = ?4",
                )?
                .execute(params![visible_at, id, queue, receipt])
            })
            .await
            .map_err(queue_error)?;
        if changed > 0 {
            // A waiter sleeping until the old visibility re-arms for the new one.
            self.shared.notifier(queue).notify_one();
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
