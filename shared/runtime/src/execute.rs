//! Executing one claimed attempt: building the scope its parameters resolve in (loading
//! secrets only when a parameter needs them), running the step type or operator under its
//! timeout, storing the redacted output and the logs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};
use sluice_core::condition;
use sluice_core::engine::{AttemptResult, Claim, Decision, Event, Plan};
use sluice_core::logs;
use sluice_core::model::{Condition, LogLevel, ParentRef, Run, StepSpec};
use sluice_core::operators::{self, TransformOutput, TransformParams, TriggerParams};
use sluice_core::ports::{OutputKey, TaskMessage};
use sluice_core::redact::Redactor;
use sluice_core::reference::{self, ConfigValues, RefError, RunScope};
use sluice_core::step::{StepContext, StepError, StepLogger, StepOutput};
use sluice_core::template;
use sluice_core::validate::run_variables;

use crate::runtime::{Runtime, RuntimeError};
use crate::sandbox;
use crate::service::StartRequest;

/// What became of a message.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Executed: apply these events (the output is already stored), starting from the
    /// run as the claim stored it.
    Done(Vec<Event>, Box<Run>),
    /// Nothing to do: drop the message.
    Duplicate,
    /// Try again after this many milliseconds.
    Busy(u64),
}

/// The scope of one step with the redactor for whatever secrets went into it.
struct Prepared {
    scope: RunScope,
    redactor: Redactor,
}

impl Runtime {
    /// Builds the scope a step resolves in. Secrets are read only when `with_secrets`.
    async fn scope(
        &self,
        run: &Run,
        plan: &Plan,
        spec: &StepSpec,
        with_secrets: bool,
    ) -> Result<Prepared, StepError> {
        let mut config = ConfigValues::default();
        let mut redactor = Redactor::default();
        if let Some(name) = &run.configuration {
            let stored = self
                .backend
                .definitions
                .get_configuration(name)
                .await
                .map_err(|e| StepError::Failed(e.to_string()))?
                .ok_or_else(|| StepError::Fatal(format!("configuration \"{name}\" not found")))?;
            let secrets = if with_secrets {
                Some(self.secrets_of(name).await?)
            } else {
                None
            };
            for var in &stored.data {
                if var.encrypted {
                    match secrets.as_ref().and_then(|s| s.get(&var.name)) {
                        Some(value) => {
                            config.values.insert(var.name.clone(), value.clone());
                            config.decrypted.push(var.name.clone());
                        }
                        None => config.withheld.push(var.name.clone()),
                    }
                } else {
                    config
                        .values
                        .entry(var.name.clone())
                        .or_insert_with(|| var.value.clone());
                }
            }
            if let Some(secrets) = &secrets {
                redactor = Redactor::new(secrets.values());
            }
        }
        let mut steps = BTreeMap::new();
        for id in visible_steps(plan, spec) {
            let output = self
                .read_output(run, &id)
                .await
                .map_err(|e| StepError::Failed(e.to_string()))?;
            steps.insert(id, output);
        }
        Ok(Prepared {
            scope: RunScope {
                config,
                vars: run_variables(&plan.app, &run.params),
                run: json!({"id": run.id, "application": run.application}),
                steps,
                item: None,
            },
            redactor,
        })
    }

    /// Decrypted secrets of a configuration, reused for a short while.
    async fn secrets_of(
        &self,
        configuration: &str,
    ) -> Result<Arc<BTreeMap<String, Value>>, StepError> {
        if let Some((at, secrets)) = self
            .secret_cache
            .lock()
            .expect("secret cache")
            .get(configuration)
        {
            if at.elapsed() < self.config.secret_ttl {
                return Ok(secrets.clone());
            }
        }
        let secrets = Arc::new(
            self.backend
                .secrets
                .get_secrets(configuration)
                .await
                .map_err(|e| StepError::Fatal(e.to_string()))?,
        );
        self.secret_cache
            .lock()
            .expect("secret cache")
            .insert(configuration.to_string(), (Instant::now(), secrets.clone()));
        Ok(secrets)
    }

    /// Resolves with the plain scope first and reads secrets only when a reference needs
    /// an encrypted value. `offload` runs `resolve` on a blocking thread (it evaluates
    /// template conditions, which may take up to the step's timeout).
    async fn resolve_with<T: Send + 'static>(
        &self,
        run: &Run,
        plan: &Plan,
        spec: &StepSpec,
        offload: bool,
        resolve: Resolver<T>,
    ) -> Result<(T, Prepared), StepError> {
        let prepared = self.scope(run, plan, spec, false).await?;
        let (result, prepared) = resolve_in(resolve.clone(), prepared, offload).await?;
        match result {
            Ok(value) => Ok((value, prepared)),
            Err(ResolveFailure::Withheld) => {
                let prepared = self.scope(run, plan, spec, true).await?;
                let (result, prepared) = resolve_in(resolve, prepared, offload).await?;
                match result {
                    Ok(value) => Ok((value, prepared)),
                    Err(e) => Err(StepError::Fatal(prepared.redactor.redact_str(&e.message()))),
                }
            }
            Err(e) => Err(StepError::Fatal(prepared.redactor.redact_str(&e.message()))),
        }
    }

    /// Evaluates a ready step's `when` and `for_each`.
    pub(crate) async fn evaluate(
        &self,
        run: &Run,
        step_id: &str,
    ) -> Result<Decision, RuntimeError> {
        let plan = self.plan(&run.id).await?;
        let Some(spec) = plan.app.step(step_id) else {
            return Ok(Decision::Fail(format!("unknown step {step_id}")));
        };
        let predecessors = plan.predecessors(step_id);
        let owned = Arc::new(spec.clone());
        let time = Duration::from_secs(spec.timeout_seconds());
        let offload = spec.when.as_ref().is_some_and(Condition::uses_template);
        let resolver: Resolver<Decision> = Arc::new(move |scope: &RunScope| {
            let spec = &owned;
            if let Some(when) = &spec.when {
                let holds = condition::evaluate(when, scope, &|expression| {
                    template_condition(expression, scope, &predecessors, time)
                })
                .map_err(ResolveFailure::from)?;
                if !holds {
                    return Ok(Decision::Skip);
                }
            }
            match &spec.for_each {
                None => Ok(Decision::Run { units: None }),
                Some(for_each) => {
                    let items = for_each_items(spec, scope)?;
                    let batches = items.len().div_ceil(for_each.batch_size.max(1));
                    Ok(Decision::Run {
                        units: Some(u32::try_from(batches).map_err(|_| {
                            ResolveFailure::Error(format!(
                                "for_each.items: {} batches are too many",
                                batches
                            ))
                        })?),
                    })
                }
            }
        });
        let decided = self.resolve_with(run, &plan, spec, offload, resolver).await;
        Ok(match decided {
            Ok((decision, _)) => decision,
            Err(e) => Decision::Fail(e.message().to_string()),
        })
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
                let mut work = std::collections::VecDeque::new();
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

        let started = Instant::now();
        let flow = StepLogger::new(&spec.id, message.attempt, run.loglevel, Redactor::default());
        flow.log(LogLevel::Flow, logs::start_message(&spec.id));
        let (result, logger) = self.attempt(&run, &plan, spec, message).await;
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
                if let Some(value) = output.value_to_store {
                    if output.result.is_some() && self.keeps_inline(&run, &value) {
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
                let reason = logger.redact(error.message());
                logger.log(
                    LogLevel::Error,
                    format!("Error executing the step: {}. Details: {reason}", spec.id),
                );
                Some(AttemptResult::Failure {
                    error: reason,
                    retryable: error.retryable(),
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
        Ok(Outcome::Done(events, Box::new(run)))
    }

    /// One attempt: resolve, run, redact. Returns the logger that saw the secrets.
    async fn attempt(
        &self,
        run: &Run,
        plan: &Plan,
        spec: &StepSpec,
        message: &TaskMessage,
    ) -> (
        Result<(AttemptOutput, Vec<Event>), StepError>,
        Option<LoggerHandle>,
    ) {
        // Validation refuses these; an application stored before that rule must not
        // splice a value into a field such as a SQL query either.
        let path = format!(
            "steps[{}]",
            plan.app.step_index(&spec.id).unwrap_or_default()
        );
        if let Some(refused) = self.catalog.refused_references(spec, &path) {
            return (Err(StepError::Fatal(refused)), None);
        }
        let unit = message.unit as usize;
        let owned = Arc::new(spec.clone());
        let resolver: Resolver<(Value, RunScope)> = Arc::new(move |scope: &RunScope| {
            let spec = &owned;
            let mut scope = scope.clone();
            let templated = operators::is_operator(&spec.step_type)
                && spec.step_type != operators::TRIGGER_APPLICATION;
            if spec.for_each.is_some() {
                // A template's `item` comes from the scope without secrets, like the rest
                // of what it sees.
                let items = if templated {
                    for_each_items(spec, &scope.public()).map_err(|e| match e {
                        ResolveFailure::Withheld => ResolveFailure::Error(
                            "for_each.items: encrypted configuration values cannot be the items of a template step".into(),
                        ),
                        other => other,
                    })?
                } else {
                    for_each_items(spec, &scope)?
                };
                let batch = spec.for_each.as_ref().map_or(1, |f| f.batch_size.max(1));
                let start = unit.saturating_mul(batch);
                let item = if batch == 1 {
                    items.get(start).cloned().unwrap_or(Value::Null)
                } else {
                    Value::Array(items.iter().skip(start).take(batch).cloned().collect())
                };
                scope.item = Some(item);
            }
            let params = if templated {
                // The template's references are bound as values when it renders.
                resolve_except_template(&spec.parameters, &scope)?
            } else {
                reference::resolve_value(&Value::Object(spec.parameters.clone()), &scope)
                    .map_err(ResolveFailure::from)?
            };
            Ok((params, scope))
        });
        let resolved = self.resolve_with(run, plan, spec, false, resolver).await;
        let ((params, scope), prepared) = match resolved {
            Ok(done) => done,
            Err(e) => return (Err(e), None),
        };
        let logger = LoggerHandle {
            logger: StepLogger::new(
                &spec.id,
                message.attempt,
                run.loglevel,
                prepared.redactor.clone(),
            ),
            redactor: prepared.redactor.clone(),
        };
        logger.logger.debug(format!(
            "parameters: {}",
            prepared.redactor.redact_value(&params)
        ));
        let timeout = Duration::from_secs(spec.timeout_seconds());
        let outcome = tokio::time::timeout(timeout, async {
            match spec.step_type.as_str() {
                operators::TRANSFORM | operators::TEMPLATE_RENDER => {
                    transform(spec, params, &scope, plan, timeout)
                        .await
                        .map(|o| (o, Vec::new()))
                }
                operators::TRIGGER_APPLICATION => self.trigger(run, spec, message, params).await,
                other => {
                    let step_type = self.registry.get(other).ok_or_else(|| {
                        StepError::Fatal(format!("step type \"{other}\" is not registered here"))
                    })?;
                    let ctx = StepContext {
                        run_id: run.id.clone(),
                        step_id: spec.id.clone(),
                        attempt: message.attempt,
                        unit: message.unit,
                        log: logger.logger.clone(),
                        cache: self.backend.cache.clone(),
                    };
                    step_type
                        .execute(params, &ctx)
                        .await
                        .map(|o| (AttemptOutput::finished(o), Vec::new()))
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(StepError::Failed(format!(
                "timed out after {} seconds",
                timeout.as_secs()
            )))
        });
        let outcome = outcome.map(|(mut output, events)| {
            if let Some(value) = &output.value_to_store {
                output.value_to_store = Some(prepared.redactor.redact_value(value));
            }
            // Warnings are stored in the run record: they pass the redactor too.
            if let Some(AttemptResult::Success { warnings }) = &mut output.result {
                for warning in warnings.iter_mut() {
                    *warning = prepared.redactor.redact_str(warning);
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
        params: Value,
    ) -> Result<(AttemptOutput, Vec<Event>), StepError> {
        let params: TriggerParams = sluice_core::json::from_value(params)
            .map_err(|e| StepError::Fatal(format!("invalid parameters: {e}")))?;
        let claimed_at = run
            .step(&spec.id)
            .and_then(|s| s.units.get(message.unit as usize))
            .and_then(|u| u.claimed_at)
            .unwrap_or_else(Utc::now);
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
        };
        Box::pin(self.start(request)).await.map_err(|e| {
            StepError::Fatal(format!(
                "cannot start application \"{}\": {e}",
                params.application
            ))
        })?;
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

    /// Executes a message for an operator inline (no queue hop) and queues its events.
    pub(crate) async fn run_claimed(
        &self,
        message: &TaskMessage,
        work: &mut VecDeque<(String, Event)>,
    ) -> Result<Option<Event>, RuntimeError> {
        match Box::pin(self.execute(message)).await? {
            Outcome::Done(events, _) => {
                work.extend(events.into_iter().map(|e| (message.run_id.clone(), e)));
                Ok(None)
            }
            Outcome::Duplicate => Ok(None),
            Outcome::Busy(ms) => {
                let queue = (self.config.queue_for)(operators::TRANSFORM);
                self.backend
                    .queue
                    .send(&queue, message, Duration::from_millis(ms))
                    .await?;
                Ok(None)
            }
        }
    }
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
}

impl AttemptOutput {
    fn finished(output: StepOutput) -> Self {
        Self {
            value_to_store: Some(output.value),
            result: Some(AttemptResult::Success {
                warnings: output.warnings,
            }),
        }
    }

    fn pending() -> Self {
        Self {
            value_to_store: None,
            result: None,
        }
    }
}

/// Why resolution failed: a withheld secret (retry with secrets) or a real error.
enum ResolveFailure {
    Withheld,
    Error(String),
}

impl From<condition::ConditionError> for ResolveFailure {
    fn from(e: condition::ConditionError) -> Self {
        if e.withheld {
            Self::Withheld
        } else {
            Self::Error(e.message)
        }
    }
}

impl ResolveFailure {
    fn message(&self) -> String {
        match self {
            Self::Withheld => "an encrypted configuration value could not be read".into(),
            Self::Error(m) => m.clone(),
        }
    }
}

impl From<RefError> for ResolveFailure {
    fn from(e: RefError) -> Self {
        match e {
            RefError::Withheld { .. } => Self::Withheld,
            other => Self::Error(other.to_string()),
        }
    }
}

/// The steps whose outputs a step can see: its direct predecessors and every step it
/// references.
fn visible_steps(plan: &Plan, spec: &StepSpec) -> BTreeSet<String> {
    // Templates see every predecessor; step types only what their references name.
    let templated = (operators::is_operator(&spec.step_type)
        && spec.step_type != operators::TRIGGER_APPLICATION)
        || spec.when.as_ref().is_some_and(Condition::uses_template);
    let mut ids: BTreeSet<String> = if templated {
        plan.predecessors(&spec.id).into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let mut values = vec![Value::Object(spec.parameters.clone())];
    if let Some(f) = &spec.for_each {
        values.push(f.items.clone());
    }
    if let Some(w) = &spec.when {
        values.push(serde_json::to_value(w).unwrap_or_default());
    }
    for value in values {
        for r in reference::references_in(&value).unwrap_or_default() {
            if let reference::RootKind::Step(id) = r.kind() {
                if plan.index_of(id).is_some() {
                    ids.insert(id.to_string());
                }
            }
        }
    }
    ids
}

/// The `for_each` list of a step.
fn for_each_items(spec: &StepSpec, scope: &RunScope) -> Result<Vec<Value>, ResolveFailure> {
    let Some(for_each) = &spec.for_each else {
        return Ok(Vec::new());
    };
    match reference::resolve_value(&for_each.items, scope)? {
        Value::Array(items) => Ok(items),
        other => Err(ResolveFailure::Error(format!(
            "for_each.items: expected a list, got {}",
            describe_json(&other)
        ))),
    }
}

fn describe_json(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}…", &text[..text.floor_char_boundary(80)])
    } else {
        text
    }
}

/// Resolves an operator's parameters except `template`, whose text Jinja renders.
fn resolve_except_template(
    parameters: &serde_json::Map<String, Value>,
    scope: &RunScope,
) -> Result<Value, ResolveFailure> {
    let mut out = serde_json::Map::new();
    for (name, value) in parameters {
        let resolved = if name == "template" {
            value.clone()
        } else {
            reference::resolve_value(value, scope)?
        };
        out.insert(name.clone(), resolved);
    }
    Ok(Value::Object(out))
}

/// Renders a `transform`: its references bound as values, in the scope without secrets,
/// in a bounded child process on a blocking thread.
async fn transform(
    spec: &StepSpec,
    params: Value,
    scope: &RunScope,
    plan: &Plan,
    time: Duration,
) -> Result<AttemptOutput, StepError> {
    let params: TransformParams = sluice_core::json::from_value(params)
        .map_err(|e| StepError::Fatal(format!("invalid parameters: {e}")))?;
    let public = scope.public();
    let bound = template::bind(&params.template, template::SourceKind::Template, &public)
        .map_err(|e| StepError::Fatal(e.to_string()))?;
    let context = public.template_context(&plan.predecessors(&spec.id));
    let rendered = tokio::task::spawn_blocking(move || {
        sandbox::isolated(time, move || bound.render(context).map_err(|e| e.0))
    })
    .await
    .map_err(|e| StepError::Fatal(format!("template: {e}")))?
    .map_err(|e| StepError::Fatal(format!("template: {e}")))?;
    let value = match params.output {
        TransformOutput::Text => Value::String(rendered),
        TransformOutput::Json => serde_json::from_str(rendered.trim()).map_err(|e| {
            StepError::Fatal(format!(
                "the rendering is not JSON ({e}); set \"output\": \"text\" to keep text. Rendering starts: {}",
                rendered.chars().take(120).collect::<String>()
            ))
        })?,
    };
    Ok(AttemptOutput::finished(StepOutput::value(value)))
}

/// Evaluates a template condition: references bound as values, in the scope without
/// secrets, in a bounded child process (the caller is on a blocking thread).
fn template_condition(
    expression: &str,
    scope: &RunScope,
    predecessors: &[String],
    time: Duration,
) -> Result<bool, condition::ConditionError> {
    let public = scope.public();
    let bound = template::bind(expression, template::SourceKind::Expression, &public)?;
    let context = public.template_context(predecessors);
    let truth = sandbox::isolated(time, move || {
        bound
            .evaluate_truth(context)
            .map(|holds| holds.to_string())
            .map_err(|e| e.0)
    })
    .map_err(|e| condition::ConditionError::template(e.0))?;
    Ok(truth == "true")
}

/// Resolution of a step's scope, shareable with a blocking thread.
type Resolver<T> = Arc<dyn Fn(&RunScope) -> Result<T, ResolveFailure> + Send + Sync>;

/// Runs a resolver on `prepared`, on a blocking thread when `offload`.
async fn resolve_in<T: Send + 'static>(
    resolve: Resolver<T>,
    prepared: Prepared,
    offload: bool,
) -> Result<(Result<T, ResolveFailure>, Prepared), StepError> {
    if !offload {
        let result = resolve(&prepared.scope);
        return Ok((result, prepared));
    }
    tokio::task::spawn_blocking(move || {
        let result = resolve(&prepared.scope);
        (result, prepared)
    })
    .await
    .map_err(|e| StepError::Fatal(format!("evaluating the step failed: {e}")))
}
