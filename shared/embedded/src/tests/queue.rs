use std::time::{Duration, Instant};

use sluice_core::ports::{dead_letter_queue, Queue, TaskMessage, MAX_RECEIVE_COUNT};

use super::temp_store;

fn message(step: &str) -> TaskMessage {
    TaskMessage {
        run_id: "isapp-1".into(),
        step_id: step.into(),
        unit: 0,
        attempt: 1,
    }
}

const NO_WAIT: Duration = Duration::ZERO;
const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn visibility_timeout_redelivers_with_a_higher_count() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();

    let first = q
        .receive("steps", 10, Duration::from_millis(300), NO_WAIT)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message, message("A"));
    assert_eq!(first[0].receive_count, 1);
    // Invisible while in flight.
    assert!(q
        .receive("steps", 10, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    // Another queue does not see it.
    assert!(q
        .receive("other", 10, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());

    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(second.len(), 1);
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
async fn receive_waits_for_an_invisible_message_to_come_back() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    q.receive("steps", 1, Duration::from_millis(150), NO_WAIT)
        .await
        .unwrap();
    let started = Instant::now();
    let again = q
        .receive("steps", 1, LONG, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert!(started.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn delayed_messages_become_visible_later() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), Duration::from_millis(200))
        .await
        .unwrap();
    assert!(q
        .receive("steps", 10, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    let started = Instant::now();
    let got = q
        .receive("steps", 10, LONG, Duration::from_secs(5))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(got.len(), 1);
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    // Woken by the delay's end, not by the one-second fallback poll.
    assert!(waited < Duration::from_millis(900), "{waited:?}");
}

#[tokio::test]
async fn receive_returns_empty_after_wait() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    let started = Instant::now();
    let got = q
        .receive("steps", 10, LONG, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn oldest_first_up_to_max() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    for step in ["A", "B", "C"] {
        q.send("steps", &message(step), NO_WAIT).await.unwrap();
    }
    let got = q.receive("steps", 2, LONG, NO_WAIT).await.unwrap();
    let steps: Vec<_> = got.iter().map(|d| d.message.step_id.as_str()).collect();
    assert_eq!(steps, ["A", "B"]);
    let got = q.receive("steps", 2, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.step_id, "C");
}

#[tokio::test]
async fn zero_visibility_does_not_duplicate_within_a_batch() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    q.send("steps", &message("B"), NO_WAIT).await.unwrap();
    let got = q
        .receive("steps", 10, Duration::ZERO, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn dead_letters_after_max_receives() {
    let (_dir, store) = temp_store();
    let q = store.queue();
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
    let dead = q.receive(&dlq, 10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message, message("A"));
    assert_eq!(dead[0].receive_count, 1);
}

#[tokio::test]
async fn a_batch_fills_past_dead_letters() {
    let (_dir, store) = temp_store();
    let q = store.queue();
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
async fn release_makes_visible_and_invalidates_the_receipt() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    let first = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    q.release("steps", &first[0].receipt, NO_WAIT)
        .await
        .unwrap();
    // The released receipt no longer acks.
    q.ack("steps", &first[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 1);

    let second = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].receive_count, 2);

    // Release with a delay: invisible until then, and a waiting receive wakes for it.
    q.release("steps", &second[0].receipt, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(q
        .receive("steps", 1, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    let started = Instant::now();
    let third = q
        .receive("steps", 1, LONG, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].receive_count, 3);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn release_wakes_a_waiting_receiver() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    let got = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = q
                .receive("steps", 1, LONG, Duration::from_secs(10))
                .await
                .unwrap();
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    q.release("steps", &got[0].receipt, NO_WAIT).await.unwrap();
    let (got, elapsed) = waiter.await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_wakes_on_send_from_another_task() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let q = q.clone();
        waiters.push(tokio::spawn(async move {
            let got = q
                .receive("steps", 1, LONG, Duration::from_secs(10))
                .await
                .unwrap();
            (got, Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent_at = Instant::now();
    for step in ["A", "B", "C"] {
        q.send("steps", &message(step), NO_WAIT).await.unwrap();
    }
    let mut steps = Vec::new();
    for waiter in waiters {
        let (got, at) = waiter.await.unwrap();
        assert_eq!(got.len(), 1);
        // Well under the one-second fallback poll: woken by the send.
        assert!(at.duration_since(sent_at) < Duration::from_millis(500));
        steps.push(got[0].message.step_id.clone());
    }
    steps.sort();
    assert_eq!(steps, ["A", "B", "C"]);
}

#[tokio::test]
async fn release_inflight_returns_messages_after_a_restart() {
    let (dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    q.send("steps", &message("B"), Duration::from_secs(3600))
        .await
        .unwrap();
    let got = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(got.len(), 1);
    drop((q, store));

    // A new process on the same directory.
    let store = crate::EmbeddedStore::open(dir.path()).unwrap();
    let q = store.queue();
    assert!(q
        .receive("steps", 10, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(q.release_inflight().await.unwrap(), 1);
    let again = q.receive("steps", 10, LONG, NO_WAIT).await.unwrap();
    assert_eq!(again.len(), 1, "the delayed message keeps its delay");
    assert_eq!(again[0].message.step_id, "A");
    assert_eq!(again[0].receive_count, 2);
    // The receipt from before the restart is dead.
    q.ack("steps", &got[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 2);
}

#[tokio::test]
async fn extend_visibility_keeps_the_receipt_and_moves_the_redelivery() {
    let (_dir, store) = temp_store();
    let q = store.queue();
    q.send("steps", &message("A"), NO_WAIT).await.unwrap();
    let first = q.receive("steps", 1, LONG, NO_WAIT).await.unwrap();
    // Shortened from a minute to 200 ms: back after that, not after the receive's minute.
    q.extend_visibility("steps", &first[0].receipt, Duration::from_millis(200))
        .await
        .unwrap();
    let started = Instant::now();
    let again = q
        .receive("steps", 1, LONG, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(again.len(), 1, "redelivered once the new visibility ended");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(again[0].receive_count, 2);
    // Extended: invisible past the receive's visibility, and its receipt still acks.
    q.extend_visibility("steps", &again[0].receipt, LONG)
        .await
        .unwrap();
    assert!(q
        .receive("steps", 1, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    // A stale receipt changes nothing.
    q.extend_visibility("steps", &first[0].receipt, NO_WAIT)
        .await
        .unwrap();
    assert!(q
        .receive("steps", 1, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    q.ack("steps", &again[0].receipt).await.unwrap();
    assert_eq!(q.depth("steps").await.unwrap(), 0);
}
