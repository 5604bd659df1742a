//! `GET /api/v1/tasks/{id}/events`: a run's task document pushed as Server-Sent Events
//! each time the run changes, so the console colours a run's steps live.
//!
//! Bounded: an idle stream gets a keep-alive comment every [`KEEP_ALIVE`], a stream lasts at
//! most [`MAX_STREAM`] (the client reconnects), and it ends after the document of a run in a
//! terminal state, or when the server shuts down. Where the server keeps no long-lived
//! connections (the `api` Lambda answers a request with a whole buffered response),
//! [`crate::ApiState::live_events`] is `None` and the stream is the current document alone:
//! the console then polls the task document instead.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use sluice_core::model::Run;
use sluice_runtime::{Progress, Runtime, RuntimeError};
use tokio::sync::{broadcast, watch};

use crate::error::ApiError;
use crate::Shared;

/// Interval of the keep-alive comment on an idle stream (proxies drop silent connections).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Longest life of one stream; the console reconnects and gets the current document.
pub const MAX_STREAM: Duration = Duration::from_secs(10 * 60);
/// How often the store is read besides the in-process broadcast: changes made by another
/// process, or broadcasts this stream missed, show within this time.
const STORE_POLL: Duration = Duration::from_secs(1);
/// The `retry` hint sent with every document: how long a client waits to reconnect.
const RETRY: Duration = Duration::from_secs(2);

pub(crate) async fn task_events(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let run = state.runtime.get_run(&id).await.map_err(|e| match e {
        RuntimeError::NotFound(_) => ApiError::not_found(format!("task \"{id}\" not found")),
        other => other.into(),
    })?;
    let Some(stopped) = state.live_events.clone() else {
        let once = stream::iter([Ok::<_, Infallible>(document_event(&run))]);
        return Ok(Sse::new(once).into_response());
    };
    let watch = Watch {
        id: run.id.clone(),
        runtime: state.runtime.clone(),
        updates: state.runtime.subscribe(),
        stopped,
        deadline: tokio::time::Instant::now() + MAX_STREAM,
        last_version: run.version,
        first: Some(run),
        ended: false,
    };
    Ok(Sse::new(changes(watch))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// One `task` event carrying the task document (never outputs: those are read on demand,
/// and their secrets are already redacted in the store).
fn document_event(run: &Run) -> Event {
    Event::default()
        .event("task")
        .retry(RETRY)
        .data(serde_json::to_string(&crate::documents::Task::of(run, None)).unwrap_or_default())
}

struct Watch {
    id: String,
    runtime: Arc<Runtime>,
    updates: broadcast::Receiver<Progress>,
    stopped: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    last_version: u64,
    /// The document to send first (the run as the request found it).
    first: Option<Run>,
    /// A terminal document was sent: nothing follows.
    ended: bool,
}

fn changes(watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(watch, |mut watch| async move {
        let run = watch.next_change().await?;
        watch.ended = run.state.is_terminal();
        watch.last_version = run.version;
        Some((Ok(document_event(&run)), watch))
    })
}

impl Watch {
    /// The next version of the run to send; `None` ends the stream.
    async fn next_change(&mut self) -> Option<Run> {
        if let Some(run) = self.first.take() {
            return Some(run);
        }
        if self.ended || *self.stopped.borrow() {
            return None;
        }
        let id = self.id.clone();
        loop {
            let poll = tokio::time::sleep(STORE_POLL);
            tokio::select! {
                update = self.updates.recv() => match update {
                    Ok(p) if p.run.id == id && p.run.version > self.last_version => {
                        return Some((*p.run).clone());
                    }
                    Ok(_) => continue,
                    // Missed some: the store has the latest version.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(run) = self.newer_in_store(&id).await {
                            return Some(run);
                        }
                    }
                    // No broadcasts any more: the store poll alone carries on.
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep(STORE_POLL).await;
                        if let Some(run) = self.newer_in_store(&id).await {
                            return Some(run);
                        }
                    }
                },
                _ = poll => {
                    if let Some(run) = self.newer_in_store(&id).await {
                        return Some(run);
                    }
                }
                changed = self.stopped.changed() => {
                    if changed.is_err() || *self.stopped.borrow() {
                        return None;
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => return None,
            }
        }
    }

    async fn newer_in_store(&self, id: &str) -> Option<Run> {
        match self.runtime.get_run(id).await {
            Ok(run) if run.version > self.last_version => Some(run),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(run = id, error = %e, "event stream: reading the run failed");
                None
            }
        }
    }
}
