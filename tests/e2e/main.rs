//! End-to-end tests: the built `sluice` binary on the examples and on applications that
//! talk to an HTTP server these tests start, each in its own data directory.

mod support;

mod alerts;
mod aws;
mod aws_stack;
mod backup;
mod bulk_ops;
mod chaos;
mod cli_documents;
mod cli_http;
mod cli_runs;
mod console;
mod hardening;
mod infra;
mod packs;
mod plan_apply;
mod powerflow_compat;
mod reports;
mod scaffold;
mod serve_api;
mod serve_client;
mod steps_run;
mod templates;
mod versions;
