//! [`ReportStore`] on the runs table, beside the run's own items and never inside its
//! record: `REPORT#<step>#<unit>` holds one step unit's sections (deflated, or in S3 when
//! too large); two header items, `REPORT` and `REPORT.MONTH`, alone carry the keys of the
//! [`REPORTS`] index (written after the part, so a listed report has sections):
//! `report_key` is `app#<application>` on the first and `month#<YYYY-MM>` (the run's
//! creation month) on the second, `report_run` the run id on both. Listing reports is then a `Query` of one application's partition, or of month
//! partitions one after another as for runs. One index rather than two because
//! CloudFormation adds at most one index to an existing table per update. Every item
//! carries the run's expiry (`expires_ms`, checked on read, and the TTL attribute `ttl`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue as A;
use chrono::{Datelike, Months, TimeZone, Utc};
use sluice_core::ports::{ReportQuery, ReportStore, StoreError};
use sluice_core::report::{ReportOwner, ReportPart, ReportSection, ReportSummary};

use super::{
    expiry_attributes, get_n, get_s, live, month_of, n, query_all, s, DynamoStore,
    DEFAULT_LIST_LIMIT,
};
use crate::error::sdk;

/// Index of report headers (`report_key`, `report_run`), newest run first.
pub const REPORTS: &str = "reports";

/// Sort key of the header listed under its application.
const HEADER_SK: &str = "REPORT";
/// Sort key of the header listed under its month.
const MONTH_HEADER_SK: &str = "REPORT.MONTH";
/// Sort keys of report items start with this (the headers' included).
const REPORT_SK_PREFIX: &str = "REPORT";
/// Sort keys of parts start with this.
const PART_SK_PREFIX: &str = "REPORT#";

fn is_header(item: &HashMap<String, A>) -> bool {
    matches!(get_s(item, "sk"), Some(HEADER_SK | MONTH_HEADER_SK))
}

fn part_sk(step_id: &str, unit: u32) -> String {
    format!("REPORT#{step_id}#{unit:010}")
}

fn time_of(ms: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn summary_of(item: &HashMap<String, A>) -> Option<ReportSummary> {
    Some(ReportSummary::of(&ReportOwner {
        run_id: get_s(item, "report_run")?.to_string(),
        application: get_s(item, "report_app")?.to_string(),
        run_created_at: time_of(get_n(item, "created_ms")?),
        expires_at: time_of(get_n(item, "expires_ms")?),
    }))
}

impl DynamoStore {
    /// Every report item of a run (header and parts), live or not.
    async fn report_items(&self, run_id: &str) -> Result<Vec<HashMap<String, A>>, StoreError> {
        query_all(
            self.db
                .query()
                .table_name(&self.settings.runs_table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :report)")
                .expression_attribute_values(":pk", s(run_id))
                .expression_attribute_values(":report", s(REPORT_SK_PREFIX))
                .consistent_read(true),
        )
        .await
    }

    async fn delete_run_item(&self, run_id: &str, sk: &str) -> Result<(), StoreError> {
        self.db
            .delete_item()
            .table_name(&self.settings.runs_table)
            .set_key(Some(Self::run_key(run_id, sk)))
            .send()
            .await
            .map_err(|e| sdk("dynamodb DeleteItem", e))?;
        Ok(())
    }

    /// One partition of the report index, newest run first, into `out`.
    async fn query_reports(
        &self,
        partition: &str,
        query: &ReportQuery,
        want: usize,
        out: &mut Vec<ReportSummary>,
    ) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            let mut request = self
                .db
                .query()
                .table_name(&self.settings.runs_table)
                .index_name(REPORTS)
                .scan_index_forward(false)
                .expression_attribute_names("#p", "report_key")
                .expression_attribute_values(":p", s(partition))
                .filter_expression("expires_ms > :now")
                .expression_attribute_values(":now", n(self.now_ms()))
                .set_exclusive_start_key(start);
            let mut key_condition = "#p = :p".to_string();
            if let Some(before) = &query.before_run_id {
                key_condition.push_str(" AND report_run < :before");
                request = request.expression_attribute_values(":before", s(before));
            }
            let result = request
                .key_condition_expression(key_condition)
                .send()
                .await
                .map_err(|e| sdk("dynamodb Query", e))?;
            for item in result.items.unwrap_or_default() {
                if out.len() >= want {
                    return Ok(());
                }
                out.extend(summary_of(&item));
            }
            start = result.last_evaluated_key;
            if start.is_none() || out.len() >= want {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl ReportStore for DynamoStore {
    /// The part, then the headers that list it.
    async fn put_report_part(
        &self,
        owner: &ReportOwner,
        step_id: &str,
        unit: u32,
        sections: &[ReportSection],
    ) -> Result<(), StoreError> {
        let sk = part_sk(step_id, unit);
        if sections.is_empty() {
            self.delete_run_item(&owner.run_id, &sk).await?;
            // The last part gone, the report is gone: no header without sections.
            let rest = self.report_items(&owner.run_id).await?;
            if rest.iter().all(is_header) {
                self.delete_run_item(&owner.run_id, HEADER_SK).await?;
                self.delete_run_item(&owner.run_id, MONTH_HEADER_SK).await?;
            }
            return Ok(());
        }
        let mut part = Self::run_key(&owner.run_id, &sk);
        expiry_attributes(&mut part, owner.expires_at);
        part.insert("recorded_ms".into(), n(self.now_ms()));
        let s3_key = format!("runs/{}/reports/{step_id}/{unit}", owner.run_id);
        self.put_document(&mut part, || s3_key, sections).await?;
        let header = |sk: &str, key: String| {
            let mut item = Self::run_key(&owner.run_id, sk);
            expiry_attributes(&mut item, owner.expires_at);
            item.insert("report_key".into(), s(key));
            item.insert("report_app".into(), s(&owner.application));
            item.insert("report_run".into(), s(&owner.run_id));
            item.insert(
                "created_ms".into(),
                n(owner.run_created_at.timestamp_millis()),
            );
            item
        };
        let items = [
            part,
            header(HEADER_SK, format!("app#{}", owner.application)),
            header(
                MONTH_HEADER_SK,
                format!("month#{}", month_of(owner.run_created_at)),
            ),
        ];
        // Plain puts, the part first: the units of a fanned-out step all write the same
        // headers at once, which transactions would make conflict. A crash between them
        // leaves a part that no header shows yet; the attempt, never recorded as ended,
        // runs again and writes them all.
        for item in items {
            self.db
                .put_item()
                .table_name(&self.settings.runs_table)
                .set_item(Some(item))
                .send()
                .await
                .map_err(|e| sdk("dynamodb PutItem", e))?;
        }
        Ok(())
    }

    async fn get_report(
        &self,
        run_id: &str,
    ) -> Result<Option<(ReportOwner, Vec<ReportPart>)>, StoreError> {
        let now = self.now_ms();
        let items: Vec<_> = self
            .report_items(run_id)
            .await?
            .into_iter()
            .filter(|i| live(i, now))
            .collect();
        let Some(header) = items.iter().find(|i| get_s(i, "sk") == Some(HEADER_SK)) else {
            return Ok(None);
        };
        let Some(summary) = summary_of(header) else {
            return Ok(None);
        };
        let owner = ReportOwner {
            run_id: summary.run_id,
            application: summary.application,
            run_created_at: summary.run_created_at,
            expires_at: summary.expires_at,
        };
        let mut parts = Vec::new();
        for item in &items {
            let Some((step_id, unit)) = get_s(item, "sk")
                .and_then(|sk| sk.strip_prefix(PART_SK_PREFIX))
                .and_then(|rest| rest.rsplit_once('#'))
            else {
                continue;
            };
            parts.push(ReportPart {
                step_id: step_id.to_string(),
                unit: unit.parse().unwrap_or_default(),
                recorded_at: time_of(get_n(item, "recorded_ms").unwrap_or_default()),
                sections: self.read_document(item).await?,
            });
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some((owner, parts)))
    }

    /// One application's partition of the [`REPORTS`] index, or its month partitions
    /// back to the oldest month a live run can be from.
    async fn list_reports(&self, query: &ReportQuery) -> Result<Vec<ReportSummary>, StoreError> {
        let limit = if query.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            query.limit
        };
        let mut out = Vec::new();
        if let Some(application) = &query.application {
            let partition = format!("app#{application}");
            self.query_reports(&partition, query, limit, &mut out)
                .await?;
            return Ok(out);
        }
        let now = self.clock.now();
        let oldest =
            month_of(now - chrono::Duration::seconds(self.settings.result_expires_seconds));
        let mut month = Utc
            .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
            .single()
            .unwrap_or(now);
        loop {
            let name = month_of(month);
            self.query_reports(&format!("month#{name}"), query, limit, &mut out)
                .await?;
            if out.len() >= limit || name <= oldest {
                return Ok(out);
            }
            month = match month.checked_sub_months(Months::new(1)) {
                Some(m) => m,
                None => return Ok(out),
            };
        }
    }

    async fn delete_report(&self, run_id: &str) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let items = self.report_items(run_id).await?;
        let existed = items.iter().any(|i| is_header(i) && live(i, now));
        // Parts first: a header outlives its parts only until this loop ends.
        let mut keys: Vec<&str> = items.iter().filter_map(|i| get_s(i, "sk")).collect();
        keys.sort_by_key(|sk| *sk == HEADER_SK || *sk == MONTH_HEADER_SK);
        for sk in keys {
            self.delete_run_item(run_id, sk).await?;
        }
        Ok(existed)
    }
}
