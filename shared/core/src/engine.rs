//! The engine: a pure state machine over a [`Run`].
//!
//! [`apply`] takes a run, an [`Event`] and the current time, changes the run in place and
//! returns the [`Effect`]s the runtime must carry out (evaluate a condition, put a message
//! on a step queue, notify a parent run). It performs no I/O, so every adapter shares
//! exactly these semantics.
//!
//! # Delivery guarantees
//! Messages are delivered at least once, in any order. Every event is therefore
//! idempotent: an event that no longer applies (a duplicate, a stale attempt, a step that
//! already ended) changes nothing. Instead it returns the run's *outstanding* effects, so a
//! runtime that crashed after storing a transition but before carrying out its effects
//! finishes the job when the triggering message is redelivered. Re-sent dispatches are
//! harmless because a worker must [`Event::Claim`] a unit before executing it, and a claim
//! is granted once per attempt (again only after the previous holder's lease expired).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::model::{Application, Run, RunState, StepRun, StepState, Unit, UnitState};

/// Extra time beyond a step's timeout before its claim may be taken over: the holder is
/// then known to be dead (or past its timeout and about to give up).
pub const LEASE_GRACE_MS: i64 = 30_000;

/// The application of a run with its dependency graph precomputed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub app: Application,
    index: HashMap<String, usize>,
    predecessors: Vec<Vec<usize>>,
    successors: Vec<Vec<usize>>,
}

impl Plan {
    /// Builds the graph of a validated application (unknown `depends_on` ids are ignored;
    /// validation reports them).
    pub fn new(app: Application) -> Self {
        let index: HashMap<String, usize> = app
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let mut predecessors = vec![Vec::new(); app.steps.len()];
        let mut successors = vec![Vec::new(); app.steps.len()];
        for (i, step) in app.steps.iter().enumerate() {
            for dep in &step.depends_on {
                if let Some(&d) = index.get(dep) {
                    if !predecessors[i].contains(&d) {
                        predecessors[i].push(d);
                        successors[d].push(i);
                    }
                }
            }
        }
        Self {
            app,
            index,
            predecessors,
            successors,
        }
    }

    pub fn index_of(&self, step: &str) -> Option<usize> {
        self.index.get(step).copied()
    }

    /// Ids of a step's direct predecessors.
    pub fn predecessors(&self, step: &str) -> Vec<String> {
        self.index_of(step)
            .map(|i| {
                self.predecessors[i]
                    .iter()
                    .map(|&p| self.app.steps[p].id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ids of every step a step transitively depends on.
    pub fn ancestors(&self, step: &str) -> Vec<String> {
        let Some(start) = self.index_of(step) else {
            return Vec::new();
        };
        let mut seen = vec![false; self.app.steps.len()];
        let mut stack = self.predecessors[start].clone();
        while let Some(i) = stack.pop() {
            if !seen[i] {
                seen[i] = true;
                stack.extend(&self.predecessors[i]);
            }
        }
        (0..seen.len())
            .filter(|&i| seen[i])
            .map(|i| self.app.steps[i].id.clone())
            .collect()
    }

    /// A fresh run record for this application.
    pub fn new_run(&self, id: String, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Run {
        Run {
            id,
            application: self.app.name.clone(),
            configuration: self.app.configuration.clone(),
            queue: None,
            loglevel: 20,
            params: Default::default(),
            state: RunState::Pending,
            created_at: now,
            started_at: None,
            finished_at: None,
            parent: None,
            replay_of: None,
            alert_of: None,
            expires_at,
            steps: self.app.steps.iter().map(|s| StepRun::new(&s.id)).collect(),
            version: 0,
            application_version: None,
        }
    }
}

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start the run: its roots become ready.
    Start,
    /// The runtime evaluated a ready step's `when` and `for_each`.
    Evaluated { step: String, decision: Decision },
    /// A worker asks to execute `attempt` of `unit`.
    Claim {
        step: String,
        unit: u32,
        attempt: u32,
    },
    /// A claimed attempt ended. A successful attempt's `output`, when given, is kept in
    /// the run record (the runtime passes only small outputs; it stores the rest apart
    /// before this event).
    Finished {
        step: String,
        unit: u32,
        attempt: u32,
        result: AttemptResult,
        output: Option<Value>,
    },
    /// A blocking `trigger_application` started its child run and now waits for it.
    ChildStarted {
        step: String,
        unit: u32,
        attempt: u32,
        child_run: String,
    },
    /// A step message exhausted its receives and was dead-lettered: the attempt fails
    /// for good, whether or not it was ever claimed.
    DeadLettered {
        step: String,
        unit: u32,
        attempt: u32,
        error: String,
    },
    /// Revoke the run: nothing further starts; unfinished steps are cancelled.
    Revoke,
    /// The only process running workers restarted: attempts a previous process claimed
    /// (before `claimed_before`, when this process took over) are re-queued (as the same
    /// attempt) and every outstanding effect is re-issued. Claims at or after it belong
    /// to this process's live workers and are left alone.
    Recover { claimed_before: DateTime<Utc> },
    /// Re-issue every outstanding effect without changing anything.
    Resend,
}

/// The result of evaluating a ready step.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `when` was false.
    Skip,
    /// Run the step: once (`None`) or once per item or batch (`Some(n)`).
    Run { units: Option<u32> },
    /// The condition or the items could not be evaluated.
    Fail(String),
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    Success { warnings: Vec<String> },
    Failure { error: String, retryable: bool },
}

/// What the runtime must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Evaluate the step's `when` and `for_each`, then apply [`Event::Evaluated`].
    Evaluate { step: String },
    /// Put a [`crate::ports::TaskMessage`] on the step type's queue after `delay_ms`.
    Dispatch {
        step: String,
        unit: u32,
        attempt: u32,
        delay_ms: u64,
    },
    /// Revoke a child run that a blocking step was waiting for.
    RevokeChild { run_id: String },
    /// The run ended: notify a waiting parent.
    RunFinished { state: RunState },
}

/// The answer to a [`Event::Claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Execute the attempt.
    Granted,
    /// Drop the message: the attempt is finished, superseded or cancelled.
    Duplicate,
    /// Another worker holds the attempt (or a retry delay is not over): make the message
    /// visible again after this many milliseconds.
    Busy { retry_after_ms: u64 },
}

/// The outcome of [`apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Whether the run changed (and must be stored before carrying out the effects).
    pub changed: bool,
    pub effects: Vec<Effect>,
    /// Set for [`Event::Claim`].
    pub claim: Option<Claim>,
    /// Which parts of the run changed, so that a store writes those and not the whole
    /// run (empty when nothing changed).
    pub delta: RunDelta,
}

/// The parts of a run one transition changed: the run's own fields, step records (a
/// step's fields without its units) and units, by index. A store that keeps these
/// parts apart writes exactly these (besides the run's `version`); everything else is
/// as it was. Units are only ever added or changed, never removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunDelta {
    /// The run's own fields (state, times) changed.
    pub header: bool,
    /// Indices of the steps whose own fields changed.
    pub steps: BTreeSet<usize>,
    /// `(step index, unit index)` of every unit created or changed.
    pub units: BTreeSet<(usize, usize)>,
}

impl RunDelta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.header && self.steps.is_empty() && self.units.is_empty()
    }

    /// Copies the parts this delta names from `from` (the run after the transition) into
    /// `into` (the run before it), with `from`'s version: afterwards `into == from`.
    /// Returns `false`, changing nothing, when `into` is not a copy of the same run
    /// (another id or number of steps).
    pub fn copy_into(&self, from: &Run, into: &mut Run) -> bool {
        if from.id != into.id || from.steps.len() != into.steps.len() {
            return false;
        }
        if self.header {
            into.set_header_from(from);
        }
        into.version = from.version;
        for &i in &self.steps {
            into.steps[i].set_record_from(&from.steps[i]);
        }
        for &(i, u) in &self.units {
            let Some(unit) = from.steps[i].units.get(u) else {
                continue;
            };
            let units = &mut into.steps[i].units;
            if units.len() <= u {
                units.resize(u + 1, Unit::pending());
            }
            units[u] = unit.clone();
        }
        // The copied units are `from`'s now: so is their tally.
        for &i in self.steps.iter().chain(self.units.iter().map(|(i, _)| i)) {
            into.steps[i].take_tally_from(&from.steps[i]);
        }
        true
    }
}

/// Applies `event` to `run` at time `now`.
pub fn apply(plan: &Plan, run: &mut Run, event: &Event, now: DateTime<Utc>) -> Applied {
    let mut machine = Machine {
        plan,
        run,
        now,
        effects: Vec::new(),
        changed: false,
        delta: RunDelta::default(),
    };
    let claim = machine.handle(event);
    if machine.changed {
        machine.finish_if_done();
        Applied {
            changed: true,
            effects: machine.effects,
            claim,
            delta: machine.delta,
        }
    } else {
        let effects = match event {
            Event::Claim {
                step,
                unit,
                attempt,
                ..
            } => lost_after_end(plan, machine.run, step, *unit, *attempt, now),
            _ => outstanding(plan, machine.run, now),
        };
        Applied {
            changed: false,
            effects,
            claim,
            delta: RunDelta::default(),
        }
    }
}

/// Every effect a run is waiting on: evaluations of ready steps, dispatches of queued
/// units (with what remains of their delay), and the end notice of a finished run.
pub fn outstanding(plan: &Plan, run: &Run, now: DateTime<Utc>) -> Vec<Effect> {
    if run.state.is_terminal() {
        return vec![Effect::RunFinished { state: run.state }];
    }
    if run.state == RunState::Pending {
        return Vec::new();
    }
    let mut effects = Vec::new();
    for (i, step) in run.steps.iter().enumerate() {
        if step.state.is_terminal() || step.state == StepState::Waiting {
            continue;
        }
        if step.state == StepState::Queued && step.units.is_empty() {
            effects.push(Effect::Evaluate {
                step: plan.app.steps[i].id.clone(),
            });
            continue;
        }
        for (u, unit) in step.units.iter().enumerate() {
            if unit.state == UnitState::Queued {
                effects.push(Effect::Dispatch {
                    step: step.id.clone(),
                    unit: u as u32,
                    attempt: unit.attempt,
                    delay_ms: remaining_ms(unit.not_before, now),
                });
            }
        }
    }
    effects
}

/// How long after an attempt ended a redelivery of its message may conclude that the
/// messages its end should have sent were lost (the worker died between storing the
/// transition and sending them). Shorter than any redelivery after a crash (a step's
/// timeout plus a margin), longer than a successor normally waits for its claim.
pub const RESEND_AFTER_MS: i64 = 20_000;

/// The effects a refused claim re-issues: none, unless the claimed attempt succeeded at
/// least [`RESEND_AFTER_MS`] ago; then the outstanding effects its end caused — its
/// successors' evaluations and dispatches, further units of its own step, the run's end
/// notice. Limiting them to the claimed step's neighbourhood keeps a duplicate from
/// re-sending the whole run's work (and those copies from re-sending theirs).
fn lost_after_end(
    plan: &Plan,
    run: &Run,
    step: &str,
    unit: u32,
    attempt: u32,
    now: DateTime<Utc>,
) -> Vec<Effect> {
    let Some(i) = plan.index_of(step) else {
        return Vec::new();
    };
    let ended = run.steps[i]
        .units
        .get(unit as usize)
        .filter(|u| u.attempt == attempt && u.state == UnitState::Done)
        .and_then(|u| u.finished_at);
    if ended.is_none_or(|t| t + Duration::milliseconds(RESEND_AFTER_MS) > now) {
        return Vec::new();
    }
    let mut near: Vec<&str> = plan.successors[i]
        .iter()
        .map(|&s| plan.app.steps[s].id.as_str())
        .collect();
    near.push(step);
    outstanding(plan, run, now)
        .into_iter()
        .filter(|effect| match effect {
            Effect::Evaluate { step } | Effect::Dispatch { step, .. } => {
                near.contains(&step.as_str())
            }
            Effect::RunFinished { .. } => true,
            Effect::RevokeChild { .. } => false,
        })
        .collect()
}

fn remaining_ms(until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u64 {
    until
        .map(|t| (t - now).num_milliseconds().max(0) as u64)
        .unwrap_or(0)
}

struct Machine<'a> {
    plan: &'a Plan,
    run: &'a mut Run,
    now: DateTime<Utc>,
    effects: Vec<Effect>,
    changed: bool,
    /// What this transition touched (see [`RunDelta`]); every write to the run marks
    /// its part here first.
    delta: RunDelta,
}

impl Machine<'_> {
    fn touch_step(&mut self, i: usize) {
        self.delta.steps.insert(i);
    }

    fn touch_unit(&mut self, i: usize, u: usize) {
        self.delta.units.insert((i, u));
    }

    fn handle(&mut self, event: &Event) -> Option<Claim> {
        match event {
            Event::Start => {
                if self.run.state == RunState::Pending {
                    self.delta.header = true;
                    self.run.state = RunState::Running;
                    self.run.started_at = Some(self.now);
                    self.changed = true;
                    for i in 0..self.run.steps.len() {
                        self.advance(i);
                    }
                }
                None
            }
            Event::Evaluated { step, decision } => {
                self.evaluated(step, decision);
                None
            }
            Event::Claim {
                step,
                unit,
                attempt,
            } => Some(self.claim(step, *unit, *attempt)),
            Event::Finished {
                step,
                unit,
                attempt,
                result,
                output,
            } => {
                self.finished(step, *unit, *attempt, result, output);
                None
            }
            Event::ChildStarted {
                step,
                unit,
                attempt,
                child_run,
            } => {
                if let Some(i) = self.live_step(step) {
                    let u = *unit as usize;
                    let s = &mut self.run.steps[i];
                    let fan_out = s.fan_out.is_some();
                    let step_running = s.state == StepState::Running;
                    let unit = s.units.get_mut(*unit as usize).filter(|u| {
                        u.attempt == *attempt && u.state == UnitState::Running && step_running
                    });
                    if let Some(unit_state) = unit {
                        if unit_state.child_run.as_ref() != Some(child_run) {
                            unit_state.child_run = Some(child_run.clone());
                            self.changed = true;
                            self.delta.units.insert((i, u));
                        }
                        // A single trigger waits (when blocking) for its child; a fan-out
                        // cannot block (validation), its units record their children.
                        if !fan_out {
                            s.state = StepState::Waiting;
                            s.child_run = Some(child_run.clone());
                            self.changed = true;
                            self.delta.steps.insert(i);
                        }
                    }
                }
                None
            }
            Event::DeadLettered {
                step,
                unit,
                attempt,
                error,
            } => {
                let live = self.live_step(step).and_then(|i| {
                    let u = self.run.steps[i].units.get(*unit as usize)?;
                    (u.attempt == *attempt
                        && matches!(u.state, UnitState::Queued | UnitState::Running))
                    .then_some(i)
                });
                if let Some(i) = live {
                    // Dead-lettering is final: no retry policy applies.
                    self.touch_unit(i, *unit as usize);
                    self.run.steps[i].set_unit_state(*unit as usize, UnitState::Running);
                    self.finished(
                        step,
                        *unit,
                        *attempt,
                        &AttemptResult::Failure {
                            error: error.clone(),
                            retryable: false,
                        },
                        &None,
                    );
                }
                None
            }
            Event::Revoke => {
                self.revoke();
                None
            }
            Event::Recover { claimed_before } => {
                self.recover(*claimed_before);
                None
            }
            Event::Resend => None,
        }
    }

    /// The index of a step that can still change, in a run that can still change.
    fn live_step(&self, step: &str) -> Option<usize> {
        if self.run.state != RunState::Running {
            return None;
        }
        let i = self.plan.index_of(step)?;
        (!self.run.steps[i].state.is_terminal()).then_some(i)
    }

    /// A pending step whose predecessors have all ended becomes cancelled, skipped or
    /// ready.
    fn advance(&mut self, i: usize) {
        if self.run.steps[i].state != StepState::Pending {
            return;
        }
        let preds = &self.plan.predecessors[i];
        if preds
            .iter()
            .any(|&p| !self.run.steps[p].state.is_terminal())
        {
            return;
        }
        let broken = preds.iter().find(|&&p| {
            matches!(
                self.run.steps[p].state,
                StepState::Failed | StepState::Cancelled
            )
        });
        if let Some(&p) = broken {
            let reason = format!(
                "cancelled: predecessor {} {}",
                self.run.steps[p].id,
                self.run.steps[p].state.as_str()
            );
            self.end_step(i, StepState::Cancelled, Some(reason));
            return;
        }
        if !preds.is_empty()
            && preds
                .iter()
                .all(|&p| self.run.steps[p].state == StepState::Skipped)
        {
            self.end_step(i, StepState::Skipped, None);
            return;
        }
        let spec = &self.plan.app.steps[i];
        self.delta.steps.insert(i);
        self.run.steps[i].state = StepState::Queued;
        if spec.when.is_some() || spec.for_each.is_some() {
            self.effects.push(Effect::Evaluate {
                step: spec.id.clone(),
            });
        } else {
            self.run.steps[i].set_units(vec![Unit::pending()]);
            self.queue_unit(i, 0, 1, 0);
        }
    }

    fn queue_unit(&mut self, i: usize, u: usize, attempt: u32, delay_ms: u64) {
        self.touch_unit(i, u);
        self.run.steps[i].set_unit_state(u, UnitState::Queued);
        self.run.steps[i].set_unit_output(u, None);
        let unit = &mut self.run.steps[i].units[u];
        unit.attempt = attempt;
        unit.claimed_at = None;
        unit.finished_at = None;
        unit.not_before =
            (delay_ms > 0).then(|| self.now + Duration::milliseconds(delay_ms as i64));
        self.effects.push(Effect::Dispatch {
            step: self.run.steps[i].id.clone(),
            unit: u as u32,
            attempt,
            delay_ms,
        });
    }

    fn evaluated(&mut self, step: &str, decision: &Decision) {
        let Some(i) = self.live_step(step) else {
            return;
        };
        let s = &self.run.steps[i];
        if s.state != StepState::Queued || !s.units.is_empty() {
            return;
        }
        self.changed = true;
        self.touch_step(i);
        match decision {
            Decision::Skip => self.end_step(i, StepState::Skipped, None),
            Decision::Fail(error) => {
                self.run.steps[i].started_at = Some(self.now);
                self.end_step(i, StepState::Failed, Some(error.clone()))
            }
            Decision::Run { units: None } => {
                self.run.steps[i].set_units(vec![Unit::pending()]);
                self.queue_unit(i, 0, 1, 0);
            }
            Decision::Run { units: Some(n) } => {
                let s = &mut self.run.steps[i];
                s.fan_out = Some(*n);
                if *n == 0 {
                    s.started_at = Some(self.now);
                    self.end_step(i, StepState::Success, None);
                    return;
                }
                s.set_units(vec![Unit::pending(); *n as usize]);
                self.delta.units.extend((0..*n as usize).map(|u| (i, u)));
                let limit = self.plan.app.steps[i]
                    .for_each
                    .as_ref()
                    .map_or(1, |f| f.max_concurrency.max(1));
                for u in 0..(*n as usize).min(limit) {
                    self.queue_unit(i, u, 1, 0);
                }
            }
        }
    }

    fn claim(&mut self, step: &str, unit: u32, attempt: u32) -> Claim {
        let Some(i) = self.live_step(step) else {
            return Claim::Duplicate;
        };
        if self.run.steps[i].state == StepState::Waiting {
            return Claim::Duplicate;
        }
        let lease_ms = self.plan.app.steps[i].timeout_seconds() as i64 * 1000 + LEASE_GRACE_MS;
        let now = self.now;
        let delta = &mut self.delta;
        let s = &mut self.run.steps[i];
        let Some(u) = s.units.get_mut(unit as usize) else {
            return Claim::Duplicate;
        };
        if u.attempt != attempt {
            return Claim::Duplicate;
        }
        match u.state {
            UnitState::Queued => {
                if let Some(not_before) = u.not_before.filter(|t| *t > now) {
                    return Claim::Busy {
                        retry_after_ms: remaining_ms(Some(not_before), now),
                    };
                }
            }
            UnitState::Running => {
                let lease_end = u.claimed_at.unwrap_or(now) + Duration::milliseconds(lease_ms);
                if lease_end > now {
                    return Claim::Busy {
                        retry_after_ms: remaining_ms(Some(lease_end), now),
                    };
                }
            }
            UnitState::Pending | UnitState::Done | UnitState::Failed => return Claim::Duplicate,
        }
        delta.units.insert((i, unit as usize));
        delta.steps.insert(i);
        u.claimed_at = Some(now);
        u.not_before = None;
        s.set_unit_state(unit as usize, UnitState::Running);
        s.state = StepState::Running;
        s.started_at.get_or_insert(now);
        s.attempts = s.attempts.max(attempt);
        self.changed = true;
        Claim::Granted
    }

    fn finished(
        &mut self,
        step: &str,
        unit: u32,
        attempt: u32,
        result: &AttemptResult,
        output: &Option<Value>,
    ) {
        let Some(i) = self.live_step(step) else {
            return;
        };
        let u = unit as usize;
        let Some(current) = self.run.steps[i].units.get(u) else {
            return;
        };
        if current.attempt != attempt || current.state != UnitState::Running {
            return;
        }
        self.changed = true;
        self.touch_unit(i, u);
        let fan_out = self.run.steps[i].fan_out.is_some();
        match result {
            AttemptResult::Success { warnings } => {
                self.run.steps[i].set_unit_state(u, UnitState::Done);
                self.run.steps[i].set_unit_output(u, output.clone());
                let unit = &mut self.run.steps[i].units[u];
                // `claimed_at` stays: with `finished_at` it dates the attempt's log.
                unit.finished_at = Some(self.now);
                unit.error = None;
                unit.warnings = warnings.clone();
                self.queue_next_item(i);
                let tally = self.run.steps[i].tally();
                let s = &self.run.steps[i];
                if tally.failed > 0 {
                    self.end_fan_out_if_done(i);
                } else if tally.done as usize == s.units.len() {
                    let warnings: Vec<String> = s
                        .units
                        .iter()
                        .enumerate()
                        .flat_map(|(k, unit)| {
                            unit.warnings.iter().map(move |w| {
                                if fan_out {
                                    format!("item {k}: {w}")
                                } else {
                                    w.clone()
                                }
                            })
                        })
                        .collect();
                    let state = if warnings.is_empty() {
                        StepState::Success
                    } else {
                        StepState::Warning
                    };
                    self.touch_step(i);
                    self.run.steps[i].warnings = warnings;
                    self.end_step(i, state, None);
                } else {
                    self.refresh_step_state(i);
                }
            }
            AttemptResult::Failure { error, retryable } => {
                let policy = self.plan.app.steps[i].retry_policy();
                let error_text = if fan_out {
                    format!("item {unit}: {error}")
                } else {
                    error.clone()
                };
                self.touch_step(i);
                self.run.steps[i].units[u].error = Some(error.clone());
                self.run.steps[i].error = Some(error_text.clone());
                if *retryable && attempt < policy.max_attempts {
                    let delay = policy.delay_before_ms(attempt + 1);
                    self.queue_unit(i, u, attempt + 1, delay);
                    self.refresh_step_state(i);
                } else {
                    self.run.steps[i].set_unit_state(u, UnitState::Failed);
                    self.run.steps[i].units[u].claimed_at = None;
                    if fan_out {
                        // Every item runs to its end, so the outcome (and the error) does
                        // not depend on which item happened to fail first.
                        self.queue_next_item(i);
                        self.end_fan_out_if_done(i);
                    } else {
                        self.end_step(i, StepState::Failed, Some(error_text));
                    }
                }
            }
        }
    }

    /// Ends a fan-out with a failed item once every item has ended, naming the failed
    /// items in item order.
    fn end_fan_out_if_done(&mut self, i: usize) {
        let tally = self.run.steps[i].tally();
        let s = &self.run.steps[i];
        if (tally.done + tally.failed) as usize != s.units.len() {
            self.refresh_step_state(i);
            return;
        }
        let failed: Vec<String> = s
            .units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.state == UnitState::Failed)
            .map(|(k, u)| format!("item {k}: {}", u.error.as_deref().unwrap_or("failed")))
            .collect();
        let total = s.units.len();
        let mut error = failed
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if failed.len() > 5 {
            error.push_str(&format!("; and {} more", failed.len() - 5));
        }
        let error = format!("{} of {total} items failed: {error}", failed.len());
        self.end_step(i, StepState::Failed, Some(error));
    }

    /// Queues the next pending item of a fan-out, keeping within `max_concurrency`.
    fn queue_next_item(&mut self, i: usize) {
        let limit = self.plan.app.steps[i]
            .for_each
            .as_ref()
            .map_or(1, |f| f.max_concurrency.max(1));
        let tally = self.run.steps[i].tally();
        if (tally.queued + tally.running) as usize >= limit || tally.pending == 0 {
            return;
        }
        // Items are queued in order, so the pending ones are the last `pending`.
        let units = &self.run.steps[i].units;
        let first = units.len() - tally.pending as usize;
        let next = if units[first].state == UnitState::Pending {
            Some(first)
        } else {
            units.iter().position(|u| u.state == UnitState::Pending)
        };
        if let Some(next) = next {
            self.queue_unit(i, next, 1, 0);
        }
    }

    fn refresh_step_state(&mut self, i: usize) {
        self.touch_step(i);
        let running = self.run.steps[i].tally().running;
        let s = &mut self.run.steps[i];
        s.state = if running > 0 {
            StepState::Running
        } else {
            StepState::Queued
        };
    }

    fn end_step(&mut self, i: usize, state: StepState, error: Option<String>) {
        self.touch_step(i);
        let s = &mut self.run.steps[i];
        s.state = state;
        s.finished_at = Some(self.now);
        if error.is_some() || state.succeeded() {
            s.error = error;
        }
        self.changed = true;
        for k in 0..self.plan.successors[i].len() {
            let next = self.plan.successors[i][k];
            self.advance(next);
        }
    }

    fn revoke(&mut self) {
        if self.run.state.is_terminal() {
            return;
        }
        self.delta.header = true;
        self.run.state = RunState::Revoked;
        self.run.finished_at = Some(self.now);
        for (i, s) in self.run.steps.iter_mut().enumerate() {
            if s.state.is_terminal() {
                continue;
            }
            self.delta.steps.insert(i);
            if s.state == StepState::Waiting {
                if let Some(child) = &s.child_run {
                    self.effects.push(Effect::RevokeChild {
                        run_id: child.clone(),
                    });
                }
            }
            s.state = StepState::Cancelled;
            s.finished_at = Some(self.now);
            s.error = Some("cancelled: the run was revoked".into());
        }
        self.effects.push(Effect::RunFinished {
            state: RunState::Revoked,
        });
        self.changed = true;
    }

    fn recover(&mut self, claimed_before: DateTime<Utc>) {
        if self.run.state != RunState::Running {
            return;
        }
        for i in 0..self.run.steps.len() {
            let s = &mut self.run.steps[i];
            if s.state.is_terminal() || s.state == StepState::Waiting {
                continue;
            }
            let mut reset = false;
            for u in 0..s.units.len() {
                let unit = &mut s.units[u];
                let by_previous_process = unit.claimed_at.is_none_or(|at| at < claimed_before);
                if unit.state == UnitState::Running && by_previous_process {
                    self.delta.units.insert((i, u));
                    unit.claimed_at = None;
                    s.set_unit_state(u, UnitState::Queued);
                    reset = true;
                }
            }
            if reset {
                self.refresh_step_state(i);
                self.changed = true;
            }
        }
        if self.changed {
            let effects = outstanding(self.plan, self.run, self.now);
            self.effects.extend(effects);
        }
    }

    fn finish_if_done(&mut self) {
        if self.run.state != RunState::Running {
            return;
        }
        if !self.run.steps.iter().all(|s| s.state.is_terminal()) {
            return;
        }
        let failed = self
            .run
            .steps
            .iter()
            .any(|s| matches!(s.state, StepState::Failed | StepState::Cancelled));
        self.delta.header = true;
        self.run.state = if failed {
            RunState::Failure
        } else {
            RunState::Success
        };
        self.run.finished_at = Some(self.now);
        self.effects.push(Effect::RunFinished {
            state: self.run.state,
        });
    }
}
