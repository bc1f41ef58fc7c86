//! What the API and the console show of a mapping: the saved spec plus the
//! status the engine reports. The two are stored apart; this joins them.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::spec::MappingSpec;

#[cfg(feature = "ssr")]
use schemars::JsonSchema;

/// The AWS mapping states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
pub enum MappingState {
    Creating,
    Enabling,
    Enabled,
    Disabling,
    Disabled,
    Updating,
    Deleting,
}

impl MappingState {
    pub fn as_str(self) -> &'static str {
        match self {
            MappingState::Creating => "Creating",
            MappingState::Enabling => "Enabling",
            MappingState::Enabled => "Enabled",
            MappingState::Disabling => "Disabling",
            MappingState::Disabled => "Disabled",
            MappingState::Updating => "Updating",
            MappingState::Deleting => "Deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        use MappingState::*;
        [Creating, Enabling, Enabled, Disabling, Disabled, Updating, Deleting].into_iter().find(|m| m.as_str() == s)
    }
}

/// What the engine observed; written only by the engine side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct MappingStatus {
    pub state: MappingState,
    /// USER_INITIATED, or an error code such as ESM_CONFIG_NOT_VALID.
    pub state_transition_reason: String,
    pub last_processing_result: String,
}

/// How a LastProcessingResult that reports a problem begins (AWS's form:
/// "PROBLEM: Connection error. ..."); the server's `Problem` writes it.
pub const PROBLEM_PREFIX: &str = "PROBLEM: ";

/// Whether a LastProcessingResult reports a problem.
pub fn is_problem(last_processing_result: &str) -> bool {
    last_processing_result.starts_with(PROBLEM_PREFIX)
}

/// A mapping as the API returns it (AWS `EventSourceMappingConfiguration`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct MappingView {
    #[serde(rename = "UUID")]
    pub uuid: Uuid,
    #[serde(flatten)]
    pub spec: MappingSpec,
    #[serde(flatten)]
    pub status: MappingStatus,
    /// Unix seconds (with a fraction), as AWS returns it.
    pub last_modified: f64,
    /// AWS's tags (TagResource); changed through the tags API, not the spec.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl MappingView {
    /// The label a person reads: the Name, or the UUID.
    pub fn label(&self) -> String {
        self.spec.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| self.uuid.to_string())
    }

    /// The consumer group the mapping reads with (AWS: the UUID by default).
    pub fn consumer_group(&self) -> String {
        self.spec.group_for(self.uuid)
    }
}

/// A running mapping's counts since its poller started (AWS metric names).
/// Charts and history are the console issue's; these are the live totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct MappingCounters {
    pub invocations: u64,
    pub errors: u64,
    pub throttles: u64,
    pub invoked_event_count: u64,
    pub filtered_out_event_count: u64,
    pub dropped_event_count: u64,
    pub on_failure_destination_delivered_event_count: u64,
    pub committed_event_count: u64,
    /// Per partition, read every few seconds apart from the poll loop.
    pub partitions: Vec<PartitionLag>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct PartitionLag {
    pub partition: i32,
    /// None: the group has committed nothing on this partition yet.
    pub committed_offset: Option<i64>,
    pub end_offset: i64,
    /// Records between the committed offset (or the start) and the end.
    pub offset_lag: i64,
    /// The partition's batches at the function now, and its lanes
    /// (ParallelizationFactor); live counters only.
    #[serde(default)]
    pub in_flight: u64,
    #[serde(default)]
    pub lanes: u64,
}

/// What this node can and cannot do, said in words (the console's footer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct SystemInfo {
    pub version: String,
    /// The node answering (several may share the database).
    #[serde(default)]
    pub node: String,
    /// One line per AWS feature: available, or why not.
    pub aws: Vec<String>,
    /// Why the database refuses this node's writes, while it does.
    #[serde(default)]
    pub database_problem: Option<String>,
}

/// One Sluice process sharing the database, as its heartbeat last said.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(JsonSchema))]
#[serde(rename_all = "PascalCase")]
pub struct NodeView {
    pub id: String,
    /// Where its console and API listen, as it was told to advertise.
    pub address: String,
    pub version: String,
    /// Unix time (s).
    pub started: f64,
    pub last_heartbeat: f64,
    /// Runs the once-per-cluster duties (autoscaler, metric rollups).
    pub leader: bool,
    /// Heartbeat recent enough to count it in; otherwise its work has
    /// moved (or is moving) to the others.
    pub alive: bool,
    /// The node answering this request.
    pub this_node: bool,
    /// Pollers (consumers) it runs, per mapping UUID.
    pub pollers: std::collections::BTreeMap<String, u32>,
}

impl NodeView {
    pub fn total_pollers(&self) -> u32 {
        self.pollers.values().sum()
    }
}

/// What a signed-in user or an API token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything but records and secrets.
    Viewer,
    /// Creates, edits, enables, disables, resets mappings and tests filters.
    Operator,
    /// Manages users and API tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// Who is asking: a signed-in user (with the CSRF token their forms carry)
/// or an API token (no CSRF token: bearer tokens are not sent by browsers
/// on their own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

/// An API token as listed: never its secrets (they are shown once, when
/// it is made).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    pub created_by: String,
    pub created: i64,
    pub last_used: Option<i64>,
    /// Its SigV4 key id (tokens made before key pairs existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
}

/// A token just made, with its secrets: the one time they are shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MadeToken {
    pub name: String,
    pub role: Role,
    pub token: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// One change, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuditEntry {
    pub id: String,
    /// Unix milliseconds.
    pub time: i64,
    pub actor: String,
    /// e.g. `PATCH /api/v1/mappings/{id}` or `POST /mappings/{id}/disable`.
    pub action: String,
    /// The mapping, user or token the change was about ("" when none).
    pub target: String,
    /// The HTTP status the change was answered with.
    pub status: u16,
    /// What changed (field names and values; secrets never).
    pub detail: String,
}
