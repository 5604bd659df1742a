//! `sluice serve`: the REST API, the scheduler loop and the step workers in one process
//! on the embedded data directory.
//!
//! Start: take the data directory (its lock), release what a dead process held, resume
//! unfinished runs, then serve. Stop (Ctrl-C or SIGTERM): stop accepting requests, stop
//! the scheduler, and let running steps finish and record their results.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use sluice_api::auth::{hash_password, is_password_hash};
use sluice_api::schedules::LocalScheduler;
use sluice_api::{AdminCredentials, ApiPorts, ApiState};
use tokio::sync::watch;

use crate::local::{Local, Store};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "SLUICE_ADDR", default_value = "127.0.0.1:8080")]
    addr: String,
    /// Step executions in flight at once.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Largest request body in bytes (bigger gets 413).
    #[arg(long, default_value_t = sluice_api::DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Requests per second per caller (token or user at a client address); more get
    /// 429 with Retry-After. 0 turns the limit off.
    #[arg(long, env = "SLUICE_RATE_LIMIT", default_value_t = sluice_api::Rate::DEFAULT.per_second)]
    rate_limit: u32,
    /// Requests a caller may send at once above the rate.
    #[arg(long, env = "SLUICE_RATE_BURST", default_value_t = sluice_api::Rate::DEFAULT.burst)]
    rate_burst: u32,
    /// Steps the queue may hold before new runs are refused (429 with Retry-After);
    /// children and alert runs of accepted runs are never refused. 0: no bound.
    #[arg(long, env = "SLUICE_MAX_QUEUED_STEPS", default_value_t = sluice_runtime::DEFAULT_MAX_QUEUED_STEPS)]
    max_queued_steps: u64,
}

/// How often expired runs, outputs, logs and cache entries are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// The administrator from the environment: `SLUICE_ADMIN_PASSWORD_HASH` (an Argon2 PHC
/// string) or `SLUICE_ADMIN_PASSWORD`, hashed at once and kept only as the hash.
fn admin_credentials() -> anyhow::Result<AdminCredentials> {
    let user = std::env::var("SLUICE_ADMIN_USER").unwrap_or_else(|_| "admin".into());
    let password_hash = match (
        std::env::var("SLUICE_ADMIN_PASSWORD_HASH")
            .ok()
            .filter(|s| !s.is_empty()),
        std::env::var("SLUICE_ADMIN_PASSWORD")
            .ok()
            .filter(|s| !s.is_empty()),
    ) {
        (Some(phc), _) => {
            if !is_password_hash(&phc) {
                bail!("SLUICE_ADMIN_PASSWORD_HASH is not an Argon2 PHC string ($argon2id$...)");
            }
            Some(phc)
        }
        (None, Some(password)) => Some(
            hash_password(&password)
                .map_err(|e| anyhow::anyhow!("cannot hash the admin password: {e}"))?,
        ),
        (None, None) => None,
    };
    Ok(AdminCredentials {
        user,
        password_hash,
    })
}

pub async fn run(
    data_dir: &Path,
    result_expires: Option<i64>,
    registry: &sluice_core::step::StepRegistry,
    args: ServeArgs,
) -> anyhow::Result<u8> {
    let admin = admin_credentials()?;
    let mut local = Local::open(data_dir, result_expires, registry)?;
    // The runtime of `Local::open` with this server's bound on queued work.
    let mut config = local.runtime.config().clone();
    config.max_queued_steps = (args.max_queued_steps > 0).then_some(args.max_queued_steps);
    local.runtime =
        sluice_runtime::Runtime::new(local.runtime.backend().clone(), registry.clone(), config);
    let Store::Embedded(store) = &local.store else {
        bail!("sluice serve runs on the embedded data directory; on AWS the api function serves the API");
    };
    let store = store.clone();
    let runtime = local.runtime.clone();

    // Resume strictly before any worker polls: it resets the attempts the dead process
    // had claimed, which must not include one a new worker just claimed.
    let takeover = local.take_over().await?;
    let resumed = runtime
        .resume_all(takeover.at)
        .await
        .context("cannot resume unfinished runs")?;
    if !resumed.is_empty() {
        eprintln!("Resumed {} unfinished run(s)", resumed.len());
    }
    let workers = local.start_workers(takeover, args.workers);

    let scheduler = LocalScheduler::default();
    let ports = ApiPorts {
        schedules: store.schedules(),
        schedule_stats: store.schedule_stats(),
        scheduler: Arc::new(scheduler.clone()),
        access: store.access(),
    };
    if admin.password_hash.is_none() {
        eprintln!("Note: no SLUICE_ADMIN_PASSWORD; Basic authentication is off (use `sluice tokens create NAME --role ROLE`).");
    }
    let mut state = ApiState::new(runtime.clone(), ports.clone(), admin);
    state.body_limit = args.body_limit;
    state.worker_slots = Some(args.workers);
    state.rate_limit = sluice_api::Rate {
        per_second: args.rate_limit,
        burst: args.rate_burst,
    };
    // Ends the console's run event streams when a shutdown begins: a graceful shutdown
    // waits for open connections.
    let (events_stop, events_stopped) = watch::channel(false);
    state.live_events = Some(events_stopped);
    let app = sluice_api::router(state);

    let (stop, stopped) = watch::channel(false);
    let scheduler_loop = tokio::spawn(sluice_api::schedules::run_loop(
        runtime.clone(),
        ports.schedules.clone(),
        ports.schedule_stats.clone(),
        scheduler.wake.clone(),
        stopped.clone(),
    ));
    let purger = {
        let store = store.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = store.purge_expired().await {
                    tracing::warn!(error = %e, "purge of expired records failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(PURGE_INTERVAL) => {}
                    _ = stopped.changed() => break,
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "Listening on http://{addr} (data directory {})",
        data_dir.display()
    );
    // Gives handlers the client address (the rate limit tells callers apart by it) and
    // turns the HTTP layer's own refusals into JSON errors.
    let shutdown = async move {
        shutdown_signal().await;
        let _ = events_stop.send(true);
    };
    sluice_api::serve(listener, app, shutdown)
        .await
        .context("the HTTP server failed")?;

    eprintln!("Shutting down: letting running steps finish…");
    let _ = stop.send(true);
    let _ = scheduler_loop.await;
    let _ = purger.await;
    workers.shutdown().await;
    eprintln!("Stopped.");
    Ok(0)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
