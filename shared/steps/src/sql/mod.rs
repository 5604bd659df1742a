//! `sql`: one statement against SQLite, PostgreSQL or MySQL/MariaDB.
//!
//! Each backend uses its native sqlx driver rather than `Any`: `Any` refuses every row
//! holding a column outside its small common type set (a PostgreSQL `timestamptz`,
//! `numeric`, `uuid` or `jsonb`, a MySQL `DATETIME` or `DECIMAL`, even a SQLite column
//! declared `DATETIME`), which real tables are full of. Binding and the conversion of
//! values to JSON are written once per backend; everything else is shared.

mod convert;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_sdk::{StepContext, StepError, StepOutput, TypedStep};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{
    PgArgumentBuffer, PgConnectOptions, PgPool, PgPoolOptions, PgTypeInfo, Postgres,
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Executor, Row};

/// Connections per database URL. Small: a step holds one for one statement, and many
/// functions (or one embedded process) may be talking to the same database.
const POOL_MAX_CONNECTIONS: u32 = 4;
/// How long to wait for a connection (connecting included) before failing retryably.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the `sql` step does with `query`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SqlMode {
    /// Run `query` and return its rows as a list of objects keyed by column name.
    #[default]
    Select,
    /// Run `query` and return `{"rows_affected": n}`.
    Execute,
    /// Return the columns of `table` as a list of `{"name", "type", "nullable"}`.
    Describe,
}

/// Parameters of `sql`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// `describe` needs `table`; `select` and `execute` (the default) need `query`.
#[schemars(extend(
    "if" = {"properties": {"mode": {"const": "describe"}}, "required": ["mode"]},
    "then" = {"required": ["table"]},
    "else" = {"required": ["query"]}
))]
pub struct SqlParams {
    /// The database: `postgres://user:password@host:5432/db`, `mysql://user:password@host/db`,
    /// or SQLite as `sqlite://path`, `sqlite:path` or a bare file path (relative paths are
    /// relative to the working directory; `sqlite:///abs/path` is absolute). A SQLite file
    /// that does not exist is an error, unless the URL ends in `?mode=rwc` (create it).
    pub url: String,
    /// The statement (`select` and `execute`). Placeholders: `?` for SQLite and MySQL,
    /// `$1`, `$2`, … for PostgreSQL (SQLite accepts `?1` and `$1` too). In `execute`
    /// mode without `params`, several statements separated by `;` may be given.
    /// It may not hold `${…}` references: pass values in `params`, which are bound.
    #[serde(default)]
    #[schemars(extend(
        "x-sluice-literal" = true,
        "x-sluice-literal-reason" = "values would be spliced into the SQL text; put a placeholder in the query and the reference in \"params\" (bound parameters)"
    ))]
    pub query: Option<String>,
    /// Values bound to the placeholders, in order: never spliced into the text. `null`,
    /// booleans, integers, reals and strings bind as such; objects and arrays as their
    /// JSON text (as `jsonb` on PostgreSQL). On PostgreSQL a string binds as `text`:
    /// cast it where another type is needed (`$1::uuid`, `$1::timestamptz`).
    #[serde(default)]
    pub params: Vec<Value>,
    /// `select` (default), `execute` or `describe`.
    #[serde(default)]
    pub mode: SqlMode,
    /// `describe` only: the table, optionally schema-qualified (`schema.table`).
    #[serde(default)]
    pub table: Option<String>,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

/// The `sql` step type. Keeps one small connection pool per database URL for the life of
/// the process, so a warm Lambda or the embedded server reuses its connections.
#[derive(Default)]
pub struct Sql {
    pools: Mutex<HashMap<String, Pool>>,
}

impl Sql {
    pub fn new() -> Self {
        Self::default()
    }

    async fn pool(&self, url: &str) -> Result<Pool, StepError> {
        if let Some(pool) = self.pools.lock().expect("sql pools").get(url) {
            return Ok(pool.clone());
        }
        let backend = backend_of(url)?;
        let shown = display_url(url);
        let connect_error =
            |e: sqlx::Error| classify(backend, &format!("cannot connect to {shown}"), e);
        let pool = match backend {
            Backend::Sqlite => {
                let options = sqlite_options(url)?;
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(POOL_MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .idle_timeout(IDLE_TIMEOUT)
                        .connect_with(options)
                        .await
                        .map_err(connect_error)?,
                )
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(|e| {
                    StepError::Fatal(format!("invalid PostgreSQL URL {shown}: {e}"))
                })?;
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(POOL_MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .idle_timeout(IDLE_TIMEOUT)
                        .connect_with(options)
                        .await
                        .map_err(connect_error)?,
                )
            }
            Backend::MySql => {
                let options = MySqlConnectOptions::from_str(url)
                    .map_err(|e| StepError::Fatal(format!("invalid MySQL URL {shown}: {e}")))?;
                Pool::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(POOL_MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .idle_timeout(IDLE_TIMEOUT)
                        .connect_with(options)
                        .await
                        .map_err(connect_error)?,
                )
            }
        };
        // Two first uses may race to connect: keep the pool that got in first.
        let mut pools = self.pools.lock().expect("sql pools");
        Ok(pools.entry(url.to_string()).or_insert(pool).clone())
    }
}

#[async_trait]
impl TypedStep for Sql {
    const NAME: &'static str = "sql";
    const DESCRIPTION: &'static str =
        "Runs one SQL statement (bound parameters) on SQLite, PostgreSQL or MySQL: rows, rows affected, or a table's columns.";
    const VERSION: &'static str = "1.0.0";
    type Params = SqlParams;

    async fn run(&self, params: SqlParams, ctx: &StepContext) -> Result<StepOutput, StepError> {
        let invalid = |m: &str| Err(StepError::InvalidParameters(m.to_string()));
        match params.mode {
            SqlMode::Select | SqlMode::Execute => {
                if params.query.as_deref().is_none_or(|q| q.trim().is_empty()) {
                    return invalid("sql: modes \"select\" and \"execute\" need a \"query\"");
                }
                if params.table.is_some() {
                    return invalid("sql: \"table\" applies to mode \"describe\" only");
                }
            }
            SqlMode::Describe => {
                if params.table.as_deref().is_none_or(|t| t.trim().is_empty()) {
                    return invalid("sql: mode \"describe\" needs a \"table\"");
                }
                if params.query.is_some() || !params.params.is_empty() {
                    return invalid(
                        "sql: mode \"describe\" takes a \"table\", not \"query\" or \"params\"",
                    );
                }
            }
        }
        let backend = backend_of(&params.url)?;
        let pool = self.pool(&params.url).await?;
        let shown = display_url(&params.url);
        let started = Instant::now();
        let failed = |e: sqlx::Error| {
            classify(
                backend,
                &format!("{} on {shown} failed", mode_name(params.mode)),
                e,
            )
        };

        let value = match params.mode {
            SqlMode::Select => {
                let query = params.query.as_deref().unwrap_or_default();
                ctx.log.debug(format!("query: {query}"));
                let rows = select(&pool, query, &params.params)
                    .await
                    .map_err(|e| match e {
                        QueryError::Sql(e) => failed(e),
                        QueryError::Convert(m) => {
                            StepError::Fatal(format!("select on {shown}: {m}"))
                        }
                    })?;
                ctx.log.info(format!(
                    "select on {shown}: {} row{} ({} ms)",
                    rows.len(),
                    if rows.len() == 1 { "" } else { "s" },
                    started.elapsed().as_millis()
                ));
                Value::Array(rows.into_iter().map(Value::Object).collect())
            }
            SqlMode::Execute => {
                let query = params.query.as_deref().unwrap_or_default();
                ctx.log.debug(format!("query: {query}"));
                let affected = execute(&pool, query, &params.params)
                    .await
                    .map_err(failed)?;
                ctx.log.info(format!(
                    "execute on {shown}: {affected} row{} affected ({} ms)",
                    if affected == 1 { "" } else { "s" },
                    started.elapsed().as_millis()
                ));
                json!({ "rows_affected": affected })
            }
            SqlMode::Describe => {
                let table = params.table.as_deref().unwrap_or_default().trim();
                let columns = describe(&pool, table).await.map_err(failed)?;
                if columns.is_empty() {
                    return Err(StepError::Fatal(format!(
                        "table \"{table}\" not found in {shown}"
                    )));
                }
                ctx.log.info(format!(
                    "describe {table} on {shown}: {} columns ({} ms)",
                    columns.len(),
                    started.elapsed().as_millis()
                ));
                Value::Array(columns)
            }
        };
        Ok(StepOutput::value(value))
    }
}

fn mode_name(mode: SqlMode) -> &'static str {
    match mode {
        SqlMode::Select => "select",
        SqlMode::Execute => "execute",
        SqlMode::Describe => "describe",
    }
}

enum QueryError {
    Sql(sqlx::Error),
    Convert(String),
}

impl From<sqlx::Error> for QueryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Sql(e)
    }
}

/// Binds JSON parameters to a query of any backend; `$null` and `$structured` say how
/// `null` and objects/arrays bind there.
macro_rules! bind_params {
    ($query:expr, $params:expr, $null:expr, $structured:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Value::Null => query.bind($null),
                Value::Bool(b) => query.bind(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => query.bind(i),
                    // Past i64 (large unsigned) or fractional: a double, as JSON means.
                    None => query.bind(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => query.bind(s.as_str()),
                other => query.bind($structured(other)),
            };
        }
        query
    }};
}

async fn select(
    pool: &Pool,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Map<String, Value>>, QueryError> {
    let convert = QueryError::Convert;
    match pool {
        Pool::Sqlite(pool) => {
            let query = bind_params!(sqlx::query(sql), params, None::<String>, Value::to_string);
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(convert::sqlite_row_object)
                .collect::<Result<_, _>>()
                .map_err(convert)
        }
        Pool::Postgres(pool) => {
            let query = bind_params!(sqlx::query(sql), params, UntypedNull, sqlx::types::Json);
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(convert::pg_row_object)
                .collect::<Result<_, _>>()
                .map_err(convert)
        }
        Pool::MySql(pool) => {
            let query = bind_params!(sqlx::query(sql), params, None::<String>, Value::to_string);
            let rows = query.fetch_all(pool).await?;
            rows.iter()
                .map(convert::mysql_row_object)
                .collect::<Result<_, _>>()
                .map_err(convert)
        }
    }
}

/// Rows affected. Without parameters the text goes through the simple-query protocol,
/// so a script of several statements (`CREATE TABLE …; INSERT …`) runs whole.
async fn execute(pool: &Pool, sql: &str, params: &[Value]) -> Result<u64, sqlx::Error> {
    Ok(match pool {
        Pool::Sqlite(pool) if params.is_empty() => {
            pool.execute(sqlx::raw_sql(sql)).await?.rows_affected()
        }
        Pool::Postgres(pool) if params.is_empty() => {
            pool.execute(sqlx::raw_sql(sql)).await?.rows_affected()
        }
        Pool::MySql(pool) if params.is_empty() => {
            pool.execute(sqlx::raw_sql(sql)).await?.rows_affected()
        }
        Pool::Sqlite(pool) => {
            bind_params!(sqlx::query(sql), params, None::<String>, Value::to_string)
                .execute(pool)
                .await?
                .rows_affected()
        }
        Pool::Postgres(pool) => {
            bind_params!(sqlx::query(sql), params, UntypedNull, sqlx::types::Json)
                .execute(pool)
                .await?
                .rows_affected()
        }
        Pool::MySql(pool) => {
            bind_params!(sqlx::query(sql), params, None::<String>, Value::to_string)
                .execute(pool)
                .await?
                .rows_affected()
        }
    })
}

/// The columns of `table` as `{"name", "type", "nullable"}`, in table order; empty when
/// the table does not exist. `type` is the declared type as the database shows it.
async fn describe(pool: &Pool, table: &str) -> Result<Vec<Value>, sqlx::Error> {
    let column = |name: String, ty: String, nullable: bool| json!({ "name": name, "type": ty, "nullable": nullable });
    let (schema, name) = match table.rsplit_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    };
    match pool {
        Pool::Sqlite(pool) => {
            let rows = sqlx::query(
                r#"SELECT name, type, "notnull" FROM pragma_table_info(?1, ?2) ORDER BY cid"#,
            )
            .bind(name)
            .bind(schema.unwrap_or("main"))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(column(
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get::<i64, _>(2)? == 0,
                    ))
                })
                .collect()
        }
        Pool::Postgres(pool) => {
            // to_regclass resolves the name as a query would (search_path, quoting).
            let rows = sqlx::query(
                "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), NOT a.attnotnull \
                 FROM pg_catalog.pg_attribute a \
                 WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
            )
            .bind(table)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| Ok(column(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect()
        }
        Pool::MySql(pool) => {
            let rows = sqlx::query(
                "SELECT CAST(COLUMN_NAME AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
                        CAST(IS_NULLABLE = 'YES' AS SIGNED) \
                 FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
            )
            .bind(schema)
            .bind(name)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(column(
                        r.try_get_unchecked(0)?,
                        r.try_get_unchecked(1)?,
                        r.try_get_unchecked::<i64, _>(2)? != 0,
                    ))
                })
                .collect()
        }
    }
}

/// A PostgreSQL NULL parameter of unspecified type, so the server infers it from the
/// context (`INSERT … VALUES ($1)` into an integer column works). A NULL typed `text`
/// would be refused there.
struct UntypedNull;

impl sqlx::Type<Postgres> for UntypedNull {
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(sqlx::postgres::types::Oid(0))
    }
}

impl sqlx::Encode<'_, Postgres> for UntypedNull {
    fn encode_by_ref(&self, _: &mut PgArgumentBuffer) -> Result<sqlx::encode::IsNull, BoxDynError> {
        Ok(sqlx::encode::IsNull::Yes)
    }
}

fn backend_of(url: &str) -> Result<Backend, StepError> {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if lower.starts_with("mysql://") || lower.starts_with("mariadb://") {
        Ok(Backend::MySql)
    } else if lower.starts_with("sqlite:") || !lower.contains("://") {
        Ok(Backend::Sqlite)
    } else {
        Err(StepError::Fatal(format!(
            "unsupported database URL {}: use sqlite://, postgres:// or mysql://",
            display_url(url)
        )))
    }
}

/// SQLite options that never create a database unless the URL asks (`mode=rwc`): a
/// mistyped path fails clearly instead of answering from a new, empty database.
fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StepError> {
    let url = url.trim();
    let normalized = if url.to_ascii_lowercase().starts_with("sqlite:") {
        url.to_string()
    } else {
        format!("sqlite://{url}")
    };
    let options = SqliteConnectOptions::from_str(&normalized)
        .map_err(|e| StepError::Fatal(format!("invalid SQLite URL {url}: {e}")))?;
    let rest = normalized["sqlite:".len()..].trim_start_matches("//");
    let (database, query) = rest.split_once('?').unwrap_or((rest, ""));
    let modes: Vec<&str> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("mode="))
        .collect();
    let in_memory = database == ":memory:" || modes.contains(&"memory");
    let creates = modes.contains(&"rwc");
    if !in_memory && !creates {
        let path = options.get_filename();
        if !path.is_file() {
            return Err(StepError::Fatal(format!(
                "SQLite database {} does not exist (add ?mode=rwc to the URL to create it)",
                path.display()
            )));
        }
    }
    Ok(options)
}

/// The URL as shown in logs and errors: the password replaced by `***`.
fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Retryable or not: lost connections, timeouts, deadlocks, serialization failures and
/// busy databases are worth another attempt; bad SQL, missing tables, constraint
/// violations and unconvertible values are not.
fn classify(backend: Backend, context: &str, error: sqlx::Error) -> StepError {
    let message = format!("{context}: {error}");
    let retryable = match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match backend {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), extended codes included.
                Backend::Sqlite => code
                    .parse::<i64>()
                    .map(|c| matches!(c & 0xff, 5 | 6))
                    .unwrap_or(false),
                // SQLSTATE classes: connection exception, transaction rollback
                // (serialization, deadlock), insufficient resources, operator
                // intervention, system error; and lock_not_available.
                Backend::Postgres | Backend::MySql => {
                    ["08", "40", "53", "57", "58"]
                        .iter()
                        .any(|c| code.starts_with(c))
                        || code == "55P03"
                        || mysql_lock_timeout(db.as_ref())
                }
            }
        }
        sqlx::Error::Configuration(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound => false,
        // I/O, TLS, protocol, pool timeouts, a crashed worker…
        _ => true,
    };
    if retryable {
        StepError::Retryable(message)
    } else {
        StepError::Fatal(message)
    }
}

/// MySQL's lock wait timeout (1205) carries the generic SQLSTATE HY000.
fn mysql_lock_timeout(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| e.number() == 1205)
}
