//! Resolving a step's references: building the scope they resolve in (loading secrets
//! only when a reference needs an encrypted value), deciding a ready step's `when` and
//! `for_each`, and resolving an attempt's parameters. Calls transitions (plans, outputs)
//! and the template renderer only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_core::condition;
use sluice_core::engine::{Decision, Plan};
use sluice_core::model::{Condition, Run, StepSpec};
use sluice_core::operators;
use sluice_core::redact::Redactor;
use sluice_core::reference::{self, ConfigValues, RefError, RunScope};
use sluice_core::step::StepError;
use sluice_core::validate::run_variables;

use crate::render::template_condition;
use crate::runtime::{Runtime, RuntimeError};

/// The scope of one step with the redactor for whatever secrets went into it.
struct Prepared {
    scope: RunScope,
    redactor: Redactor,
}

impl Runtime {
    /// Builds the scope a step resolves in. Secrets are read only when `with_secrets`;
    /// the steps only `for_each.items` names are left out unless `with_items`.
    async fn scope(
        &self,
        run: &Run,
        plan: &Plan,
        spec: &StepSpec,
        with_secrets: bool,
        with_items: bool,
    ) -> Result<Prepared, StepError> {
        let mut config = ConfigValues::default();
        let mut redactor = Redactor::default();
        if let Some(name) = &run.configuration {
            let stored = self
                .backend
                .definitions
                .get_configuration(name)
                .await
                .map_err(|e| StepError::Retryable(e.to_string()))?
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
        for id in visible_steps(plan, spec, with_items) {
            let output = self
                .read_output(run, &id)
                .await
                .map_err(|e| StepError::Retryable(e.to_string()))?;
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
        (with_items, offload): (bool, bool),
        resolve: Resolver<T>,
    ) -> Result<(T, Prepared), StepError> {
        let prepared = self.scope(run, plan, spec, false, with_items).await?;
        let (result, prepared) = resolve_in(resolve.clone(), prepared, offload).await?;
        match result {
            Ok(value) => Ok((value, prepared)),
            Err(ResolveFailure::Withheld) => {
                let prepared = self.scope(run, plan, spec, true, with_items).await?;
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
        let resolver: Resolver<(Decision, Option<Items>)> =
            Arc::new(move |scope: &mut RunScope| {
                let scope: &RunScope = scope;
                let spec = &owned;
                if let Some(when) = &spec.when {
                    let holds = condition::evaluate(when, scope, &|expression| {
                        template_condition(expression, scope, &predecessors, time)
                    })
                    .map_err(ResolveFailure::from)?;
                    if !holds {
                        return Ok((Decision::Skip, None));
                    }
                }
                match &spec.for_each {
                    None => Ok((Decision::Run { units: None }, None)),
                    Some(for_each) => {
                        let items = for_each_items(spec, scope)?;
                        let batches = items.len().div_ceil(for_each.batch_size.max(1));
                        let units = u32::try_from(batches).map_err(|_| {
                            ResolveFailure::Error(format!(
                                "for_each.items: {} batches are too many",
                                batches
                            ))
                        })?;
                        let items = shareable(scope).then(|| Arc::new(items));
                        Ok((Decision::Run { units: Some(units) }, items))
                    }
                }
            });
        let decided = self
            .resolve_with(run, &plan, spec, (true, offload), resolver)
            .await;
        Ok(match decided {
            Ok(((decision, items), _)) => {
                if let Some(items) = items {
                    self.items.insert(&run.id, step_id, items);
                }
                decision
            }
            Err(e) => Decision::Fail(e.message().to_string()),
        })
    }

    /// Resolves an attempt's parameters (with `item` set for a unit of a fan-out) and
    /// returns them with the scope they resolved in and the redactor of the secrets that
    /// went into them. An operator's `template` stays text: it is bound when it renders.
    /// `items` is the fan-out's item list as evaluated before ([`Runtime::step_items`]);
    /// without it the list is resolved here (and kept for the next units).
    pub(crate) async fn resolve_parameters(
        &self,
        run: &Run,
        plan: &Plan,
        spec: &StepSpec,
        unit: u32,
        items: Option<Items>,
    ) -> Result<(Value, RunScope, Redactor), StepError> {
        let unit = unit as usize;
        let owned = Arc::new(spec.clone());
        let with_items = items.is_none();
        let resolved_items = Arc::new(Mutex::new(None));
        let kept_items = resolved_items.clone();
        // The scope is completed in place (its `item`), never copied: it holds the
        // predecessors' outputs, which may be large.
        let resolver: Resolver<Value> = Arc::new(move |scope: &mut RunScope| {
            let spec = &owned;
            let templated = operators::renders_template(&spec.step_type);
            if spec.for_each.is_some() {
                let items = match &items {
                    Some(items) => items.clone(),
                    // A template's `item` comes from the scope without secrets, like the
                    // rest of what it sees.
                    None if templated => {
                        let public = scope.public();
                        let items = for_each_items(spec, &public).map_err(|e| match e {
                            ResolveFailure::Withheld => ResolveFailure::Error(
                                "for_each.items: encrypted configuration values cannot be the items of a template step".into(),
                            ),
                            other => other,
                        })?;
                        let items = Arc::new(items);
                        *kept_items.lock().unwrap_or_else(|p| p.into_inner()) = Some(items.clone());
                        items
                    }
                    None => {
                        let items = Arc::new(for_each_items(spec, scope)?);
                        if shareable(scope) {
                            *kept_items.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(items.clone());
                        }
                        items
                    }
                };
                scope.item = Some(item_of(spec, &items, unit));
            }
            let params = if templated {
                // The template's references are bound as values when it renders.
                resolve_except_template(&spec.parameters, scope)?
            } else {
                reference::resolve_value(&Value::Object(spec.parameters.clone()), scope)
                    .map_err(ResolveFailure::from)?
            };
            Ok(params)
        });
        let (params, prepared) = self
            .resolve_with(run, plan, spec, (with_items, false), resolver)
            .await?;
        let resolved = resolved_items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(items) = resolved {
            self.items.insert(&run.id, &spec.id, items);
        }
        Ok((params, prepared.scope, prepared.redactor))
    }

    /// The item list of a fan-out as evaluated before, if this process kept it.
    pub(crate) fn step_items(&self, run_id: &str, step_id: &str) -> Option<Items> {
        self.items.get(run_id, step_id)
    }
}

/// A fan-out's evaluated item list, shared by its units.
pub(crate) type Items = Arc<Vec<Value>>;

/// Whether items resolved in `scope` may be kept for the other units: not when a
/// decrypted secret may be in them (then each unit resolves them again, with the
/// redactor of the secrets it read).
fn shareable(scope: &RunScope) -> bool {
    scope.config.decrypted.is_empty()
}

/// The `item` of unit `unit`: its item, or its batch of items.
fn item_of(spec: &StepSpec, items: &[Value], unit: usize) -> Value {
    let batch = spec.for_each.as_ref().map_or(1, |f| f.batch_size.max(1));
    let start = unit.saturating_mul(batch);
    if batch == 1 {
        items.get(start).cloned().unwrap_or(Value::Null)
    } else {
        Value::Array(items.iter().skip(start).take(batch).cloned().collect())
    }
}

/// Most item lists an [`ItemsCache`] keeps, and the largest it keeps (JSON bytes).
const ITEMS_CACHE_ENTRIES: usize = 16;
const ITEMS_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// The evaluated `for_each` lists of recent fan-outs, by run and step: each unit takes
/// its own item (or batch) from the list instead of resolving the whole list again,
/// which made a unit's cost grow with the number of items. The list is what the step's
/// evaluation decided the units from (its predecessors had ended): units of one
/// fan-out see the same items. A list evicted early only costs a resolution.
pub(crate) struct ItemsCache {
    lists: Mutex<lru::LruCache<(String, String), Items>>,
}

impl Default for ItemsCache {
    fn default() -> Self {
        let limit =
            std::num::NonZeroUsize::new(ITEMS_CACHE_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            lists: Mutex::new(lru::LruCache::new(limit)),
        }
    }
}

impl ItemsCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<(String, String), Items>> {
        // A panic while holding it leaves a consistent map: take it over.
        self.lists.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, run_id: &str, step_id: &str) -> Option<Items> {
        self.lock()
            .get(&(run_id.to_string(), step_id.to_string()))
            .cloned()
    }

    fn insert(&self, run_id: &str, step_id: &str, items: Items) {
        if crate::outputs::json_len_within(items.as_slice(), ITEMS_CACHE_BYTES).is_none() {
            return;
        }
        self.lock()
            .put((run_id.to_string(), step_id.to_string()), items);
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
/// references (in `for_each.items` only when `with_items`: a unit given its item list
/// does not read them).
pub(crate) fn visible_steps(plan: &Plan, spec: &StepSpec, with_items: bool) -> BTreeSet<String> {
    // Templates see every predecessor; step types only what their references name.
    let templated = operators::renders_template(&spec.step_type)
        || spec.when.as_ref().is_some_and(Condition::uses_template);
    let mut ids: BTreeSet<String> = if templated {
        plan.predecessors(&spec.id).into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let mut values = vec![Value::Object(spec.parameters.clone())];
    if let Some(f) = spec.for_each.as_ref().filter(|_| with_items) {
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

/// Resolution of a step's scope, shareable with a blocking thread.
/// What a resolution computes from the scope; it may complete the scope (a unit's
/// `item`), which the attempt then runs in.
type Resolver<T> = Arc<dyn Fn(&mut RunScope) -> Result<T, ResolveFailure> + Send + Sync>;

/// Runs a resolver on `prepared`, on a blocking thread when `offload`.
async fn resolve_in<T: Send + 'static>(
    resolve: Resolver<T>,
    mut prepared: Prepared,
    offload: bool,
) -> Result<(Result<T, ResolveFailure>, Prepared), StepError> {
    if !offload {
        let result = resolve(&mut prepared.scope);
        return Ok((result, prepared));
    }
    tokio::task::spawn_blocking(move || {
        let result = resolve(&mut prepared.scope);
        (result, prepared)
    })
    .await
    .map_err(|e| StepError::Fatal(format!("evaluating the step failed: {e}")))
}
