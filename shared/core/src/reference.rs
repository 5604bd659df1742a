//! `${…}` references (SPEC §2): parsing, static inspection for validation, and resolution
//! against a [`Scope`].
//!
//! A string that is exactly one reference takes the referenced JSON value; a reference
//! inside a longer string is interpolated as text (strings as they are, anything else as
//! compact JSON). `$${` is a literal `${`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// A parsed `${root.path.0.field}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `config`, `vars`, `run`, `item`, or a step id.
    pub root: String,
    pub path: Vec<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{{}", self.root)?;
        for segment in &self.path {
            write!(f, ".{segment}")?;
        }
        write!(f, "}}")
    }
}

/// What a reference's root names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind<'a> {
    Config,
    Vars,
    Run,
    Item,
    Step(&'a str),
}

impl Reference {
    pub fn kind(&self) -> RootKind<'_> {
        match self.root.as_str() {
            "config" => RootKind::Config,
            "vars" => RootKind::Vars,
            "run" => RootKind::Run,
            "item" => RootKind::Item,
            other => RootKind::Step(other),
        }
    }
}

/// A piece of a string: literal text or a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Ref(Reference),
}

/// Why a reference could not be parsed or resolved. Messages name the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("{0}")]
    Syntax(String),
    #[error("{reference}: unknown configuration variable \"{name}\"{}", chain_suffix(.chain))]
    UnknownConfig {
        reference: String,
        name: String,
        chain: Vec<String>,
    },
    #[error("configuration reference cycle: {}", .chain.join(" -> "))]
    ConfigCycle { chain: Vec<String> },
    #[error("{reference}: unknown app variable \"{name}\"")]
    UnknownVar { reference: String, name: String },
    #[error("app variable reference cycle: {}", .chain.join(" -> "))]
    VarCycle { chain: Vec<String> },
    #[error("{reference}: step \"{step}\" has no output here (it must be a predecessor)")]
    UnknownStep { reference: String, step: String },
    #[error("{reference}: no \"{segment}\" in {found}")]
    MissingPath {
        reference: String,
        segment: String,
        found: String,
    },
    /// An encrypted variable whose plaintext was not loaded: load the secrets and retry.
    #[error("{reference}: encrypted configuration variable \"{name}\" is not available here")]
    Withheld { reference: String, name: String },
    #[error("{reference}: ${{item}} is only defined inside for_each")]
    NoItem { reference: String },
    #[error("{reference}: {message}")]
    Other { reference: String, message: String },
}

fn chain_suffix(chain: &[String]) -> String {
    if chain.len() > 1 {
        format!(" (via {})", chain.join(" -> "))
    } else {
        String::new()
    }
}

/// Splits a string into text and references.
pub fn parse(text: &str) -> Result<Vec<Segment>, RefError> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            literal.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                RefError::Syntax(format!("unclosed reference \"${{{}\"", preview(after)))
            })?;
            let reference = parse_reference(&after[..end])?;
            if !literal.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Ref(reference));
            rest = &after[end + 1..];
        } else {
            literal.push('$');
            rest = &tail[1..];
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        segments.push(Segment::Text(literal));
    }
    Ok(segments)
}

fn preview(text: &str) -> String {
    text.chars().take(30).collect()
}

/// Parses the inside of one `${…}` (without the braces).
pub fn parse_reference(inner: &str) -> Result<Reference, RefError> {
    let inner = inner.trim();
    let mut parts = inner.split('.');
    let root = parts.next().unwrap_or_default();
    let valid_root = root
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && root.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_root {
        return Err(RefError::Syntax(format!(
            "invalid reference \"${{{inner}}}\": it must start with a step id, config, vars, run or item"
        )));
    }
    let path: Vec<String> = parts.map(str::to_string).collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(RefError::Syntax(format!(
            "invalid reference \"${{{inner}}}\": empty path segment"
        )));
    }
    Ok(Reference {
        root: root.to_string(),
        path,
    })
}

/// Every reference in a JSON value's strings (object keys are not templated).
pub fn references_in(value: &Value) -> Result<Vec<Reference>, RefError> {
    let mut out = Vec::new();
    collect(value, &mut out)?;
    Ok(out)
}

fn collect(value: &Value, out: &mut Vec<Reference>) -> Result<(), RefError> {
    match value {
        Value::String(s) if s.contains("${") => {
            for segment in parse(s)? {
                if let Segment::Ref(r) = segment {
                    out.push(r);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect(item, out)?;
            }
        }
        Value::Object(map) => {
            for item in map.values() {
                collect(item, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Looks up the value a reference names.
pub trait Scope {
    fn lookup(&self, reference: &Reference) -> Result<Value, RefError>;
}

/// Resolves every reference in a JSON value.
pub fn resolve_value(value: &Value, scope: &dyn Scope) -> Result<Value, RefError> {
    match value {
        Value::String(s) => resolve_str(s, scope),
        Value::Array(items) => items
            .iter()
            .map(|v| resolve_value(v, scope))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), resolve_value(v, scope)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// Resolves a string: exactly one reference gives its value, otherwise text (strings as
/// they are, anything else as compact JSON). Templates never go through here: their
/// references are bound as values (`template::bind`).
pub fn resolve_str(text: &str, scope: &dyn Scope) -> Result<Value, RefError> {
    if !text.contains('$') {
        return Ok(Value::String(text.to_string()));
    }
    let segments = parse(text)?;
    if let [Segment::Ref(reference)] = segments.as_slice() {
        return scope.lookup(reference);
    }
    let mut out = String::new();
    for segment in &segments {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Ref(r) => match scope.lookup(r)? {
                Value::String(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

/// Follows `path` into `value`. Into `null` gives `null` (a skipped step's output);
/// a missing key or index is an error naming it.
pub fn navigate(reference: &Reference, value: &Value, path: &[String]) -> Result<Value, RefError> {
    let mut current = value;
    for segment in path {
        current = match current {
            Value::Null => return Ok(Value::Null),
            Value::Object(map) => map
                .get(segment)
                .ok_or_else(|| missing(reference, segment, current))?,
            Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|i| items.get(i))
                .ok_or_else(|| missing(reference, segment, current))?,
            _ => return Err(missing(reference, segment, current)),
        };
    }
    Ok(current.clone())
}

fn missing(reference: &Reference, segment: &str, found: &Value) -> RefError {
    let found = match found {
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).take(10).collect();
            format!("an object with keys [{}]", keys.join(", "))
        }
        Value::Array(items) => format!("a list of {} items", items.len()),
        Value::String(_) => "a string".into(),
        Value::Number(_) => "a number".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Null => "null".into(),
    };
    RefError::MissingPath {
        reference: reference.to_string(),
        segment: segment.to_string(),
        found,
    }
}

/// A configuration's variables, resolved recursively on lookup with cycle detection.
/// Encrypted values are present only when the caller has decrypted them.
#[derive(Debug, Clone, Default)]
pub struct ConfigValues {
    /// Raw values by name, possibly holding `${config.…}` references.
    pub values: BTreeMap<String, Value>,
    /// Names of encrypted variables whose plaintext was not loaded.
    pub withheld: Vec<String>,
    /// Names of encrypted variables whose plaintext is in `values`.
    pub decrypted: Vec<String>,
}

impl ConfigValues {
    /// The same variables with every encrypted one withheld: what templates see.
    pub fn public(&self) -> Self {
        let mut public = self.clone();
        for name in std::mem::take(&mut public.decrypted) {
            public.values.remove(&name);
            public.withheld.push(name);
        }
        public
    }

    /// Resolves configuration variable `name` (its references included).
    pub fn get(
        &self,
        name: &str,
        chain: &mut Vec<String>,
        reference: &Reference,
    ) -> Result<Value, RefError> {
        if chain.iter().any(|c| c == name) {
            let mut cycle = chain.clone();
            cycle.push(name.to_string());
            return Err(RefError::ConfigCycle { chain: cycle });
        }
        chain.push(name.to_string());
        let raw = self.values.get(name).ok_or_else(|| {
            if self.withheld.iter().any(|w| w == name) {
                RefError::Withheld {
                    reference: reference.to_string(),
                    name: name.to_string(),
                }
            } else {
                RefError::UnknownConfig {
                    reference: reference.to_string(),
                    name: name.to_string(),
                    chain: chain.clone(),
                }
            }
        })?;
        let resolved = resolve_value(
            raw,
            &ConfigOnly {
                config: self,
                chain: chain.clone(),
            },
        )?;
        chain.pop();
        Ok(resolved)
    }

    /// Every variable resolved (for Jinja's `config`); variables that fail to resolve are
    /// left out, so a template only errs when it uses them.
    pub fn resolved_map(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for name in self.values.keys() {
            let reference = Reference {
                root: "config".into(),
                path: vec![name.clone()],
            };
            if let Ok(value) = self.get(name, &mut Vec::new(), &reference) {
                out.insert(name.clone(), value);
            }
        }
        out
    }
}

/// The scope inside configuration values: only `${config.…}` is allowed there.
struct ConfigOnly<'a> {
    config: &'a ConfigValues,
    chain: Vec<String>,
}

impl Scope for ConfigOnly<'_> {
    fn lookup(&self, reference: &Reference) -> Result<Value, RefError> {
        match (reference.kind(), reference.path.split_first()) {
            (RootKind::Config, Some((name, rest))) => {
                let value = self.config.get(name, &mut self.chain.clone(), reference)?;
                navigate(reference, &value, rest)
            }
            _ => Err(RefError::Other {
                reference: reference.to_string(),
                message: "configuration values may only reference ${config.NAME}".into(),
            }),
        }
    }
}

/// The scope a step's parameters, conditions and `for_each` items resolve in.
#[derive(Debug, Clone, Default)]
pub struct RunScope {
    pub config: ConfigValues,
    /// App variables after run overrides (raw: may hold references).
    pub vars: Map<String, Value>,
    /// `${run.…}`: `{"id", "application"}`.
    pub run: Value,
    /// Outputs of the steps visible here, by id.
    pub steps: BTreeMap<String, Value>,
    /// `${item}` inside `for_each`.
    pub item: Option<Value>,
}

impl RunScope {
    /// This scope without encrypted configuration values (docs/semantics.md, "Secrets in
    /// templates and derived forms"): templates resolve and render in it, so no template
    /// output can disclose a secret in any form.
    pub fn public(&self) -> Self {
        Self {
            config: self.config.public(),
            ..self.clone()
        }
    }

    fn var(
        &self,
        name: &str,
        chain: &mut Vec<String>,
        reference: &Reference,
    ) -> Result<Value, RefError> {
        if chain.iter().any(|c| c == name) {
            let mut cycle = chain.clone();
            cycle.push(name.to_string());
            return Err(RefError::VarCycle { chain: cycle });
        }
        let raw = self.vars.get(name).ok_or_else(|| RefError::UnknownVar {
            reference: reference.to_string(),
            name: name.to_string(),
        })?;
        chain.push(name.to_string());
        let scope = VarScope {
            run: self,
            chain: chain.clone(),
        };
        let value = resolve_value(raw, &scope)?;
        chain.pop();
        Ok(value)
    }

    /// The Jinja2 context: every visible step by id, `input` when there is exactly one
    /// predecessor, `config`, `vars`, `run` and `item`.
    pub fn template_context(&self, predecessors: &[String]) -> Map<String, Value> {
        let mut ctx = Map::new();
        for (id, output) in &self.steps {
            ctx.insert(id.clone(), output.clone());
        }
        if let [only] = predecessors {
            ctx.insert(
                "input".into(),
                self.steps.get(only).cloned().unwrap_or(Value::Null),
            );
        }
        ctx.insert("config".into(), Value::Object(self.config.resolved_map()));
        let mut vars = Map::new();
        for name in self.vars.keys() {
            let reference = Reference {
                root: "vars".into(),
                path: vec![name.clone()],
            };
            if let Ok(v) = self.var(name, &mut Vec::new(), &reference) {
                vars.insert(name.clone(), v);
            }
        }
        ctx.insert("vars".into(), Value::Object(vars));
        ctx.insert("run".into(), self.run.clone());
        if let Some(item) = &self.item {
            ctx.insert("item".into(), item.clone());
        }
        ctx
    }
}

impl Scope for RunScope {
    fn lookup(&self, reference: &Reference) -> Result<Value, RefError> {
        lookup_in(self, reference, &mut Vec::new())
    }
}

fn lookup_in(
    scope: &RunScope,
    reference: &Reference,
    var_chain: &mut Vec<String>,
) -> Result<Value, RefError> {
    let path = &reference.path;
    match reference.kind() {
        RootKind::Config => {
            let (name, rest) = path.split_first().ok_or_else(|| RefError::Other {
                reference: reference.to_string(),
                message: "name a configuration variable: ${config.NAME}".into(),
            })?;
            let value = scope.config.get(name, &mut Vec::new(), reference)?;
            navigate(reference, &value, rest)
        }
        RootKind::Vars => {
            let (name, rest) = path.split_first().ok_or_else(|| RefError::Other {
                reference: reference.to_string(),
                message: "name an app variable: ${vars.NAME}".into(),
            })?;
            let value = scope.var(name, var_chain, reference)?;
            navigate(reference, &value, rest)
        }
        RootKind::Run => navigate(reference, &scope.run, path),
        RootKind::Item => match &scope.item {
            Some(item) => navigate(reference, item, path),
            None => Err(RefError::NoItem {
                reference: reference.to_string(),
            }),
        },
        RootKind::Step(id) => match scope.steps.get(id) {
            Some(output) => navigate(reference, output, path),
            None => Err(RefError::UnknownStep {
                reference: reference.to_string(),
                step: id.to_string(),
            }),
        },
    }
}

/// Scope inside an app variable's value, carrying the chain of variables being resolved.
struct VarScope<'a> {
    run: &'a RunScope,
    chain: Vec<String>,
}

impl Scope for VarScope<'_> {
    fn lookup(&self, reference: &Reference) -> Result<Value, RefError> {
        lookup_in(self.run, reference, &mut self.chain.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> RunScope {
        let mut config = ConfigValues::default();
        config
            .values
            .insert("inv_host".into(), json!("inventory.acme.test"));
        config.values.insert("inv_port".into(), json!(8443));
        config
            .values
            .insert("cmdb_host".into(), json!("${config.inv_host}"));
        config.values.insert(
            "url".into(),
            json!("https://${config.cmdb_host}:${config.inv_port}/x"),
        );
        config
            .values
            .insert("obj".into(), json!({"a": [1, {"b": "deep"}]}));
        config
            .values
            .insert("loop_a".into(), json!("${config.loop_b}"));
        config
            .values
            .insert("loop_b".into(), json!("x-${config.loop_a}"));
        config
            .values
            .insert("dangling".into(), json!("${config.nowhere}"));
        let mut steps = BTreeMap::new();
        steps.insert(
            "Get".into(),
            json!({"total": 2, "devices": [{"name": "a"}, {"name": "b"}]}),
        );
        steps.insert("Skipped".into(), Value::Null);
        let mut vars = Map::new();
        vars.insert("page_size".into(), json!(100));
        vars.insert("host".into(), json!("${config.inv_host}"));
        vars.insert("self_a".into(), json!("${vars.self_b}"));
        vars.insert("self_b".into(), json!("${vars.self_a}"));
        RunScope {
            config,
            vars,
            run: json!({"id": "isapp-1", "application": "device_sync"}),
            steps,
            item: None,
        }
    }

    fn resolve(text: &str) -> Result<Value, RefError> {
        resolve_str(text, &scope())
    }

    #[test]
    fn whole_reference_keeps_json_type() {
        assert_eq!(resolve("${config.inv_port}").unwrap(), json!(8443));
        assert_eq!(
            resolve("${Get.devices}").unwrap(),
            json!([{"name": "a"}, {"name": "b"}])
        );
        assert_eq!(resolve("${Get.devices.1.name}").unwrap(), json!("b"));
        assert_eq!(resolve("${vars.page_size}").unwrap(), json!(100));
        assert_eq!(resolve("${run.id}").unwrap(), json!("isapp-1"));
    }

    #[test]
    fn interpolation_renders_text_and_compact_json() {
        assert_eq!(
            resolve("https://${config.inv_host}/api?limit=${vars.page_size}").unwrap(),
            json!("https://inventory.acme.test/api?limit=100")
        );
        assert_eq!(
            resolve("o=${config.obj}").unwrap(),
            json!(r#"o={"a":[1,{"b":"deep"}]}"#)
        );
        assert_eq!(resolve("${config.obj.a.1.b}!").unwrap(), json!("deep!"));
    }

    #[test]
    fn escape_and_lone_dollars_are_literal() {
        assert_eq!(
            resolve("$${config.inv_host} costs $5").unwrap(),
            json!("${config.inv_host} costs $5")
        );
        assert_eq!(
            resolve("$$${config.inv_port}").unwrap(),
            json!("$${config.inv_port}")
        );
    }

    #[test]
    fn configuration_references_resolve_recursively() {
        assert_eq!(
            resolve("${config.cmdb_host}").unwrap(),
            json!("inventory.acme.test")
        );
        assert_eq!(
            resolve("${config.url}").unwrap(),
            json!("https://inventory.acme.test:8443/x")
        );
        assert_eq!(
            resolve("${vars.host}").unwrap(),
            json!("inventory.acme.test")
        );
    }

    #[test]
    fn configuration_cycle_names_the_chain() {
        let err = resolve("${config.loop_a}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration reference cycle: loop_a -> loop_b -> loop_a"
        );
    }

    #[test]
    fn missing_configuration_names_the_chain() {
        let err = resolve("${config.dangling}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "${config.nowhere}: unknown configuration variable \"nowhere\" (via dangling -> nowhere)"
        );
    }

    #[test]
    fn var_cycles_are_detected() {
        let err = resolve("${vars.self_a}").unwrap_err();
        assert!(matches!(err, RefError::VarCycle { .. }), "{err}");
    }

    #[test]
    fn missing_paths_and_steps_are_named() {
        let err = resolve("${Get.count}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "${Get.count}: no \"count\" in an object with keys [total, devices]"
        );
        let err = resolve("${Ghost.x}").unwrap_err();
        assert!(err.to_string().contains("step \"Ghost\""), "{err}");
        assert!(matches!(
            resolve("${item}").unwrap_err(),
            RefError::NoItem { .. }
        ));
    }

    #[test]
    fn skipped_output_is_null_all_the_way_down() {
        assert_eq!(resolve("${Skipped.a.b}").unwrap(), Value::Null);
        assert_eq!(resolve("x=${Skipped}").unwrap(), json!("x=null"));
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(matches!(
            parse("${unclosed").unwrap_err(),
            RefError::Syntax(_)
        ));
        assert!(matches!(parse("${9bad}").unwrap_err(), RefError::Syntax(_)));
        assert!(matches!(parse("${a..b}").unwrap_err(), RefError::Syntax(_)));
    }

    #[test]
    fn resolves_nested_values_and_lists_references() {
        let params = json!({"url": "https://${config.inv_host}", "body": ["${Get.total}", {"k": "${vars.page_size}"}]});
        assert_eq!(
            resolve_value(&params, &scope()).unwrap(),
            json!({"url": "https://inventory.acme.test", "body": [2, {"k": 100}]})
        );
        let refs = references_in(&params).unwrap();
        let roots: Vec<&str> = refs.iter().map(|r| r.root.as_str()).collect();
        assert_eq!(roots, ["config", "Get", "vars"]);
    }
}
