//! Chaos: `sluice serve` under a bounded load of runs whose steps call a counting HTTP
//! server, SIGKILLed at (seeded) random moments and restarted several times. Afterwards
//! every run has ended, no attempt was executed by two workers at once, and no step
//! ran again once it had finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::support::{Auth, Scratch};

/// Process restarts (each after a SIGKILL).
const KILLS: usize = 6;
/// Runs started in each process generation.
const RUNS_PER_GENERATION: usize = 10;
/// How long the counting server takes to answer: long enough for a second, concurrent
/// execution of the same attempt to overlap the first.
const ANSWER_AFTER: Duration = Duration::from_millis(150);

/// One request the counting server saw.
#[derive(Debug, Clone)]
struct Hit {
    run: String,
    step: String,
    /// Process generation (number of kills before the request arrived).
    generation: usize,
    started: DateTime<Utc>,
    /// When the answer was sent, or the connection dropped.
    ended: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Counter {
    hits: Mutex<Vec<Hit>>,
    generation: Mutex<usize>,
    arrived: Notify,
}

/// Records the end of a request however it ends (answered, or cancelled when the
/// killed client's connection closes).
struct EndGuard {
    counter: Arc<Counter>,
    index: usize,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let mut hits = self.counter.hits.lock().unwrap();
        hits[self.index].ended.get_or_insert_with(Utc::now);
    }
}

async fn hit(
    State(counter): State<Arc<Counter>>,
    UrlPath((run, step)): UrlPath<(String, String)>,
) -> axum::Json<Value> {
    let index = {
        let generation = *counter.generation.lock().unwrap();
        let mut hits = counter.hits.lock().unwrap();
        hits.push(Hit {
            run,
            step,
            generation,
            started: Utc::now(),
            ended: None,
        });
        hits.len() - 1
    };
    counter.arrived.notify_waiters();
    let _guard = EndGuard {
        counter: counter.clone(),
        index,
    };
    tokio::time::sleep(ANSWER_AFTER).await;
    axum::Json(json!({"ok": true}))
}

async fn counting_server() -> (String, Arc<Counter>) {
    let counter = Arc::new(Counter::default());
    let app = Router::new()
        .route("/hit/{run}/{step}", post(hit))
        .with_state(counter.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, counter)
}

/// A small deterministic generator (xorshift64*): the kill moments repeat run to run.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

fn app(base: &str) -> Value {
    let step = |id: &str, after: &[&str]| {
        json!({"id": id, "type": "http_request", "depends_on": after,
               "parameters": {"url": format!("{base}/hit/${{run.id}}/{id}"), "method": "POST", "body": {"step": id}}})
    };
    json!({"name": "chaos", "author": "e2e", "steps": [
        step("A", &[]), step("B", &["A"]), step("C", &["B"]), step("D", &["A"])
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_never_runs_an_attempt_twice_at_once_nor_a_finished_step_again() {
    let (base, counter) = counting_server().await;
    let s = Scratch::new();
    let admin = Auth::Admin;
    let mut rng = Seeded(0x5eed_cafe_f00d_0001);
    let mut runs = Vec::new();
    let mut serve = s.serve().await;
    assert_eq!(
        serve
            .post("/api/v1/applications", &admin, &app(&base))
            .await
            .0,
        200
    );
    for _ in 0..KILLS {
        for _ in 0..RUNS_PER_GENERATION {
            let (status, task) = serve
                .post("/api/v1/applications/chaos/run", &admin, &json!({}))
                .await;
            assert_eq!(status, 200, "{task}");
            runs.push(task["task_id"].as_str().unwrap().to_string());
        }
        // Kill after a random number of further requests reached the server: mid-step,
        // between steps, during resume.
        let seen = counter.hits.lock().unwrap().len();
        let kill_after = seen + 1 + rng.below(12) as usize;
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let arrived = counter.arrived.notified();
                if counter.hits.lock().unwrap().len() >= kill_after {
                    break;
                }
                arrived.await;
            }
        })
        .await
        .expect("the load reached the server");
        serve.child.kill().await.unwrap();
        *counter.generation.lock().unwrap() += 1;
        serve = s.serve().await;
    }

    // The last process finishes everything.
    for id in &runs {
        let (status, task) = serve
            .get(&format!("/api/v1/tasks/{id}?wait=25"), &admin)
            .await;
        assert_eq!(status, 200, "{task}");
        assert_eq!(
            task["state"], "success",
            "run {id} did not end well: {task}"
        );
        for step in ["A", "B", "C", "D"] {
            let finished: DateTime<Utc> = task["steps"][step]["finished_at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let hits = counter.hits.lock().unwrap();
            let after_finish: Vec<&Hit> = hits
                .iter()
                .filter(|h| &h.run == id && h.step == step)
                .filter(|h| h.started > finished + chrono::Duration::milliseconds(1))
                .collect();
            assert!(
                after_finish.is_empty(),
                "{id}/{step} finished at {finished} and ran again: {after_finish:?}"
            );
        }
    }
    assert_eq!(serve.stop().await, 0);

    // Within one process generation, two requests for the same step never overlap (a
    // killed process's request may outlive it: that executor is dead).
    let hits = counter.hits.lock().unwrap().clone();
    let mut by_step: HashMap<(&str, &str, usize), Vec<&Hit>> = HashMap::new();
    for h in &hits {
        by_step
            .entry((h.run.as_str(), h.step.as_str(), h.generation))
            .or_default()
            .push(h);
    }
    for ((run, step, generation), mut list) in by_step {
        list.sort_by_key(|h| h.started);
        for pair in list.windows(2) {
            let first_end = pair[0].ended.unwrap_or(DateTime::<Utc>::MAX_UTC);
            assert!(
                pair[1].started >= first_end,
                "{run}/{step} executed twice at once in generation {generation}: {pair:?}"
            );
        }
    }
    let expected = runs.len() * 4;
    assert!(
        hits.len() >= expected,
        "{} requests for {expected} steps",
        hits.len()
    );
}
