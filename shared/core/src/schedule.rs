//! Schedules (SPEC §5): PowerFlow's 5-field crontab and fixed frequencies, parsed into a
//! form every backend shares — the embedded scheduler loop computes next fire times from
//! it, and the AWS adapter translates the same parsed fields into an EventBridge
//! Scheduler expression ([`CronSpec::eventbridge_expression`]).
//!
//! Semantics are those of PowerFlow's scheduler (Celery `crontab`), not Vixie cron:
//! - fields `minute` 0-59, `hour` 0-23, `day_of_month` 1-31, `month_of_year` 1-12,
//!   `day_of_week` 0-6 with 0 = Sunday (names `sun`..`sat` too);
//! - each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list
//!   of those;
//! - a time matches when **every** field matches (Celery ANDs `day_of_month` and
//!   `day_of_week`, where Vixie cron ORs them when both are restricted);
//! - all times are UTC.
//!
//! Cron parsing is hand-written rather than taken from a cron crate because the contract
//! needs three things those crates do not give together: Celery's AND of the two day
//! fields, an error naming the PowerFlow field (`schedule.schedule_info.hour: 25 is out
//! of range 0-23`), and the parsed sets themselves for the EventBridge translation.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};

use crate::json::{Invalid, Issue};
use crate::model::{CrontabInfo, Schedule, ScheduleSpec};

/// Shortest `run_every` of a frequency schedule, in seconds.
pub const MIN_RUN_EVERY_SECONDS: u64 = 60;

/// How far ahead [`CronSpec::next_after`] looks: every combination of month, day of
/// month and day of week recurs within 28 years (the Gregorian weekday cycle for a
/// given date, leap days included, is at most 28 years within 1901..2099).
const SEARCH_DAYS: i64 = 366 * 28;

/// A set of allowed values of one field, as a bit mask (bit n = value n allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSet {
    bits: u64,
    /// Whether the field was `*` (or `*/1`): every value allowed, written as a wildcard.
    pub any: bool,
}

impl FieldSet {
    pub fn contains(&self, value: u32) -> bool {
        value < 64 && self.bits & (1 << value) != 0
    }

    /// The allowed values, ascending.
    pub fn values(&self) -> Vec<u32> {
        (0..64).filter(|v| self.contains(*v)).collect()
    }
}

/// One of the five crontab fields, with its PowerFlow name and range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Minute,
    Hour,
    DayOfMonth,
    MonthOfYear,
    DayOfWeek,
}

impl CronField {
    pub const ALL: [CronField; 5] = [
        Self::Minute,
        Self::Hour,
        Self::DayOfMonth,
        Self::MonthOfYear,
        Self::DayOfWeek,
    ];

    /// The field's name in `schedule_info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::DayOfMonth => "day_of_month",
            Self::MonthOfYear => "month_of_year",
            Self::DayOfWeek => "day_of_week",
        }
    }

    /// Inclusive range of values.
    pub fn range(self) -> (u32, u32) {
        match self {
            Self::Minute => (0, 59),
            Self::Hour => (0, 23),
            Self::DayOfMonth => (1, 31),
            Self::MonthOfYear => (1, 12),
            Self::DayOfWeek => (0, 6),
        }
    }

    fn value_of(self, text: &str) -> Option<u32> {
        if let Ok(n) = text.parse::<u32>() {
            return Some(n);
        }
        if self == Self::DayOfWeek {
            const DAYS: [&str; 7] = [
                "sunday",
                "monday",
                "tuesday",
                "wednesday",
                "thursday",
                "friday",
                "saturday",
            ];
            let lower = text.to_ascii_lowercase();
            return DAYS
                .iter()
                .position(|d| lower == *d || (lower.len() == 3 && d.starts_with(&lower)))
                .map(|p| p as u32);
        }
        None
    }
}

/// A parsed 5-field crontab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CronSpec {
    pub minute: FieldSet,
    pub hour: FieldSet,
    pub day_of_month: FieldSet,
    pub month_of_year: FieldSet,
    /// 0 = Sunday.
    pub day_of_week: FieldSet,
}

/// A field that does not parse: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", field.name())]
pub struct CronError {
    pub field: CronField,
    pub message: String,
}

/// Parses one field.
pub fn parse_field(field: CronField, text: &str) -> Result<FieldSet, CronError> {
    let (lo, hi) = field.range();
    let err = |message: String| CronError { field, message };
    let text = text.trim();
    if text.is_empty() {
        return Err(err("must not be empty (use * for every value)".into()));
    }
    let mut bits = 0u64;
    let mut any = false;
    for part in text.split(',') {
        let part = part.trim();
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| err(format!("\"{part}\": the step \"{step}\" is not a number")))?;
                if step == 0 {
                    return Err(err(format!("\"{part}\": the step must be at least 1")));
                }
                (range, Some(step))
            }
            None => (part, None),
        };
        let value = |text: &str| -> Result<u32, CronError> {
            let n = field
                .value_of(text)
                .ok_or_else(|| err(format!("\"{text}\" is not a number")))?;
            if n < lo || n > hi {
                return Err(err(format!("{n} is out of range {lo}-{hi}")));
            }
            Ok(n)
        };
        let (start, end) = if range == "*" {
            if step.unwrap_or(1) == 1 {
                any = true;
            }
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(err(format!("\"{range}\": the range runs backwards")));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15` means from 5 to the end in steps of 15 (as in Celery and Vixie cron).
            (a, if step.is_some() { hi } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(FieldSet { bits, any })
}

impl CronSpec {
    /// Parses every field; the first bad one is reported.
    pub fn parse(info: &CrontabInfo) -> Result<Self, CronError> {
        Ok(Self {
            minute: parse_field(CronField::Minute, &info.minute)?,
            hour: parse_field(CronField::Hour, &info.hour)?,
            day_of_month: parse_field(CronField::DayOfMonth, &info.day_of_month)?,
            month_of_year: parse_field(CronField::MonthOfYear, &info.month_of_year)?,
            day_of_week: parse_field(CronField::DayOfWeek, &info.day_of_week)?,
        })
    }

    /// Whether the minute starting at `t` is a tick.
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        self.minute.contains(t.minute())
            && self.hour.contains(t.hour())
            && self.matches_day(t.date_naive())
    }

    fn matches_day(&self, day: NaiveDate) -> bool {
        self.month_of_year.contains(day.month())
            && self.day_of_month.contains(day.day())
            && self
                .day_of_week
                .contains(day.weekday().num_days_from_sunday())
    }

    /// The first tick strictly after `after`, or `None` when the fields can never match
    /// together (e.g. 31 February).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first_minute = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let start_day = first_minute.date_naive();
        for offset in 0..SEARCH_DAYS {
            let day = start_day + Duration::days(offset);
            if !self.matches_day(day) {
                continue;
            }
            for hour in self.hour.values() {
                for minute in self.minute.values() {
                    let t = Utc.from_utc_datetime(&day.and_hms_opt(hour, minute, 0)?);
                    if t >= first_minute {
                        return Some(t);
                    }
                }
            }
        }
        None
    }

    /// The EventBridge Scheduler expression firing at exactly these ticks:
    /// `cron(minutes hours day-of-month month day-of-week year)`. EventBridge numbers days
    /// of the week 1-7 from Sunday and needs `?` in one of the two day fields, so a
    /// crontab restricting both day fields (which PowerFlow ANDs) has no exact
    /// translation and is refused.
    pub fn eventbridge_expression(&self) -> Result<String, CronError> {
        let list = |set: &FieldSet, shift: u32| -> String {
            if set.any {
                return "*".into();
            }
            set.values()
                .iter()
                .map(|v| (v + shift).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let (dom, dow) = match (self.day_of_month.any, self.day_of_week.any) {
            (_, true) => (list(&self.day_of_month, 0), "?".to_string()),
            (true, false) => ("?".to_string(), list(&self.day_of_week, 1)),
            (false, false) => {
                return Err(CronError {
                    field: CronField::DayOfWeek,
                    message: "EventBridge cannot restrict both day_of_month and day_of_week; \
                              use * in one of them"
                        .into(),
                })
            }
        };
        Ok(format!(
            "cron({} {} {} {} {} *)",
            list(&self.minute, 0),
            list(&self.hour, 0),
            dom,
            list(&self.month_of_year, 0),
            dow
        ))
    }
}

/// A schedule's timing, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Cron(CronSpec),
    /// Every this many seconds, counted from the Unix epoch (so ticks are stable across
    /// restarts and the same on every machine).
    Every(u64),
}

impl Timing {
    pub fn parse(spec: &ScheduleSpec) -> Result<Self, Invalid> {
        match spec {
            ScheduleSpec::Crontab(info) => CronSpec::parse(info).map(Timing::Cron).map_err(|e| {
                Invalid::one(Issue::new(
                    format!("schedule.schedule_info.{}", e.field.name()),
                    e.message,
                ))
            }),
            ScheduleSpec::Frequency(f) if f.run_every < MIN_RUN_EVERY_SECONDS => {
                Err(Invalid::one(Issue::new(
                    "schedule.schedule_info.run_every",
                    format!(
                        "must be at least {MIN_RUN_EVERY_SECONDS} seconds (got {})",
                        f.run_every
                    ),
                )))
            }
            ScheduleSpec::Frequency(f) => Ok(Timing::Every(f.run_every)),
        }
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Timing::Cron(cron) => cron.next_after(after),
            Timing::Every(seconds) => {
                let every = *seconds as i64;
                let next = (after.timestamp().div_euclid(every) + 1) * every;
                Utc.timestamp_opt(next, 0).single()
            }
        }
    }

    /// The latest tick in `(after, now]`, skipping older missed ticks: a scheduler that
    /// was down fires once for what it missed, as PowerFlow's does.
    pub fn latest_due(&self, after: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut due = None;
        let mut cursor = after;
        // Bounded: a minutely cron missed for a long time is stepped through in at most
        // this many ticks, then the last one found is fired.
        for _ in 0..100_000 {
            match self.next_after(cursor) {
                Some(t) if t <= now => {
                    due = Some(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        due
    }
}

/// Validates a schedule document: ids, application name and its timing, reporting
/// every problem with its path.
pub fn validate_schedule(schedule: &Schedule) -> Result<Timing, Invalid> {
    let mut issues = Vec::new();
    let valid_id = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !valid_id(&schedule.entry_id) {
        issues.push(Issue::new(
            "entry_id",
            format!(
                "\"{}\" must be 1-128 letters, digits, _, - or .",
                schedule.entry_id
            ),
        ));
    }
    if schedule.application_id.trim().is_empty() {
        issues.push(Issue::new("application_id", "must not be empty"));
    }
    let timing = match Timing::parse(&schedule.schedule) {
        Ok(t) => Some(t),
        Err(e) => {
            issues.extend(e.issues);
            None
        }
    };
    match timing {
        Some(t) if issues.is_empty() => Ok(t),
        _ => Err(Invalid { issues }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(m: &str, h: &str, dom: &str, moy: &str, dow: &str) -> CrontabInfo {
        CrontabInfo {
            minute: m.into(),
            hour: h.into(),
            day_of_month: dom.into(),
            month_of_year: moy.into(),
            day_of_week: dow.into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fields_parse_lists_ranges_steps() {
        assert_eq!(
            parse_field(CronField::Minute, "*/15").unwrap().values(),
            vec![0, 15, 30, 45]
        );
        assert_eq!(
            parse_field(CronField::Hour, "1-3,22").unwrap().values(),
            vec![1, 2, 3, 22]
        );
        assert_eq!(
            parse_field(CronField::Hour, "8-18/4").unwrap().values(),
            vec![8, 12, 16]
        );
        assert_eq!(
            parse_field(CronField::Minute, "50/5").unwrap().values(),
            vec![50, 55]
        );
        assert_eq!(
            parse_field(CronField::DayOfWeek, "mon-fri")
                .unwrap()
                .values(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(
            parse_field(CronField::DayOfWeek, "sunday,6")
                .unwrap()
                .values(),
            vec![0, 6]
        );
        assert!(parse_field(CronField::Minute, "*").unwrap().any);
        assert!(!parse_field(CronField::Minute, "*/2").unwrap().any);
    }

    #[test]
    fn bad_fields_name_the_field() {
        let e = CronSpec::parse(&info("0", "25", "*", "*", "*")).unwrap_err();
        assert_eq!(e.to_string(), "hour: 25 is out of range 0-23");
        let e = CronSpec::parse(&info("0", "1", "*", "*", "7")).unwrap_err();
        assert_eq!(e.to_string(), "day_of_week: 7 is out of range 0-6");
        let e = CronSpec::parse(&info("0", "1", "0", "*", "*")).unwrap_err();
        assert_eq!(e.field, CronField::DayOfMonth);
        let e = CronSpec::parse(&info("x", "1", "*", "*", "*")).unwrap_err();
        assert_eq!(e.to_string(), "minute: \"x\" is not a number");
        for bad in ["", "*/0", "5-1", "1,,2", "1-", "a/b"] {
            assert!(parse_field(CronField::Minute, bad).is_err(), "{bad}");
        }
        let schedule: Schedule = serde_json::from_value(serde_json::json!({
            "application_id": "a", "entry_id": "e",
            "schedule": {"schedule_type": "crontab", "schedule_info": {"hour": "25"}}
        }))
        .unwrap();
        let e = validate_schedule(&schedule).unwrap_err();
        assert_eq!(
            e.to_string(),
            "schedule.schedule_info.hour: 25 is out of range 0-23"
        );
    }

    #[test]
    fn next_fire_times() {
        let nightly = CronSpec::parse(&info("0", "2", "*", "*", "*")).unwrap();
        assert_eq!(
            nightly.next_after(at("2024-01-01T01:59:59Z")),
            Some(at("2024-01-01T02:00:00Z"))
        );
        assert_eq!(
            nightly.next_after(at("2024-01-01T02:00:00Z")),
            Some(at("2024-01-02T02:00:00Z"))
        );
        // Sunday is 0: 2024-01-07 is a Sunday.
        let sundays = CronSpec::parse(&info("30", "6", "*", "*", "0")).unwrap();
        assert_eq!(
            sundays.next_after(at("2024-01-01T00:00:00Z")),
            Some(at("2024-01-07T06:30:00Z"))
        );
        // Both day fields restricted: both must match (Celery). 2024-03-01 is a Friday.
        let friday_first = CronSpec::parse(&info("0", "0", "1", "*", "5")).unwrap();
        assert_eq!(
            friday_first.next_after(at("2024-01-01T00:00:00Z")),
            Some(at("2024-03-01T00:00:00Z"))
        );
        // Leap day.
        let leap = CronSpec::parse(&info("0", "0", "29", "2", "*")).unwrap();
        assert_eq!(
            leap.next_after(at("2024-03-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        // Never.
        let never = CronSpec::parse(&info("0", "0", "31", "2", "*")).unwrap();
        assert_eq!(never.next_after(at("2024-01-01T00:00:00Z")), None);
        let every_minute = CronSpec::parse(&info("*", "*", "*", "*", "*")).unwrap();
        assert_eq!(
            every_minute.next_after(at("2024-01-01T00:00:30.5Z")),
            Some(at("2024-01-01T00:01:00Z"))
        );
    }

    #[test]
    fn next_after_agrees_with_a_minute_by_minute_scan() {
        let specs = [
            info("*/7", "*/5", "*", "*", "*"),
            info("15", "3-5", "1-10", "*", "mon-wed"),
            info("0,30", "12", "*", "1,6,12", "*"),
            info("59", "23", "31", "*", "*"),
        ];
        for spec in specs {
            let cron = CronSpec::parse(&spec).unwrap();
            let mut t = at("2023-12-25T10:17:00Z");
            for _ in 0..20 {
                let next = cron.next_after(t).unwrap();
                let mut scan = t + Duration::minutes(1);
                while !cron.matches(scan) {
                    scan += Duration::minutes(1);
                }
                assert_eq!(next, scan, "{spec:?} after {t}");
                t = next;
            }
        }
    }

    #[test]
    fn frequency_ticks_and_latest_due() {
        let every = Timing::Every(300);
        assert_eq!(
            every.next_after(at("2024-01-01T00:04:59Z")),
            Some(at("2024-01-01T00:05:00Z"))
        );
        assert_eq!(
            every.next_after(at("2024-01-01T00:05:00Z")),
            Some(at("2024-01-01T00:10:00Z"))
        );
        assert_eq!(
            every.latest_due(at("2024-01-01T00:00:00Z"), at("2024-01-01T00:17:00Z")),
            Some(at("2024-01-01T00:15:00Z"))
        );
        assert_eq!(
            every.latest_due(at("2024-01-01T00:15:00Z"), at("2024-01-01T00:17:00Z")),
            None
        );
        let too_fast = ScheduleSpec::Frequency(crate::model::FrequencyInfo { run_every: 30 });
        let e = Timing::parse(&too_fast).unwrap_err();
        assert_eq!(e.field(), Some("schedule.schedule_info.run_every"));
    }

    #[test]
    fn eventbridge_translation() {
        let nightly = CronSpec::parse(&info("0", "2", "*", "*", "*")).unwrap();
        assert_eq!(
            nightly.eventbridge_expression().unwrap(),
            "cron(0 2 * * ? *)"
        );
        let weekdays = CronSpec::parse(&info("*/30", "8-9", "*", "*", "1-5")).unwrap();
        assert_eq!(
            weekdays.eventbridge_expression().unwrap(),
            "cron(0,30 8,9 ? * 2,3,4,5,6 *)"
        );
        let sunday = CronSpec::parse(&info("0", "0", "*", "*", "0")).unwrap();
        assert_eq!(
            sunday.eventbridge_expression().unwrap(),
            "cron(0 0 ? * 1 *)"
        );
        let both = CronSpec::parse(&info("0", "0", "1", "*", "1")).unwrap();
        assert!(both.eventbridge_expression().is_err());
    }
}
