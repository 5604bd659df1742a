//! End-to-end tests: the built `sluice` binary on the examples and on applications that
//! talk to an HTTP server these tests start, each in its own data directory.

mod support;

mod cli_documents;
mod cli_http;
mod cli_runs;
mod aws;
mod serve_api;
mod serve_client;
