//! [`SqsQueue`]: the queue port on SQS — one queue and one dead-letter queue per step
//! type (the redrive policy with `maxReceiveCount` [`MAX_RECEIVE_COUNT`] moves a message
//! after its fifth receive), delays through `DelaySeconds`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageSystemAttributeName;
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

    /// Sends a raw body (Lambda glue: re-enqueueing a message for a long wait) of the
    /// run `run_id`.
    ///
    /// The run is the message group: on a standard queue SQS takes it as the tenant of
    /// its fair queues, so a run with a large backlog on a step type's queue does not
    /// hold back the messages of other runs (no FIFO order is asked for or implied).
    pub async fn send_body(
        &self,
        queue: &str,
        body: &str,
        delay: Duration,
        run_id: &str,
    ) -> Result<(), QueueError> {
        let url = self.url(queue).await?;
        // SQS takes 1–128 printable ASCII characters; run ids are far shorter.
        let group =
            (1..=128).contains(&run_id.len()) && run_id.bytes().all(|b| b.is_ascii_graphic());
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .set_message_group_id(group.then(|| run_id.to_string()))
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
        self.send_body(queue, &body, delay, &message.run_id).await
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
