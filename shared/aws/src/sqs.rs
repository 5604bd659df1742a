//! [`SqsQueue`]: the queue port on SQS — one queue and one dead-letter queue per step
//! type (the redrive policy with `maxReceiveCount` [`MAX_RECEIVE_COUNT`] moves a message
//! after its fifth receive), delays through `DelaySeconds`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use sluice_core::ports::{Delivery, Queue, QueueError, TaskMessage};

#[allow(unused_imports)]
use sluice_core::ports::MAX_RECEIVE_COUNT;

use crate::error::queue as queue_error;

/// Longest `DelaySeconds` SQS accepts. A longer wait is a message sent again with this
/// delay: the engine answers an early claim with the time still to wait.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// Longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// Longest long-poll wait SQS accepts.
const MAX_WAIT: Duration = Duration::from_secs(20);

/// Whole seconds for SQS, rounded up so a message never shows before it may run.
pub fn seconds_ceil(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// The `MessageGroupId` of a message: its lane (the run's `queue` label, else its
/// application), or its run for a message queued before lanes existed.
///
/// On a standard queue SQS takes the group as the tenant of its *fair queues*: when one
/// tenant builds a backlog, SQS favours the other tenants' messages so that their dwell
/// time stays low, and a lane with 100,000 queued steps does not hold back another
/// lane's steps (no FIFO order is asked for or implied). What SQS does not give: an order inside a tenant (no
/// oldest-run-first, no FIFO: a standard queue is best effort) and any strict priority
/// between tenants of one queue — the `high` lane is just one more tenant there, served
/// fairly rather than first. Strict priority on AWS would take a queue of its own per
/// step type (and a function or event source mapping reading it first).
///
/// SQS takes 1–128 printable ASCII characters: other bytes are written `%XX`, and the
/// result cut to 128 (two long lanes with the same start then share one tenant).
pub fn message_group(message: &TaskMessage) -> String {
    let lane = message
        .lane
        .as_deref()
        .filter(|l| !l.is_empty())
        .unwrap_or(&message.run_id);
    let mut group = String::with_capacity(lane.len().min(MAX_GROUP_ID));
    for byte in lane.bytes() {
        let encoded = if byte.is_ascii_graphic() && byte != b'%' {
            (byte as char).to_string()
        } else {
            format!("%{byte:02X}")
        };
        if group.len() + encoded.len() > MAX_GROUP_ID {
            break;
        }
        group.push_str(&encoded);
    }
    if group.is_empty() {
        // Only an empty run id gets here; SQS needs one character at least.
        group.push('-');
    }
    group
}

/// Entries a `SendMessageBatch` takes at most.
const BATCH_ENTRIES: usize = 10;
/// Bodies a `SendMessageBatch` takes at most, in bytes (SQS counts the batch's total).
const BATCH_BYTES: usize = 256 * 1024;
/// `SendMessageBatch` requests [`SqsQueue::send_many`] keeps in flight.
const BATCHES_IN_FLIGHT: usize = 8;
/// Sends of a batch's entries that SQS failed on its side (not the sender's fault).
const BATCH_ATTEMPTS: usize = 3;

/// Sends one batch; entries SQS failed on its side go again (a batch can succeed in
/// part, and the SDK retries only a request that failed whole).
async fn send_batch(
    client: Client,
    url: String,
    mut entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<(), QueueError> {
    for _ in 0..BATCH_ATTEMPTS {
        let out = client
            .send_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries.clone()))
            .send()
            .await
            .map_err(|e| queue_error("SendMessageBatch", e))?;
        if let Some(fault) = out.failed.iter().find(|f| f.sender_fault) {
            return Err(QueueError(format!(
                "SendMessageBatch: {}: {}",
                fault.code,
                fault.message.as_deref().unwrap_or("")
            )));
        }
        if out.failed.is_empty() {
            return Ok(());
        }
        entries.retain(|e| out.failed.iter().any(|f| f.id == e.id));
    }
    Err(QueueError(format!(
        "SendMessageBatch: {} messages failed {BATCH_ATTEMPTS} times",
        entries.len()
    )))
}

/// Longest `MessageGroupId` SQS accepts.
const MAX_GROUP_ID: usize = 128;

/// The SQS adapter. Queue URLs are resolved once per name and cached.
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    url_prefix: Option<String>,
    urls: Mutex<HashMap<String, String>>,
    /// Bodies of received messages by receipt, so that a release longer than
    /// [`MAX_VISIBILITY`]… or [`MAX_DELAY`] can re-send the message.
    bodies: Mutex<HashMap<String, TaskMessage>>,
}

impl SqsQueue {
    pub fn new(client: Client, url_prefix: Option<String>) -> Self {
        Self {
            client,
            url_prefix,
            urls: Mutex::default(),
            bodies: Mutex::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The URL of a queue: from the configured prefix, or `GetQueueUrl` once.
    pub async fn url(&self, queue: &str) -> Result<String, QueueError> {
        if let Some(prefix) = &self.url_prefix {
            return Ok(format!("{prefix}{queue}"));
        }
        if let Some(url) = self.urls.lock().expect("queue urls").get(queue) {
            return Ok(url.clone());
        }
        let url = self
            .client
            .get_queue_url()
            .queue_name(queue)
            .send()
            .await
            .map_err(|e| queue_error(&format!("GetQueueUrl {queue}"), e))?
            .queue_url
            .ok_or_else(|| QueueError(format!("no URL for queue {queue}")))?;
        self.urls
            .lock()
            .expect("queue urls")
            .insert(queue.to_string(), url.clone());
        Ok(url)
    }

    /// The queue name of an SQS ARN (`arn:aws:sqs:region:account:name`).
    pub fn name_of_arn(arn: &str) -> &str {
        arn.rsplit(':').next().unwrap_or(arn)
    }

    /// Sends a raw body (Lambda glue: re-enqueueing a message for a long wait) of
    /// `message`, grouped by its [`message_group`].
    pub async fn send_body(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
        message: &TaskMessage,
    ) -> Result<(), QueueError> {
        let url = self.url(queue).await?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .set_message_group_id(Some(message_group(message)))
            .delay_seconds(seconds_ceil(delay.min(MAX_DELAY)))
            .send()
            .await
            .map_err(|e| queue_error("SendMessage", e))?;
        Ok(())
    }

    /// Makes a received message visible after `delay` (≤ [`MAX_VISIBILITY`]).
    pub async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let url = self.url(queue).await?;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds_ceil(delay.min(MAX_VISIBILITY)))
            .send()
            .await
            .map_err(|e| queue_error("ChangeMessageVisibility", e))?;
        Ok(())
    }

    async fn delete(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        let url = self.url(queue).await?;
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| queue_error("DeleteMessage", e))?;
        Ok(())
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(
        &self,
        queue: &str,
        message: &TaskMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_string(message).map_err(|e| QueueError(format!("json: {e}")))?;
        self.send_body(queue, &body, delay, message).await
    }

    /// Ten messages a `SendMessageBatch`, eight requests at once: a
    /// 5,000-way fan-out is 500 requests, not 5,000 in a row.
    async fn send_many(
        &self,
        queue: &str,
        messages: &[TaskMessage],
        delay: Duration,
    ) -> Result<(), QueueError> {
        if let [message] = messages {
            return self.send(queue, message, delay).await;
        }
        let url = self.url(queue).await?;
        let delay = seconds_ceil(delay.min(MAX_DELAY));
        let mut batches: Vec<Vec<SendMessageBatchRequestEntry>> = Vec::new();
        let mut batch_bytes = 0;
        for (index, message) in messages.iter().enumerate() {
            let body =
                serde_json::to_string(message).map_err(|e| QueueError(format!("json: {e}")))?;
            let full = batches
                .last()
                .is_none_or(|b| b.len() == BATCH_ENTRIES || batch_bytes + body.len() > BATCH_BYTES);
            if full {
                batches.push(Vec::with_capacity(BATCH_ENTRIES));
                batch_bytes = 0;
            }
            batch_bytes += body.len();
            let entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(body)
                .message_group_id(message_group(message))
                .delay_seconds(delay)
                .build()
                .map_err(|e| QueueError(format!("SendMessageBatch entry: {e}")))?;
            batches.last_mut().expect("a batch").push(entry);
        }
        let mut batches = batches.into_iter();
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            while in_flight.len() < BATCHES_IN_FLIGHT {
                let Some(batch) = batches.next() else { break };
                in_flight.spawn(send_batch(self.client.clone(), url.clone(), batch));
            }
            match in_flight.join_next().await {
                Some(sent) => {
                    sent.map_err(|e| QueueError(format!("SendMessageBatch task: {e}")))??
                }
                None => return Ok(()),
            }
        }
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let url = self.url(queue).await?;
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(seconds_ceil(visibility.min(MAX_VISIBILITY)))
            .wait_time_seconds(seconds_ceil(wait.min(MAX_WAIT)))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| queue_error("ReceiveMessage", e))?;
        let mut deliveries = Vec::new();
        for message in out.messages.unwrap_or_default() {
            let receipt = message.receipt_handle.clone().unwrap_or_default();
            let receive_count = message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            match serde_json::from_str::<TaskMessage>(message.body().unwrap_or_default()) {
                Ok(task) => {
                    self.bodies
                        .lock()
                        .expect("bodies")
                        .insert(receipt.clone(), task.clone());
                    deliveries.push(Delivery {
                        message: task,
                        receipt,
                        receive_count,
                    });
                }
                // Left alone: the redrive policy moves it to the dead-letter queue.
                Err(e) => tracing::error!(queue, error = %e, "undecodable queue message"),
            }
        }
        Ok(deliveries)
    }

    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        self.bodies.lock().expect("bodies").remove(receipt);
        self.delete(queue, receipt).await
    }

    /// Up to [`MAX_DELAY`]: `ChangeMessageVisibility`. Longer: the message is sent again
    /// with the longest delay and this copy deleted, so long waits never use up the
    /// receives that lead to the dead-letter queue.
    async fn release(&self, queue: &str, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        let body = self.bodies.lock().expect("bodies").remove(receipt);
        match body {
            Some(message) if delay > MAX_DELAY => {
                self.send(queue, &message, MAX_DELAY).await?;
                self.delete(queue, receipt).await
            }
            _ => self.change_visibility(queue, receipt, delay).await,
        }
    }

    async fn extend_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.change_visibility(queue, receipt, visibility).await
    }

    /// `ApproximateNumberOfMessages` + `…NotVisible` + `…Delayed` (`GetQueueAttributes`).
    async fn approximate_depth(&self, queue: &str) -> Result<Option<u64>, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let url = self.url(queue).await?;
        let names = [
            Name::ApproximateNumberOfMessages,
            Name::ApproximateNumberOfMessagesNotVisible,
            Name::ApproximateNumberOfMessagesDelayed,
        ];
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| queue_error("GetQueueAttributes", e))?;
        let attributes = out.attributes.unwrap_or_default();
        Ok(Some(
            names
                .iter()
                .filter_map(|n| attributes.get(n)?.parse::<u64>().ok())
                .sum(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(run_id: &str, lane: Option<&str>) -> TaskMessage {
        TaskMessage {
            run_id: run_id.into(),
            step_id: "A".into(),
            unit: 0,
            attempt: 1,
            lane: lane.map(str::to_string),
        }
    }

    #[test]
    fn the_message_group_is_the_lane_else_the_run() {
        assert_eq!(
            message_group(&message("isapp-1", Some("nightly"))),
            "nightly"
        );
        assert_eq!(message_group(&message("isapp-1", None)), "isapp-1");
        assert_eq!(message_group(&message("isapp-1", Some(""))), "isapp-1");
        // Only printable ASCII, at most 128 characters.
        assert_eq!(
            message_group(&message("r", Some("sync devices é%"))),
            "sync%20devices%20%C3%A9%25"
        );
        let long = message_group(&message("r", Some(&"ü".repeat(100))));
        assert!(long.len() <= 128 && long.len() > 120, "{}", long.len());
        assert!(long.bytes().all(|b| b.is_ascii_graphic()));
    }
}
