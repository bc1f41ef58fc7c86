//! Failed records: the ledger of every record a mapping gave up on (only
//! coordinates and the error: the topic and the destination hold the
//! payload), and redrives, which read them again from the topic and invoke
//! the function once more. Shared by the API, the engine and the console.

use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use schemars::JsonSchema;

/// What became of a redriven record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
pub enum RedriveResult {
    /// Waiting in a running redrive.
    Pending,
    Succeeded,
    Failed,
    /// The topic no longer holds it (retention, deletion, a recreated topic).
    Gone,
}

impl RedriveResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RedriveResult::Pending => "Pending",
            RedriveResult::Succeeded => "Succeeded",
            RedriveResult::Failed => "Failed",
            RedriveResult::Gone => "Gone",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        use RedriveResult::*;
        [Pending, Succeeded, Failed, Gone].into_iter().find(|r| r.as_str() == s)
    }
}

/// The last redrive of a failed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct Redrive {
    /// Unix milliseconds.
    pub at: i64,
    pub by: String,
    pub result: RedriveResult,
    /// The redrive job.
    pub job: String,
}

/// One record a mapping gave up on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct FailedRecord {
    pub partition: i32,
    pub offset: i64,
    /// The record's key, base64 as in the event (at most 1 KiB of it).
    pub key: Option<String>,
    /// The record's timestamp, Unix milliseconds (-1: the broker gave none).
    pub timestamp: i64,
    /// AWS's reason code: RetryAttemptsExhausted, RecordAgeExceeded,
    /// MaximumPayloadSizeExceeded, SCHEMA_NOT_FOUND, DESERIALIZATION_ERROR.
    pub condition: String,
    /// Invocations tried (0: never invoked).
    pub attempts: u32,
    /// The function's last error, or why the record could not be invoked;
    /// after a failed redrive, that redrive's error.
    pub error: String,
    /// Where its failure record went: `kafka://topic` or an ARN, or
    /// `dropped` (no destination: only the topic holds it).
    pub destination: String,
    /// The destination's id of the failure record: SQS's or SNS's message
    /// id, S3's object key, `partition P offset O` on a Kafka topic.
    pub destination_message: Option<String>,
    /// Unix milliseconds.
    pub failed_at: i64,
    pub redrive: Option<Redrive>,
}

impl FailedRecord {
    /// Where a copy of the record is, when the topic no longer holds it.
    pub fn copy_at(&self) -> String {
        if self.destination == DROPPED {
            return "no copy: it was dropped (no on-failure destination)".into();
        }
        match &self.destination_message {
            Some(m) => format!("its failure record went to {} ({m})", self.destination),
            None => format!("its failure record went to {}", self.destination),
        }
    }
}

/// `Destination` of a record dropped for want of a destination.
pub const DROPPED: &str = "dropped";

/// Which failed records: the list's filters, and a redrive's selection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct FailureFilter {
    pub partition: Option<i32>,
    pub condition: Option<String>,
    /// Failed at or after (Unix milliseconds).
    pub since: Option<i64>,
    /// Failed before (Unix milliseconds).
    pub until: Option<i64>,
    /// `None` (never redriven), or a redrive's result.
    pub redrive: Option<String>,
}

impl FailureFilter {
    /// Refuses unknown conditions and redrive states, naming the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if let Some(c) = &self.condition {
            if !CONDITIONS.contains(&c.as_str()) {
                return Err(("Condition".into(), format!("`{c}` is not one of {}", CONDITIONS.join(", "))));
            }
        }
        if let Some(r) = &self.redrive {
            if r != "None" && RedriveResult::parse(r).is_none() {
                return Err(("Redrive".into(), format!("`{r}` is not one of None, Pending, Succeeded, Failed, Gone")));
            }
        }
        Ok(())
    }
}

/// The reason codes a failed record can have.
pub const CONDITIONS: [&str; 5] = [
    "RetryAttemptsExhausted",
    "RecordAgeExceeded",
    "MaximumPayloadSizeExceeded",
    "SCHEMA_NOT_FOUND",
    "DESERIALIZATION_ERROR",
];

/// A page of the ledger, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct FailurePage {
    pub failures: Vec<FailedRecord>,
    /// Pass as `Marker` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    /// How many records match the filters (all pages).
    pub total: u64,
}

/// One record's coordinates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct RecordRef {
    pub partition: i32,
    pub offset: i64,
}

/// What to redrive: everything, the records named, or those matching the
/// list's filters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct RedriveRequest {
    #[serde(default)]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<RecordRef>>,
    #[serde(flatten)]
    pub filter: FailureFilter,
}

/// Most records one redrive takes.
pub const REDRIVE_LIMIT: usize = 100_000;

impl RedriveRequest {
    /// Exactly one of All, Records, or filters.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.filter.validate()?;
        let filtered = self.filter != FailureFilter::default();
        match (&self.records, self.all, filtered) {
            (Some(r), false, false) if r.is_empty() => Err(("Records".into(), "names no record".into())),
            (Some(r), false, false) if r.len() > REDRIVE_LIMIT => {
                Err(("Records".into(), format!("names {} records; at most {REDRIVE_LIMIT} per redrive", r.len())))
            }
            (Some(_), false, false) | (None, true, false) | (None, false, true) => Ok(()),
            (None, false, false) => Err((
                "All".into(),
                "say which records: \"All\": true, \"Records\": [{\"Partition\", \"Offset\"}], or filters".into(),
            )),
            _ => Err(("All".into(), "give one of All, Records or filters, not several".into())),
        }
    }
}

/// A redrive job as the API answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct RedriveJob {
    pub job_id: String,
    #[serde(rename = "UUID")]
    pub uuid: uuid::Uuid,
    /// `Running` or `Done`.
    pub state: String,
    pub by: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub gone: u64,
    /// Why the job as a whole stopped early (the mapping deleted, the
    /// function or topic unusable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per record, in offset order per partition (on `GET` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<RedriveOutcome>,
}

impl RedriveJob {
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed + self.gone
    }
}

/// One record's result in a redrive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct RedriveOutcome {
    pub partition: i32,
    pub offset: i64,
    pub result: RedriveResult,
    /// Failed: the function's error; Gone: where its copy went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds (0 while pending).
    pub at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redrive_names_one_selection() {
        let all = RedriveRequest { all: true, ..Default::default() };
        assert!(all.validate().is_ok());
        let none = RedriveRequest::default();
        assert_eq!(none.validate().unwrap_err().0, "All");
        let both = RedriveRequest {
            all: true,
            records: Some(vec![RecordRef { partition: 0, offset: 1 }]),
            ..Default::default()
        };
        assert!(both.validate().unwrap_err().1.contains("not several"));
        let filtered = RedriveRequest {
            filter: FailureFilter { condition: Some("RecordAgeExceeded".into()), ..Default::default() },
            ..Default::default()
        };
        assert!(filtered.validate().is_ok());
        let bad = RedriveRequest {
            filter: FailureFilter { condition: Some("Oops".into()), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "Condition");
        let parsed: RedriveRequest = serde_json::from_str(r#"{"Records":[{"Partition":2,"Offset":7}]}"#).unwrap();
        assert_eq!(parsed.records.unwrap()[0], RecordRef { partition: 2, offset: 7 });
    }
}
