//! Semantics of the engine state machine, driven by a deterministic simulator that plays
//! the queue and the workers. The property test at the end delivers every message twice,
//! in random order, and checks that the run ends exactly as with single in-order delivery
//! and that no attempt ever executed twice. Every transition's [`RunDelta`] is checked
//! too: applied to the run as stored before it, it must give the run after it (a store
//! writing only what the delta names loses nothing).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use sluice_core::engine::{apply, AttemptResult, Claim, Decision, Effect, Event, Plan};
use sluice_core::model::{Application, Run, RunState, StepState, UnitState, UnitTally};

fn plan(steps: Value) -> Plan {
    let app: Application = serde_json::from_value(json!({
        "name": "t", "author": "test", "steps": steps
    }))
    .unwrap();
    Plan::new(app)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// A worker's claim of unit 0 of `step`.
fn claim_of(step: &str, attempt: u32) -> Event {
    Event::Claim {
        step: step.into(),
        unit: 0,
        attempt,
    }
}

/// A successful end of unit 0 of `step`, without warnings.
fn success_of(step: &str, attempt: u32) -> Event {
    Event::Finished {
        step: step.into(),
        unit: 0,
        attempt,
        result: AttemptResult::Success { warnings: vec![] },
        output: None,
    }
}

/// How a simulated step behaves.
#[derive(Debug, Clone, PartialEq)]
enum Behaviour {
    Ok,
    Warn,
    /// Fails (retryably) on the first `n` attempts of every unit, then succeeds.
    FailTimes(u32),
    /// Fails without retry.
    Fatal,
    /// A blocking `trigger_application` whose child ends with the given success.
    Child(bool),
}

/// A message or pending completion in the simulated world.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Effect(Effect),
    /// A claimed attempt that will finish (a worker mid-execution).
    Finish {
        step: String,
        unit: u32,
        attempt: u32,
    },
    /// A child run that will end.
    ChildEnds {
        step: String,
        unit: u32,
        attempt: u32,
    },
}

struct Sim {
    plan: Plan,
    run: Run,
    /// The run as a store writing only each transition's delta would hold it.
    stored: Run,
    /// The most steps and units one transition (other than a fan-out's evaluation,
    /// which creates its units) changed.
    widest_delta: (usize, usize),
    /// Compare `stored` with `run` after every transition (else only when asked).
    check_every_delta: bool,
    now: DateTime<Utc>,
    behaviours: HashMap<String, Behaviour>,
    /// `Decision` to answer an evaluation with.
    decisions: HashMap<String, Decision>,
    executions: BTreeMap<(String, u32, u32), u32>,
    evaluations_applied: BTreeMap<String, u32>,
    max_running: HashMap<String, usize>,
    pool: Vec<Item>,
    duplicate: bool,
    rng: u64,
}

impl Sim {
    fn new(plan: Plan) -> Self {
        let run = plan.new_run("isapp-test".into(), t0(), t0() + Duration::days(7));
        Self {
            plan,
            stored: run.clone(),
            widest_delta: (0, 0),
            check_every_delta: true,
            run,
            now: t0(),
            behaviours: HashMap::new(),
            decisions: HashMap::new(),
            executions: BTreeMap::new(),
            evaluations_applied: BTreeMap::new(),
            max_running: HashMap::new(),
            pool: Vec::new(),
            duplicate: false,
            rng: 0,
        }
    }

    fn behave(mut self, step: &str, b: Behaviour) -> Self {
        self.behaviours.insert(step.into(), b);
        self
    }

    fn decide(mut self, step: &str, d: Decision) -> Self {
        self.decisions.insert(step.into(), d);
        self
    }

    fn apply(&mut self, event: Event) -> (bool, Option<Claim>) {
        self.now += Duration::milliseconds(1);
        let applied = apply(&self.plan, &mut self.run, &event, self.now);
        if applied.changed {
            self.run.version += 1;
        } else {
            assert!(
                applied.delta.is_empty(),
                "no change, yet a delta: {event:?}"
            );
        }
        assert!(applied.delta.copy_into(&self.run, &mut self.stored));
        assert!(
            !self.check_every_delta || self.stored == self.run,
            "the delta of {event:?} misses a change: {:?}",
            applied.delta
        );
        if self.check_every_delta {
            self.check_tallies();
        }
        if !matches!(event, Event::Evaluated { .. }) {
            let width = (applied.delta.steps.len(), applied.delta.units.len());
            self.widest_delta.0 = self.widest_delta.0.max(width.0);
            self.widest_delta.1 = self.widest_delta.1.max(width.1);
        }
        for effect in applied.effects {
            self.push(Item::Effect(effect));
        }
        if let Event::Claim { step, .. } | Event::Finished { step, .. } = &event {
            let s = self.run.step(step).unwrap();
            let running = s
                .units
                .iter()
                .filter(|u| u.state == UnitState::Running)
                .count();
            let max = self.max_running.entry(step.clone()).or_default();
            *max = (*max).max(running);
        }
        (applied.changed, applied.claim)
    }

    /// The counts the engine keeps per step match its units.
    fn check_tallies(&self) {
        for step in &self.run.steps {
            if let Some(kept) = step.kept_tally() {
                assert_eq!(kept, UnitTally::of(&step.units), "tally of {}", step.id);
            }
        }
    }

    fn push(&mut self, item: Item) {
        if self.duplicate {
            self.pool.push(item.clone());
        }
        self.pool.push(item);
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic per seed, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn result_for(&self, step: &str, attempt: u32) -> AttemptResult {
        match self.behaviours.get(step).cloned().unwrap_or(Behaviour::Ok) {
            Behaviour::Ok | Behaviour::Child(true) => AttemptResult::Success { warnings: vec![] },
            Behaviour::Warn => AttemptResult::Success {
                warnings: vec![format!("{step} warns")],
            },
            Behaviour::FailTimes(n) if attempt <= n => AttemptResult::Failure {
                error: format!("{step} failed attempt {attempt}"),
                retryable: true,
            },
            Behaviour::FailTimes(_) => AttemptResult::Success { warnings: vec![] },
            Behaviour::Fatal => AttemptResult::Failure {
                error: format!("{step} is broken"),
                retryable: false,
            },
            Behaviour::Child(false) => AttemptResult::Failure {
                error: "child run failed".into(),
                retryable: false,
            },
        }
    }

    /// Runs to the end; in random mode picks any pending item, else the oldest.
    fn run_to_end(&mut self, random: bool) -> &Run {
        self.apply(Event::Start);
        let mut guard = 0;
        while !self.pool.is_empty() {
            guard += 1;
            assert!(
                guard < 1_000_000,
                "simulation does not terminate: {:?}",
                self.pool
            );
            let pick = if random {
                (self.next_random() % self.pool.len() as u64) as usize
            } else {
                0
            };
            let item = self.pool.remove(pick);
            self.deliver(item);
        }
        &self.run
    }

    fn deliver(&mut self, item: Item) {
        match item {
            Item::Effect(Effect::Evaluate { step }) => {
                let decision = self
                    .decisions
                    .get(&step)
                    .cloned()
                    .unwrap_or(Decision::Run { units: None });
                let (changed, _) = self.apply(Event::Evaluated {
                    step: step.clone(),
                    decision,
                });
                if changed {
                    *self.evaluations_applied.entry(step).or_default() += 1;
                }
            }
            Item::Effect(Effect::Dispatch {
                step,
                unit,
                attempt,
                ..
            }) => {
                let (_, claim) = self.apply(Event::Claim {
                    step: step.clone(),
                    unit,
                    attempt,
                });
                match claim.unwrap() {
                    Claim::Granted => {
                        *self
                            .executions
                            .entry((step.clone(), unit, attempt))
                            .or_default() += 1;
                        if let Some(Behaviour::Child(_)) = self.behaviours.get(&step) {
                            self.apply(Event::ChildStarted {
                                step: step.clone(),
                                unit,
                                attempt,
                                child_run: format!("isapp-child-{step}"),
                            });
                            self.pool.push(Item::ChildEnds {
                                step,
                                unit,
                                attempt,
                            });
                        } else {
                            self.pool.push(Item::Finish {
                                step,
                                unit,
                                attempt,
                            });
                        }
                    }
                    Claim::Duplicate => {}
                    Claim::Busy { retry_after_ms } => {
                        // A worker still holds it: wait for that worker. Only a retry
                        // delay with nothing else in flight moves the clock.
                        let in_flight = self
                            .pool
                            .iter()
                            .any(|i| matches!(i, Item::Finish { .. } | Item::ChildEnds { .. }));
                        if !in_flight {
                            self.now += Duration::milliseconds(retry_after_ms as i64);
                        }
                        self.pool.push(Item::Effect(Effect::Dispatch {
                            step,
                            unit,
                            attempt,
                            delay_ms: 0,
                        }));
                    }
                }
            }
            Item::Finish {
                step,
                unit,
                attempt,
            }
            | Item::ChildEnds {
                step,
                unit,
                attempt,
            } => {
                let result = self.result_for(&step, attempt);
                // Successes carry their output inline, as the runtime does for small ones.
                let output = matches!(result, AttemptResult::Success { .. })
                    .then(|| json!({"step": step, "unit": unit}));
                self.apply(Event::Finished {
                    step,
                    unit,
                    attempt,
                    result,
                    output,
                });
            }
            Item::Effect(Effect::RunFinished { .. }) | Item::Effect(Effect::RevokeChild { .. }) => {
            }
        }
    }

    fn state(&self, step: &str) -> StepState {
        self.run.step(step).unwrap().state
    }
}

#[test]
fn chain_runs_in_order_and_succeeds() {
    let mut sim = Sim::new(plan(json!([
        {"id": "A", "type": "echo", "parameters": {"value": 1}},
        {"id": "B", "type": "echo", "depends_on": ["A"], "parameters": {"value": 2}},
        {"id": "C", "type": "echo", "depends_on": ["B"], "parameters": {"value": 3}}
    ])));
    let run = sim.run_to_end(false);
    assert_eq!(run.state, RunState::Success);
    assert!(run
        .steps
        .iter()
        .all(|s| s.state == StepState::Success && s.attempts == 1));
    let a = run.step("A").unwrap();
    let b = run.step("B").unwrap();
    assert!(a.finished_at.unwrap() <= b.started_at.unwrap());
    assert!(run.finished_at.is_some());
}

#[test]
fn join_waits_for_every_predecessor() {
    let p = plan(json!([
        {"id": "A", "type": "echo"}, {"id": "B", "type": "echo"},
        {"id": "J", "type": "echo", "depends_on": ["A", "B"]}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0());
    let started = apply(&p, &mut run, &Event::Start, t0());
    assert_eq!(started.effects.len(), 2, "both roots dispatch at once");
    apply(&p, &mut run, &claim_of("A", 1), t0());
    let done = apply(&p, &mut run, &success_of("A", 1), t0());
    assert!(
        done.effects.is_empty(),
        "J must wait for B: {:?}",
        done.effects
    );
    assert_eq!(run.step("J").unwrap().state, StepState::Pending);
    apply(&p, &mut run, &claim_of("B", 1), t0());
    let done = apply(&p, &mut run, &success_of("B", 1), t0());
    assert_eq!(
        done.effects,
        vec![Effect::Dispatch {
            step: "J".into(),
            unit: 0,
            attempt: 1,
            delay_ms: 0
        }]
    );
}

#[test]
fn false_condition_skips_and_skip_propagates_only_when_all_predecessors_skipped() {
    let mut sim = Sim::new(plan(json!([
        {"id": "A", "type": "echo"},
        {"id": "S", "type": "echo", "depends_on": ["A"], "when": {"equal": {"value": 1, "to": 2}}},
        {"id": "OnlySkipped", "type": "echo", "depends_on": ["S"]},
        {"id": "Mixed", "type": "echo", "depends_on": ["S", "A"]}
    ])))
    .decide("S", Decision::Skip);
    sim.run_to_end(false);
    assert_eq!(sim.state("S"), StepState::Skipped);
    assert_eq!(sim.state("OnlySkipped"), StepState::Skipped);
    assert_eq!(sim.state("Mixed"), StepState::Success);
    assert_eq!(sim.run.state, RunState::Success);
}

#[test]
fn failure_cancels_successors_but_not_independent_branches() {
    let mut sim = Sim::new(plan(json!([
        {"id": "A", "type": "echo"},
        {"id": "Bad", "type": "echo", "depends_on": ["A"]},
        {"id": "After", "type": "echo", "depends_on": ["Bad"]},
        {"id": "AfterAfter", "type": "echo", "depends_on": ["After"]},
        {"id": "Other", "type": "echo", "depends_on": ["A"]}
    ])))
    .behave("Bad", Behaviour::Fatal);
    sim.run_to_end(false);
    assert_eq!(sim.state("Bad"), StepState::Failed);
    assert_eq!(
        sim.run.step("Bad").unwrap().error.as_deref(),
        Some("Bad is broken")
    );
    assert_eq!(sim.state("After"), StepState::Cancelled);
    assert_eq!(
        sim.run.step("After").unwrap().error.as_deref(),
        Some("cancelled: predecessor Bad failed")
    );
    assert_eq!(sim.state("AfterAfter"), StepState::Cancelled);
    assert_eq!(sim.state("Other"), StepState::Success);
    assert_eq!(sim.run.state, RunState::Failure);
}

#[test]
fn retries_back_off_exponentially_then_succeed() {
    let p = plan(json!([
        {"id": "Flaky", "type": "echo", "retry": {"max_attempts": 3, "backoff_seconds": 5, "backoff_rate": 2.0}}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    let fail = |attempt| Event::Finished {
        step: "Flaky".into(),
        unit: 0,
        attempt,
        result: AttemptResult::Failure {
            error: format!("boom {attempt}"),
            retryable: true,
        },
        output: None,
    };
    let claim = |attempt| Event::Claim {
        step: "Flaky".into(),
        unit: 0,
        attempt,
    };
    assert_eq!(
        apply(&p, &mut run, &claim(1), t0()).claim,
        Some(Claim::Granted)
    );
    let retry = apply(&p, &mut run, &fail(1), t0());
    assert_eq!(
        retry.effects,
        vec![Effect::Dispatch {
            step: "Flaky".into(),
            unit: 0,
            attempt: 2,
            delay_ms: 5_000
        }]
    );
    assert_eq!(run.step("Flaky").unwrap().state, StepState::Queued);
    assert_eq!(run.step("Flaky").unwrap().error.as_deref(), Some("boom 1"));
    // Delivered early (e.g. an adapter without delay): the claim says when to come back.
    assert_eq!(
        apply(&p, &mut run, &claim(2), t0() + Duration::seconds(1)).claim,
        Some(Claim::Busy {
            retry_after_ms: 4_000
        })
    );
    let later = t0() + Duration::seconds(5);
    assert_eq!(
        apply(&p, &mut run, &claim(2), later).claim,
        Some(Claim::Granted)
    );
    let retry = apply(&p, &mut run, &fail(2), later);
    assert_eq!(
        retry.effects,
        vec![Effect::Dispatch {
            step: "Flaky".into(),
            unit: 0,
            attempt: 3,
            delay_ms: 10_000
        }]
    );
    let last = later + Duration::seconds(10);
    apply(&p, &mut run, &claim(3), last);
    apply(&p, &mut run, &success_of("Flaky", 3), last);
    let step = run.step("Flaky").unwrap();
    assert_eq!(
        (step.state, step.attempts, step.error.clone()),
        (StepState::Success, 3, None)
    );
    assert_eq!(run.state, RunState::Success);
}

#[test]
fn retries_exhausted_fail_the_step_and_fatal_errors_do_not_retry() {
    let mut sim = Sim::new(plan(json!([
        {"id": "Flaky", "type": "echo", "retry": {"max_attempts": 2, "backoff_seconds": 1}},
        {"id": "Broken", "type": "echo", "retry": {"max_attempts": 5}}
    ])))
    .behave("Flaky", Behaviour::FailTimes(10))
    .behave("Broken", Behaviour::Fatal);
    sim.run_to_end(false);
    let flaky = sim.run.step("Flaky").unwrap();
    assert_eq!((flaky.state, flaky.attempts), (StepState::Failed, 2));
    assert_eq!(flaky.error.as_deref(), Some("Flaky failed attempt 2"));
    let broken = sim.run.step("Broken").unwrap();
    assert_eq!((broken.state, broken.attempts), (StepState::Failed, 1));
}

#[test]
fn warnings_end_the_step_in_warning_and_the_run_in_success() {
    let mut sim = Sim::new(plan(json!([{"id": "W", "type": "echo"}]))).behave("W", Behaviour::Warn);
    sim.run_to_end(false);
    let w = sim.run.step("W").unwrap();
    assert_eq!(w.state, StepState::Warning);
    assert_eq!(w.warnings, vec!["W warns".to_string()]);
    assert_eq!(sim.run.state, RunState::Success);
}

#[test]
fn for_each_respects_max_concurrency_and_finishes_every_item() {
    let mut sim = Sim::new(plan(json!([
        {"id": "Fan", "type": "echo", "for_each": {"items": [1, 2, 3, 4, 5, 6, 7], "max_concurrency": 3}},
        {"id": "Join", "type": "echo", "depends_on": ["Fan"]}
    ])))
    .decide("Fan", Decision::Run { units: Some(7) });
    sim.run_to_end(true);
    let fan = sim.run.step("Fan").unwrap();
    assert_eq!(fan.state, StepState::Success);
    assert_eq!(fan.fan_out, Some(7));
    assert_eq!(fan.units.len(), 7);
    assert!(fan.units.iter().all(|u| u.state == UnitState::Done));
    assert_eq!(
        sim.max_running["Fan"], 3,
        "never more than max_concurrency in flight"
    );
    assert_eq!(sim.state("Join"), StepState::Success);
}

#[test]
fn for_each_over_nothing_succeeds_at_once_and_item_failure_fails_the_step() {
    let mut sim = Sim::new(plan(json!([
        {"id": "Empty", "type": "echo", "for_each": {"items": []}},
        {"id": "Fan", "type": "echo", "for_each": {"items": [1, 2]}}
    ])))
    .decide("Empty", Decision::Run { units: Some(0) })
    .decide("Fan", Decision::Run { units: Some(2) })
    .behave("Fan", Behaviour::Fatal);
    sim.run_to_end(false);
    assert_eq!(sim.state("Empty"), StepState::Success);
    let fan = sim.run.step("Fan").unwrap();
    assert_eq!(fan.state, StepState::Failed);
    assert_eq!(
        fan.error.as_deref(),
        Some("2 of 2 items failed: item 0: Fan is broken; item 1: Fan is broken")
    );
    assert!(
        fan.units.iter().all(|u| u.state == UnitState::Failed),
        "every item ran"
    );
}

#[test]
fn evaluation_failure_fails_the_step() {
    let mut sim = Sim::new(plan(json!([
        {"id": "C", "type": "echo", "when": {"template": "nope >"}},
        {"id": "D", "type": "echo", "depends_on": ["C"]}
    ])))
    .decide("C", Decision::Fail("bad condition".into()));
    sim.run_to_end(false);
    assert_eq!(sim.state("C"), StepState::Failed);
    assert_eq!(sim.state("D"), StepState::Cancelled);
    assert_eq!(sim.run.state, RunState::Failure);
}

#[test]
fn blocking_child_holds_the_step_waiting_until_it_ends() {
    let p = plan(json!([
        {"id": "T", "type": "trigger_application", "parameters": {"application": "x", "blocking": true}},
        {"id": "After", "type": "echo", "depends_on": ["T"]}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    apply(&p, &mut run, &claim_of("T", 1), t0());
    let started = Event::ChildStarted {
        step: "T".into(),
        unit: 0,
        attempt: 1,
        child_run: "isapp-c".into(),
    };
    assert!(apply(&p, &mut run, &started, t0()).changed);
    assert_eq!(run.step("T").unwrap().state, StepState::Waiting);
    assert_eq!(run.step("T").unwrap().child_run.as_deref(), Some("isapp-c"));
    // A redelivered dispatch of the waiting step never starts a second child.
    let again = apply(&p, &mut run, &claim_of("T", 1), t0() + Duration::hours(2));
    assert_eq!(again.claim, Some(Claim::Duplicate));
    let done = apply(&p, &mut run, &success_of("T", 1), t0());
    assert_eq!(
        done.effects,
        vec![Effect::Dispatch {
            step: "After".into(),
            unit: 0,
            attempt: 1,
            delay_ms: 0
        }]
    );
}

#[test]
fn every_unit_of_a_fanned_out_trigger_records_its_own_child() {
    let p = plan(json!([
        {"id": "T", "type": "trigger_application", "parameters": {"application": "x"},
         "for_each": {"items": [1, 2, 3]}},
        {"id": "After", "type": "echo", "depends_on": ["T"]}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    apply(
        &p,
        &mut run,
        &Event::Evaluated {
            step: "T".into(),
            decision: Decision::Run { units: Some(3) },
        },
        t0(),
    );
    for unit in 0..3 {
        let claim = Event::Claim {
            step: "T".into(),
            unit,
            attempt: 1,
        };
        assert_eq!(
            apply(&p, &mut run, &claim, t0()).claim,
            Some(Claim::Granted)
        );
        let started = Event::ChildStarted {
            step: "T".into(),
            unit,
            attempt: 1,
            child_run: format!("isapp-child-{unit}"),
        };
        assert!(apply(&p, &mut run, &started, t0()).changed);
        assert_eq!(
            run.step("T").unwrap().state,
            StepState::Running,
            "a fan-out never waits"
        );
        let done = Event::Finished {
            step: "T".into(),
            unit,
            attempt: 1,
            result: AttemptResult::Success { warnings: vec![] },
            output: None,
        };
        apply(&p, &mut run, &done, t0());
    }
    let t = run.step("T").unwrap();
    assert_eq!(t.state, StepState::Success);
    let children: Vec<_> = t.units.iter().map(|u| u.child_run.as_deref()).collect();
    assert_eq!(
        children,
        [
            Some("isapp-child-0"),
            Some("isapp-child-1"),
            Some("isapp-child-2")
        ]
    );
    let doc = sluice_core::task::task_document(&run, None);
    assert_eq!(
        doc["steps"]["T"]["child_runs"],
        json!(["isapp-child-0", "isapp-child-1", "isapp-child-2"])
    );
}

#[test]
fn failed_child_fails_the_blocking_step() {
    let mut sim = Sim::new(plan(json!([
        {"id": "T", "type": "trigger_application", "parameters": {"application": "x", "blocking": true}}
    ])))
    .behave("T", Behaviour::Child(false));
    sim.run_to_end(false);
    assert_eq!(sim.state("T"), StepState::Failed);
    assert_eq!(sim.run.state, RunState::Failure);
}

#[test]
fn revoke_cancels_unfinished_steps_and_revokes_waiting_children() {
    let p = plan(json!([
        {"id": "A", "type": "echo"},
        {"id": "T", "type": "trigger_application", "parameters": {"application": "x", "blocking": true}},
        {"id": "B", "type": "echo", "depends_on": ["A"]}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    apply(&p, &mut run, &claim_of("T", 1), t0());
    apply(
        &p,
        &mut run,
        &Event::ChildStarted {
            step: "T".into(),
            unit: 0,
            attempt: 1,
            child_run: "isapp-c".into(),
        },
        t0(),
    );
    apply(&p, &mut run, &claim_of("A", 1), t0());
    let revoked = apply(&p, &mut run, &Event::Revoke, t0());
    assert_eq!(
        revoked.effects,
        vec![
            Effect::RevokeChild {
                run_id: "isapp-c".into()
            },
            Effect::RunFinished {
                state: RunState::Revoked
            }
        ]
    );
    assert_eq!(run.state, RunState::Revoked);
    assert!(run.steps.iter().all(|s| s.state == StepState::Cancelled));
    // The running step's late result is ignored; nothing starts after a revoke.
    let late = apply(&p, &mut run, &success_of("A", 1), t0());
    assert!(!late.changed);
    assert_eq!(
        late.effects,
        vec![Effect::RunFinished {
            state: RunState::Revoked
        }]
    );
    assert_eq!(run.step("B").unwrap().state, StepState::Cancelled);
    // Revoking twice changes nothing.
    assert!(!apply(&p, &mut run, &Event::Revoke, t0()).changed);
}

#[test]
fn claims_are_granted_once_per_attempt_until_the_lease_expires() {
    let p = plan(json!([{"id": "A", "type": "echo", "timeout_seconds": 10}]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    let claim = Event::Claim {
        step: "A".into(),
        unit: 0,
        attempt: 1,
    };
    assert_eq!(
        apply(&p, &mut run, &claim, t0()).claim,
        Some(Claim::Granted)
    );
    // A duplicate delivery while the first worker runs: come back after the lease.
    assert_eq!(
        apply(&p, &mut run, &claim, t0() + Duration::seconds(1)).claim,
        Some(Claim::Busy {
            retry_after_ms: 39_000
        })
    );
    // The holder died: after timeout + grace the attempt may be taken over.
    assert_eq!(
        apply(&p, &mut run, &claim, t0() + Duration::seconds(40)).claim,
        Some(Claim::Granted)
    );
    // Stale and unknown attempts are dropped.
    assert_eq!(
        apply(&p, &mut run, &claim_of("A", 2), t0()).claim,
        Some(Claim::Duplicate)
    );
    assert_eq!(
        apply(&p, &mut run, &claim_of("Nope", 1), t0()).claim,
        Some(Claim::Duplicate)
    );
    apply(&p, &mut run, &success_of("A", 1), t0());
    // A finished step never runs again.
    assert_eq!(
        apply(&p, &mut run, &claim, t0() + Duration::days(1)).claim,
        Some(Claim::Duplicate)
    );
}

#[test]
fn duplicate_events_reissue_outstanding_effects_after_a_crash() {
    let p = plan(json!([
        {"id": "A", "type": "echo"},
        {"id": "B", "type": "echo", "depends_on": ["A"]},
        {"id": "C", "type": "echo", "depends_on": ["A"], "when": {"equal": {"value": 1, "to": 1}}}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    apply(&p, &mut run, &claim_of("A", 1), t0());
    let finished = Event::Finished {
        step: "A".into(),
        unit: 0,
        attempt: 1,
        result: AttemptResult::Success { warnings: vec![] },
        output: None,
    };
    let first = apply(&p, &mut run, &finished, t0());
    assert!(first.changed);
    // The worker crashed after storing the transition, before sending: the redelivered
    // message re-issues what is still outstanding.
    let again = apply(&p, &mut run, &finished, t0());
    assert!(!again.changed);
    assert_eq!(again.effects, first.effects);
    assert_eq!(
        again.effects,
        vec![
            Effect::Dispatch {
                step: "B".into(),
                unit: 0,
                attempt: 1,
                delay_ms: 0
            },
            Effect::Evaluate { step: "C".into() }
        ]
    );
}

/// The crash a worker can actually have: it stored A's end and died before sending, so
/// what comes back is A's *claim* message. Early, it re-sends nothing (the successors'
/// messages may simply be on their way); after `RESEND_AFTER_MS`, only what A's end
/// caused and is still outstanding — not the other branch's work.
#[test]
fn a_late_redelivered_claim_of_an_ended_attempt_reissues_what_its_end_caused() {
    use sluice_core::engine::RESEND_AFTER_MS;
    let p = plan(json!([
        {"id": "A", "type": "echo"},
        {"id": "B", "type": "echo", "depends_on": ["A"]},
        {"id": "Other", "type": "echo"}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0() + Duration::days(7));
    apply(&p, &mut run, &Event::Start, t0());
    apply(&p, &mut run, &claim_of("A", 1), t0());
    apply(&p, &mut run, &success_of("A", 1), t0());
    let early = apply(&p, &mut run, &claim_of("A", 1), t0() + Duration::seconds(1));
    assert_eq!(
        (early.claim, early.effects),
        (Some(Claim::Duplicate), vec![])
    );
    let late = t0() + Duration::milliseconds(RESEND_AFTER_MS);
    let again = apply(&p, &mut run, &claim_of("A", 1), late);
    assert!(!again.changed);
    assert_eq!(again.claim, Some(Claim::Duplicate));
    assert_eq!(
        again.effects,
        vec![Effect::Dispatch {
            step: "B".into(),
            unit: 0,
            attempt: 1,
            delay_ms: 0
        }]
    );
    // Once B is claimed nothing is outstanding near A: copies die out.
    apply(&p, &mut run, &claim_of("B", 1), late);
    assert_eq!(apply(&p, &mut run, &claim_of("A", 1), late).effects, vec![]);
}

#[test]
fn dead_lettered_messages_fail_their_step_for_good() {
    let p = plan(json!([
        {"id": "A", "type": "echo", "retry": {"max_attempts": 3}},
        {"id": "B", "type": "echo", "depends_on": ["A"]}
    ]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    let dead = Event::DeadLettered {
        step: "A".into(),
        unit: 0,
        attempt: 1,
        error: "dead-lettered after 5 receives".into(),
    };
    assert!(apply(&p, &mut run, &dead, t0()).changed);
    let a = run.step("A").unwrap();
    assert_eq!(
        (a.state, a.error.as_deref()),
        (StepState::Failed, Some("dead-lettered after 5 receives"))
    );
    assert_eq!(run.step("B").unwrap().state, StepState::Cancelled);
    assert_eq!(run.state, RunState::Failure);
    assert!(!apply(&p, &mut run, &dead, t0()).changed);
}

#[test]
fn recover_requeues_claimed_attempts_without_consuming_an_attempt() {
    let p = plan(json!([{"id": "A", "type": "echo"}, {"id": "B", "type": "echo"}]));
    let mut run = p.new_run("r".into(), t0(), t0());
    apply(&p, &mut run, &Event::Start, t0());
    apply(&p, &mut run, &claim_of("A", 1), t0());
    // A claim made since the new process took over belongs to its live workers.
    let taken_over_at_claim = Event::Recover {
        claimed_before: t0(),
    };
    assert!(!apply(&p, &mut run, &taken_over_at_claim, t0()).changed);
    assert_eq!(run.step("A").unwrap().state, StepState::Running);
    let recover = Event::Recover {
        claimed_before: t0() + chrono::Duration::seconds(1),
    };
    let recovered = apply(&p, &mut run, &recover, t0());
    assert!(recovered.changed);
    assert_eq!(run.step("A").unwrap().state, StepState::Queued);
    assert_eq!(
        recovered.effects,
        vec![
            Effect::Dispatch {
                step: "A".into(),
                unit: 0,
                attempt: 1,
                delay_ms: 0
            },
            Effect::Dispatch {
                step: "B".into(),
                unit: 0,
                attempt: 1,
                delay_ms: 0
            }
        ]
    );
    assert_eq!(
        apply(&p, &mut run, &claim_of("A", 1), t0()).claim,
        Some(Claim::Granted)
    );
}

#[test]
fn an_application_without_ready_work_finishes_and_start_is_idempotent() {
    let p = plan(json!([{"id": "A", "type": "echo"}]));
    let mut run = p.new_run("r".into(), t0(), t0());
    let first = apply(&p, &mut run, &Event::Start, t0());
    let second = apply(&p, &mut run, &Event::Start, t0());
    assert!(!second.changed);
    assert_eq!(first.effects, second.effects);
}

// ---------------------------------------------------------------------------------------
// Property: duplicated, reordered delivery ends exactly like single in-order delivery.

#[derive(Debug, Clone)]
struct StepGen {
    deps: Vec<usize>,
    behaviour: Behaviour,
    max_attempts: u32,
    decision: Option<Decision>,
    /// A fan-out's `max_concurrency`.
    max_concurrency: usize,
}

fn step_strategy(index: usize) -> impl Strategy<Value = StepGen> {
    let deps = proptest::collection::vec(0..index.max(1), 0..=index.min(3));
    let behaviour = prop_oneof![
        4 => Just(Behaviour::Ok),
        1 => Just(Behaviour::Warn),
        2 => (1u32..3).prop_map(Behaviour::FailTimes),
        1 => Just(Behaviour::Fatal),
        1 => any::<bool>().prop_map(Behaviour::Child),
    ];
    let decision = prop_oneof![
        4 => Just(None),
        1 => Just(Some(Decision::Skip)),
        2 => (0u32..5).prop_map(|n| Some(Decision::Run { units: Some(n) })),
        1 => Just(Some(Decision::Fail("cannot evaluate".into()))),
    ];
    (deps, behaviour, 1u32..4, decision).prop_map(
        move |(deps, behaviour, max_attempts, decision)| {
            let deps = if index == 0 { vec![] } else { deps };
            // A blocking child per item is not supported: keep children out of fan-outs.
            let decision = match (&behaviour, decision) {
                (Behaviour::Child(_), Some(Decision::Run { .. })) => None,
                (_, d) => d,
            };
            StepGen {
                deps,
                behaviour,
                max_attempts,
                decision,
                max_concurrency: 2,
            }
        },
    )
}

/// Steps of which most fan out over hundreds of units, at up to 64 at a time.
fn large_step_strategy(index: usize) -> impl Strategy<Value = StepGen> {
    let deps = proptest::collection::vec(0..index.max(1), 0..=index.min(2));
    let behaviour = prop_oneof![
        4 => Just(Behaviour::Ok),
        1 => Just(Behaviour::Warn),
        2 => (1u32..3).prop_map(Behaviour::FailTimes),
        1 => Just(Behaviour::Fatal),
    ];
    let decision = prop_oneof![
        1 => Just(None),
        4 => (100u32..250).prop_map(|n| Some(Decision::Run { units: Some(n) })),
    ];
    (deps, behaviour, 1u32..3, decision, 1usize..=64).prop_map(
        move |(deps, behaviour, max_attempts, decision, max_concurrency)| StepGen {
            deps: if index == 0 { vec![] } else { deps },
            behaviour,
            max_attempts,
            decision,
            max_concurrency,
        },
    )
}

fn large_app_strategy() -> impl Strategy<Value = Vec<StepGen>> {
    (1usize..4).prop_flat_map(|n| (0..n).map(large_step_strategy).collect::<Vec<_>>())
}

fn app_strategy() -> impl Strategy<Value = Vec<StepGen>> {
    (1usize..8).prop_flat_map(|n| (0..n).map(step_strategy).collect::<Vec<_>>())
}

fn build(gens: &[StepGen]) -> Sim {
    let steps: Vec<Value> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut deps: Vec<String> = g.deps.iter().map(|d| format!("S{d}")).collect();
            deps.sort();
            deps.dedup();
            let mut step = json!({
                "id": format!("S{i}"),
                "type": if matches!(g.behaviour, Behaviour::Child(_)) { "trigger_application" } else { "echo" },
                "depends_on": deps,
                "retry": {"max_attempts": g.max_attempts, "backoff_seconds": 2}
            });
            match &g.decision {
                Some(Decision::Run { .. }) => {
                    step["for_each"] =
                        json!({"items": "${x}", "max_concurrency": g.max_concurrency});
                }
                Some(_) => step["when"] = json!({"template": "x"}),
                None => {}
            }
            step
        })
        .collect();
    let mut sim = Sim::new(plan(Value::Array(steps)));
    for (i, g) in gens.iter().enumerate() {
        sim = sim.behave(&format!("S{i}"), g.behaviour.clone());
        if let Some(d) = &g.decision {
            sim = sim.decide(&format!("S{i}"), d.clone());
        }
    }
    sim
}

/// The run without timestamps and versions: what must not depend on delivery order.
fn outcome(run: &Run) -> Value {
    let mut v = serde_json::to_value(run).unwrap();
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in [
                    "created_at",
                    "started_at",
                    "finished_at",
                    "claimed_at",
                    "not_before",
                    "version",
                    "expires_at",
                ] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

/// Single in-order delivery against duplicated, reordered delivery of the same run.
fn check_delivery(gens: &[StepGen], seed: u64) -> Result<(), TestCaseError> {
    let mut reference = build(gens);
    reference.run_to_end(false);
    prop_assert!(reference.run.state.is_terminal());

    let mut chaos = build(gens);
    chaos.duplicate = true;
    chaos.rng = seed;
    chaos.run_to_end(true);

    prop_assert_eq!(outcome(&chaos.run), outcome(&reference.run));
    // Every finished unit keeps the output its (first recorded) success carried.
    for step in &chaos.run.steps {
        for (k, unit) in step.units.iter().enumerate() {
            if unit.state == UnitState::Done {
                prop_assert_eq!(&unit.output, &Some(json!({"step": step.id, "unit": k})));
            }
        }
    }
    for (key, count) in &chaos.executions {
        prop_assert_eq!(*count, 1, "attempt {:?} executed {} times", key, count);
    }
    for (step, count) in &chaos.evaluations_applied {
        prop_assert_eq!(*count, 1, "step {} evaluated {} times", step, count);
    }
    prop_assert_eq!(&chaos.executions, &reference.executions);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn duplicated_reordered_delivery_ends_like_single_delivery(gens in app_strategy(), seed in 1u64..u64::MAX) {
        check_delivery(&gens, seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// The same with fan-outs of hundreds of units: the outcome, the one execution per
    /// attempt and the deltas hold whatever the size.
    #[test]
    fn large_fan_outs_survive_duplicated_reordered_delivery(gens in large_app_strategy(), seed in 1u64..u64::MAX) {
        check_delivery(&gens, seed)?;
    }
}

/// A 2,000-way fan-out into a join, every message delivered twice: each attempt runs
/// once, the join runs once after the last item, and no transition but the evaluation
/// that creates the units touches more than a few steps and units.
#[test]
fn a_two_thousand_way_fan_out_joins_once_with_small_deltas() {
    let p = plan(json!([
        {"id": "Source", "type": "echo"},
        {"id": "Fan", "type": "echo", "depends_on": ["Source"],
         "for_each": {"items": "${Source}", "max_concurrency": 2000}},
        {"id": "Join", "type": "echo", "depends_on": ["Fan"]}
    ]));
    let mut sim = Sim::new(p).decide("Fan", Decision::Run { units: Some(2000) });
    sim.duplicate = true;
    sim.check_every_delta = false;
    sim.run_to_end(false);
    assert_eq!(sim.run.state, RunState::Success);
    assert_eq!(sim.run.step("Fan").unwrap().units.len(), 2000);
    assert_eq!(sim.executions.len(), 2002);
    assert!(sim.executions.values().all(|&n| n == 1));
    assert!(
        sim.widest_delta.0 <= 2 && sim.widest_delta.1 <= 2,
        "a transition touched {:?} (steps, units)",
        sim.widest_delta
    );
    // Compared at the end only (each comparison costs the run's size): the deltas,
    // copied one after the other, rebuilt the whole run.
    assert!(sim.stored == sim.run);
    sim.check_tallies();
}
