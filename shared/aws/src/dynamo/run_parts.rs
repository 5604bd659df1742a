//! How a run is kept in the runs table so that what a transition reads and writes does
//! not grow with the run.
//!
//! The `RUN` item holds the run's own fields, its steps when it has at most
//! [`STEPS_INLINE_MAX`] of them, and a *manifest*: where each *part* of the run kept
//! apart is stored. A part is a group of [`STEPS_PER_PART`] step records (`s<k>`, for a
//! run of more steps) or a group of [`UNITS_PER_PART`] units of a fan-out wider than
//! [`UNITS_INLINE`] (`u<step>.<group>`); a narrower fan-out keeps its units in its step
//! record. A run of up to 24 steps and small fan-outs is thus one item, exactly as before
//! parts existed (and a `RUN` item written before is read as it is). A step part is
//! stored apart only while it is *settled* (none of its steps under way: all ended, or
//! none started); one with a step under way rides in the `RUN` item, in its place among
//! the steps. Each `RUN` item says what it holds (its manifest and inline steps), so
//! writers need not agree on a layout: each stores the one its run's state gives.
//!
//! The manifest would grow by one entry per unit part (157 for 10,000 units, 2 KiB of
//! `RUN` item, 3 write units a transition), so the entries of each [`GROUPS_PER_INDEX`]
//! unit parts none of whose units is under way (all ended, or none started) are folded
//! into an *index* part (`i<step>.<block>`) holding them; the manifest names the index
//! instead ([`fold`]). A wide run's manifest thus holds one entry per 1,024 units plus the
//! unit parts of the blocks under way. A transition that touches a folded block's unit
//! expands the index (a cached read) and folds the block again once it is quiet: one
//! index write per block each time the run moves through it.
//!
//! What it costs: a transition of a one-item run writes one item, whose size grows with
//! the run (a write unit per started KiB; 24 finished steps deflate to about 600 B); a
//! transition of a larger run writes its `RUN` item (the header, the manifest and the
//! step parts under way: one unit for a `for_each` over 10,000 items), plus a step part
//! each time one settles (once per [`STEPS_PER_PART`] steps of a chain), the unit part a
//! fan-out's unit transition changed (one or two units), and an index part once per
//! 1,024 units.
//!
//! Parts are immutable. A transition writes each part it changed under a fresh sort key,
//! `PART#<name>#<nonce>`, then compare-and-swaps the `RUN` item with the new
//! manifest; a writer that loses the swap leaves parts nobody references. Superseded and
//! orphaned parts stay until the run expires, when TTL deletes them free of charge
//! (deleting each at once would cost a write unit apiece). Since no part ever changes
//! under its key, any process may keep the parts it read or wrote ([`PartCache`]): a
//! transition reads the `RUN` item and only the parts other processes wrote since.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue as A, PutRequest, WriteRequest};
use serde::{Deserialize, Serialize};
use sluice_core::engine::RunDelta;
use sluice_core::model::{Run, StepRun, StepState, Unit, UnitState};
use sluice_core::ports::StoreError;

use super::{expiry_attributes, get_s, DynamoStore};
use crate::error::{backend, sdk};

/// Most steps a run may have to keep them in its `RUN` item (more go to step parts, all
/// of them: finished steps would otherwise make every write of the header dearer). 24
/// finished steps deflate to about 600 bytes, so the item stays one write unit; at 40
/// (the first bound) a 31-step chain's last writes crossed 1 KiB, and it cost 2.23 to
/// 2.27 write units per step, where a run in parts costs 2.13.
pub(crate) const STEPS_INLINE_MAX: usize = 24;
/// Step records per step part (about 1 KiB deflated once finished).
pub(crate) const STEPS_PER_PART: usize = 16;
/// The widest fan-out whose units ride in its step record.
pub(crate) const UNITS_INLINE: usize = 16;
/// Units per unit part (a part of small units is one or two write units once deflated).
pub(crate) const UNITS_PER_PART: usize = 64;
/// Unit parts one index part stands for in the manifest (1,024 units).
pub(crate) const GROUPS_PER_INDEX: usize = 16;

const PART_SK_PREFIX: &str = "PART#";
/// Most step records and units the [`PartCache`] of one process holds (about 300 bytes
/// each): the parts of a few 10,000-unit fan-outs.
const PART_CACHE_ENTRIES: usize = 60_000;
/// Most runs whose manifest the [`PartCache`] remembers.
const MANIFEST_CACHE_RUNS: usize = 4096;

/// A part of a run apart from its `RUN` item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PartName {
    /// Step records from `k * STEPS_PER_PART`.
    Steps(usize),
    /// Units from `group * UNITS_PER_PART` of step `step`.
    Units { step: usize, group: usize },
    /// The manifest entries of unit parts `block * GROUPS_PER_INDEX` onwards of step
    /// `step`, while none of their units is under way (see [`fold`]).
    Index { step: usize, block: usize },
}

impl PartName {
    /// Zero-padded, so that names sort as the parts do.
    pub(crate) fn encode(self) -> String {
        match self {
            Self::Steps(k) => format!("s{k:05}"),
            Self::Units { step, group } => format!("u{step:05}.{group:05}"),
            Self::Index { step, block } => format!("i{step:05}.{block:05}"),
        }
    }

    fn decode(text: &str) -> Option<Self> {
        if let Some(k) = text.strip_prefix('s') {
            return k.parse().ok().map(Self::Steps);
        }
        if let Some(rest) = text.strip_prefix('i') {
            let (step, block) = rest.split_once('.')?;
            return Some(Self::Index {
                step: step.parse().ok()?,
                block: block.parse().ok()?,
            });
        }
        let (step, group) = text.strip_prefix('u')?.split_once('.')?;
        Some(Self::Units {
            step: step.parse().ok()?,
            group: group.parse().ok()?,
        })
    }
}

/// The manifest: part name (encoded) → the key suffix it is stored under.
pub(crate) type Manifest = BTreeMap<String, String>;

/// The document of a `RUN` item: the run with its inline steps only, and the manifest
/// of the rest (empty, and absent from the JSON, for a run that is one item).
#[derive(Serialize, Deserialize)]
pub(crate) struct RunDoc {
    #[serde(flatten)]
    pub(crate) run: Run,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) parts: Manifest,
}

/// What a part holds.
#[derive(Debug)]
pub(crate) enum PartValue {
    Steps(Vec<StepRun>),
    Units(Vec<Unit>),
    Index(Manifest),
}

impl PartValue {
    fn len(&self) -> usize {
        match self {
            Self::Steps(steps) => steps.len(),
            Self::Units(units) => units.len(),
            Self::Index(entries) => entries.len(),
        }
    }
}

/// Whether a step's units are parts of their own rather than riding in its record.
fn units_apart(step: &StepRun) -> bool {
    step.fan_out.is_some_and(|n| n as usize > UNITS_INLINE)
}

/// Whether a run of `steps` steps keeps them in step parts rather than its `RUN` item.
fn steps_apart(steps: usize) -> bool {
    steps > STEPS_INLINE_MAX
}

/// The steps of step part `k` of `run`.
fn part_steps(run: &Run, k: usize) -> &[StepRun] {
    let end = ((k + 1) * STEPS_PER_PART).min(run.steps.len());
    let start = (k * STEPS_PER_PART).min(end);
    &run.steps[start..end]
}

/// Whether step part `k` of a run with steps apart is stored apart now: when none of
/// its steps is under way (all of them ended, or none started), so that it changes
/// seldom. A part with a step under way rides in the `RUN` item, which the transitions
/// of that step rewrite anyway: a chain's step costs the `RUN` item's writes, plus one
/// part write per [`STEPS_PER_PART`] steps once they all ended.
fn settled(run: &Run, k: usize) -> bool {
    let steps = part_steps(run, k);
    steps.iter().all(|s| s.state.is_terminal())
        || steps.iter().all(|s| s.state == StepState::Pending)
}

/// The part holding step `i`'s record in `run`, `None` when it is in the `RUN` item.
fn step_part(run: &Run, i: usize) -> Option<PartName> {
    let k = i / STEPS_PER_PART;
    (steps_apart(run.steps.len()) && settled(run, k)).then_some(PartName::Steps(k))
}

/// A step as its record keeps it: without its units when they are parts of their own.
fn stored_step(step: &StepRun) -> StepRun {
    if units_apart(step) {
        step.record()
    } else {
        step.clone()
    }
}

/// Every part `run` consists of.
pub(crate) fn all_parts(run: &Run) -> BTreeSet<PartName> {
    let mut parts: BTreeSet<PartName> = (0..run.steps.len())
        .step_by(STEPS_PER_PART)
        .filter_map(|i| step_part(run, i))
        .collect();
    for (i, step) in run.steps.iter().enumerate() {
        if units_apart(step) {
            for group in 0..step.units.len().div_ceil(UNITS_PER_PART) {
                parts.insert(PartName::Units { step: i, group });
            }
        }
    }
    parts
}

/// The unit parts of step `step` that index part `block` stands for.
fn index_groups(run: &Run, step: usize, block: usize) -> std::ops::Range<usize> {
    let groups = run.steps[step].units.len().div_ceil(UNITS_PER_PART);
    let start = (block * GROUPS_PER_INDEX).min(groups);
    start..((block + 1) * GROUPS_PER_INDEX).min(groups)
}

/// Whether none of the units of `groups` of step `step` is under way, so that none of
/// those parts will change until the run moves on to them (or retries them).
fn quiet(run: &Run, step: usize, groups: &std::ops::Range<usize>) -> bool {
    let units = &run.steps[step].units;
    let end = (groups.end * UNITS_PER_PART).min(units.len());
    let start = (groups.start * UNITS_PER_PART).min(end);
    units[start..end]
        .iter()
        .all(|u| !matches!(u.state, UnitState::Queued | UnitState::Running))
}

/// The `RUN` item's manifest for a run whose parts are all named in `direct`: the
/// entries of each [`GROUPS_PER_INDEX`] unit parts none of whose units is under way
/// (all ended, say, or none started) are replaced by one index part's. A wide run's
/// `RUN` item then holds about one entry per 1,024 units plus the entries of the
/// blocks under way, rather than one per 64 units, so its size (and the write units of
/// every transition) stops growing with the fan-out. An index already in `previous`
/// with the same entries is kept; the new ones are entered under `suffix` and returned,
/// to be written.
pub(crate) fn fold(
    run: &Run,
    mut direct: Manifest,
    previous: &BTreeMap<String, (String, Manifest)>,
    suffix: &str,
) -> (Manifest, Vec<(PartName, Manifest)>) {
    let mut new_indexes = Vec::new();
    for (step, record) in run.steps.iter().enumerate() {
        if !units_apart(record) {
            continue;
        }
        let blocks = record
            .units
            .len()
            .div_ceil(UNITS_PER_PART)
            .div_ceil(GROUPS_PER_INDEX);
        for block in 0..blocks {
            let groups = index_groups(run, step, block);
            if groups.len() < 2 || !quiet(run, step, &groups) {
                continue;
            }
            let names: Vec<String> = groups
                .map(|group| PartName::Units { step, group }.encode())
                .collect();
            let entries: Option<Manifest> = names
                .iter()
                .map(|name| {
                    direct
                        .get(name)
                        .map(|suffix| (name.clone(), suffix.clone()))
                })
                .collect();
            let Some(entries) = entries else { continue };
            for name in &names {
                direct.remove(name);
            }
            let index = PartName::Index { step, block };
            let encoded = index.encode();
            match previous.get(&encoded) {
                Some((kept_suffix, kept)) if *kept == entries => {
                    direct.insert(encoded, kept_suffix.clone());
                }
                _ => {
                    direct.insert(encoded, suffix.to_string());
                    new_indexes.push((index, entries));
                }
            }
        }
    }
    (direct, new_indexes)
}

/// The parts a transition that changed what `delta` names must rewrite (besides the
/// `RUN` item, which every transition rewrites).
pub(crate) fn touched_parts(run: &Run, delta: &RunDelta) -> BTreeSet<PartName> {
    let mut parts: BTreeSet<PartName> = delta
        .steps
        .iter()
        .filter_map(|&i| step_part(run, i))
        .collect();
    for &(i, u) in &delta.units {
        match run.steps.get(i) {
            Some(step) if units_apart(step) => {
                parts.insert(PartName::Units {
                    step: i,
                    group: u / UNITS_PER_PART,
                });
            }
            Some(_) => parts.extend(step_part(run, i)),
            None => {}
        }
    }
    parts
}

/// The content of part `name` of `run`. Index parts are never asked for: their entries
/// come from the manifest, and [`fold`] returns them with their names.
fn part_value(run: &Run, name: PartName) -> PartValue {
    match name {
        PartName::Index { .. } => PartValue::Index(Manifest::new()),
        PartName::Steps(k) => {
            PartValue::Steps(part_steps(run, k).iter().map(stored_step).collect())
        }
        PartName::Units { step, group } => {
            let units = &run.steps[step].units;
            let start = (group * UNITS_PER_PART).min(units.len());
            let end = (start + UNITS_PER_PART).min(units.len());
            PartValue::Units(units[start..end].to_vec())
        }
    }
}

/// The `RUN` item's document for `run` with `parts` as its manifest.
pub(crate) fn run_doc(run: &Run, parts: Manifest) -> RunDoc {
    let mut header = run.header();
    header.steps = run
        .steps
        .iter()
        .enumerate()
        .filter(|&(i, _)| step_part(run, i).is_none())
        .map(|(_, step)| stored_step(step))
        .collect();
    RunDoc { run: header, parts }
}

/// The whole run from its `RUN` document and every part its manifest names.
pub(crate) fn assemble(
    doc: RunDoc,
    parts: &BTreeMap<PartName, Arc<PartValue>>,
) -> Result<Run, StoreError> {
    let mut run = doc.run;
    let id = run.id.clone();
    let corrupt = |what: String| backend(format!("run {id}: {what}"));
    // The `RUN` item holds the step parts not stored apart, in order; each but the last
    // has `STEPS_PER_PART` steps.
    let mut inline = std::mem::take(&mut run.steps).into_iter().peekable();
    let mut step_parts: BTreeMap<usize, &PartValue> = BTreeMap::new();
    let mut unit_groups: BTreeMap<usize, Vec<Unit>> = BTreeMap::new();
    for (name, value) in parts {
        if let (PartName::Steps(k), value) = (name, value.as_ref()) {
            step_parts.insert(*k, value);
        }
    }
    let mut k = 0;
    while inline.peek().is_some() || step_parts.range(k..).next().is_some() {
        match step_parts.get(&k) {
            Some(PartValue::Steps(steps)) => run.steps.extend(steps.iter().cloned()),
            Some(PartValue::Units(_) | PartValue::Index(_)) => {
                return Err(corrupt(format!(
                    "part {} does not fit",
                    PartName::Steps(k).encode()
                )))
            }
            None if inline.peek().is_none() => {
                return Err(corrupt(format!("step part {k} is missing")));
            }
            None => run.steps.extend(inline.by_ref().take(STEPS_PER_PART)),
        }
        k += 1;
    }
    // Names sort steps parts first (in order), then unit groups by step and group.
    for (name, value) in parts {
        match (name, value.as_ref()) {
            (PartName::Steps(_), _) => {}
            (PartName::Units { step, group }, PartValue::Units(units)) => {
                let all = unit_groups.entry(*step).or_default();
                if all.len() != group * UNITS_PER_PART {
                    return Err(corrupt(format!("unit part {} out of order", name.encode())));
                }
                all.extend(units.iter().cloned());
            }
            _ => return Err(corrupt(format!("part {} does not fit", name.encode()))),
        }
    }
    for (i, units) in unit_groups {
        let step = run
            .steps
            .get_mut(i)
            .ok_or_else(|| corrupt(format!("a unit part names step {i}, which is not there")))?;
        if step.fan_out.map(|n| n as usize) != Some(units.len()) {
            return Err(corrupt(format!(
                "step {} has {} stored units for a fan-out of {:?}",
                step.id,
                units.len(),
                step.fan_out
            )));
        }
        step.set_units(units);
    }
    Ok(run)
}

fn part_sk(name: &str, suffix: &str) -> String {
    format!("{PART_SK_PREFIX}{name}#{suffix}")
}

/// A fresh suffix for the parts one write stores: 40 random bits, so two writers racing
/// for the same version never store under one key (and the manifest, which holds one
/// suffix per part or index, stays small).
fn fresh_suffix() -> String {
    // The tail of a v7 uuid is random (its head is the time).
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    nonce[20..30].to_string()
}

/// The parts (immutable, so never stale) and manifests this process last read or wrote,
/// bounded: the parts used least recently go first. Every read of a run touches each
/// part its manifest names, so a long run's current parts stay while the versions they
/// superseded, never read again, age out.
#[derive(Default)]
pub(crate) struct PartCache {
    inner: Mutex<CacheInner>,
}

struct CacheInner {
    parts: lru::LruCache<String, Arc<PartValue>>,
    /// Step records and units in `parts`.
    entries: usize,
    manifests: HashMap<String, (u64, Manifest)>,
}

impl Default for CacheInner {
    fn default() -> Self {
        Self {
            parts: lru::LruCache::unbounded(),
            entries: 0,
            manifests: HashMap::new(),
        }
    }
}

fn weight(value: &PartValue) -> usize {
    value.len().max(1)
}

impl PartCache {
    fn key(run_id: &str, sk: &str) -> String {
        format!("{run_id}/{sk}")
    }

    fn get(&self, run_id: &str, sk: &str) -> Option<Arc<PartValue>> {
        let mut inner = self.inner.lock().expect("part cache lock");
        inner.parts.get(&Self::key(run_id, sk)).cloned()
    }

    fn put(&self, run_id: &str, sk: &str, value: Arc<PartValue>) {
        let mut inner = self.inner.lock().expect("part cache lock");
        inner.entries += weight(&value);
        if let Some(old) = inner.parts.put(Self::key(run_id, sk), value) {
            inner.entries -= weight(&old);
        }
        while inner.entries > PART_CACHE_ENTRIES {
            let Some((_, old)) = inner.parts.pop_lru() else {
                break;
            };
            inner.entries -= weight(&old);
        }
    }

    /// The manifest of `run_id` at `version`, if this process knows it.
    fn manifest(&self, run_id: &str, version: u64) -> Option<Manifest> {
        let inner = self.inner.lock().expect("part cache lock");
        inner
            .manifests
            .get(run_id)
            .filter(|(v, _)| *v == version)
            .map(|(_, m)| m.clone())
    }

    fn remember_manifest(&self, run_id: &str, version: u64, manifest: &Manifest) {
        let mut inner = self.inner.lock().expect("part cache lock");
        if inner.manifests.len() >= MANIFEST_CACHE_RUNS && !inner.manifests.contains_key(run_id) {
            // Manifests are small and cheap to read again: forgetting them all at once
            // keeps the bound without bookkeeping.
            inner.manifests.clear();
        }
        inner
            .manifests
            .insert(run_id.to_string(), (version, manifest.clone()));
    }
}

impl DynamoStore {
    /// The whole run a live `RUN` item describes: its parts come from this process's
    /// cache, the others from one strongly consistent `BatchGetItem` per 100.
    pub(crate) async fn run_from_item(&self, item: &HashMap<String, A>) -> Result<Run, StoreError> {
        let doc: RunDoc = self.read_document(item).await?;
        let id = doc.run.id.clone();
        self.parts
            .remember_manifest(&id, doc.run.version, &doc.parts);
        if doc.parts.is_empty() {
            return Ok(doc.run);
        }
        let (direct, _) = self.expand(&id, &doc.parts).await?;
        let found = self.fetch_parts(&id, &direct).await?;
        if found.len() != direct.len() {
            return Err(backend(format!(
                "run {id}: {} of its {} parts are missing",
                direct.len() - found.len(),
                direct.len()
            )));
        }
        assemble(doc, &found)
    }

    /// The parts `manifest` names, from this process's cache or the table (those
    /// missing from both are left out).
    async fn fetch_parts(
        &self,
        id: &str,
        manifest: &Manifest,
    ) -> Result<BTreeMap<PartName, Arc<PartValue>>, StoreError> {
        let mut found = BTreeMap::new();
        let mut missing: HashMap<String, PartName> = HashMap::new();
        for (name, suffix) in manifest {
            let part = PartName::decode(name)
                .ok_or_else(|| backend(format!("run {id}: unknown part name {name:?}")))?;
            let sk = part_sk(name, suffix);
            match self.parts.get(id, &sk) {
                Some(value) => {
                    found.insert(part, value);
                }
                None => {
                    missing.insert(sk, part);
                }
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let keys = missing.keys().map(|sk| Self::run_key(id, sk)).collect();
        for part_item in self.batch_get_run_items(keys).await? {
            let Some(sk) = get_s(&part_item, "sk") else {
                continue;
            };
            let Some(&part) = missing.get(sk) else {
                continue;
            };
            let value = Arc::new(match part {
                PartName::Steps(_) => PartValue::Steps(self.read_document(&part_item).await?),
                PartName::Units { .. } => PartValue::Units(self.read_document(&part_item).await?),
                PartName::Index { .. } => PartValue::Index(self.read_document(&part_item).await?),
            });
            self.parts.put(id, sk, value.clone());
            found.insert(part, value);
        }
        Ok(found)
    }

    /// `compact` (a `RUN` item's manifest) with each index entry replaced by the
    /// entries it stands for; and those indexes (name → suffix and entries).
    pub(crate) async fn expand(
        &self,
        id: &str,
        compact: &Manifest,
    ) -> Result<(Manifest, BTreeMap<String, (String, Manifest)>), StoreError> {
        let (index_entries, mut direct): (Manifest, Manifest) = compact
            .clone()
            .into_iter()
            .partition(|(name, _)| matches!(PartName::decode(name), Some(PartName::Index { .. })));
        if index_entries.is_empty() {
            return Ok((direct, BTreeMap::new()));
        }
        let values = self.fetch_parts(id, &index_entries).await?;
        let mut indexes = BTreeMap::new();
        for (name, suffix) in index_entries {
            let entries = match PartName::decode(&name).and_then(|part| values.get(&part)) {
                Some(value) => match value.as_ref() {
                    PartValue::Index(entries) => entries.clone(),
                    _ => return Err(backend(format!("run {id}: part {name} is no index"))),
                },
                None => return Err(backend(format!("run {id}: index part {name} is missing"))),
            };
            direct.extend(entries.clone());
            indexes.insert(name, (suffix, entries));
        }
        Ok((direct, indexes))
    }

    /// The manifest of the stored `RUN` item at `version`: this process's copy, or the
    /// item's. `Conflict` when the stored run is at another version (or gone).
    pub(crate) async fn manifest_at(
        &self,
        run_id: &str,
        version: u64,
    ) -> Result<Manifest, StoreError> {
        if let Some(manifest) = self.parts.manifest(run_id, version) {
            return Ok(manifest);
        }
        let item = self
            .get_item(
                &self.settings.runs_table,
                Self::run_key(run_id, super::RUN_SK),
            )
            .await?
            .filter(|item| super::live(item, self.now_ms()))
            .ok_or(StoreError::Conflict)?;
        let doc: RunDoc = self.read_document(&item).await?;
        if doc.run.version != version {
            return Err(StoreError::Conflict);
        }
        Ok(doc.parts)
    }

    /// Writes parts `names` of `run` under one fresh suffix and enters them in
    /// `direct` (the manifest of every part, expanded), then folds it ([`fold`], against
    /// the index parts the stored `RUN` item had, `previous`), writing the new index
    /// parts with the others. Returns the `RUN` item's manifest and what to cache once
    /// the `RUN` item that references them is stored.
    pub(crate) async fn write_parts(
        &self,
        run: &Run,
        names: &BTreeSet<PartName>,
        mut direct: Manifest,
        previous: &BTreeMap<String, (String, Manifest)>,
    ) -> Result<(Manifest, Vec<(String, Arc<PartValue>)>), StoreError> {
        let suffix = fresh_suffix();
        let mut values: Vec<(PartName, PartValue)> = names
            .iter()
            .map(|&name| (name, part_value(run, name)))
            .collect();
        for (name, _) in &values {
            direct.insert(name.encode(), suffix.clone());
        }
        let (manifest, new_indexes) = fold(run, direct, previous, &suffix);
        values.extend(
            new_indexes
                .into_iter()
                .map(|(name, entries)| (name, PartValue::Index(entries))),
        );
        if values.is_empty() {
            return Ok((manifest, Vec::new()));
        }
        let mut items = Vec::with_capacity(values.len());
        let mut written = Vec::with_capacity(values.len());
        for (name, value) in values {
            let encoded = name.encode();
            let sk = part_sk(&encoded, &suffix);
            let mut item = Self::run_key(&run.id, &sk);
            expiry_attributes(&mut item, run.expires_at);
            let s3_key = || format!("runs/{}/parts/{encoded}", run.id);
            match &value {
                PartValue::Steps(steps) => self.put_document(&mut item, s3_key, steps).await?,
                PartValue::Units(units) => self.put_document(&mut item, s3_key, units).await?,
                PartValue::Index(entries) => self.put_document(&mut item, s3_key, entries).await?,
            }
            items.push(item);
            written.push((sk, Arc::new(value)));
        }
        if let [item] = items.as_slice() {
            self.db
                .put_item()
                .table_name(&self.settings.runs_table)
                .set_item(Some(item.clone()))
                .send()
                .await
                .map_err(|e| sdk("dynamodb PutItem", e))?;
            return Ok((manifest, written));
        }
        for chunk in items.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|put| WriteRequest::builder().put_request(put).build())
                        .map_err(|e| backend(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            loop {
                let out = self
                    .db
                    .batch_write_item()
                    .request_items(&self.settings.runs_table, requests)
                    .send()
                    .await
                    .map_err(|e| sdk("dynamodb BatchWriteItem", e))?;
                match out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.settings.runs_table))
                    .filter(|rest| !rest.is_empty())
                {
                    Some(rest) => {
                        requests = rest;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    None => break,
                }
            }
        }
        Ok((manifest, written))
    }

    /// Remembers what a stored `RUN` item at `version` references.
    pub(crate) fn remember_written(
        &self,
        run_id: &str,
        version: u64,
        manifest: &Manifest,
        written: Vec<(String, Arc<PartValue>)>,
    ) {
        for (sk, value) in written {
            self.parts.put(run_id, &sk, value);
        }
        self.parts.remember_manifest(run_id, version, manifest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use sluice_core::model::{RunState, UnitState};

    fn run_of(steps: usize, fan_out_at: Option<(usize, usize)>) -> Run {
        let now = Utc::now();
        let mut run = Run {
            id: "isapp-1".into(),
            application: "a".into(),
            configuration: None,
            queue: None,
            loglevel: 20,
            params: Default::default(),
            state: RunState::Running,
            created_at: now,
            started_at: None,
            finished_at: None,
            parent: None,
            replay_of: None,
            alert_of: None,
            expires_at: now,
            steps: (0..steps).map(|i| StepRun::new(&format!("S{i}"))).collect(),
            version: 3,
            application_version: None,
        };
        if let Some((i, n)) = fan_out_at {
            run.steps[i].fan_out = Some(n as u32);
            let units = (0..n)
                .map(|k| Unit {
                    attempt: k as u32,
                    state: UnitState::Queued,
                    ..Unit::pending()
                })
                .collect();
            run.steps[i].set_units(units);
        }
        run
    }

    fn round_trip(run: &Run) -> Run {
        let parts: BTreeMap<PartName, Arc<PartValue>> = all_parts(run)
            .into_iter()
            .map(|name| (name, Arc::new(part_value(run, name))))
            .collect();
        let manifest = parts.keys().map(|n| (n.encode(), "x".into())).collect();
        let doc = run_doc(run, manifest);
        // Through JSON, as stored.
        let doc: RunDoc = serde_json::from_slice(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assemble(doc, &parts).unwrap()
    }

    #[test]
    fn a_small_run_is_one_item() {
        let run = run_of(STEPS_INLINE_MAX, Some((3, UNITS_INLINE)));
        assert!(all_parts(&run).is_empty());
        let doc = serde_json::to_value(run_doc(&run, Manifest::new())).unwrap();
        assert!(doc.get("parts").is_none(), "same JSON as before parts");
        assert_eq!(round_trip(&run), run);
    }

    #[test]
    fn a_large_run_splits_into_parts_and_assembles_again() {
        let run = run_of(1000, Some((40, 10_000)));
        let parts = all_parts(&run);
        let step_parts = 1000usize.div_ceil(STEPS_PER_PART);
        assert_eq!(
            parts.len(),
            step_parts + 10_000usize.div_ceil(UNITS_PER_PART)
        );
        assert_eq!(round_trip(&run), run);
        let header = run_doc(&run, Manifest::new());
        assert!(header.run.steps.is_empty());
    }

    #[test]
    fn a_step_part_under_way_rides_in_the_run_item_in_its_place() {
        let mut run = run_of(100, None);
        // Part 0 ended, part 1 under way, parts 2 to 6 not started.
        for step in &mut run.steps[..STEPS_PER_PART] {
            step.state = StepState::Success;
        }
        for step in &mut run.steps[STEPS_PER_PART..STEPS_PER_PART + 3] {
            step.state = StepState::Success;
        }
        run.steps[STEPS_PER_PART + 3].state = StepState::Running;
        let parts = all_parts(&run);
        assert!(parts.contains(&PartName::Steps(0)));
        assert!(!parts.contains(&PartName::Steps(1)));
        assert_eq!(parts.len(), 100usize.div_ceil(STEPS_PER_PART) - 1);
        let header = run_doc(&run, Manifest::new());
        assert_eq!(header.run.steps.len(), STEPS_PER_PART);
        assert_eq!(header.run.steps[3].state, StepState::Running);
        assert_eq!(round_trip(&run), run);

        // The last, shorter part under way.
        let mut run = run_of(100, None);
        run.steps[99].state = StepState::Queued;
        assert_eq!(
            run_doc(&run, Manifest::new()).run.steps.len(),
            100 % STEPS_PER_PART
        );
        assert_eq!(round_trip(&run), run);
    }

    #[test]
    fn a_transition_touches_the_parts_of_what_it_changed() {
        let run = run_of(100, Some((1, 1000)));
        let delta = RunDelta {
            header: true,
            steps: BTreeSet::from([1, 33, 99]),
            units: BTreeSet::from([(1, 0), (1, 63), (1, 64), (2, 0), (70, 0)]),
        };
        let touched: Vec<String> = touched_parts(&run, &delta)
            .into_iter()
            .map(PartName::encode)
            .collect();
        assert_eq!(
            touched,
            [
                "s00000",
                "s00002",
                "s00004",
                "s00006",
                "u00001.00000",
                "u00001.00001"
            ]
        );
    }

    /// A long run's parts in use stay cached while the many versions they superseded
    /// go, as each read touches every part the manifest names.
    #[test]
    fn the_part_cache_keeps_the_parts_in_use() {
        let cache = PartCache::default();
        let part = |n: usize| Arc::new(PartValue::Units(vec![Unit::pending(); n]));
        cache.put("run", "PART#u00000.00000#current", part(UNITS_PER_PART));
        for version in 0..PART_CACHE_ENTRIES {
            cache.put(
                "run",
                &format!("PART#u00000.00001#{version}"),
                part(UNITS_PER_PART),
            );
            if version % 100 == 0 {
                assert!(cache.get("run", "PART#u00000.00000#current").is_some());
            }
        }
        assert!(cache.get("run", "PART#u00000.00000#current").is_some());
        assert!(cache.get("run", "PART#u00000.00001#0").is_none());
        let inner = cache.inner.lock().unwrap();
        assert!(inner.entries <= PART_CACHE_ENTRIES);
        let held: usize = inner.parts.iter().map(|(_, v)| weight(v)).sum();
        assert_eq!(inner.entries, held, "the weight is kept exactly");
    }

    #[test]
    fn part_names_round_trip_and_sort_as_parts() {
        for name in [
            PartName::Steps(1),
            PartName::Steps(31),
            PartName::Units { step: 0, group: 0 },
            PartName::Units {
                step: 4,
                group: 156,
            },
            PartName::Index { step: 4, block: 9 },
        ] {
            assert_eq!(PartName::decode(&name.encode()), Some(name));
        }
        assert_eq!(PartName::decode("s"), None);
        assert_eq!(PartName::decode("x1"), None);
        assert!(PartName::Steps(2).encode() < PartName::Steps(10).encode());
    }

    fn direct_manifest(run: &Run, suffix: &str) -> Manifest {
        all_parts(run)
            .into_iter()
            .map(|name| (name.encode(), suffix.to_string()))
            .collect()
    }

    /// A wide run's `RUN` item names an index part per 1,024 units at rest and the unit
    /// parts of the blocks under way, so its manifest stays small however wide the run.
    #[test]
    fn quiet_unit_parts_fold_into_index_parts() {
        let items: usize = 10_000;
        let groups = items.div_ceil(UNITS_PER_PART);
        let blocks = groups.div_ceil(GROUPS_PER_INDEX);
        let mut run = run_of(3, Some((1, items)));
        // All queued: nothing folds.
        let (manifest, new) = fold(&run, direct_manifest(&run, "a"), &BTreeMap::new(), "n");
        assert!(new.is_empty());
        assert_eq!(manifest.len(), groups);

        // A for_each: the units of blocks 0 to 2 ended, a window under way in block 3,
        // the rest not started.
        let under_way = 3 * GROUPS_PER_INDEX * UNITS_PER_PART + 10;
        for (k, unit) in run.steps[1].units.iter_mut().enumerate() {
            unit.state = match k {
                k if k < under_way => UnitState::Done,
                k if k < under_way + 500 => UnitState::Running,
                _ => UnitState::Pending,
            };
        }
        let direct = direct_manifest(&run, "a");
        let (manifest, new) = fold(&run, direct.clone(), &BTreeMap::new(), "n");
        assert_eq!(new.len(), blocks - 1, "every block but the one under way");
        assert_eq!(manifest.len(), blocks - 1 + GROUPS_PER_INDEX);
        assert!(manifest.contains_key("u00001.00048"));
        assert!(manifest.contains_key("i00001.00000"));
        assert!(!manifest.contains_key("i00001.00003"));
        // Expanding it gives every entry back.
        let mut expanded: Manifest = manifest
            .iter()
            .filter(|(name, _)| !name.starts_with('i'))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        for (_, entries) in &new {
            expanded.extend(entries.clone());
        }
        assert_eq!(expanded, direct);

        // The next transition, with those indexes stored: they are kept, nothing new.
        let previous: BTreeMap<String, (String, Manifest)> = new
            .iter()
            .map(|(name, entries)| (name.encode(), ("b".to_string(), entries.clone())))
            .collect();
        let (again, new) = fold(&run, direct.clone(), &previous, "n");
        assert!(new.is_empty());
        assert_eq!(again["i00001.00000"], "b");

        // A unit part of an indexed block rewritten (a retry, say): that index anew.
        let mut changed = direct;
        changed.insert("u00001.00002".into(), "c".into());
        let (_, new) = fold(&run, changed, &previous, "n");
        assert_eq!(
            new.iter().map(|(n, _)| n.encode()).collect::<Vec<_>>(),
            ["i00001.00000"]
        );

        // All ended: one entry per block.
        for unit in &mut run.steps[1].units {
            unit.state = UnitState::Done;
        }
        let (manifest, _) = fold(&run, direct_manifest(&run, "a"), &BTreeMap::new(), "n");
        assert_eq!(manifest.len(), blocks);
    }

    #[test]
    fn a_missing_or_misplaced_part_is_an_error_not_a_short_run() {
        let run = run_of(10, Some((2, 200)));
        let mut parts: BTreeMap<PartName, Arc<PartValue>> = all_parts(&run)
            .into_iter()
            .map(|name| (name, Arc::new(part_value(&run, name))))
            .collect();
        parts.remove(&PartName::Units { step: 2, group: 1 });
        let doc = run_doc(&run, Manifest::new());
        assert!(assemble(doc, &parts).is_err());
    }
}
