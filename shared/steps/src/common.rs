//! Small pieces several step types share: the `timeout_seconds` rule and how long texts
//! are shortened in messages.

use std::time::Duration;

use sluice_sdk::StepError;

/// Longest timeout a step type's own `timeout_seconds` may ask for: one request or
/// command waits at most 15 minutes, wherever the step runs.
pub(crate) const MAX_TIMEOUT_SECONDS: f64 = sluice_core::model::LAMBDA_MAX_TIMEOUT_SECONDS as f64;

/// A `timeout_seconds` parameter as a duration, within 0.001 s and
/// [`MAX_TIMEOUT_SECONDS`].
pub(crate) fn timeout_param(seconds: f64) -> Result<Duration, StepError> {
    // A reference may have brought any number: 1e300 must not reach Duration.
    Some(seconds)
        .filter(|t| (0.001..=MAX_TIMEOUT_SECONDS).contains(t))
        .and_then(|t| Duration::try_from_secs_f64(t).ok())
        .ok_or_else(|| {
            StepError::Fatal(format!(
                "\"timeout_seconds\" must be between 0.001 and {MAX_TIMEOUT_SECONDS} (got {seconds})"
            ))
        })
}

/// The first `max` characters of `text`, with `…` when it was longer.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}
