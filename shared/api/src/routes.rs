//! The route table: every route with its method, path, required role and OpenAPI
//! description. The router is built from it ([`crate::router`]), the authorization layer
//! looks the matched route up in it (a route missing from it is refused, so nothing can
//! ship unguarded), the OpenAPI document is generated from it, and the role-matrix test
//! walks it.

use sluice_core::model::Role;

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// `GET`, `POST` or `DELETE`.
    pub method: &'static str,
    /// axum path syntax (`/api/v1/tasks/{id}`).
    pub path: &'static str,
    /// `None`: served without authentication.
    pub role: Option<Role>,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Query parameters: `(name, description)`.
    pub query: &'static [(&'static str, &'static str)],
    /// Component schema name of the JSON request body.
    pub body: Option<&'static str>,
    /// Component schema name of the 200 response.
    pub response: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    role: Option<Role>,
    tag: &'static str,
    summary: &'static str,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        role,
        tag,
        summary,
        query: &[],
        body: None,
        response: "Any",
    }
}

impl RouteSpec {
    const fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }
    const fn body(mut self, body: &'static str) -> Self {
        self.body = Some(body);
        self
    }
    const fn response(mut self, response: &'static str) -> Self {
        self.response = response;
        self
    }
}

use Role::{
    Administrator as Admin, Configuration as Config, Developer as Dev, Execute as Exec, View,
};

const WAIT: (&str, &str) = (
    "wait",
    "Wait up to this many seconds (0-3600; waits are capped at 25) for the run to end.",
);

const VERSION_FROM: (&str, &str) = ("from", "The older version's number (required).");
const VERSION_TO: (&str, &str) = ("to", "The newer version's number (required).");

/// Every route of the API.
pub const ROUTES: &[RouteSpec] = &[
    route("GET", "/healthcheck", None, "health", "Liveness for load balancers: 200 {\"status\": \"ok\"}, no dependency calls.").response("Status"),
    route("GET", "/api/v1/healthcheck", None, "health", "Same as /healthcheck.").response("Status"),
    route("GET", "/api/v1/about", None, "health", "Product name, version and backend.").response("About"),
    route("GET", "/api/v1/health", Some(View), "health", "Deep health check: each backing component with its status and latency; 503 when one fails.").response("Health"),
    route("GET", "/api/v1/openapi.json", Some(View), "health", "This OpenAPI document."),
    // Applications.
    route("GET", "/api/v1/applications", Some(View), "applications", "Stored applications, without hidden ones (`meta.hidden: true`) unless `hidden=true`.").query(&[("hidden", "`true` to list hidden applications too.")]).response("ApplicationList"),
    route("POST", "/api/v1/applications", Some(Dev), "applications", "Create or overwrite an application (validated as `sluice validate` does).").body("Application").response("Application"),
    route("POST", "/api/v1/applications/run", Some(Exec), "runs", "Start a run of the application named in the body.").query(&[WAIT]).body("RunRequest").response("Task"),
    route("GET", "/api/v1/applications/{name}", Some(View), "applications", "One application.").response("Application"),
    route("DELETE", "/api/v1/applications/{name}", Some(Admin), "applications", "Delete an application; 409 naming the schedules and applications that use it, unless `force=true`.").query(&[("force", "`true` to delete it although schedules or other applications name it.")]).response("Deleted"),
    route("POST", "/api/v1/applications/{name}/run", Some(Exec), "runs", "Start a run of this application.").query(&[WAIT]).body("RunRequest").response("Task"),
    route("GET", "/api/v1/applications/{name}/logs", Some(View), "runs", "Log entries of the application's latest run (or of `task_id`).").query(&[("task_id", "A run of this application instead of the latest."), ("step", "Only this step's entries."), ("after", "Only entries with a greater seq."), ("limit", "At most this many entries, 1-10000 (default 1000).")]).response("Logs"),
    route("GET", "/api/v1/applications/{name}/versions", Some(View), "versions", "The application's stored versions, newest first: number, author, time, content hash.").response("VersionList"),
    route("GET", "/api/v1/applications/{name}/versions/{version}", Some(View), "versions", "One stored version of the application with its document.").response("DefinitionVersion"),
    route("GET", "/api/v1/applications/{name}/diff", Some(View), "versions", "What changed between two versions of the application.").query(&[VERSION_FROM, VERSION_TO]).response("VersionDiff"),
    route("POST", "/api/v1/applications/{name}/rollback", Some(Dev), "versions", "Store a version's document again as a new version (no new version when it equals the latest).").body("RollbackRequest").response("RolledBack"),
    // Configurations.
    route("GET", "/api/v1/configurations", Some(View), "configurations", "Stored configurations; encrypted values read as null.").response("ConfigurationList"),
    route("POST", "/api/v1/configurations", Some(Config), "configurations", "Create or overwrite a configuration; an encrypted entry posted with a null value keeps the stored secret.").body("Configuration").response("Configuration"),
    route("GET", "/api/v1/configurations/{name}", Some(View), "configurations", "One configuration; encrypted values read as null.").response("Configuration"),
    route("DELETE", "/api/v1/configurations/{name}", Some(Admin), "configurations", "Delete a configuration and its secrets.").response("Deleted"),
    route("GET", "/api/v1/configurations/{name}/versions", Some(View), "versions", "The configuration's stored versions, newest first; `encrypted` names the encrypted values each set (their values are never part of a version).").response("VersionList"),
    route("GET", "/api/v1/configurations/{name}/versions/{version}", Some(View), "versions", "One stored version of the configuration; encrypted values read as null.").response("DefinitionVersion"),
    route("GET", "/api/v1/configurations/{name}/diff", Some(View), "versions", "What changed between two versions of the configuration (encrypted values are null in both).").query(&[VERSION_FROM, VERSION_TO]).response("VersionDiff"),
    route("POST", "/api/v1/configurations/{name}/rollback", Some(Config), "versions", "Store a version's document again as a new version; its encrypted values keep their stored secrets.").body("RollbackRequest").response("RolledBack"),
    // Packs (PowerFlow's SyncPacks).
    route("GET", "/api/v1/syncpacks", Some(View), "packs", "Installed packs by name: their versions, the active one and what it owns.").query(&[("only_installed", "Accepted for PowerFlow compatibility: every pack Sluice lists is installed."), ("only_activated", "`true`: only packs with an active version.")]).response("PackSummaryList"),
    route("POST", "/api/v1/syncpacks", Some(Admin), "packs", "Install a pack version: the body is the archive `sluice packs build` writes (validated, not activated).").body("PackArchive").response("PackInstalled"),
    route("GET", "/api/v1/syncpacks/{name}", Some(View), "packs", "One installed pack.").response("PackSummary"),
    route("DELETE", "/api/v1/syncpacks/{name}", Some(Admin), "packs", "Uninstall a pack: delete what its active version owns, its activation and every version; 409 while an active pack depends on it.").response("PackDeleted"),
    route("GET", "/api/v1/syncpacks/{name}/versions/{version}", Some(View), "packs", "An installed version's archive.").response("PackArchive"),
    route("DELETE", "/api/v1/syncpacks/{name}/versions/{version}", Some(Admin), "packs", "Delete an installed version; 409 while it is the active one.").response("PackDeleted"),
    route("POST", "/api/v1/syncpacks/{name}/versions/{version}/activate", Some(Admin), "packs", "Make this version the pack's live content (the upgrade and the rollback); 422 naming every missing step type, dependency or conflicting definition.").response("PackActivated"),
    route("POST", "/api/v1/applications/{name}/copy", Some(Dev), "packs", "Save a copy of an application under a new name, owned by the caller (how a pack's read-only application is changed).").body("CopyRequest").response("Copied"),
    route("POST", "/api/v1/configurations/{name}/copy", Some(Config), "packs", "Save a copy of a configuration, secrets included, under a new name.").body("CopyRequest").response("Copied"),
    // Steps.
    route("GET", "/api/v1/steps", Some(View), "steps", "Registered step types and operators with their parameter schemas.").response("StepTypeList"),
    route("POST", "/api/v1/steps/run", Some(Dev), "steps", "Run one step type with the given parameters, outside any application.").body("StepRunRequest").response("StepRunResult"),
    route("GET", "/api/v1/steps/{name}", Some(View), "steps", "One step type with its parameter schema.").response("StepType"),
    // Tasks (runs).
    route("GET", "/api/v1/tasks", Some(View), "runs", "Runs, newest first, filtered and paginated.").query(&[("application", "Only runs of this application."), ("state", "pending, running, success, failure or revoked."), ("since", "Runs created at or after (RFC 3339)."), ("until", "Runs created before (RFC 3339)."), ("configuration", "Only runs with this configuration."), ("queue", "Only runs with this queue label."), ("limit", "Page size, 1-1000 (default 50)."), ("cursor", "next_cursor of the previous page.")]).response("TaskList"),
    route("DELETE", "/api/v1/tasks", Some(Admin), "runs", "Terminate (revoke) every unfinished run; answers how many were revoked.").response("Revoked"),
    route("GET", "/api/v1/tasks/{id}", Some(View), "runs", "A run's task document.").query(&[WAIT, ("outputs", "true: add each step's output.")]).response("Task"),
    route("GET", "/api/v1/tasks/{id}/logs", Some(View), "runs", "A run's log entries, oldest first, from a seq cursor.").query(&[("step", "Only this step's entries."), ("after", "Only entries with a greater seq (the previous page's next_after)."), ("limit", "At most this many entries, 1-10000 (default 1000).")]).response("Logs"),
    route("GET", "/api/v1/tasks/{id}/events", Some(View), "runs", "Server-Sent Events (text/event-stream): a `task` event with the task document now and on each change, until the run ends (at most 10 minutes; keep-alive every 15 s). On AWS, only the current document: poll instead."),
    route("GET", "/api/v1/tasks/{id}/application", Some(View), "runs", "The application document the run executes (its snapshot).").response("Application"),
    route("GET", "/api/v1/tasks/{id}/steps/{step}/output", Some(View), "runs", "A step's output (the JSON value itself; null when it has none)."),
    route("GET", "/api/v1/tasks/{id}/steps/{step}/units", Some(View), "runs", "A page of a step's units (its for_each items, in order): state, attempt, times, error, child run.").query(&[("state", "Only units in this state: pending, queued, running, done or failed."), ("offset", "Skip this many matching units (the previous page's next_offset)."), ("limit", "At most this many units, 1-1000 (default 100).")]).response("Units"),
    route("POST", "/api/v1/tasks/{id}/replay", Some(Exec), "runs", "A new run with the same application, variables, configuration and queue.").query(&[WAIT]).response("Task"),
    route("DELETE", "/api/v1/tasks/{id}", Some(Exec), "runs", "Terminate a run: the same as revoking it.").response("Task"),
    route("POST", "/api/v1/tasks/{id}/revoke", Some(Exec), "runs", "Revoke a run: nothing further starts, unfinished steps are cancelled. Given an application id instead, revoke every unfinished run of that application (administrator; answers {application, revoked}).").response("Revocation"),
    // Reports.
    route("GET", "/api/v1/reports", Some(View), "reports", "Run reports, newest run first: id (report-<application>-<run id>), run, application, expiry.").query(&[("application", "Only reports of this application."), ("limit", "Page size, 1-1000 (default 50)."), ("cursor", "next_cursor of the previous page.")]).response("ReportList"),
    route("GET", "/api/v1/reports/{id}", Some(View), "reports", "One run's report: its sections (title, details, tables of rows with a status) and row counts by status. `format=csv` or `Accept: text/csv`: every table as one CSV (text/csv).").query(&[("format", "json (default) or csv.")]).response("Report"),
    route("DELETE", "/api/v1/reports/{id}", Some(Exec), "reports", "Delete a run's report (the run stays).").response("Deleted"),
    // Schedules.
    route("GET", "/api/v1/schedule", Some(View), "schedule", "Schedules with total_runs, last_run and next_run.").response("ScheduleList"),
    route("POST", "/api/v1/schedule", Some(Admin), "schedule", "Create or replace a schedule (crontab or frequency, UTC).").body("Schedule").response("ScheduleEntry"),
    route("DELETE", "/api/v1/schedule", Some(Admin), "schedule", "Delete the schedule named by the body's entry_id.").body("EntryId").response("Deleted"),
    route("GET", "/api/v1/schedule/{entry_id}", Some(View), "schedule", "One schedule with its statistics.").response("ScheduleEntry"),
    route("DELETE", "/api/v1/schedule/{entry_id}", Some(Admin), "schedule", "Delete a schedule.").response("Deleted"),
    // Cache.
    route("GET", "/api/v1/cache", Some(View), "cache", "Keys of live cache entries, in ascending order, a page at a time.").query(&[("prefix", "Only keys starting with this (literal) text."), ("limit", "Page size, 1-1000 (default 100)."), ("after", "Only keys sorting after this one (the previous page's next_after).")]).response("CacheKeyList"),
    route("DELETE", "/api/v1/cache", Some(Admin), "cache", "Delete every entry whose key starts with prefix (required; empty: every entry); answers how many live entries were deleted.").query(&[("prefix", "The key prefix (literal text).")]).response("CacheDeleted"),
    route("GET", "/api/v1/cache/{key}", Some(View), "cache", "A cache entry.").response("CacheEntry"),
    route("DELETE", "/api/v1/cache/{key}", Some(Admin), "cache", "Delete a cache entry.").response("Deleted"),
    // Roles and tokens.
    route("GET", "/api/v1/dashboard", Some(View), "runs", "The console's dashboard: each step queue's depth and its dead-letter queue's (null where unknown), this server's worker slots (null on AWS), running steps and pending/running run counts."),
    route("POST", "/api/v1/validate/application", Some(Dev), "applications", "Check an application document as POST /applications does, without storing it: {valid, issues: [{path, message}]}.").body("Application"),
    route("GET", "/api/v1/whoami", Some(View), "roles", "The caller: name, role and authentication method (basic, token or jwt)."),
    route("GET", "/api/v1/roles", Some(View), "roles", "The roles, each including the ones before it.").response("RoleList"),
    route("GET", "/api/v1/roles/owner", Some(Admin), "roles", "Role bindings (of users and groups).").query(&[("owner", "Only bindings of this owner."), ("owner_type", "user or group.")]).response("RoleBindingList"),
    route("POST", "/api/v1/roles/owner", Some(Admin), "roles", "Bind a role to a user or group (replacing its binding).").body("RoleBinding").response("RoleBinding"),
    route("DELETE", "/api/v1/roles/owner", Some(Admin), "roles", "Remove the binding of the owner named in the body (or the owner and owner_type query parameters).").query(&[("owner", "The owner."), ("owner_type", "user (default) or group.")]).response("Deleted"),
    route("GET", "/api/v1/tokens", Some(Admin), "roles", "API tokens (names and roles; never the tokens).").response("TokenList"),
    route("POST", "/api/v1/tokens", Some(Admin), "roles", "Create an API token; the response shows it once.").body("TokenRequest").response("NewToken"),
    route("DELETE", "/api/v1/tokens/{name}", Some(Admin), "roles", "Revoke an API token.").response("Deleted"),
];

/// The declared role of `(method, path)`; `None` when the route is not declared.
pub fn lookup(method: &str, path: &str) -> Option<&'static RouteSpec> {
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}
