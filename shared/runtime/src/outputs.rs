//! Reading step outputs (inline in the run record or in the output store) and deciding
//! which outputs stay inline: plain reads, called by every layer above.

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use sluice_core::model::{Run, StepState};
use sluice_core::ports::OutputKey;

use crate::runtime::{Runtime, RuntimeError};

impl Runtime {
    /// A step's output as successors see it: `null` when skipped or absent, the list of
    /// item outputs for a fan-out.
    pub async fn read_output(&self, run: &Run, step_id: &str) -> Result<Value, RuntimeError> {
        let Some(step) = run.step(step_id) else {
            return Ok(Value::Null);
        };
        if !step.state.succeeded() && step.state != StepState::Failed {
            return Ok(Value::Null);
        }
        let output_of = |unit: u32| async move {
            if let Some(inline) = step.units.get(unit as usize).and_then(|u| u.output.clone()) {
                return Ok::<_, RuntimeError>(inline);
            }
            let key = OutputKey {
                run_id: run.id.clone(),
                step_id: step_id.to_string(),
                unit,
            };
            Ok(self
                .backend
                .runs
                .get_output(&key)
                .await?
                .unwrap_or(Value::Null))
        };
        match step.fan_out {
            Some(n) => {
                let mut items = Vec::with_capacity(n as usize);
                for unit in 0..n {
                    items.push(output_of(unit).await?);
                }
                Ok(Value::Array(items))
            }
            None => {
                let inline = step.units.first().is_some_and(|u| u.output.is_some());
                if !inline {
                    if let Some(kept) = self.outputs.get(&run.id, step_id) {
                        return Ok((*kept).clone());
                    }
                }
                let output = output_of(0).await?;
                if !inline && json_len_within(&output, OUTPUT_CACHE_BYTES).is_some() {
                    self.outputs
                        .insert(&run.id, step_id, Arc::new(output.clone()));
                }
                Ok(output)
            }
        }
    }

    /// Whether a successful attempt's `output` goes into the run record (see
    /// [`RuntimeConfig::inline_output_bytes`]) rather than to the output store, given
    /// the bytes the run's inline outputs already take (`Run::inline_output_bytes`).
    pub(crate) fn keeps_inline(&self, inline_bytes: u64, output: &Value) -> bool {
        let Some(own) = json_len_within(output, self.config.inline_output_bytes) else {
            return false;
        };
        let budget = self.config.inline_outputs_per_run_bytes as u64;
        inline_bytes.saturating_add(own as u64) <= budget
    }

    /// Every step's output, by id (for `--output json` and the API).
    pub async fn outputs(&self, run: &Run) -> Result<Map<String, Value>, RuntimeError> {
        let mut outputs = Map::new();
        for step in &run.steps {
            outputs.insert(step.id.clone(), self.read_output(run, &step.id).await?);
        }
        Ok(outputs)
    }
}

/// The length of `value` as compact JSON, or `None` once it exceeds `limit`: a large
/// output is not serialized whole just to learn that it is too large to keep inline.
pub(crate) fn json_len_within<T: serde::Serialize + ?Sized>(
    value: &T,
    limit: usize,
) -> Option<usize> {
    struct Bounded {
        len: usize,
        limit: usize,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.len += bytes.len();
            if self.len > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Bounded { len: 0, limit };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.len)
}

/// Most stored outputs an [`OutputCache`] keeps, and the largest it keeps (JSON bytes):
/// at most a few MiB in all.
const OUTPUT_CACHE_ENTRIES: usize = 16;
const OUTPUT_CACHE_BYTES: usize = 256 * 1024;

/// Stored outputs of ended steps read lately, by run and step: every unit of a fan-out
/// reads its predecessor's output (its items), which would otherwise be read and
/// parsed again per unit. An ended step's output never changes.
pub(crate) struct OutputCache {
    outputs: Mutex<lru::LruCache<(String, String), Arc<Value>>>,
}

impl Default for OutputCache {
    fn default() -> Self {
        let limit = std::num::NonZeroUsize::new(OUTPUT_CACHE_ENTRIES)
            .unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            outputs: Mutex::new(lru::LruCache::new(limit)),
        }
    }
}

impl OutputCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<(String, String), Arc<Value>>> {
        // A panic while holding it leaves a consistent map: take it over.
        self.outputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, run_id: &str, step_id: &str) -> Option<Arc<Value>> {
        self.lock()
            .get(&(run_id.to_string(), step_id.to_string()))
            .cloned()
    }

    fn insert(&self, run_id: &str, step_id: &str, output: Arc<Value>) {
        self.lock()
            .put((run_id.to_string(), step_id.to_string()), output);
    }
}

#[cfg(test)]
mod tests {
    use super::json_len_within;
    use serde_json::json;

    #[test]
    fn json_length_is_exact_within_the_limit_and_none_beyond() {
        let value = json!({"a": [1, 2, "three"]});
        let len = serde_json::to_vec(&value).unwrap().len();
        assert_eq!(json_len_within(&value, len), Some(len));
        assert_eq!(json_len_within(&value, len - 1), None);
        assert_eq!(json_len_within(&json!(null), 4), Some(4));
    }
}
