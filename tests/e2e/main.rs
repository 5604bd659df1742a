//! End-to-end tests: the built `sluice` binary on the examples and on applications that
//! talk to an HTTP server these tests start, each in its own data directory.

mod support;

mod aws;
mod cli_documents;
mod cli_http;
mod cli_runs;
mod serve_api;
mod serve_client;
