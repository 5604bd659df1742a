//! The embedded queue beyond the port contract (`tests/conformance.rs`): when delayed,
//! released and timed-out messages become visible, on a [`ManualClock`] that only the
//! test moves, and what only this adapter has (ordering, depth, restarts).

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as ChronoDuration;
use sluice_core::clock::ManualClock;
use sluice_core::ports::{dead_letter_queue, Queue, TaskMessage, MAX_RECEIVE_COUNT};

use crate::{EmbeddedQueue, EmbeddedStore};

fn message(step: &str) -> TaskMessage {
    TaskMessage {
        run_id: "isapp-1".into(),
        step_id: step.into(),
        unit: 0,
        attempt: 1,
        lane: None,
    }
}

const NO_WAIT: Duration = Duration::ZERO;
const LONG: Duration = Duration::from_secs(60);

/// A queue of a fresh data directory whose time moves only with the returned clock.
fn driven_queue() -> (tempfile::TempDir, Arc<ManualClock>, EmbeddedQueue) {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::starting_now();
    let queue = EmbeddedStore::open(dir.path())
        .expect("open store")
        .with_clock(clock.clone())
        .queue();
    (dir, clock, queue)
}

fn millis(ms: i64) -> ChronoDuration {
    ChronoDuration::milliseconds(ms)
}

async fn visible(q: &EmbeddedQueue, queue: &str) -> Vec<sluice_core::ports::Delivery> {
    q.receive(queue, 10, LONG, NO_WAIT).await.unwrap()
}

#[tokio::test]
async fn visibility_timeout_redelivers_with_a_higher_count() {
    let (_dir, clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();

    let first = q
        .receive("steps", 10, Duration::from_millis(300), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    clock.advance(millis(299));
    assert!(visible(&q, "steps").await.is_empty(), "still in flight");

    clock.advance(millis(1));
    let second = visible(&q, "steps").await;
    assert_eq!(second.len(), 1, "visible once the timeout has passed");
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(second[0].receipt, first[0].receipt);

    // The stale receipt acknowledges nothing; the current one does.
    q.ack("steps", &first[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 1);
    q.ack("steps", &second[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 0);
    assert!(q.ack("steps", "garbage").await.is_err());
}

#[tokio::test]
async fn delayed_messages_become_visible_when_the_clock_passes_the_delay() {
    let (_dir, clock, q) = driven_queue();
    q.send("steps", &message("A"), Duration::from_secs(200))
        .await
        .unwrap();
    assert!(visible(&q, "steps").await.is_empty());
    clock.advance(ChronoDuration::seconds(200) - millis(1));
    assert!(
        visible(&q, "steps").await.is_empty(),
        "not before the delay"
    );
    clock.advance(millis(1));
    let got = visible(&q, "steps").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 1, "a delay is not a receive");
}

/// A receive waiting on an empty-looking queue returns a message whose visibility
/// timeout the clock moved past during the wait (it re-reads the table, at least every
/// second, so a clock moved by someone else is noticed too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_receive_returns_a_message_that_became_visible() {
    let (_dir, clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            q.receive("steps", 1, LONG, Duration::from_secs(10))
                .await
                .unwrap()
        })
    };
    clock.advance(ChronoDuration::seconds(61));
    let again = waiter.await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn receive_returns_empty_after_its_wait() {
    let (_dir, _clock, q) = driven_queue();
    let got = q
        .receive("steps", 10, LONG, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(got.is_empty());
}

#[tokio::test]
async fn oldest_first_up_to_max() {
    let (_dir, clock, q) = driven_queue();
    for step in ["A", "B", "C"] {
        q.send("steps", &message(step), NO_WAIT).await.unwrap();
        clock.advance(millis(1));
    }
    let got = q.receive("steps", 2, LONG, NO_WAIT).await.unwrap();
    let steps: Vec<_> = got.iter().map(|d| d.message.step_id.as_str()).collect();
    assert_eq!(steps, ["A", "B"]);
    let got = q.receive("steps", 2, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.step_id, "C");
}

fn message_of(run: &str, unit: u32) -> TaskMessage {
    TaskMessage {
        run_id: run.into(),
        step_id: "Step".into(),
        unit,
        attempt: 1,
        lane: None,
    }
}

#[tokio::test]
async fn runs_take_turns_instead_of_waiting_behind_a_backlog() {
    let (_dir, _clock, q) = driven_queue();
    for unit in 0..1000 {
        q.send("steps", &message_of("big", unit), NO_WAIT)
            .await
            .unwrap();
    }
    // A short run started behind 1,000 queued steps of another run.
    q.send("steps", &message_of("short", 0), NO_WAIT)
        .await
        .unwrap();
    let first = q.receive("steps", 2, LONG, NO_WAIT).await.unwrap();
    let runs: Vec<_> = first.iter().map(|d| d.message.run_id.as_str()).collect();
    assert_eq!(
        runs,
        ["big", "short"],
        "one turn each, not the whole backlog first"
    );
    q.ack("steps", &first[1].receipt).await.unwrap();

    // Its next step, sent once the first is done, again comes before the backlog's rest.
    q.send("steps", &message_of("short", 1), NO_WAIT)
        .await
        .unwrap();
    let next = q.receive("steps", 2, LONG, NO_WAIT).await.unwrap();
    let taken: Vec<_> = next
        .iter()
        .map(|d| (d.message.run_id.as_str(), d.message.unit))
        .collect();
    assert!(taken.contains(&("short", 1)), "{taken:?}");

    // Within one run, order stays the order sent.
    let rest = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    let units: Vec<_> = rest.iter().map(|d| d.message.unit).collect();
    let mut sorted = units.clone();
    sorted.sort_unstable();
    assert_eq!(units, sorted);
}

#[tokio::test]
async fn a_run_that_was_idle_gets_no_credit_over_the_runs_queued() {
    let (_dir, _clock, q) = driven_queue();
    // "early" has its messages served; "late" queues 5 while "other" has 5 queued.
    for unit in 0..5 {
        q.send("steps", &message_of("other", unit), NO_WAIT)
            .await
            .unwrap();
    }
    for d in q.receive("steps", 2, LONG, NO_WAIT).await.unwrap() {
        q.ack("steps", &d.receipt).await.unwrap();
    }
    for unit in 0..3 {
        q.send("steps", &message_of("late", unit), NO_WAIT)
            .await
            .unwrap();
    }
    // Both runs now alternate: the late one does not jump the three still queued.
    let got = q.receive("steps", 6, LONG, NO_WAIT).await.unwrap();
    let runs: Vec<_> = got.iter().map(|d| d.message.run_id.as_str()).collect();
    assert_eq!(runs, ["other", "late", "other", "late", "other", "late"]);
}

/// A message of `run` in `lane`. Run ids are time-ordered: a smaller one is an older run.
fn in_lane(lane: &str, run: &str, unit: u32) -> TaskMessage {
    TaskMessage {
        lane: Some(lane.into()),
        ..message_of(run, unit)
    }
}

/// (lane, run, unit) of each delivery.
fn served(deliveries: &[sluice_core::ports::Delivery]) -> Vec<(String, String, u32)> {
    deliveries
        .iter()
        .map(|d| {
            let m = &d.message;
            let lane = m.lane.clone().unwrap_or_default();
            (lane, m.run_id.clone(), m.unit)
        })
        .collect()
}

fn row(lane: &str, run: &str, unit: u32) -> (String, String, u32) {
    (lane.into(), run.into(), unit)
}

/// Serves `n` messages one at a time, each acknowledged before the next is received (a
/// single worker), so that no run has a step in flight when a turn is decided.
async fn one_at_a_time(q: &EmbeddedQueue, n: usize) -> Vec<(String, String, u32)> {
    let mut rows = Vec::new();
    for _ in 0..n {
        let got = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
        let Some(delivery) = got.first() else { break };
        q.ack("steps", &delivery.receipt).await.unwrap();
        rows.extend(served(&got));
    }
    rows
}

#[tokio::test]
async fn lanes_take_turns_and_a_lane_drains_its_oldest_run_first() {
    let (_dir, _clock, q) = driven_queue();
    // Two runs of one application interleave their sends, the older run second.
    for unit in 0..3 {
        for run in ["isapp-0002", "isapp-0001"] {
            q.send("steps", &in_lane("bulk", run, unit), NO_WAIT)
                .await
                .unwrap();
        }
    }
    // A run of another lane, started behind all six.
    for unit in 0..3 {
        q.send("steps", &in_lane("other", "isapp-0003", unit), NO_WAIT)
            .await
            .unwrap();
    }
    assert_eq!(
        one_at_a_time(&q, 10).await,
        [
            row("bulk", "isapp-0001", 0),
            row("other", "isapp-0003", 0),
            row("bulk", "isapp-0001", 1),
            row("other", "isapp-0003", 1),
            row("bulk", "isapp-0001", 2),
            row("other", "isapp-0003", 2),
            row("bulk", "isapp-0002", 0),
            row("bulk", "isapp-0002", 1),
            row("bulk", "isapp-0002", 2),
        ],
        "the lanes alternate; within one, the older run first, each in the order sent"
    );
}

#[tokio::test]
async fn a_fresh_run_waits_behind_the_runs_of_its_lane_but_not_behind_other_lanes() {
    let (_dir, _clock, q) = driven_queue();
    for unit in 0..4 {
        q.send("steps", &in_lane("sync", "isapp-0001", unit), NO_WAIT)
            .await
            .unwrap();
    }
    q.send("steps", &in_lane("sync", "isapp-0002", 0), NO_WAIT)
        .await
        .unwrap();
    q.send("steps", &in_lane("report", "isapp-0003", 0), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(
        one_at_a_time(&q, 3).await,
        [
            row("sync", "isapp-0001", 0),
            row("report", "isapp-0003", 0),
            row("sync", "isapp-0001", 1),
        ]
    );
    // The older run's next step, sent now, still goes before the fresh run of its lane.
    q.send("steps", &in_lane("sync", "isapp-0001", 4), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(
        one_at_a_time(&q, 10).await,
        [
            row("sync", "isapp-0001", 2),
            row("sync", "isapp-0001", 3),
            row("sync", "isapp-0001", 4),
            row("sync", "isapp-0002", 0),
        ]
    );
}

/// While the oldest run of a lane has `RUN_SHARE` steps in flight, its lane's turns go
/// to the next-oldest run; with no other run to serve, to the oldest again.
#[tokio::test]
async fn a_run_with_its_share_in_flight_passes_its_lane_turns_on() {
    assert_eq!(crate::queue::RUN_SHARE, 2);
    let (_dir, _clock, q) = driven_queue();
    for unit in 0..4 {
        q.send("steps", &in_lane("sync", "isapp-0001", unit), NO_WAIT)
            .await
            .unwrap();
    }
    for unit in 0..2 {
        q.send("steps", &in_lane("sync", "isapp-0002", unit), NO_WAIT)
            .await
            .unwrap();
    }
    let got = q.receive("steps", 5, LONG, NO_WAIT).await.unwrap();
    assert_eq!(
        served(&got),
        [
            row("sync", "isapp-0001", 0),
            row("sync", "isapp-0001", 1),
            row("sync", "isapp-0002", 0),
            row("sync", "isapp-0002", 1),
            row("sync", "isapp-0001", 2),
        ]
    );
    // Every run with a visible step has its share in flight: a fresh run is served
    // rather than leave a worker idle.
    q.send("steps", &in_lane("sync", "isapp-0003", 0), NO_WAIT)
        .await
        .unwrap();
    let fresh = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(served(&fresh), [row("sync", "isapp-0003", 0)]);
    // Two of the oldest run's steps done: its next one goes first again.
    q.send("steps", &in_lane("sync", "isapp-0003", 1), NO_WAIT)
        .await
        .unwrap();
    for done in &got[..2] {
        q.ack("steps", &done.receipt).await.unwrap();
    }
    let next = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(served(&next), [row("sync", "isapp-0001", 3)]);
}

/// A message sent already received (kept apart from the queued ones) is one of its
/// run's steps in flight like any other.
#[tokio::test]
async fn held_messages_count_toward_their_runs_share() {
    let (_dir, _clock, q) = driven_queue();
    for unit in 0..2 {
        q.send_received("steps", &in_lane("sync", "isapp-0001", unit), LONG)
            .await
            .unwrap()
            .unwrap();
    }
    q.send("steps", &in_lane("sync", "isapp-0001", 2), NO_WAIT)
        .await
        .unwrap();
    q.send("steps", &in_lane("sync", "isapp-0002", 0), NO_WAIT)
        .await
        .unwrap();
    let got = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(served(&got), [row("sync", "isapp-0002", 0)]);
    assert_eq!(q.depth("steps").await.unwrap(), 4);
}

#[tokio::test]
async fn the_priority_lanes_go_before_every_other_lane() {
    let (_dir, clock, q) = driven_queue();
    for unit in 0..5 {
        q.send("steps", &in_lane("bulk", "isapp-0001", unit), NO_WAIT)
            .await
            .unwrap();
    }
    let first = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(served(&first), [row("bulk", "isapp-0001", 0)]);
    for unit in 0..2 {
        q.send("steps", &in_lane("high", "isapp-0002", unit), NO_WAIT)
            .await
            .unwrap();
    }
    q.send("steps", &in_lane("priority.high", "isapp-0003", 0), NO_WAIT)
        .await
        .unwrap();
    let got = q.receive("steps", 4, LONG, NO_WAIT).await.unwrap();
    assert_eq!(
        served(&got),
        [
            row("high", "isapp-0002", 0),
            row("priority.high", "isapp-0003", 0),
            row("high", "isapp-0002", 1),
            row("bulk", "isapp-0001", 1),
        ],
        "both priority lanes first, fair between them, then the rest"
    );
    // A delayed priority step waits out its delay, then goes first again.
    q.send(
        "steps",
        &in_lane("high", "isapp-0002", 2),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(
        served(&q.receive("steps", 1, LONG, NO_WAIT).await.unwrap()),
        [row("bulk", "isapp-0001", 2)]
    );
    clock.advance(ChronoDuration::seconds(5));
    assert_eq!(
        served(&q.receive("steps", 1, LONG, NO_WAIT).await.unwrap()),
        [row("high", "isapp-0002", 2)]
    );
}

/// A step held long in flight keeps the smallest key of its lane; a lane arriving
/// meanwhile is keyed from the next turn on, not from that key, so it alternates with
/// the busy lane instead of going first until it catches up.
#[tokio::test]
async fn a_message_in_flight_gives_a_new_lane_no_credit() {
    let (_dir, _clock, q) = driven_queue();
    for unit in 0..6 {
        q.send("steps", &in_lane("busy", "isapp-0001", unit), NO_WAIT)
            .await
            .unwrap();
    }
    let first = q.receive("steps", 3, LONG, NO_WAIT).await.unwrap();
    for done in &first[1..] {
        q.ack("steps", &done.receipt).await.unwrap();
    }
    for unit in 0..3 {
        q.send("steps", &in_lane("new", "isapp-0002", unit), NO_WAIT)
            .await
            .unwrap();
    }
    let got = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    let lanes: Vec<_> = served(&got).into_iter().map(|(lane, ..)| lane).collect();
    assert_eq!(lanes, ["busy", "new", "busy", "new", "busy", "new"]);
}

/// A message whose visibility ran out (its worker died) had its turn: it goes before the
/// turns of every lane, priority lanes included.
#[tokio::test]
async fn an_overdue_message_goes_before_the_turns() {
    let (_dir, clock, q) = driven_queue();
    for unit in 0..3 {
        q.send("steps", &in_lane("bulk", "isapp-0001", unit), NO_WAIT)
            .await
            .unwrap();
    }
    let taken = q
        .receive("steps", 1, Duration::from_millis(300), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(served(&taken), [row("bulk", "isapp-0001", 0)]);
    q.send("steps", &in_lane("high", "isapp-0002", 0), NO_WAIT)
        .await
        .unwrap();
    clock.advance(millis(300));
    let got = q.receive("steps", 3, LONG, NO_WAIT).await.unwrap();
    assert_eq!(
        served(&got),
        [
            row("bulk", "isapp-0001", 0),
            row("high", "isapp-0002", 0),
            row("bulk", "isapp-0001", 1),
        ]
    );
    assert_eq!(got[0].receive_count, 2);
}

#[tokio::test]
async fn a_message_without_a_lane_is_a_lane_of_its_run() {
    let (_dir, _clock, q) = driven_queue();
    for unit in 0..2 {
        q.send("steps", &in_lane("app", "isapp-0001", unit), NO_WAIT)
            .await
            .unwrap();
        q.send("steps", &in_lane("app", "isapp-0002", unit), NO_WAIT)
            .await
            .unwrap();
    }
    // No lane (or an empty one): not in the lane "app", but one of its own.
    q.send("steps", &message_of("isapp-0003", 0), NO_WAIT)
        .await
        .unwrap();
    q.send("steps", &in_lane("", "isapp-0004", 0), NO_WAIT)
        .await
        .unwrap();
    let got = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    let runs: Vec<_> = got.iter().map(|d| d.message.run_id.as_str()).collect();
    assert_eq!(
        runs,
        [
            "isapp-0001",
            "isapp-0003",
            "isapp-0004",
            "isapp-0001",
            "isapp-0002",
            "isapp-0002"
        ]
    );
}

#[test]
fn a_run_lane_is_its_queue_label_else_its_application() {
    use sluice_core::ports::{is_priority_lane, lane_of, MAX_LANE_BYTES};
    assert_eq!(lane_of(Some("nightly"), "device_sync"), "nightly");
    assert_eq!(lane_of(Some(""), "device_sync"), "device_sync");
    assert_eq!(lane_of(None, "device_sync"), "device_sync");
    let long = "é".repeat(100);
    let cut = lane_of(Some(&long), "app");
    assert!(cut.len() <= MAX_LANE_BYTES && long.starts_with(&cut) && !cut.is_empty());
    assert!(is_priority_lane("high") && is_priority_lane("priority.high"));
    assert!(!is_priority_lane("High") && !is_priority_lane("device_sync"));
}

/// A data directory of schema 8 (fair order by run, bodies without a lane), upgraded:
/// its queued messages are served, in their old order among themselves, and share their
/// turns with the lanes of new messages.
#[tokio::test]
async fn messages_queued_before_lanes_are_served_after_the_upgrade() {
    let (dir, clock, q) = driven_queue();
    drop(q);
    let conn = rusqlite::Connection::open(dir.path().join("sluice.db")).unwrap();
    conn.execute_batch(
        "DROP TABLE messages;
         CREATE TABLE messages (
             id INTEGER PRIMARY KEY, queue TEXT NOT NULL, body TEXT NOT NULL,
             visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0,
             receipt TEXT, sent_at INTEGER NOT NULL,
             run_id TEXT NOT NULL DEFAULT '', fair_key INTEGER NOT NULL DEFAULT 0);
         CREATE INDEX messages_visible  ON messages (queue, visible_at, id);
         CREATE INDEX messages_inflight ON messages (visible_at) WHERE receipt IS NOT NULL;
         CREATE INDEX messages_fair ON messages (queue, fair_key, id);
         CREATE INDEX messages_run  ON messages (run_id, queue, fair_key);",
    )
    .unwrap();
    // Keys as the per-run fair order gave them: old-1 twice, old-2 once.
    for (unit, run, key) in [
        (0, "isapp-old-1", 0),
        (1, "isapp-old-2", 0),
        (2, "isapp-old-1", 1),
    ] {
        let body = serde_json::json!({"run_id": run, "step_id": "Old", "unit": unit, "attempt": 1});
        conn.execute(
            "INSERT INTO messages (queue, body, visible_at, sent_at, run_id, fair_key) \
             VALUES ('steps', ?1, 0, 0, ?2, ?3)",
            rusqlite::params![body.to_string(), run, key],
        )
        .unwrap();
    }
    conn.pragma_update(None, "user_version", 8).unwrap();
    drop(conn);

    let q = EmbeddedStore::open(dir.path())
        .unwrap()
        .with_clock(clock.clone())
        .queue();
    q.send("steps", &in_lane("app", "isapp-new", 3), NO_WAIT)
        .await
        .unwrap();
    let got = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    let order: Vec<_> = got
        .iter()
        .map(|d| {
            (
                d.message.run_id.as_str(),
                d.message.unit,
                d.message.lane.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            ("isapp-old-1", 0, None),
            ("isapp-old-2", 1, None),
            ("isapp-new", 3, Some("app")),
            ("isapp-old-1", 2, None),
        ]
    );
}

#[tokio::test]
async fn dead_lettering_resets_the_count_and_leaves_delayed_messages() {
    let (_dir, _clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    q.send("steps", &message("B"), Duration::from_secs(3600))
        .await
        .unwrap();
    for count in 1..=MAX_RECEIVE_COUNT {
        let got = q
            .receive("steps", 10, Duration::ZERO, NO_WAIT)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, count);
    }
    assert!(q
        .receive("steps", 10, Duration::ZERO, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    let dlq = dead_letter_queue("steps");
    assert_eq!(q.depth("steps").await.unwrap(), 1); // B, still delayed
    assert_eq!(q.depth(&dlq).await.unwrap(), 1);
    let dead = visible(&q, &dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message, message("A"));
    assert_eq!(dead[0].receive_count, 1);
}

#[tokio::test]
async fn a_batch_fills_past_dead_letters() {
    let (_dir, _clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    for _ in 0..MAX_RECEIVE_COUNT {
        let got = q
            .receive("steps", 1, Duration::ZERO, NO_WAIT)
            .await
            .unwrap();
        assert_eq!(got[0].message.step_id, "A");
    }
    q.send("steps", &message("B"), NO_WAIT).await.unwrap();
    let got = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.step_id, "B");
    assert_eq!(q.depth(&dead_letter_queue("steps")).await.unwrap(), 1);
}

#[tokio::test]
async fn release_invalidates_the_receipt_and_its_delay_runs_on_the_clock() {
    let (_dir, clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    let first = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    q.release("steps", &first[0].receipt, NO_WAIT)
        .await
        .unwrap();
    // The released receipt no longer acks.
    q.ack("steps", &first[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 1);

    let second = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(second[0].receive_count, 2);

    // Released with a delay: invisible before the clock passes it, visible after.
    q.release("steps", &second[0].receipt, Duration::from_secs(30))
        .await
        .unwrap();
    clock.advance(ChronoDuration::seconds(30) - millis(1));
    assert!(visible(&q, "steps").await.is_empty());
    clock.advance(millis(1));
    let third = visible(&q, "steps").await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].receive_count, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_reaches_a_waiting_receiver() {
    let (_dir, _clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    let got = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            q.receive("steps", 1, LONG, Duration::from_secs(10))
                .await
                .unwrap()
        })
    };
    q.release("steps", &got[0].receipt, NO_WAIT).await.unwrap();
    let got = waiter.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waiters_share_the_messages_sent_meanwhile() {
    let (_dir, _clock, q) = driven_queue();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                q.receive("steps", 1, LONG, Duration::from_secs(10))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for step in ["A", "B", "C"] {
        q.send("steps", &message(step), NO_WAIT).await.unwrap();
    }
    let mut steps = Vec::new();
    for waiter in waiters {
        let got = waiter.await.unwrap();
        assert_eq!(got.len(), 1);
        steps.push(got[0].message.step_id.clone());
    }
    steps.sort();
    assert_eq!(steps, ["A", "B", "C"], "each message to one waiter");
}

#[tokio::test]
async fn release_inflight_returns_messages_after_a_restart() {
    let (dir, clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    q.send("steps", &message("B"), Duration::from_secs(3600))
        .await
        .unwrap();
    let got = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    drop(q);

    // A new process on the same directory.
    let q = EmbeddedStore::open(dir.path())
        .unwrap()
        .with_clock(clock.clone())
        .queue();
    assert!(visible(&q, "steps").await.is_empty());
    assert_eq!(q.release_inflight().await.unwrap(), 1);
    let again = visible(&q, "steps").await;
    assert_eq!(again.len(), 1, "the delayed message keeps its delay");
    assert_eq!(again[0].message.step_id, "A");
    assert_eq!(again[0].receive_count, 2);
    // The receipt from before the restart is dead.
    q.ack("steps", &got[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 2);
    clock.advance(ChronoDuration::seconds(3600));
    let mut later: Vec<_> = visible(&q, "steps")
        .await
        .into_iter()
        .map(|d| d.message.step_id)
        .collect();
    later.sort();
    assert_eq!(
        later,
        ["A", "B"],
        "the delay ends, and so does A's visibility"
    );
}

#[tokio::test]
async fn extend_visibility_keeps_the_receipt_and_moves_the_redelivery() {
    let (_dir, clock, q) = driven_queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    let first = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    // Shortened from a minute to 200 ms: back after that, not after the receive's minute.
    q.extend_visibility("steps", &first[0].receipt, Duration::from_millis(200))
        .await
        .unwrap();
    clock.advance(millis(199));
    assert!(visible(&q, "steps").await.is_empty());
    clock.advance(millis(1));
    let again = q
        .receive("steps", 1, Duration::from_secs(1), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "redelivered once the new visibility ended");
    assert_eq!(again[0].receive_count, 2);
    // Lengthened past the receive's second: still hidden after it, its receipt still acks.
    q.extend_visibility("steps", &again[0].receipt, LONG)
        .await
        .unwrap();
    clock.advance(ChronoDuration::seconds(30));
    assert!(visible(&q, "steps").await.is_empty());
    // A stale receipt changes nothing.
    q.extend_visibility("steps", &first[0].receipt, NO_WAIT)
        .await
        .unwrap();
    assert!(visible(&q, "steps").await.is_empty());
    q.ack("steps", &again[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 0);
}

#[tokio::test]
async fn a_message_sent_received_is_in_flight_until_acknowledged_or_its_hold_ends() {
    let (_dir, clock, q) = driven_queue();
    let held = q
        .send_received("steps", &message("A"), Duration::from_secs(30))
        .await
        .unwrap()
        .expect("the embedded queue hands messages over");
    assert_eq!(held.receive_count, 1);
    assert_eq!(held.message, message("A"));
    assert_eq!(q.depth("steps").await.unwrap(), 1, "stored");
    assert!(visible(&q, "steps").await.is_empty(), "in flight");
    assert!(
        held.receipt.starts_with('h'),
        "kept apart: {}",
        held.receipt
    );
    // A later hold, and an extension, are the held row's.
    q.extend_visibility("steps", &held.receipt, Duration::from_secs(30))
        .await
        .unwrap();

    // Its hold ran out (the worker died): received again, with a fresh receipt.
    clock.advance(millis(30_000));
    let again = visible(&q, "steps").await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt, held.receipt);
    q.ack("steps", &held.receipt).await.unwrap();
    assert_eq!(
        q.depth("steps").await.unwrap(),
        1,
        "a stale receipt acks nothing"
    );
    q.ack("steps", &again[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 0);

    // Acknowledged by its own receipt; released like any received message; and let go
    // when the data directory is opened again.
    let held = q
        .send_received("steps", &message("B"), LONG)
        .await
        .unwrap()
        .unwrap();
    q.ack("steps", &held.receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 0);
    let held = q
        .send_received("steps", &message("C"), LONG)
        .await
        .unwrap()
        .unwrap();
    q.release("steps", &held.receipt, NO_WAIT).await.unwrap();
    assert_eq!(visible(&q, "steps").await.len(), 1);
    q.send_received("steps", &message("D"), LONG)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(q.release_inflight().await.unwrap(), 2, "C again, and D");
}
