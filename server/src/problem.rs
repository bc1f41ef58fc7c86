//! What a mapping's LastProcessingResult says, as types: the engine sets a
//! `Processing`, the store writes its text (AWS's wording) and the
//! StateTransitionReason it implies, and decisions read the variant, never
//! the text. A leaf: it names no other module.

use std::fmt;

use serde::Serialize;
use sluice_app::model::PROBLEM_PREFIX;

/// A mapping's last processing result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Processing {
    /// Nothing invoked since the pollers started.
    #[default]
    NoRecords,
    Ok,
    /// Stopped while an offset reset is committed.
    Held,
    Problem(Problem),
}

impl fmt::Display for Processing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Processing::NoRecords => f.write_str("No records processed"),
            Processing::Ok => f.write_str("OK"),
            Processing::Held => f.write_str("Paused: committing new offsets for the consumer group (offset reset)"),
            Processing::Problem(p) => p.fmt(f),
        }
    }
}

impl Processing {
    /// AWS's StateTransitionReason while this lasts, if it sets one.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Processing::Problem(p) => p.refusal(),
            _ => None,
        }
    }
}

impl From<Problem> for Processing {
    fn from(p: Problem) -> Self {
        Processing::Problem(p)
    }
}

/// Why records were handed to the failure rules: the `condition` of AWS's
/// failure records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FailureCondition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
    MaximumPayloadSizeExceeded,
    /// AWS's schema registry reason codes.
    #[serde(rename = "SCHEMA_NOT_FOUND")]
    SchemaNotFound,
    #[serde(rename = "DESERIALIZATION_ERROR")]
    DeserializationError,
}

impl FailureCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCondition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            FailureCondition::RecordAgeExceeded => "RecordAgeExceeded",
            FailureCondition::MaximumPayloadSizeExceeded => "MaximumPayloadSizeExceeded",
            FailureCondition::SchemaNotFound => "SCHEMA_NOT_FOUND",
            FailureCondition::DeserializationError => "DESERIALIZATION_ERROR",
        }
    }
}

impl fmt::Display for FailureCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a user must know about (and usually act on). `Display` is the
/// text the console and the API show, `PROBLEM: ` first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The brokers cannot be reached (AWS: "Connection error").
    Unreachable {
        servers: String,
        reason: String,
    },
    TlsHandshake {
        servers: String,
        reason: String,
    },
    SaslFailed {
        servers: String,
        reason: String,
    },
    NotAuthorized {
        servers: String,
        reason: String,
    },
    NoTopic {
        topic: String,
        servers: String,
    },
    /// Any other Kafka error.
    Kafka {
        error: String,
        reason: String,
    },
    ClientCertificate(String),
    CreateConsumer(String),
    Subscribe {
        topic: String,
        error: String,
    },
    CommittedOffsets(String),
    Assign(String),
    Rebalance(String),
    Throttled(String),
    FunctionFailed(String),
    Bisecting {
        problem: String,
        records: usize,
    },
    Dropped {
        condition: FailureCondition,
        span: String,
        why: String,
    },
    Diverted {
        condition: FailureCondition,
        span: String,
        destination: String,
        why: String,
    },
    DestinationDown {
        span: String,
        destination: String,
        error: String,
    },
    /// A record names a schema not seen yet and the registry cannot be read.
    RegistryDown {
        span: String,
        error: String,
    },
    /// A setting the engine cannot run with (AWS: ESM_CONFIG_NOT_VALID).
    Config {
        field: String,
        message: String,
    },
    /// The function or destination cannot be set up (ESM_CONFIG_NOT_VALID).
    Start(String),
    /// The mapping's credentials cannot be read (EVENT_SOURCE_AUTHN_ERROR).
    Credentials(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        f.write_str(PROBLEM_PREFIX)?;
        match self {
            Unreachable { servers, reason } => {
                write!(f, "Connection error: cannot reach the Kafka brokers ({servers}): {reason}")
            }
            TlsHandshake { servers, reason } => write!(f, "TLS handshake with the brokers failed ({servers}): {reason}"),
            SaslFailed { servers, reason } => write!(f, "SASL authentication failed ({servers}): {reason}"),
            NotAuthorized { servers, reason } => {
                write!(f, "Not authorized: the brokers refused access ({servers}): {reason}")
            }
            NoTopic { topic, servers } => write!(f, "Topic `{topic}` does not exist on {servers}"),
            Kafka { error, reason } => write!(f, "Kafka error: {error}: {reason}"),
            ClientCertificate(e) => write!(f, "Cannot use the client certificate or key: {e}"),
            CreateConsumer(e) => write!(f, "cannot create the Kafka consumer: {e}"),
            Subscribe { topic, error } => write!(f, "cannot subscribe to {topic}: {error}"),
            CommittedOffsets(e) => write!(f, "cannot read the group's committed offsets: {e}"),
            Assign(e) => write!(f, "cannot take the assigned partitions: {e}"),
            Rebalance(e) => write!(f, "consumer group rebalance failed: {e}"),
            Throttled(m) => write!(f, "Function throttled: {m}"),
            FunctionFailed(m) => write!(f, "Function call failed: {m}"),
            Bisecting { problem, records } => {
                write!(f, "Function call failed: {problem}; bisecting the batch of {records}")
            }
            Dropped { condition, span, why } => write!(f, "{condition}: dropped {span}: {why}"),
            Diverted { condition, span, destination, why } => write!(f, "{condition}: sent {span} to {destination}: {why}"),
            RegistryDown { span, error } => write!(f, "{error}; {span} waits, retrying (records naming schemas already read go on)"),
            DestinationDown { span, destination, error } => write!(
                f,
                "cannot deliver {span} to the on-failure destination {destination}: {error}; retrying, the partition waits"
            ),
            Config { field, message } => write!(f, "{field}: {message}"),
            Start(m) | Credentials(m) => f.write_str(m),
        }
    }
}

impl Problem {
    /// AWS's StateTransitionReason when the brokers refused the mapping
    /// (credentials, certificates, ACLs); None for anything else.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Problem::SaslFailed { .. } | Problem::TlsHandshake { .. } | Problem::ClientCertificate(_) => {
                Some("EVENT_SOURCE_AUTHN_ERROR")
            }
            Problem::NotAuthorized { .. } => Some("EVENT_SOURCE_AUTHZ_ERROR"),
            _ => None,
        }
    }

    /// AWS's StateTransitionReason for a mapping that could not start
    /// because of this: its credentials (EVENT_SOURCE_AUTHN_ERROR), or its
    /// settings (ESM_CONFIG_NOT_VALID).
    pub fn start_refusal(&self) -> &'static str {
        match self {
            Problem::Credentials(_) => "EVENT_SOURCE_AUTHN_ERROR",
            _ => "ESM_CONFIG_NOT_VALID",
        }
    }

    /// About the brokers rather than the records: over once the group
    /// assigns partitions again.
    pub fn about_the_brokers(&self) -> bool {
        matches!(self, Problem::Unreachable { .. } | Problem::NoTopic { .. }) || self.refusal().is_some()
    }

    /// The same with `f` applied to every text it carries (to take secrets
    /// out before a user sees it).
    pub fn map_text(self, f: impl Fn(&str) -> String) -> Problem {
        use Problem::*;
        match self {
            Unreachable { servers, reason } => Unreachable { servers: f(&servers), reason: f(&reason) },
            TlsHandshake { servers, reason } => TlsHandshake { servers: f(&servers), reason: f(&reason) },
            SaslFailed { servers, reason } => SaslFailed { servers: f(&servers), reason: f(&reason) },
            NotAuthorized { servers, reason } => NotAuthorized { servers: f(&servers), reason: f(&reason) },
            NoTopic { topic, servers } => NoTopic { topic: f(&topic), servers: f(&servers) },
            Kafka { error, reason } => Kafka { error: f(&error), reason: f(&reason) },
            ClientCertificate(e) => ClientCertificate(f(&e)),
            CreateConsumer(e) => CreateConsumer(f(&e)),
            Subscribe { topic, error } => Subscribe { topic: f(&topic), error: f(&error) },
            CommittedOffsets(e) => CommittedOffsets(f(&e)),
            Assign(e) => Assign(f(&e)),
            Rebalance(e) => Rebalance(f(&e)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_keep_aws_wording_and_refusals_set_the_reason() {
        let sasl = Problem::SaslFailed { servers: "b:9092".into(), reason: "invalid proof".into() };
        assert_eq!(sasl.to_string(), "PROBLEM: SASL authentication failed (b:9092): invalid proof");
        assert_eq!(sasl.refusal(), Some("EVENT_SOURCE_AUTHN_ERROR"));
        let acl = Problem::NotAuthorized { servers: "b".into(), reason: "r".into() };
        assert_eq!(acl.refusal(), Some("EVENT_SOURCE_AUTHZ_ERROR"));
        let down = Problem::Unreachable { servers: "b".into(), reason: "r".into() };
        assert!(down.to_string().starts_with("PROBLEM: Connection error"));
        assert_eq!(down.refusal(), None);
        assert!(down.about_the_brokers() && !Problem::Throttled("x".into()).about_the_brokers());
        assert_eq!(Processing::Ok.to_string(), "OK");
        assert_eq!(Processing::default().to_string(), "No records processed");
        assert!(sluice_app::model::is_problem(&Processing::from(down).to_string()));
        let secret = Problem::ClientCertificate("bad key pw=hunter2".into()).map_text(|s| s.replace("hunter2", "***"));
        assert_eq!(secret.to_string(), "PROBLEM: Cannot use the client certificate or key: bad key pw=***");
    }
}
