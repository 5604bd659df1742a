//! Run reports: sections a step adds to its run (a title, key/value details, tables of
//! rows each with a [`RowStatus`]), through [`StepContext::report`](crate::step::StepContext::report)
//! or the `report` operator. Pure: the section model and its bounds, the operator's
//! parameters, the report id `report-<application>-<run>`, assembling stored parts into
//! one [`Report`], and the report as CSV. The stores keep the sections
//! ([`ReportStore`](crate::ports::ReportStore)), one part per step unit, so that a
//! re-executed attempt overwrites what an earlier execution of that unit stored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{Run, RUN_ID_PREFIX};
use crate::redact::Redactor;

/// Sections one unit of a step may add; more are dropped with a warning.
pub const MAX_SECTIONS_PER_UNIT: usize = 20;
/// Details (key/value pairs) per section.
pub const MAX_DETAILS: usize = 100;
/// Tables per section.
pub const MAX_TABLES: usize = 10;
/// Columns per table.
pub const MAX_COLUMNS: usize = 50;
/// Rows per table.
pub const MAX_ROWS: usize = 5000;
/// Characters of a title, a detail key, a column name.
pub const MAX_NAME_CHARS: usize = 200;
/// Characters of a detail value or a cell (as text).
pub const MAX_CELL_CHARS: usize = 1000;
/// JSON bytes of everything one unit reports; rows past it are dropped (counted in
/// [`ReportTable::omitted_rows`]) with a warning.
pub const MAX_UNIT_BYTES: usize = 1024 * 1024;
/// JSON bytes of the sections a whole report shows (a run may fan out to many units);
/// later sections are left out and counted in [`Report::omitted_sections`].
pub const MAX_REPORT_BYTES: usize = 8 * 1024 * 1024;

/// The prefix of every report id.
pub const REPORT_ID_PREFIX: &str = "report-";

/// What became of the record a row stands for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum RowStatus {
    New,
    Updated,
    Removed,
    Unchanged,
    Failed,
}

impl RowStatus {
    /// Every status, in the order reports count them.
    pub const ALL: [RowStatus; 5] = [
        Self::New,
        Self::Updated,
        Self::Removed,
        Self::Unchanged,
        Self::Failed,
    ];

    /// `New`, `Updated`, `Removed`, `Unchanged` or `Failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "New",
            Self::Updated => "Updated",
            Self::Removed => "Removed",
            Self::Unchanged => "Unchanged",
            Self::Failed => "Failed",
        }
    }

    /// A status named in any letter case (`new`, `NEW`, `New`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// One row: its status and one value per column (strings, numbers, booleans or null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRow {
    pub status: RowStatus,
    pub values: Vec<Value>,
}

/// A table of rows under named columns.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub columns: Vec<String>,
    #[serde(default)]
    pub rows: Vec<ReportRow>,
    /// Rows dropped by the bounds (see [`MAX_ROWS`], [`MAX_UNIT_BYTES`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_rows: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ReportTable {
    /// An empty table with these columns.
    pub fn new<S: Into<String>>(columns: impl IntoIterator<Item = S>) -> Self {
        Self {
            columns: columns.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The same table with a title.
    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The same table with one more row.
    pub fn row<V: Into<Value>>(
        mut self,
        status: RowStatus,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        self.rows.push(ReportRow {
            status,
            values: values.into_iter().map(Into::into).collect(),
        });
        self
    }
}

/// One section of a run's report.
///
/// ```
/// use serde_json::json;
/// use sluice_core::report::{ReportSection, ReportTable, RowStatus};
///
/// let section = ReportSection::new("Devices")
///     .detail("source", "discovery")
///     .table(ReportTable::new(["serial", "hostname"]).row(RowStatus::New, [json!("S1"), json!("web-1")]));
/// assert_eq!(section.tables[0].rows[0].status, RowStatus::New);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    pub title: String,
    /// Key/value pairs, in the order given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<ReportTable>,
}

impl ReportSection {
    /// A section with a title and nothing else yet.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            ..Self::default()
        }
    }

    /// The same section with one more detail.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The same section with one more table.
    pub fn table(mut self, table: ReportTable) -> Self {
        self.tables.push(table);
        self
    }

    /// How many rows of each status the section's tables hold.
    pub fn counts(&self) -> BTreeMap<RowStatus, u64> {
        let mut counts = BTreeMap::new();
        for row in self.tables.iter().flat_map(|t| &t.rows) {
            *counts.entry(row.status).or_insert(0) += 1;
        }
        counts
    }

    /// The section with every secret `redactor` knows masked: the title, the keys and
    /// values of details, the columns and the cells.
    pub fn redacted(&self, redactor: &Redactor) -> Self {
        if redactor.is_empty() {
            return self.clone();
        }
        Self {
            title: redactor.redact_str(&self.title),
            details: self
                .details
                .iter()
                .map(|(k, v)| (redactor.redact_str(k), redactor.redact_value(v)))
                .collect(),
            tables: self
                .tables
                .iter()
                .map(|t| ReportTable {
                    title: t.title.as_deref().map(|s| redactor.redact_str(s)),
                    columns: t.columns.iter().map(|c| redactor.redact_str(c)).collect(),
                    rows: t
                        .rows
                        .iter()
                        .map(|r| ReportRow {
                            status: r.status,
                            values: r.values.iter().map(|v| redactor.redact_value(v)).collect(),
                        })
                        .collect(),
                    omitted_rows: t.omitted_rows,
                })
                .collect(),
        }
    }
}

/// Redacts, then bounds, what one unit reported. Redaction comes first so that a
/// truncation never leaves part of a secret the redactor would no longer recognise.
/// Returns the sections to store and a warning for each bound that cut something.
pub fn prepare_sections(
    sections: Vec<ReportSection>,
    redactor: &Redactor,
) -> (Vec<ReportSection>, Vec<String>) {
    let redacted = sections.iter().map(|s| s.redacted(redactor)).collect();
    bound_sections(redacted)
}

/// Applies the bounds ([`MAX_SECTIONS_PER_UNIT`] and the others) to one unit's
/// sections: long texts are cut (ending in `…`), values that are not scalars become
/// their JSON text, rows get exactly one value per column, and what exceeds a count or
/// [`MAX_UNIT_BYTES`] is dropped. Each kind of cut is named once in the warnings.
pub fn bound_sections(mut sections: Vec<ReportSection>) -> (Vec<ReportSection>, Vec<String>) {
    let mut warnings = Warnings::default();
    if sections.len() > MAX_SECTIONS_PER_UNIT {
        warnings.add(format!(
            "report: {} sections, only the first {MAX_SECTIONS_PER_UNIT} are kept",
            sections.len()
        ));
        sections.truncate(MAX_SECTIONS_PER_UNIT);
    }
    let mut budget = MAX_UNIT_BYTES;
    for section in &mut sections {
        section.title = cut(
            &section.title,
            MAX_NAME_CHARS,
            "a section title",
            &mut warnings,
        );
        if section.details.len() > MAX_DETAILS {
            warnings.add(format!(
                "report: section \"{}\" has {} details, only the first {MAX_DETAILS} are kept",
                section.title,
                section.details.len()
            ));
        }
        section.details = std::mem::take(&mut section.details)
            .into_iter()
            .take(MAX_DETAILS)
            .map(|(k, v)| {
                (
                    cut(&k, MAX_NAME_CHARS, "a detail key", &mut warnings),
                    cell(v, &mut warnings),
                )
            })
            .collect();
        if section.tables.len() > MAX_TABLES {
            warnings.add(format!(
                "report: section \"{}\" has {} tables, only the first {MAX_TABLES} are kept",
                section.title,
                section.tables.len()
            ));
            section.tables.truncate(MAX_TABLES);
        }
        budget = budget.saturating_sub(json_len(&section.title) + json_len(&section.details));
        for table in &mut section.tables {
            bound_table(table, &mut budget, &mut warnings);
        }
    }
    (sections, warnings.0)
}

fn bound_table(table: &mut ReportTable, budget: &mut usize, warnings: &mut Warnings) {
    table.title = table
        .title
        .take()
        .map(|t| cut(&t, MAX_NAME_CHARS, "a table title", warnings));
    if table.columns.len() > MAX_COLUMNS {
        warnings.add(format!(
            "report: a table has {} columns, only the first {MAX_COLUMNS} are kept",
            table.columns.len()
        ));
        table.columns.truncate(MAX_COLUMNS);
    }
    table.columns = std::mem::take(&mut table.columns)
        .into_iter()
        .map(|c| cut(&c, MAX_NAME_CHARS, "a column name", warnings))
        .collect();
    *budget = budget.saturating_sub(json_len(&table.columns) + json_len(&table.title));
    let width = table.columns.len();
    let rows = std::mem::take(&mut table.rows);
    let total = rows.len();
    for mut row in rows.into_iter().take(MAX_ROWS) {
        if row.values.len() != width {
            warnings.add(format!(
                "report: a row has {} values for {width} columns (padded with null or cut)",
                row.values.len()
            ));
            row.values.resize(width, Value::Null);
        }
        row.values = row.values.into_iter().map(|v| cell(v, warnings)).collect();
        let size = json_len(&row);
        if size > *budget {
            break;
        }
        *budget -= size;
        table.rows.push(row);
    }
    let dropped = total - table.rows.len();
    if dropped > 0 {
        warnings.add(format!(
            "report: rows past {MAX_ROWS} per table or {MAX_UNIT_BYTES} bytes per step are omitted"
        ));
        table.omitted_rows += dropped as u64;
    }
}

/// Warnings without repeats (one bound cut in a thousand rows is one warning).
#[derive(Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn add(&mut self, warning: String) {
        if !self.0.contains(&warning) {
            self.0.push(warning);
        }
    }
}

fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.len())
}

/// `text` cut to `max` characters (the last one `…`).
fn cut(text: &str, max: usize, what: &str, warnings: &mut Warnings) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    warnings.add(format!(
        "report: {what} longer than {max} characters is cut"
    ));
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// A cell or detail value: scalars as they are (strings cut), anything else as its
/// compact JSON text.
fn cell(value: Value, warnings: &mut Warnings) -> Value {
    match value {
        Value::String(s) => Value::String(cut(&s, MAX_CELL_CHARS, "a value", warnings)),
        Value::Array(_) | Value::Object(_) => {
            Value::String(cut(&value.to_string(), MAX_CELL_CHARS, "a value", warnings))
        }
        scalar => scalar,
    }
}

/// The id of a run's report: `report-<application>-<run id>`.
pub fn report_id(application: &str, run_id: &str) -> String {
    format!("{REPORT_ID_PREFIX}{application}-{run_id}")
}

/// The application and run id a report id names. Run ids start with `isapp-` and hold
/// no other `isapp`, so the run id starts at the last `-isapp-` (application names may
/// contain `-`, even `-isapp-`).
///
/// ```
/// use sluice_core::report::{parse_report_id, report_id};
///
/// let id = report_id("inventory-sync", "isapp-0193-ab");
/// assert_eq!(parse_report_id(&id), Some(("inventory-sync".into(), "isapp-0193-ab".into())));
/// assert_eq!(parse_report_id("report-x"), None);
/// ```
pub fn parse_report_id(id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix(REPORT_ID_PREFIX)?;
    let marker = format!("-{RUN_ID_PREFIX}");
    let at = rest.rfind(&marker)?;
    let (application, run) = (&rest[..at], &rest[at + 1..]);
    (!application.is_empty() && run.len() > RUN_ID_PREFIX.len())
        .then(|| (application.to_string(), run.to_string()))
}

/// The run a report belongs to, as its stored parts record it: they expire with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportOwner {
    pub run_id: String,
    pub application: String,
    /// When the run was created (reports list newest run first).
    pub run_created_at: DateTime<Utc>,
    /// The run's expiry, which its report shares.
    pub expires_at: DateTime<Utc>,
}

impl From<&Run> for ReportOwner {
    fn from(run: &Run) -> Self {
        Self {
            run_id: run.id.clone(),
            application: run.application.clone(),
            run_created_at: run.created_at,
            expires_at: run.expires_at,
        }
    }
}

/// What one unit of a step stored: its sections, and when (by the store's clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportPart {
    pub step_id: String,
    pub unit: u32,
    pub recorded_at: DateTime<Utc>,
    pub sections: Vec<ReportSection>,
}

/// A report in a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReportSummary {
    /// `report-<application>-<run id>`.
    pub id: String,
    pub run_id: String,
    pub application: String,
    /// When the run was created (RFC 3339).
    #[schemars(with = "String")]
    pub run_created_at: DateTime<Utc>,
    /// When the report expires with its run (RFC 3339).
    #[schemars(with = "String")]
    pub expires_at: DateTime<Utc>,
}

impl ReportSummary {
    /// The summary of the report of `owner`.
    pub fn of(owner: &ReportOwner) -> Self {
        Self {
            id: report_id(&owner.application, &owner.run_id),
            run_id: owner.run_id.clone(),
            application: owner.application.clone(),
            run_created_at: owner.run_created_at,
            expires_at: owner.expires_at,
        }
    }
}

/// A section as a report shows it: which step (and unit) added it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PlacedSection {
    pub step: String,
    pub unit: u32,
    #[serde(flatten)]
    pub section: ReportSection,
}

/// A run's whole report: every section, steps in the order they first reported, a
/// step's units in unit order, and the row counts of every status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Report {
    #[serde(flatten)]
    pub summary: ReportSummary,
    /// Rows of each status over every table shown (every status present, 0 when none).
    pub counts: BTreeMap<String, u64>,
    pub sections: Vec<PlacedSection>,
    /// Sections left out past [`MAX_REPORT_BYTES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_sections: u64,
}

impl Report {
    /// Assembles a report from the stored parts of its run (in any order).
    pub fn assemble(owner: &ReportOwner, mut parts: Vec<ReportPart>) -> Self {
        let mut first_seen: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        for part in &parts {
            first_seen
                .entry(part.step_id.clone())
                .and_modify(|t| *t = (*t).min(part.recorded_at))
                .or_insert(part.recorded_at);
        }
        parts.sort_by(|a, b| {
            (first_seen[&a.step_id], &a.step_id, a.unit).cmp(&(
                first_seen[&b.step_id],
                &b.step_id,
                b.unit,
            ))
        });
        let mut counts: BTreeMap<String, u64> = RowStatus::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        let mut sections = Vec::new();
        let mut budget = MAX_REPORT_BYTES;
        let mut omitted_sections = 0;
        for part in parts {
            for section in part.sections {
                let size = json_len(&section);
                if omitted_sections > 0 || size > budget {
                    omitted_sections += 1;
                    continue;
                }
                budget -= size;
                for (status, n) in section.counts() {
                    *counts.entry(status.as_str().to_string()).or_insert(0) += n;
                }
                sections.push(PlacedSection {
                    step: part.step_id.clone(),
                    unit: part.unit,
                    section,
                });
            }
        }
        Self {
            summary: ReportSummary::of(owner),
            counts,
            sections,
            omitted_sections,
        }
    }

    /// Every table of the report as one CSV document (RFC 4180, CRLF line ends): the
    /// columns `section`, `step`, `table`, `status`, then the union of the tables'
    /// columns in order of appearance; a table's row leaves the others' columns empty.
    /// Details are not part of the CSV (the JSON document has them). Cells that a
    /// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or
    /// carriage return) are prefixed with `'`.
    pub fn to_csv(&self) -> String {
        let mut columns: Vec<&str> = Vec::new();
        for table in self.sections.iter().flat_map(|s| &s.section.tables) {
            for column in &table.columns {
                if !columns.contains(&column.as_str()) {
                    columns.push(column);
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = ["section", "step", "table", "status"]
            .into_iter()
            .chain(columns.iter().copied())
            .map(csv_field)
            .collect();
        out.push_str(&header.join(","));
        out.push_str("\r\n");
        for placed in &self.sections {
            for table in &placed.section.tables {
                let positions: Vec<usize> = table
                    .columns
                    .iter()
                    .map(|c| columns.iter().position(|k| k == c).unwrap_or(0))
                    .collect();
                for row in &table.rows {
                    let mut cells = vec![String::new(); columns.len()];
                    for (value, &at) in row.values.iter().zip(&positions) {
                        cells[at] = cell_text(value);
                    }
                    let line: Vec<String> = [
                        placed.section.title.as_str(),
                        placed.step.as_str(),
                        table.title.as_deref().unwrap_or(""),
                        row.status.as_str(),
                    ]
                    .into_iter()
                    .map(str::to_string)
                    .chain(cells)
                    .map(|c| csv_field(&c))
                    .collect();
                    out.push_str(&line.join(","));
                    out.push_str("\r\n");
                }
            }
        }
        out
    }
}

/// A cell as CSV text: strings as they are, null empty, others as JSON.
fn cell_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One CSV field: neutralised against formula injection, quoted when it holds a comma,
/// a quote, a line break or leading/trailing space.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) || text.starts_with(' ') || text.ends_with(' ') {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// One group of rows of a `report` operator's table: `items` (a list, usually a
/// `${Step.path}` reference) with one status for all, or each item's status read from
/// its field `status_field`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowGroupParams {
    /// The status of every item of the group (New, Updated, Removed, Unchanged, Failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RowStatus>,
    /// The field of each item that holds its status (instead of `status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_field: Option<String>,
    /// The rows: objects (a column's value is the field of that name) or scalars (the
    /// value of the first column). `null` is an empty group.
    pub items: Value,
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A table of a `report` operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportTableParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Column names: the fields of each item shown, in order.
    pub columns: Vec<String>,
    /// Groups of rows, in order.
    pub rows: Vec<RowGroupParams>,
}

/// Parameters of the `report` operator: one section of the run's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportParams {
    /// The section's title.
    pub title: String,
    /// Key/value details (values may be `${…}` references).
    #[serde(default)]
    pub details: Map<String, Value>,
    /// Tables built from lists, usually predecessors' outputs.
    #[serde(default)]
    pub tables: Vec<ReportTableParams>,
}

/// The section a `report` operator's resolved parameters describe; an error names the
/// field (the step fails with invalid parameters).
pub fn section_from_parameters(parameters: Value) -> Result<ReportSection, String> {
    let params: ReportParams = crate::json::from_value(parameters).map_err(|e| e.to_string())?;
    params.section()
}

/// The output of a `report` operator: the report's id and the rows it added by status,
/// so that successors can name the report.
pub fn operator_output(report_id: &str, section: &ReportSection) -> Value {
    let rows: Map<String, Value> = section
        .counts()
        .into_iter()
        .map(|(status, n)| (status.as_str().to_string(), Value::from(n)))
        .collect();
    serde_json::json!({"report": report_id, "rows": rows})
}

impl ReportParams {
    /// The section these (resolved) parameters describe; an error names the field.
    pub fn section(&self) -> Result<ReportSection, String> {
        let mut section = ReportSection {
            title: self.title.clone(),
            details: self.details.clone(),
            tables: Vec::new(),
        };
        for (t, table) in self.tables.iter().enumerate() {
            let mut built = ReportTable {
                title: table.title.clone(),
                columns: table.columns.clone(),
                ..ReportTable::default()
            };
            for (g, group) in table.rows.iter().enumerate() {
                let path = format!("tables[{t}].rows[{g}]");
                let items = match &group.items {
                    Value::Null => continue,
                    Value::Array(items) => items,
                    other => {
                        return Err(format!(
                            "{path}.items: expected a list, got {}",
                            kind_of(other)
                        ))
                    }
                };
                for (i, item) in items.iter().enumerate() {
                    let status = match (&group.status, &group.status_field) {
                        (Some(status), None) => *status,
                        (None, Some(field)) => {
                            let text = item.get(field).and_then(Value::as_str).unwrap_or("");
                            RowStatus::parse(text).ok_or_else(|| {
                                format!(
                                    "{path}.items[{i}].{field}: \"{text}\" is not New, Updated, Removed, Unchanged or Failed"
                                )
                            })?
                        }
                        _ => {
                            return Err(format!(
                                "{path}: give exactly one of status and status_field"
                            ))
                        }
                    };
                    let values = match item {
                        Value::Object(fields) => table
                            .columns
                            .iter()
                            .map(|c| fields.get(c).cloned().unwrap_or(Value::Null))
                            .collect(),
                        scalar => {
                            let mut values = vec![Value::Null; table.columns.len().max(1)];
                            values[0] = scalar.clone();
                            values.truncate(table.columns.len());
                            values
                        }
                    };
                    built.rows.push(ReportRow { status, values });
                }
            }
            section.tables.push(built);
        }
        Ok(section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner() -> ReportOwner {
        ReportOwner {
            run_id: "isapp-1".into(),
            application: "app".into(),
            run_created_at: DateTime::UNIX_EPOCH,
            expires_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn operator_params_build_a_table_from_groups_and_status_fields() {
        let params: ReportParams = serde_json::from_value(json!({
            "title": "Sync",
            "details": {"source": "db"},
            "tables": [{
                "title": "Items",
                "columns": ["id", "name"],
                "rows": [
                    {"status": "New", "items": [{"id": "a", "name": "A", "extra": 1}]},
                    {"status": "Removed", "items": ["b"]},
                    {"status_field": "s", "items": [{"id": "c", "s": "failed"}]},
                    {"status": "Unchanged", "items": null}
                ]
            }]
        }))
        .unwrap();
        let section = params.section().unwrap();
        let rows = &section.tables[0].rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].values, vec![json!("a"), json!("A")]);
        assert_eq!(rows[1].status, RowStatus::Removed);
        assert_eq!(rows[1].values, vec![json!("b"), Value::Null]);
        assert_eq!(rows[2].status, RowStatus::Failed);
    }

    #[test]
    fn operator_params_name_the_field_in_errors() {
        let params: ReportParams = serde_json::from_value(json!({
            "title": "Sync",
            "tables": [{"columns": ["id"], "rows": [{"status_field": "s", "items": [{"s": "gone"}]}]}]
        }))
        .unwrap();
        let error = params.section().unwrap_err();
        assert!(
            error.starts_with("tables[0].rows[0].items[0].s:"),
            "{error}"
        );
        let params: ReportParams = serde_json::from_value(json!({
            "title": "Sync",
            "tables": [{"columns": ["id"], "rows": [{"status": "New", "items": "x"}]}]
        }))
        .unwrap();
        assert!(params
            .section()
            .unwrap_err()
            .starts_with("tables[0].rows[0].items: expected a list"));
        assert!(
            serde_json::from_value::<ReportParams>(json!({"title": "x", "tabels": []})).is_err()
        );
    }

    #[test]
    fn bounds_cut_texts_drop_rows_and_warn_once() {
        let mut table = ReportTable::new(["a"]);
        for i in 0..(MAX_ROWS + 10) {
            table = table.row(RowStatus::New, [json!(i)]);
        }
        table = table.row(RowStatus::New, [json!("x".repeat(5000)), json!("extra")]);
        let section = ReportSection::new("t".repeat(300))
            .detail("nested", json!({"k": [1, 2]}))
            .table(table);
        let (bounded, warnings) = bound_sections(vec![section; 2]);
        assert_eq!(bounded[0].title.chars().count(), MAX_NAME_CHARS);
        assert_eq!(bounded[0].details["nested"], json!("{\"k\":[1,2]}"));
        assert_eq!(bounded[0].tables[0].rows.len(), MAX_ROWS);
        assert_eq!(bounded[0].tables[0].omitted_rows, 11);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let (many, warnings) = bound_sections(vec![ReportSection::new("s"); 25]);
        assert_eq!(many.len(), MAX_SECTIONS_PER_UNIT);
        assert_eq!(warnings.len(), 1);
        // The byte budget holds however many cells there are.
        let wide = ReportTable::new(["a", "b"]);
        let wide = (0..3000).fold(wide, |t, _| {
            t.row(
                RowStatus::Updated,
                [json!("y".repeat(999)), json!("z".repeat(999))],
            )
        });
        let (bounded, _) = bound_sections(vec![ReportSection::new("w").table(wide)]);
        assert!(serde_json::to_string(&bounded).unwrap().len() <= MAX_UNIT_BYTES + 1000);
        assert!(bounded[0].tables[0].omitted_rows > 0);
    }

    #[test]
    fn secrets_are_redacted_before_cutting() {
        let secret = json!("hunter2-very-secret");
        let redactor = Redactor::new([&secret]);
        let long = format!("{}hunter2-very-secret", "x".repeat(MAX_CELL_CHARS - 5));
        let section = ReportSection::new("token hunter2-very-secret")
            .detail("key", "hunter2-very-secret")
            .table(ReportTable::new(["c"]).row(RowStatus::New, [json!(long)]));
        let (prepared, _) = prepare_sections(vec![section], &redactor);
        let text = serde_json::to_string(&prepared).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("hunt"), "{text}");
        assert_eq!(prepared[0].title, "token ***");
    }

    #[test]
    fn assembling_orders_steps_by_first_report_and_counts_statuses() {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let part = |step: &str, unit, s, status| ReportPart {
            step_id: step.into(),
            unit,
            recorded_at: at(s),
            sections: vec![ReportSection::new(format!("{step}{unit}"))
                .table(ReportTable::new(["x"]).row(status, [1]))],
        };
        let report = Report::assemble(
            &owner(),
            vec![
                part("B", 1, 5, RowStatus::New),
                part("A", 0, 9, RowStatus::Updated),
                part("B", 0, 7, RowStatus::New),
            ],
        );
        let titles: Vec<&str> = report
            .sections
            .iter()
            .map(|s| s.section.title.as_str())
            .collect();
        assert_eq!(titles, ["B0", "B1", "A0"]);
        assert_eq!(report.counts["New"], 2);
        assert_eq!(report.counts["Failed"], 0);
        assert_eq!(report.summary.id, "report-app-isapp-1");
        assert_eq!(report.omitted_sections, 0);
    }

    #[test]
    fn a_report_shows_at_most_its_byte_bound() {
        let big = ReportTable::new(["v"]);
        let big = (0..900).fold(big, |t, _| t.row(RowStatus::New, [json!("x".repeat(999))]));
        let parts: Vec<ReportPart> = (0..12)
            .map(|unit| ReportPart {
                step_id: "Each".into(),
                unit,
                recorded_at: DateTime::UNIX_EPOCH,
                sections: vec![ReportSection::new("s").table(big.clone())],
            })
            .collect();
        let report = Report::assemble(&owner(), parts);
        assert!(report.sections.len() < 12);
        assert_eq!(report.sections.len() as u64 + report.omitted_sections, 12);
        assert!(serde_json::to_string(&report).unwrap().len() <= MAX_REPORT_BYTES + 4096);
        assert_eq!(report.counts["New"], 900 * report.sections.len() as u64);
    }

    #[test]
    fn csv_quotes_and_neutralises_formulas() {
        let section = ReportSection::new("Sync, today").table(
            ReportTable::new(["id", "note"])
                .titled("Items")
                .row(RowStatus::New, [json!("a"), json!("=HYPERLINK(\"x\")")])
                .row(RowStatus::Removed, [json!(-3), json!("line\nbreak")]),
        );
        let other = ReportSection::new("Other")
            .table(ReportTable::new(["extra"]).row(RowStatus::Failed, [true]));
        let part = ReportPart {
            step_id: "S".into(),
            unit: 0,
            recorded_at: DateTime::UNIX_EPOCH,
            sections: vec![section, other],
        };
        let csv = Report::assemble(&owner(), vec![part]).to_csv();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], "section,step,table,status,id,note,extra");
        assert_eq!(
            lines[1],
            "\"Sync, today\",S,Items,New,a,\"'=HYPERLINK(\"\"x\"\")\","
        );
        assert_eq!(
            lines[2],
            "\"Sync, today\",S,Items,Removed,'-3,\"line\nbreak\","
        );
        assert_eq!(lines[3], "Other,S,,Failed,,,true");
    }
}
