//! Database values to JSON, per backend, by the value's type: integers and reals become
//! numbers, text strings, booleans booleans, NULL `null`, binary data base64 text,
//! JSON columns JSON, dates and times ISO 8601 text, decimals numbers when a double
//! holds them exactly (text otherwise, so no digit is lost), and PostgreSQL arrays lists.
//! Types without a faithful conversion fail with a hint to cast them in the query.

use std::str::FromStr;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use serde_json::{Map, Number, Value};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlRow, MySqlTypeInfo, MySqlValueRef};
use sqlx::postgres::{PgRow, PgTypeInfo, PgTypeKind, PgValueRef, Postgres};
use sqlx::sqlite::{Sqlite, SqliteRow, SqliteTypeInfo, SqliteValueRef};
use sqlx::types::{BigDecimal, JsonValue, Uuid};
use sqlx::{Column, Decode, Row, TypeInfo, ValueRef};

/// One value converted to JSON; decodes from any value of the three backends.
pub(super) struct Cell(pub Value);

/// A row as a JSON object keyed by column name, in column order.
pub(super) fn row_object<R>(row: &R) -> Result<Map<String, Value>, String>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    Cell: for<'r> Decode<'r, R::Database>,
{
    let mut object = Map::with_capacity(row.columns().len());
    for (i, column) in row.columns().iter().enumerate() {
        let Cell(value) = row
            .try_get_unchecked::<Cell, _>(i)
            .map_err(|e| format!("column \"{}\": {}", column.name(), source_text(&e)))?;
        object.insert(column.name().to_string(), value);
    }
    Ok(object)
}

/// SQLite has no boolean storage class: a column declared `BOOLEAN` holds 0 and 1,
/// which are shown as `false` and `true`.
pub(super) fn sqlite_row_object(row: &SqliteRow) -> Result<Map<String, Value>, String> {
    let mut object = row_object(row)?;
    for column in row.columns() {
        if column.type_info().name() == "BOOLEAN" {
            if let Some(value) = object.get_mut(column.name()) {
                match value.as_i64() {
                    Some(0) => *value = Value::Bool(false),
                    Some(1) => *value = Value::Bool(true),
                    _ => {}
                }
            }
        }
    }
    Ok(object)
}

pub(super) fn pg_row_object(row: &PgRow) -> Result<Map<String, Value>, String> {
    row_object(row)
}

pub(super) fn mysql_row_object(row: &MySqlRow) -> Result<Map<String, Value>, String> {
    row_object(row)
}

/// The innermost message of a decoding error (sqlx wraps it in "error occurred while
/// decoding column 0: …").
fn source_text(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::ColumnDecode { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

fn cast_hint(backend: &str, type_name: &str, example: &str) -> BoxDynError {
    format!(
        "the {backend} type {type_name} has no JSON conversion; cast the column in the query (e.g. {example})"
    )
    .into()
}

fn float(value: f64) -> Value {
    Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(value.to_string()))
}

/// A single-precision float by its shortest decimal form (`1.1`, not `1.100000023841858`).
fn float32(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .map(float)
        .unwrap_or_else(|_| float(f64::from(value)))
}

/// A number when a double holds the decimal exactly, else its exact text (without
/// trailing fractional zeros, which PostgreSQL's wire format may add).
fn decimal(value: BigDecimal) -> Value {
    let mut text = value.to_string();
    if text.contains('.') && !text.contains(['e', 'E']) {
        text.truncate(text.trim_end_matches('0').trim_end_matches('.').len());
    }
    if value.is_integer() {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Number(i.into());
        }
    }
    if let Ok(f) = text.parse::<f64>() {
        if f.is_finite() && BigDecimal::from_str(&f.to_string()).ok().as_ref() == Some(&value) {
            return float(f);
        }
    }
    Value::String(text)
}

fn bytes(value: Vec<u8>) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(value))
}

fn date(value: NaiveDate) -> Value {
    Value::String(value.to_string())
}

fn time(value: NaiveTime) -> Value {
    Value::String(value.format("%H:%M:%S%.f").to_string())
}

fn datetime(value: NaiveDateTime) -> Value {
    Value::String(value.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
}

fn datetime_utc(value: DateTime<Utc>) -> Value {
    Value::String(value.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

// ---- SQLite: by the value's storage class ----

impl sqlx::Type<Sqlite> for Cell {
    fn type_info() -> SqliteTypeInfo {
        <String as sqlx::Type<Sqlite>>::type_info()
    }
    fn compatible(_: &SqliteTypeInfo) -> bool {
        true
    }
}

impl<'r> Decode<'r, Sqlite> for Cell {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.is_null() {
            return Ok(Cell(Value::Null));
        }
        // Non-null values report their storage class, not the declared column type.
        let class = value.type_info().name().to_string();
        Ok(Cell(match class.as_str() {
            "INTEGER" => Value::Number(<i64 as Decode<Sqlite>>::decode(value)?.into()),
            "REAL" => float(<f64 as Decode<Sqlite>>::decode(value)?),
            "BLOB" => bytes(<Vec<u8> as Decode<Sqlite>>::decode(value)?),
            _ => Value::String(<String as Decode<Sqlite>>::decode(value)?),
        }))
    }
}

// ---- PostgreSQL: by the value's type; arrays element by element ----

impl sqlx::Type<Postgres> for Cell {
    fn type_info() -> PgTypeInfo {
        <String as sqlx::Type<Postgres>>::type_info()
    }
    fn compatible(_: &PgTypeInfo) -> bool {
        true
    }
}

impl<'r> Decode<'r, Postgres> for Cell {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.is_null() {
            return Ok(Cell(Value::Null));
        }
        let info = value.type_info().into_owned();
        pg_decode(value, &info).map(Cell)
    }
}

fn pg_decode(value: PgValueRef<'_>, info: &PgTypeInfo) -> Result<Value, BoxDynError> {
    match info.kind() {
        // Enum labels travel as their text.
        PgTypeKind::Enum(_) => return Ok(Value::String(Decode::<Postgres>::decode(value)?)),
        // A domain value is encoded as its base type.
        PgTypeKind::Domain(base) => return pg_decode(value, base),
        PgTypeKind::Array(_) => {
            let items: Vec<Cell> = Decode::<Postgres>::decode(value)?;
            return Ok(Value::Array(items.into_iter().map(|c| c.0).collect()));
        }
        _ => {}
    }
    let name = info.name();
    Ok(match name.to_ascii_uppercase().as_str() {
        "BOOL" => Value::Bool(Decode::<Postgres>::decode(value)?),
        "INT2" => Value::Number(<i16 as Decode<Postgres>>::decode(value)?.into()),
        "INT4" => Value::Number(<i32 as Decode<Postgres>>::decode(value)?.into()),
        "INT8" => Value::Number(<i64 as Decode<Postgres>>::decode(value)?.into()),
        "OID" => Value::Number(
            <sqlx::postgres::types::Oid as Decode<Postgres>>::decode(value)?
                .0
                .into(),
        ),
        "FLOAT4" => float32(Decode::<Postgres>::decode(value)?),
        "FLOAT8" => float(Decode::<Postgres>::decode(value)?),
        "NUMERIC" => decimal(
            Decode::<Postgres>::decode(value)
                .map_err(|_| cast_hint("PostgreSQL", "NUMERIC (NaN or infinite)", "col::text"))?,
        ),
        "TEXT" | "VARCHAR" | "CHAR" | "NAME" | "CITEXT" | "UNKNOWN" | "XML" => {
            Value::String(Decode::<Postgres>::decode(value)?)
        }
        "JSON" | "JSONB" => <JsonValue as Decode<Postgres>>::decode(value)?,
        "UUID" => Value::String(<Uuid as Decode<Postgres>>::decode(value)?.to_string()),
        "BYTEA" => bytes(Decode::<Postgres>::decode(value)?),
        "DATE" => date(Decode::<Postgres>::decode(value).map_err(|_| {
            cast_hint("PostgreSQL", "DATE (infinite or out of range)", "col::text")
        })?),
        "TIME" => time(Decode::<Postgres>::decode(value)?),
        "TIMESTAMP" => datetime(Decode::<Postgres>::decode(value).map_err(|_| {
            cast_hint(
                "PostgreSQL",
                "TIMESTAMP (infinite or out of range)",
                "col::text",
            )
        })?),
        "TIMESTAMPTZ" => datetime_utc(Decode::<Postgres>::decode(value).map_err(|_| {
            cast_hint(
                "PostgreSQL",
                "TIMESTAMPTZ (infinite or out of range)",
                "col::text",
            )
        })?),
        "VOID" => Value::Null,
        _ => return Err(cast_hint("PostgreSQL", name, "col::text or to_json(col)")),
    })
}

// ---- MySQL / MariaDB: by the column's type ----
//
// The protocol marks text with a binary collation (`utf8mb4_bin`, MariaDB's JSON) as
// binary, and sqlx does not expose the collation that would tell them apart: such
// columns come back as base64 like true binary ones, consistently for every row.
// `CAST(col AS CHAR)` in the query gives text.

impl sqlx::Type<MySql> for Cell {
    fn type_info() -> MySqlTypeInfo {
        <String as sqlx::Type<MySql>>::type_info()
    }
    fn compatible(_: &MySqlTypeInfo) -> bool {
        true
    }
}

impl<'r> Decode<'r, MySql> for Cell {
    fn decode(value: MySqlValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.is_null() {
            return Ok(Cell(Value::Null));
        }
        let name = value.type_info().name().to_string();
        Ok(Cell(match name.as_str() {
            "NULL" => Value::Null,
            "BOOLEAN" => Value::Bool(<i64 as Decode<MySql>>::decode(value)? != 0),
            "TINYINT" | "SMALLINT" | "INT" | "MEDIUMINT" | "BIGINT" | "YEAR" => {
                Value::Number(<i64 as Decode<MySql>>::decode(value)?.into())
            }
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "INT UNSIGNED" | "MEDIUMINT UNSIGNED"
            | "BIGINT UNSIGNED" | "BIT" => {
                Value::Number(<u64 as Decode<MySql>>::decode(value)?.into())
            }
            "FLOAT" => float32(Decode::<MySql>::decode(value)?),
            "DOUBLE" => float(Decode::<MySql>::decode(value)?),
            "DECIMAL" => decimal(Decode::<MySql>::decode(value)?),
            "JSON" => <JsonValue as Decode<MySql>>::decode(value)?,
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB"
            | "GEOMETRY" => bytes(Decode::<MySql>::decode(value)?),
            "DATE" => date(Decode::<MySql>::decode(value).map_err(|_| {
                cast_hint("MySQL", "DATE (zero or out of range)", "CAST(col AS CHAR)")
            })?),
            "DATETIME" => datetime(Decode::<MySql>::decode(value).map_err(|_| {
                cast_hint(
                    "MySQL",
                    "DATETIME (zero or out of range)",
                    "CAST(col AS CHAR)",
                )
            })?),
            "TIMESTAMP" => datetime_utc(Decode::<MySql>::decode(value).map_err(|_| {
                cast_hint(
                    "MySQL",
                    "TIMESTAMP (zero or out of range)",
                    "CAST(col AS CHAR)",
                )
            })?),
            "TIME" => time(Decode::<MySql>::decode(value).map_err(|_| {
                cast_hint(
                    "MySQL",
                    "TIME (negative or past 24 hours)",
                    "CAST(col AS CHAR)",
                )
            })?),
            // CHAR, VARCHAR, the TEXT types, ENUM, SET.
            _ => Value::String(
                Decode::<MySql>::decode(value)
                    .map_err(|_| cast_hint("MySQL", &name, "CAST(col AS CHAR)"))?,
            ),
        }))
    }
}
