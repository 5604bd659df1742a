//! DynamoDB capacity units as AWS bills them, computed from item sizes: a write unit per
//! started KiB written (two in a transaction), a strongly consistent read unit per
//! started 4 KiB read. moto does not compute them, and the cost figures of
//! `docs/cost.md` need units, not just requests.

use std::collections::HashMap;

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemInput};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::clients::RequestCounter;

/// Counter key of write capacity units.
pub const WRITE_UNITS: &str = "dynamodb:WriteCapacityUnits";
/// Counter key of read capacity units.
pub const READ_UNITS: &str = "dynamodb:ReadCapacityUnits";
/// Counter key of conditional `PutItem`s that lost (a compare-and-swap conflict: the
/// request is billed, the write did not happen).
pub const CONDITIONAL_FAILURES: &str = "dynamodb:ConditionalCheckFailed";

/// The size DynamoDB bills for an item: attribute names plus values.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(items) => 3 + items.iter().map(|i| 1 + value_size(i)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| k.len() + 1 + value_size(v))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// About one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits = n
        .chars()
        .filter(char::is_ascii_digit)
        .skip_while(|c| *c == '0')
        .count();
    digits.div_ceil(2) + 1
}

fn write_units(size: usize) -> u64 {
    size.div_ceil(1024).max(1) as u64
}

fn read_units(size: usize) -> u64 {
    size.div_ceil(4096).max(1) as u64
}

/// Adds the capacity units of every DynamoDB call to a [`RequestCounter`].
#[derive(Debug)]
pub(crate) struct CapacityCounting {
    pub(crate) counter: RequestCounter,
}

impl Intercept for CapacityCounting {
    fn name(&self) -> &'static str {
        "SluiceCapacityCounter"
    }

    /// Writes are billed by the item written. (An overwrite is billed by the larger of
    /// the old and new item; Sluice's records only grow, so the new one.)
    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let units = if let Some(put) = input.downcast_ref::<PutItemInput>() {
            write_units(put.item.as_ref().map_or(0, item_size))
        } else if let Some(tx) = input.downcast_ref::<TransactWriteItemsInput>() {
            tx.transact_items()
                .iter()
                .map(|t| 2 * write_units(t.put.as_ref().map_or(0, |p| item_size(&p.item))))
                .sum()
        } else if let Some(batch) = input.downcast_ref::<BatchWriteItemInput>() {
            batch
                .request_items
                .iter()
                .flat_map(|tables| tables.values())
                .flatten()
                .map(
                    |request| match (&request.put_request, &request.delete_request) {
                        (Some(put), _) => write_units(item_size(&put.item)),
                        (None, Some(_)) => 1,
                        (None, None) => 0,
                    },
                )
                .sum()
        } else if input.downcast_ref::<UpdateItemInput>().is_some()
            || input.downcast_ref::<DeleteItemInput>().is_some()
        {
            // Small bookkeeping items (schedule stats, cache entries, tokens).
            1
        } else {
            0
        };
        if units > 0 {
            self.counter.add(WRITE_UNITS, units);
        }
        Ok(())
    }

    /// Reads are billed by what they return (Sluice reads strongly consistently).
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let output = match context.output_or_error() {
            Ok(output) => output,
            Err(error) => {
                let lost = error
                    .as_operation_error()
                    .and_then(|e| e.downcast_ref::<PutItemError>())
                    .is_some_and(PutItemError::is_conditional_check_failed_exception);
                if lost {
                    self.counter.add(CONDITIONAL_FAILURES, 1);
                }
                return Ok(());
            }
        };
        let units = if let Some(get) = output.downcast_ref::<GetItemOutput>() {
            read_units(get.item.as_ref().map_or(0, item_size))
        } else if let Some(query) = output.downcast_ref::<QueryOutput>() {
            read_units(query.items().iter().map(item_size).sum())
        } else if let Some(batch) = output.downcast_ref::<BatchGetItemOutput>() {
            batch
                .responses
                .iter()
                .flat_map(|tables| tables.values())
                .flatten()
                .map(|item| read_units(item_size(item)))
                .sum()
        } else {
            0
        };
        if units > 0 {
            self.counter.add(READ_UNITS, units);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_dynamodb_rules() {
        let item = HashMap::from([
            ("pk".to_string(), AttributeValue::S("abc".into())),
            ("n".to_string(), AttributeValue::N("12345".into())),
            (
                "doc".to_string(),
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0u8; 100])),
            ),
        ]);
        assert_eq!(item_size(&item), 2 + 3 + 1 + 4 + 3 + 100);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(read_units(4097), 2);
        assert_eq!(number_size("0.001"), 2);
    }
}
