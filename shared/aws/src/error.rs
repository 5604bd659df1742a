//! Error conversions: the SDK's errors carry their detail in the source chain, which
//! `DisplayErrorContext` flattens into one line for the ports' string errors.

use aws_sdk_dynamodb::error::DisplayErrorContext;
use sluice_core::ports::{QueueError, SecretError, StoreError};

pub fn backend(message: impl Into<String>) -> StoreError {
    StoreError::Backend(message.into())
}

pub fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("stored JSON: {e}"))
}

/// A store error from any SDK error, naming the operation.
pub fn sdk<E: std::error::Error>(operation: &str, e: E) -> StoreError {
    StoreError::Backend(format!("{operation}: {}", DisplayErrorContext(&e)))
}

pub fn queue<E: std::error::Error>(operation: &str, e: E) -> QueueError {
    QueueError(format!("{operation}: {}", DisplayErrorContext(&e)))
}

pub fn secret<E: std::error::Error>(operation: &str, e: E) -> SecretError {
    SecretError::Backend(format!("{operation}: {}", DisplayErrorContext(&e)))
}
