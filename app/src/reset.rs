//! Resetting a mapping's position in its topic: the request (API and form),
//! its validation, and what a preview or an applied reset reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use schemars::JsonSchema;

use crate::spec::{parse_time, FieldError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Strategy {
    /// The earliest offset still in the partition.
    TrimHorizon,
    /// The end: only records produced from now on.
    Latest,
    /// The first record at or after `Timestamp`.
    AtTimestamp,
    /// The offsets given per partition.
    Offsets,
    /// The committed offset moved by `ShiftBy` (negative: re-process).
    ShiftBy,
}

impl Strategy {
    pub const ALL: [Strategy; 5] =
        [Strategy::TrimHorizon, Strategy::Latest, Strategy::AtTimestamp, Strategy::Offsets, Strategy::ShiftBy];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::TrimHorizon => "TRIM_HORIZON",
            Strategy::Latest => "LATEST",
            Strategy::AtTimestamp => "AT_TIMESTAMP",
            Strategy::Offsets => "OFFSETS",
            Strategy::ShiftBy => "SHIFT_BY",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            Strategy::TrimHorizon => "Earliest (TRIM_HORIZON): everything still in the partition",
            Strategy::Latest => "Latest: skip to the end, only new records",
            Strategy::AtTimestamp => "At a time: the first record at or after it",
            Strategy::Offsets => "Specific offsets, per partition",
            Strategy::ShiftBy => "Shift by N records from the committed offset",
        }
    }
}

/// `POST /api/v1/mappings/{id}/reset`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ResetRequest {
    pub strategy: Strategy,
    /// Epoch milliseconds, for AT_TIMESTAMP.
    #[serde(default)]
    pub timestamp: Option<i64>,
    /// Partition (as a string key) → offset, for OFFSETS.
    #[serde(default)]
    pub offsets: Option<BTreeMap<String, i64>>,
    /// ± records, for SHIFT_BY.
    #[serde(default)]
    pub shift_by: Option<i64>,
    /// The partitions to change; omitted: all (for OFFSETS: those named).
    #[serde(default)]
    pub partitions: Option<Vec<i32>>,
    /// True: only say what would change.
    #[serde(default)]
    pub dry_run: bool,
}

impl ResetRequest {
    /// Checks that the fields the strategy needs are there, and only those.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let mut need = |ok: bool, field: &str, msg: &str| {
            if !ok {
                errs.push(FieldError::new(field, msg));
            }
        };
        let s = self.strategy;
        need(s == Strategy::AtTimestamp || self.timestamp.is_none(), "Timestamp", "only applies to AT_TIMESTAMP");
        need(s == Strategy::Offsets || self.offsets.is_none(), "Offsets", "only applies to OFFSETS");
        need(s == Strategy::ShiftBy || self.shift_by.is_none(), "ShiftBy", "only applies to SHIFT_BY");
        match s {
            Strategy::AtTimestamp => match self.timestamp {
                None => need(false, "Timestamp", "is required for AT_TIMESTAMP (epoch milliseconds)"),
                Some(t) => need(t >= 0, "Timestamp", "must not be before 1970"),
            },
            Strategy::Offsets => match &self.offsets {
                None => need(false, "Offsets", "is required for OFFSETS: {\"<partition>\": <offset>, ...}"),
                Some(m) if m.is_empty() => need(false, "Offsets", "names no partition"),
                Some(m) => {
                    for (k, v) in m {
                        match k.parse::<i32>() {
                            Ok(p) if p >= 0 => {}
                            _ => errs.push(FieldError::new(format!("Offsets.{k}"), "is not a partition number")),
                        }
                        if *v < 0 {
                            errs.push(FieldError::new(
                                format!("Offsets.{k}"),
                                format!("must not be negative, not {v}"),
                            ));
                        }
                    }
                }
            },
            Strategy::ShiftBy => match self.shift_by {
                None => need(false, "ShiftBy", "is required for SHIFT_BY (negative re-processes, positive skips)"),
                Some(0) => need(false, "ShiftBy", "must not be 0"),
                Some(_) => {}
            },
            _ => {}
        }
        if let Some(ps) = &self.partitions {
            if ps.is_empty() {
                errs.push(FieldError::new("Partitions", "names no partition (omit it for all)"));
            }
            if let Some(p) = ps.iter().find(|p| **p < 0) {
                errs.push(FieldError::new("Partitions", format!("{p} is not a partition number")));
            }
        }
        errs
    }

    /// The offset asked for a partition (OFFSETS).
    pub fn offset_for(&self, partition: i32) -> Option<i64> {
        self.offsets.as_ref()?.iter().find(|(k, _)| k.parse::<i32>().ok() == Some(partition)).map(|(_, v)| *v)
    }
}

/// What a reset does (or did) to one partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct PartitionReset {
    pub partition: i32,
    /// The group's committed offset (None: nothing committed yet).
    pub before: Option<i64>,
    pub after: i64,
    /// After minus where the group stands now (its committed offset, or
    /// where it would start without one).
    pub delta: i64,
    pub earliest_offset: i64,
    pub end_offset: i64,
    /// Records that will be processed again (delta < 0).
    pub reprocessed: i64,
    /// Records that will never be processed (delta > 0).
    pub skipped: i64,
    /// Set when the asked offset was out of range and clamped, or the
    /// broker's answer was corrected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct ResetOutcome {
    #[serde(rename = "UUID")]
    pub uuid: uuid::Uuid,
    pub topic: String,
    pub consumer_group: String,
    pub strategy: Strategy,
    pub dry_run: bool,
    /// True once the offsets were committed.
    pub applied: bool,
    pub partitions: Vec<PartitionReset>,
    /// The audit entry of an applied reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_id: Option<String>,
}

/// One applied reset, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct ResetAudit {
    pub id: String,
    #[serde(rename = "UUID")]
    pub uuid: uuid::Uuid,
    /// Unix milliseconds.
    pub time: i64,
    /// Who asked: the channel and the client's address (until sign-in exists).
    pub actor: String,
    pub request: ResetRequest,
    pub partitions: Vec<PartitionReset>,
}

/// The wizard's form: flat strings, as a browser posts them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResetForm {
    #[serde(rename = "Strategy", default)]
    pub strategy: String,
    /// A local date and time (`2026-11-25T12:00`) read in `TimeZone`, or
    /// RFC 3339 with its own offset.
    #[serde(rename = "Timestamp", default)]
    pub timestamp: String,
    /// `UTC` or an offset such as `+01:00`.
    #[serde(rename = "TimeZone", default)]
    pub time_zone: String,
    /// `0=120, 3=400`.
    #[serde(rename = "Offsets", default)]
    pub offsets: String,
    #[serde(rename = "ShiftBy", default)]
    pub shift_by: String,
    /// `all`, or `some` with `Partition` boxes ticked.
    #[serde(rename = "Scope", default)]
    pub scope: String,
    /// The ticked partitions, joined with commas by the handler.
    #[serde(rename = "Partitions", default)]
    pub partitions: String,
    /// `preview` or `apply`.
    #[serde(rename = "Action", default)]
    pub action: String,
}

/// The time zones the wizard offers: UTC and whole or half-hour offsets.
pub fn time_zones() -> Vec<String> {
    let mut v = vec!["UTC".to_string()];
    for q in (-48i32..=56).filter(|q| q % 2 == 0 || [-14, -7, 7, 11, 13, 15, 19, 23].contains(q)) {
        if q == 0 {
            continue;
        }
        let m = q * 30;
        v.push(format!("{}{:02}:{:02}", if m < 0 { '-' } else { '+' }, m.abs() / 60, m.abs() % 60));
    }
    v
}

impl ResetForm {
    pub fn to_request(&self) -> Result<ResetRequest, Vec<FieldError>> {
        let mut errs = Vec::new();
        let strategy = match Strategy::parse(self.strategy.trim()) {
            Some(s) => s,
            None => return Err(vec![FieldError::new("Strategy", "choose where the mapping should continue from")]),
        };
        let timestamp = (strategy == Strategy::AtTimestamp)
            .then(|| {
                let t = self.timestamp.trim();
                if t.is_empty() {
                    errs.push(FieldError::new("Timestamp", "is required: the time to continue from"));
                    return None;
                }
                let has_zone = t.ends_with('Z') || t.ends_with('z') || t.rfind(['+', '-']).is_some_and(|i| i > 10);
                let zone = self.time_zone.trim();
                let text = if has_zone || t.parse::<i64>().is_ok() || zone.is_empty() || zone == "UTC" {
                    t.to_string()
                } else {
                    let t = if t.len() == 16 { format!("{t}:00") } else { t.to_string() };
                    format!("{}{zone}", t.replace(' ', "T"))
                };
                match parse_time(&text) {
                    Ok(s) => Some(s * 1000),
                    Err(e) => {
                        errs.push(FieldError::new("Timestamp", e));
                        None
                    }
                }
            })
            .flatten();
        let offsets = (strategy == Strategy::Offsets).then(|| {
            let mut m = BTreeMap::new();
            for part in self.offsets.split([',', '\n', ';']).map(str::trim).filter(|p| !p.is_empty()) {
                match part.split_once(['=', ':']).map(|(a, b)| (a.trim().parse::<i32>(), b.trim().parse::<i64>())) {
                    Some((Ok(p), Ok(o))) => {
                        m.insert(p.to_string(), o);
                    }
                    _ => errs.push(FieldError::new("Offsets", format!("`{part}` is not PARTITION=OFFSET"))),
                }
            }
            m
        });
        let shift_by = (strategy == Strategy::ShiftBy)
            .then(|| match self.shift_by.trim().parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    errs.push(FieldError::new("ShiftBy", "must be a whole number of records, like -100 or 50"));
                    None
                }
            })
            .flatten();
        let partitions = if self.scope == "some" {
            let ps: Vec<i32> = self.partitions.split(',').filter_map(|p| p.trim().parse().ok()).collect();
            if ps.is_empty() {
                errs.push(FieldError::new("Partitions", "tick at least one partition, or choose all"));
            }
            Some(ps)
        } else {
            None
        };
        let req = ResetRequest { strategy, timestamp, offsets, shift_by, partitions, dry_run: self.action != "apply" };
        if errs.is_empty() {
            let more = req.validate();
            if more.is_empty() {
                return Ok(req);
            }
            errs = more;
        }
        Err(errs)
    }
}

/// What the wizard shows before anything is chosen: where the group stands
/// on each partition (or why that cannot be read), and the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResetState {
    pub current: Result<ResetOutcome, String>,
    pub audit: Vec<ResetAudit>,
}

/// What the wizard page gets from its post: the form back, and the preview,
/// the applied result or the errors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PostedReset {
    pub values: ResetForm,
    pub errors: Vec<FieldError>,
    pub outcome: Option<ResetOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(strategy: &str) -> ResetForm {
        ResetForm { strategy: strategy.into(), scope: "all".into(), action: "preview".into(), ..Default::default() }
    }

    #[test]
    fn a_local_time_is_read_in_the_chosen_zone() {
        let f = ResetForm { timestamp: "2026-11-25T12:00".into(), time_zone: "+01:00".into(), ..form("AT_TIMESTAMP") };
        let r = f.to_request().unwrap();
        // 12:00 at +01:00 is 11:00 UTC.
        assert_eq!(r.timestamp, Some(parse_time("2026-11-25T11:00:00Z").unwrap() * 1000));
        assert!(r.dry_run);
        let utc =
            ResetForm { timestamp: "2026-11-25T11:00:00Z".into(), time_zone: "+05:00".into(), ..form("AT_TIMESTAMP") };
        assert_eq!(utc.to_request().unwrap().timestamp, r.timestamp, "an explicit zone wins");
    }

    #[test]
    fn each_bad_input_names_its_field() {
        let e = form("").to_request().unwrap_err();
        assert_eq!(e[0].field, "Strategy");
        let e = ResetForm { offsets: "0=5, x".into(), ..form("OFFSETS") }.to_request().unwrap_err();
        assert_eq!(e[0].field, "Offsets");
        let e = ResetForm { shift_by: "ten".into(), ..form("SHIFT_BY") }.to_request().unwrap_err();
        assert_eq!(e[0].field, "ShiftBy");
        let e = ResetForm { scope: "some".into(), ..form("LATEST") }.to_request().unwrap_err();
        assert_eq!(e[0].field, "Partitions");
        let ok = ResetForm { offsets: "0=5\n3: 40".into(), ..form("OFFSETS") }.to_request().unwrap();
        assert_eq!(ok.offset_for(3), Some(40));
    }

    #[test]
    fn api_requests_are_checked_for_what_the_strategy_needs() {
        let r = |s: Strategy| ResetRequest {
            strategy: s,
            timestamp: None,
            offsets: None,
            shift_by: None,
            partitions: None,
            dry_run: true,
        };
        assert_eq!(r(Strategy::ShiftBy).validate()[0].field, "ShiftBy");
        assert_eq!(r(Strategy::AtTimestamp).validate()[0].field, "Timestamp");
        assert!(r(Strategy::Latest).validate().is_empty());
        let wrong = ResetRequest { shift_by: Some(5), ..r(Strategy::Latest) };
        assert_eq!(wrong.validate()[0].field, "ShiftBy");
    }
}
