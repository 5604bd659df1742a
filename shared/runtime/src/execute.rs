//! The executor: drives a run's events to the end and executes claimed attempts.
//!
//! `Runtime::process` applies an event through transitions and carries out what the
//! stored transition asks for, looping until no event is left; evaluations and inline
//! operators, which transitions hand back, run here. `Runtime::execute` claims an
//! attempt (a transition), resolves its parameters (`resolve.rs`), runs the step type or
//! operator under its timeout (templates in `render.rs`), stores the redacted output and
//! the logs, and returns the events that report it. An inline operator or a
//! `trigger_application` child re-enters the loop within this file, never a layer above.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use sluice_core::engine::{AttemptResult, Claim, Effect, Event, Plan};
use sluice_core::logs;
use sluice_core::model::{LogLevel, ParentRef, Run, StepSpec};
use sluice_core::operators::{self, TriggerParams};
use sluice_core::ports::{OutputKey, TaskMessage};
use sluice_core::redact::Redactor;
use sluice_core::report::{self, ReportOwner, ReportSection};
use sluice_core::step::{StepContext, StepError, StepLogger, StepOutput};

use crate::create::{StartError, StartRequest};
use crate::render;
use crate::resolve::visible_steps;
use crate::runtime::{Runtime, RuntimeError};
use crate::transitions::{view, FollowUp};

/// What became of a message.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Executed: apply these events (the output is already stored).
    Done(Vec<Event>),
    /// Nothing to do: drop the message.
    Duplicate,
    /// Try again after this many milliseconds.
    Busy(u64),
}

/// The messages a transition's effects queue, by queue and delay (a fan-out's thousands
/// go in batches), in the order first queued.
#[derive(Default)]
struct Sends(Vec<((String, Duration), Vec<TaskMessage>)>);

impl Sends {
    fn add(&mut self, queue: String, delay: Duration, message: TaskMessage) {
        let key = (queue, delay);
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, messages)) => messages.push(message),
            None => self.0.push((key, vec![message])),
        }
    }
}

impl Runtime {
    /// Applies an event and carries out every effect, including the events effects lead
    /// to (evaluations, inline operators, parent notifications), until none is left.
    pub async fn process(&self, run_id: &str, event: Event) -> Result<(), RuntimeError> {
        let mut touched = Vec::new();
        let processed = self.process_within(run_id, event, &mut touched).await;
        self.end_of_work(&touched);
        processed
    }

    /// Like [`Runtime::process`], keeping the copies of the runs it changed
    /// ([`Runtime::end_of_work`] lets them go) and naming those runs in `touched`.
    pub(crate) async fn process_within(
        &self,
        run_id: &str,
        event: Event,
        touched: &mut Vec<String>,
    ) -> Result<(), RuntimeError> {
        let mut work = VecDeque::from([(run_id.to_string(), event)]);
        while let Some((run_id, event)) = work.pop_front() {
            let (run, applied) = self.transition(&run_id, &event).await?;
            if !touched.contains(&run_id) {
                touched.push(run_id);
            }
            // Only what the effects read is kept while they are carried out.
            let run = self.run_for_effects(run, &applied.effects).await?;
            self.carry_out(&run, applied.effects, &mut work).await?;
        }
        Ok(())
    }

    /// Carries out the effects of a stored transition in order: what needs no execution
    /// through transitions, evaluations and inline operators here. The events they lead
    /// to join `work`.
    pub(crate) async fn carry_out(
        &self,
        run: &Run,
        effects: Vec<Effect>,
        work: &mut VecDeque<(String, Event)>,
    ) -> Result<(), RuntimeError> {
        let mut sends = Sends::default();
        for effect in effects {
            match self.carry_out_effect(run, effect).await? {
                FollowUp::Apply(events) => work.extend(events),
                FollowUp::Send {
                    queue,
                    message,
                    delay,
                } => sends.add(queue, delay, message),
                FollowUp::Evaluate { step } => {
                    let decision = self.evaluate(run, &step).await?;
                    work.push_back((run.id.clone(), Event::Evaluated { step, decision }));
                }
                FollowUp::Inline(message) => {
                    // What was queued goes first: an inline operator may take a while.
                    self.send_all(std::mem::take(&mut sends)).await?;
                    self.run_inline(&message, work).await?
                }
                FollowUp::Ended { events, alert } => {
                    work.extend(events);
                    if let Some(alert) = alert {
                        if let Some(id) = self.create_alert_run(run, &alert).await? {
                            work.push_back((id, Event::Start));
                        }
                    }
                }
            }
        }
        self.send_all(sends).await
    }

    async fn send_all(&self, sends: Sends) -> Result<(), RuntimeError> {
        for ((queue, delay), messages) in sends.0 {
            self.backend
                .queue
                .send_many(&queue, &messages, delay)
                .await?;
        }
        Ok(())
    }

    /// Executes an operator's attempt inline (no queue hop) and queues its events; a
    /// busy claim goes to the queue to be retried later.
    async fn run_inline(
        &self,
        message: &TaskMessage,
        work: &mut VecDeque<(String, Event)>,
    ) -> Result<(), RuntimeError> {
        match Box::pin(self.execute(message)).await? {
            Outcome::Done(events) => {
                work.extend(events.into_iter().map(|e| (message.run_id.clone(), e)));
            }
            Outcome::Duplicate => {}
            Outcome::Busy(ms) => {
                let queue = (self.config.queue_for)(operators::TRANSFORM);
                self.backend
                    .queue
                    .send(&queue, message, Duration::from_millis(ms))
                    .await?;
            }
        }
        Ok(())
    }

    /// Claims and executes one attempt of a step.
    pub(crate) async fn execute(&self, message: &TaskMessage) -> Result<Outcome, RuntimeError> {
        let claim = Event::Claim {
            step: message.step_id.clone(),
            unit: message.unit,
            attempt: message.attempt,
        };
        let (run, applied) = match self.transition(&message.run_id, &claim).await {
            Ok(done) => done,
            // An expired or deleted run: nothing left to do.
            Err(RuntimeError::NotFound(_)) => return Ok(Outcome::Duplicate),
            Err(e) => return Err(e),
        };
        match applied.claim {
            Some(Claim::Granted) => {}
            Some(Claim::Busy { retry_after_ms }) => return Ok(Outcome::Busy(retry_after_ms)),
            _ => {
                // A redelivery of an attempt that ended long ago: the worker that ended it
                // may have died before sending what its end caused; re-send what is still
                // outstanding (the engine picks only that attempt's neighbourhood).
                let run = self.run_for_effects(run, &applied.effects).await?;
                let mut work = VecDeque::new();
                self.carry_out(&run, applied.effects, &mut work).await?;
                for (run_id, event) in work {
                    self.process(&run_id, event).await?;
                }
                return Ok(Outcome::Duplicate);
            }
        }
        let plan = self.plan(&run.id).await?;
        let spec = plan
            .app
            .step(&message.step_id)
            .ok_or_else(|| RuntimeError::NotFound(format!("step {}", message.step_id)))?;
        // What the attempt needs of the run, taken now: the run itself is let go (other
        // units' transitions change it in place meanwhile), and a unit of a fan-out
        // indexes the item list evaluated before rather than resolving it again.
        let items = spec
            .for_each
            .as_ref()
            .and_then(|_| self.step_items(&run.id, &spec.id));
        let inline_bytes = run.inline_output_bytes_now();
        let claimed_at = run
            .step(&spec.id)
            .and_then(|s| s.units.get(message.unit as usize))
            .and_then(|u| u.claimed_at);
        let stored = run;
        let run = view(&stored, &plan, &visible_steps(&plan, spec, items.is_none()));
        drop(stored);
        // The attempt acts on the world: its claim must be stored first (after a yield,
        // so that the writes of other ready tasks join the same commit; the run was let
        // go before, or their transitions would copy it to change it).
        tokio::task::yield_now().await;
        self.backend.runs.commit_staged()?;
        let claimed = Claimed {
            message,
            items,
            claimed_at,
        };

        let started = Instant::now();
        let flow = StepLogger::new(&spec.id, message.attempt, run.loglevel, Redactor::default());
        flow.log(LogLevel::Flow, logs::start_message(&spec.id));
        let (result, logger) = self.attempt(&run, &plan, spec, claimed).await;
        let logger = logger.unwrap_or_else(|| flow.clone().into());
        let mut events = Vec::new();
        let mut inline_output = None;
        let result = match result {
            Ok((output, mut extra)) => {
                if let Some(AttemptResult::Success { warnings }) = &output.result {
                    for warning in warnings {
                        logger.log(LogLevel::Warning, logger.redact(warning));
                    }
                }
                // Stored before the result is recorded, like an output, under the unit:
                // an attempt executed again overwrites what it stored, never adds.
                if matches!(output.result, Some(AttemptResult::Success { .. }))
                    && !output.report.is_empty()
                {
                    self.backend
                        .reports
                        .put_report_part(
                            &ReportOwner::from(&run),
                            &spec.id,
                            message.unit,
                            &output.report,
                        )
                        .await?;
                }
                if let Some(value) = output.value_to_store {
                    if output.result.is_some() && self.keeps_inline(inline_bytes, &value) {
                        inline_output = Some(value);
                    } else {
                        let key = OutputKey {
                            run_id: run.id.clone(),
                            step_id: spec.id.clone(),
                            unit: message.unit,
                        };
                        self.backend
                            .runs
                            .put_output(&key, &value, run.expires_at)
                            .await?;
                    }
                }
                events.append(&mut extra);
                output.result
            }
            Err(error) => {
                let reason = logger.redact(&error.message());
                logger.log(
                    LogLevel::Error,
                    format!("Error executing the step: {}. Details: {reason}", spec.id),
                );
                Some(AttemptResult::Failure {
                    error: reason,
                    retryable: error.is_retryable(),
                })
            }
        };
        logger.log(
            LogLevel::Flow,
            logs::stop_message(&spec.id, started.elapsed().as_secs_f64()),
        );
        let mut entries = flow.drain();
        entries.extend(logger.drain());
        if !matches!(result, Some(AttemptResult::Failure { .. })) {
            // The run record dates this attempt (claimed, finished), so its start and
            // stop are derived when read (`sluice_core::logs`); often nothing is left.
            entries.retain(|e| e.level != LogLevel::Flow);
        }
        self.backend
            .runs
            .append_logs(&run.id, &entries, run.expires_at)
            .await?;
        if let Some(result) = result {
            events.push(Event::Finished {
                step: spec.id.clone(),
                unit: message.unit,
                attempt: message.attempt,
                result,
                output: inline_output,
            });
        }
        Ok(Outcome::Done(events))
    }

    /// One attempt: resolve, run, redact. Returns the logger that saw the secrets.
    async fn attempt(
        &self,
        run: &Run,
        plan: &Plan,
        spec: &StepSpec,
        claimed: Claimed<'_>,
    ) -> (
        Result<(AttemptOutput, Vec<Event>), StepError>,
        Option<LoggerHandle>,
    ) {
        let message = claimed.message;
        // Validation refuses these; an application stored before that rule must not
        // splice a value into a field such as a SQL query either.
        let path = format!(
            "steps[{}]",
            plan.app.step_index(&spec.id).unwrap_or_default()
        );
        if let Some(refused) = self.catalog.refused_references(spec, &path) {
            return (Err(StepError::Fatal(refused)), None);
        }
        let (params, scope, redactor) = match self
            .resolve_parameters(run, plan, spec, message.unit, claimed.items)
            .await
        {
            Ok(done) => done,
            Err(e) => return (Err(e), None),
        };
        let logger = LoggerHandle {
            logger: StepLogger::new(&spec.id, message.attempt, run.loglevel, redactor.clone()),
            redactor: redactor.clone(),
        };
        // Built only when kept: a redacted copy and its text are two copies of the params.
        if logger.logger.enabled(LogLevel::Debug) {
            logger
                .logger
                .debug(format!("parameters: {}", redactor.redact_value(&params)));
        }
        let timeout = Duration::from_secs(spec.timeout_seconds());
        let deadline = std::time::Instant::now() + timeout;
        let outcome = tokio::time::timeout(timeout, async {
            match spec.step_type.as_str() {
                operators::TRANSFORM | operators::TEMPLATE_RENDER => {
                    render::transform(params, &scope, &plan.predecessors(&spec.id), timeout)
                        .await
                        .map(|value| {
                            (
                                AttemptOutput::finished(StepOutput::value(value)),
                                Vec::new(),
                            )
                        })
                }
                operators::TRIGGER_APPLICATION => {
                    self.trigger(run, spec, message, claimed.claimed_at, params)
                        .await
                }
                operators::REPORT => {
                    let section = report::section_from_parameters(params)
                        .map_err(StepError::InvalidParameters)?;
                    let id = report::report_id(&run.application, &run.id);
                    let output = StepOutput::value(report::operator_output(&id, &section));
                    Ok((
                        AttemptOutput::finished(output).with_report(vec![section]),
                        Vec::new(),
                    ))
                }
                other => {
                    let step_type = self.registry.get(other).ok_or_else(|| {
                        StepError::Fatal(format!("step type \"{other}\" is not registered here"))
                    })?;
                    let ctx = StepContext::new(
                        run.id.clone(),
                        spec.id.clone(),
                        message.attempt,
                        message.unit,
                        logger.logger.clone(),
                        self.backend.cache.clone(),
                        deadline,
                    );
                    step_type.execute(params, &ctx).await.map(|o| {
                        let output = AttemptOutput::finished(o).with_report(ctx.take_reports());
                        (output, Vec::new())
                    })
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(StepError::Retryable(format!(
                "timed out after {} seconds",
                timeout.as_secs()
            )))
        });
        let outcome = outcome.map(|(mut output, events)| {
            if let Some(value) = output.value_to_store.take() {
                output.value_to_store = Some(redactor.redact_owned(value));
            }
            // Report sections are redacted, then bounded; what a bound cut is a warning.
            if !output.report.is_empty() {
                let (sections, cuts) =
                    report::prepare_sections(std::mem::take(&mut output.report), &redactor);
                output.report = sections;
                if let Some(AttemptResult::Success { warnings }) = &mut output.result {
                    warnings.extend(cuts);
                }
            }
            // Warnings are stored in the run record: they pass the redactor too.
            if let Some(AttemptResult::Success { warnings }) = &mut output.result {
                for warning in warnings.iter_mut() {
                    *warning = redactor.redact_str(warning);
                }
            }
            (output, events)
        });
        (outcome, Some(logger))
    }

    /// Starts the child run of a `trigger_application`.
    async fn trigger(
        &self,
        run: &Run,
        spec: &StepSpec,
        message: &TaskMessage,
        claimed_at: Option<chrono::DateTime<Utc>>,
        params: Value,
    ) -> Result<(AttemptOutput, Vec<Event>), StepError> {
        let params: TriggerParams = sluice_core::json::from_value(params)
            .map_err(|e| StepError::InvalidParameters(e.to_string()))?;
        let claimed_at = claimed_at.unwrap_or_else(Utc::now);
        // The same attempt always names the same child, so a redelivery cannot start two.
        let child_id = sluice_core::model::deterministic_run_id(
            claimed_at,
            &format!(
                "{}/{}/{}/{}",
                run.id, spec.id, message.unit, message.attempt
            ),
        );
        let mut child_params = params.params.clone();
        if let Some(configuration) = &params.configuration {
            child_params.insert("configuration".into(), Value::String(configuration.clone()));
        }
        let request = StartRequest {
            application: params.application.clone(),
            params: child_params,
            parent: Some(ParentRef {
                run_id: run.id.clone(),
                step_id: spec.id.clone(),
                blocking: params.blocking,
            }),
            run_id: Some(child_id.clone()),
            replay_of: None,
            snapshot: None,
            snapshot_version: None,
            // A run an alert run triggers is part of handling that alert: it never
            // alerts either, so a chain of alerts cannot form through triggers.
            alert_of: run.alert_of.clone(),
        };
        let refused = |e: StartError| {
            StepError::Fatal(format!(
                "cannot start application \"{}\": {e}",
                params.application
            ))
        };
        let child = self.create_run(request).await.map_err(refused)?;
        Box::pin(self.process(&child, Event::Start))
            .await
            .map_err(|e| refused(e.into()))?;
        let started = Event::ChildStarted {
            step: spec.id.clone(),
            unit: message.unit,
            attempt: message.attempt,
            child_run: child_id.clone(),
        };
        if params.blocking {
            // The child's end stores the output and finishes this step.
            Ok((AttemptOutput::pending(), vec![started]))
        } else {
            Ok((
                AttemptOutput::finished(StepOutput::value(json!({"run_id": child_id}))),
                vec![started],
            ))
        }
    }
}

/// A granted claim, with what its attempt needs besides the run's view.
struct Claimed<'a> {
    message: &'a TaskMessage,
    /// The fan-out's item list as evaluated before, when this process kept it.
    items: Option<crate::resolve::Items>,
    /// When the claim was granted (a triggered child's id derives from it).
    claimed_at: Option<chrono::DateTime<Utc>>,
}

/// A step's logger and the redactor of the secrets it may have seen.
#[derive(Clone)]
struct LoggerHandle {
    logger: StepLogger,
    redactor: Redactor,
}

impl LoggerHandle {
    fn redact(&self, text: &str) -> String {
        self.redactor.redact_str(text)
    }
    fn log(&self, level: LogLevel, message: String) {
        self.logger.log(level, message)
    }
    fn drain(&self) -> Vec<sluice_core::model::LogEntry> {
        self.logger.drain()
    }
}

impl From<StepLogger> for LoggerHandle {
    fn from(logger: StepLogger) -> Self {
        Self {
            logger,
            redactor: Redactor::default(),
        }
    }
}

/// What an attempt produced: the output to store (if any) and the result to record
/// (none while a blocking child runs).
struct AttemptOutput {
    value_to_store: Option<Value>,
    result: Option<AttemptResult>,
    /// Sections for the run's report (stored only when the attempt succeeds).
    report: Vec<ReportSection>,
}

impl AttemptOutput {
    fn finished(output: StepOutput) -> Self {
        Self {
            value_to_store: Some(output.value),
            result: Some(AttemptResult::Success {
                warnings: output.warnings,
            }),
            report: Vec::new(),
        }
    }

    fn with_report(mut self, sections: Vec<ReportSection>) -> Self {
        self.report = sections;
        self
    }

    fn pending() -> Self {
        Self {
            value_to_store: None,
            result: None,
            report: Vec::new(),
        }
    }
}
