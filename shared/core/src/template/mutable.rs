//! Jinja2's mutating idioms, which PowerFlow's own Transform examples use:
//! `{% do rows.append(row) %}`, `{% set _ = summary.update({"new": n}) %}`.
//!
//! minijinja's values are immutable, so the list and dict literals a template writes are
//! wrapped before it compiles (`[…]` becomes `__sluice_list([…])`, `{…}` becomes
//! `__sluice_dict({…})`, found with minijinja's own tokenizer, so string literals and raw
//! text are never touched), and those two functions make objects that the list and dict
//! methods of Python change in place, aliasing as in Python
//! (`{% do groups.setdefault(os, []).append(name) %}` changes the stored list). A container
//! never holds itself: putting one into itself, directly or through other containers, is
//! refused (a cycle would make rendering recurse forever). Dict keys are copied. Values
//! from the context (step outputs, `config`, `vars`) stay immutable;
//! `{% set rows = [] %}{% do rows.extend(input.rows) %}` copies them into a list that can
//! change.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;
use minijinja::machinery::{tokenize, Token, WhitespaceConfig};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Environment, Error, ErrorKind, State};

/// The function a list literal is wrapped in.
const LIST: &str = "__sluice_list";
/// The function a dict literal is wrapped in.
const DICT: &str = "__sluice_dict";

/// Adds the two wrapping functions to `env`.
pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_function(LIST, |items: Value| -> Result<Value, Error> {
        let items = items.try_iter()?.collect::<Vec<_>>();
        Ok(Value::from_object(MutableList(Mutex::new(items))))
    });
    env.add_function(DICT, |pairs: Value| -> Result<Value, Error> {
        let mut map = IndexMap::new();
        for key in pairs.try_iter()? {
            let value = pairs.get_item(&key)?;
            map.insert(freeze(&key), value);
        }
        Ok(Value::from_object(MutableDict(Mutex::new(map))))
    });
}

/// `source` with every list and dict literal wrapped (see the module doc). `in_expr`:
/// the source is a lone expression (a template condition). A source the tokenizer
/// refuses is returned as it is, so that compiling it reports the error.
pub(crate) fn wrap_literals(source: &str, in_expr: bool) -> String {
    let mut insertions: Vec<(usize, &'static str)> = Vec::new();
    // What each open bracket needs when it closes: `)` after a wrapped literal.
    let mut open: Vec<bool> = Vec::new();
    let mut previous: Option<Token> = None;
    // `SyntaxConfig` is a unit struct unless minijinja's `custom_syntax` is on.
    #[allow(clippy::default_constructed_unit_structs)]
    let tokens = tokenize(
        source,
        in_expr,
        SyntaxConfig::default(),
        WhitespaceConfig::default(),
    );
    for token in tokens {
        let Ok((token, span)) = token else {
            return source.to_string();
        };
        let start = span.start_offset as usize;
        let end = span.end_offset as usize;
        match &token {
            Token::BracketOpen => {
                let literal = !previous.as_ref().is_some_and(ends_a_value);
                if literal {
                    insertions.push((start, "__sluice_list("));
                }
                open.push(literal);
            }
            Token::BraceOpen => {
                insertions.push((start, "__sluice_dict("));
                open.push(true);
            }
            Token::ParenOpen => open.push(false),
            Token::BracketClose | Token::BraceClose | Token::ParenClose => {
                let wrapped = open.pop() == Some(true);
                if wrapped {
                    insertions.push((end, ")"));
                }
            }
            Token::VariableEnd | Token::BlockEnd => open.clear(),
            _ => {}
        }
        previous = Some(token);
    }
    if insertions.is_empty() {
        return source.to_string();
    }
    let mut out = String::with_capacity(source.len() + insertions.len() * 16);
    let mut at = 0;
    for (offset, text) in insertions {
        out.push_str(&source[at..offset]);
        out.push_str(text);
        at = offset;
    }
    out.push_str(&source[at..]);
    out
}

/// Whether a `[` after `token` subscripts a value (`rows[0]`, `f(x)[1]`, `"ab"[0]`)
/// rather than opening a list literal.
fn ends_a_value(token: &Token) -> bool {
    match token {
        Token::Ident(name) => !matches!(
            *name,
            "in" | "and"
                | "or"
                | "not"
                | "if"
                | "else"
                | "is"
                | "do"
                | "set"
                | "for"
                | "return"
                | "with"
                | "elif"
                | "print"
        ),
        Token::Str(_)
        | Token::String(_)
        | Token::Int(_)
        | Token::Int128(_)
        | Token::Float(_)
        | Token::BracketClose
        | Token::ParenClose
        | Token::BraceClose => true,
        _ => false,
    }
}

/// `value` admitted into the container at `container`: refused when `value` is that
/// container or holds it through other mutable containers.
fn admit(container: *const (), value: Value) -> Result<Value, Error> {
    if reaches(&value, container, 0)? {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a list or dict cannot contain itself",
        ));
    }
    Ok(value)
}

/// How deeply built lists and dicts may nest (rendering them recurses).
const MAX_NESTING: usize = 500;

/// Whether `value` is, or holds through mutable containers, the container at `target`.
fn reaches(value: &Value, target: *const (), depth: usize) -> Result<bool, Error> {
    let children: Vec<Value> = if let Some(list) = value.downcast_object_ref::<MutableList>() {
        if list.address() == target {
            return Ok(true);
        }
        list.items().clone()
    } else if let Some(dict) = value.downcast_object_ref::<MutableDict>() {
        if dict.address() == target {
            return Ok(true);
        }
        dict.entries().values().cloned().collect()
    } else {
        return Ok(false);
    };
    if depth >= MAX_NESTING {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("lists and dicts may nest at most {MAX_NESTING} levels deep"),
        ));
    }
    for child in &children {
        if reaches(child, target, depth + 1)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `value` with every mutable container replaced by an immutable copy (dict keys, and
/// what a comparison looks for, so that no lock is needed twice).
fn freeze(value: &Value) -> Value {
    if let Some(list) = value.downcast_object_ref::<MutableList>() {
        return Value::from(list.items().iter().map(freeze).collect::<Vec<_>>());
    }
    if let Some(dict) = value.downcast_object_ref::<MutableDict>() {
        return Value::from_iter(dict.entries().iter().map(|(k, v)| (k.clone(), freeze(v))));
    }
    value.clone()
}

fn none() -> Value {
    Value::from(())
}

fn arity(method: &str, args: &[Value], min: usize, max: usize) -> Result<(), Error> {
    if args.len() < min || args.len() > max {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "{method}() takes {min} to {max} arguments, got {}",
                args.len()
            ),
        ));
    }
    Ok(())
}

/// A list a template wrote: `append`, `extend`, `insert`, `pop`, `remove`, `clear`,
/// `reverse`, `sort` change it in place.
struct MutableList(Mutex<Vec<Value>>);

impl MutableList {
    fn items(&self) -> MutexGuard<'_, Vec<Value>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn address(&self) -> *const () {
        self as *const Self as *const ()
    }
}

impl fmt::Debug for MutableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items().iter()).finish()
    }
}

impl Object for MutableList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = self.items();
        let index = i64::try_from(key.clone()).ok()?;
        let index = if index < 0 {
            index + items.len() as i64
        } else {
            index
        };
        items.get(usize::try_from(index).ok()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.items().clone())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.items().len())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        // Arguments are checked before the list is locked: an argument may be this list.
        match method {
            "append" => {
                arity(method, args, 1, 1)?;
                let item = admit(self.address(), args[0].clone())?;
                self.items().push(item);
                Ok(none())
            }
            "extend" => {
                arity(method, args, 1, 1)?;
                let mut added = Vec::new();
                for item in args[0].try_iter()? {
                    added.push(admit(self.address(), item)?);
                }
                self.items().extend(added);
                Ok(none())
            }
            "insert" => {
                arity(method, args, 2, 2)?;
                let index = i64::try_from(args[0].clone())?;
                let item = admit(self.address(), args[1].clone())?;
                let mut items = self.items();
                let len = items.len() as i64;
                let index = if index < 0 {
                    (index + len).max(0)
                } else {
                    index.min(len)
                };
                items.insert(index as usize, item);
                Ok(none())
            }
            "pop" => {
                arity(method, args, 0, 1)?;
                let index = match args.first() {
                    Some(i) => i64::try_from(i.clone())?,
                    None => -1,
                };
                let mut items = self.items();
                let len = items.len() as i64;
                let index = if index < 0 { index + len } else { index };
                if index < 0 || index >= len {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "pop index out of range",
                    ));
                }
                Ok(items.remove(index as usize))
            }
            "remove" => {
                arity(method, args, 1, 1)?;
                let target = freeze(&args[0]);
                let mut items = self.items();
                let Some(at) = items.iter().position(|v| v == &target) else {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "list.remove(x): x not in list",
                    ));
                };
                items.remove(at);
                Ok(none())
            }
            "clear" => {
                arity(method, args, 0, 0)?;
                self.items().clear();
                Ok(none())
            }
            "reverse" => {
                arity(method, args, 0, 0)?;
                self.items().reverse();
                Ok(none())
            }
            "sort" => {
                arity(method, args, 0, 0)?;
                self.items().sort();
                Ok(none())
            }
            "copy" => {
                arity(method, args, 0, 0)?;
                let items = self.items().clone();
                Ok(Value::from_object(MutableList(Mutex::new(items))))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// A dict a template wrote: `update`, `setdefault`, `pop`, `clear` change it in place;
/// `items()`, `keys()`, `values()`, `get()` read it as for any mapping.
struct MutableDict(Mutex<IndexMap<Value, Value>>);

impl MutableDict {
    fn entries(&self) -> MutexGuard<'_, IndexMap<Value, Value>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn address(&self) -> *const () {
        self as *const Self as *const ()
    }
}

impl fmt::Debug for MutableDict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries().iter()).finish()
    }
}

impl Object for MutableDict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = freeze(key);
        self.entries().get(&key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.entries().keys().cloned().collect())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.entries().len())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "update" => {
                arity(method, args, 1, 1)?;
                let other = &args[0];
                // Read the other mapping before locking: it may be this very dict.
                let mut pairs = Vec::new();
                for key in other.try_iter()? {
                    let value = other.get_item(&key)?;
                    pairs.push((freeze(&key), admit(self.address(), value)?));
                }
                let mut entries = self.entries();
                for (key, value) in pairs {
                    entries.insert(key, value);
                }
                Ok(none())
            }
            "setdefault" => {
                arity(method, args, 1, 2)?;
                let key = freeze(&args[0]);
                let default = match args.get(1) {
                    Some(default) => admit(self.address(), default.clone())?,
                    None => none(),
                };
                Ok(self.entries().entry(key).or_insert(default).clone())
            }
            "pop" => {
                arity(method, args, 1, 2)?;
                let key = freeze(&args[0]);
                let removed = self.entries().shift_remove(&key);
                match removed {
                    Some(value) => Ok(value),
                    None => args.get(1).cloned().ok_or_else(|| {
                        Error::new(ErrorKind::InvalidOperation, "dict.pop(k): k not in dict")
                    }),
                }
            }
            "clear" => {
                arity(method, args, 0, 0)?;
                self.entries().clear();
                Ok(none())
            }
            "copy" => {
                arity(method, args, 0, 0)?;
                Ok(Value::from_object(MutableDict(Mutex::new(
                    self.entries().clone(),
                ))))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}
