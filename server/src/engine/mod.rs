//! The engine, one module per part of its sentence: **poll** (a consumer in
//! the mapping's group) → **filter** → **batch** → **invoke** (retries,
//! throttles, bisect, partial batch responses) → **commit**, with
//! **failure** handing what the user's limits give up on to a
//! **destination**; `pipeline` runs one partition through those stages and
//! `target` is the function called. The **reconcile**r is the only thing
//! that starts or stops pollers: it turns stored specs into running pollers
//! and writes back what they report; `scaler` and `lag` serve it.

pub mod batch;
pub mod commit;
pub mod destination;
pub mod event;
pub mod failure;
pub mod filter;
pub mod invoke;
pub mod lag;
pub mod lanes;
pub mod pipeline;
pub mod poll;
pub mod reconcile;
pub mod redrive;
pub mod scaler;
pub mod target;

use std::time::Duration;

pub use reconcile::{Engine, EngineHandle};

#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Timeout of one HTTP invocation.
    pub http_timeout: Duration,
    /// How long a stopping poller lets in-flight invocations finish.
    pub grace: Duration,
    /// Where mappings may connect (`SLUICE_ALLOWED_HOSTS`).
    pub reach: crate::reach::Reach,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            http_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            reach: Default::default(),
        }
    }
}

/// Why a mapping's function or destination cannot be set up; shown as the
/// mapping's status (ESM_CONFIG_NOT_VALID).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    NoRegion(#[from] crate::aws::NoRegion),
    #[error("the AWS configuration is not loaded")]
    NoAws,
    /// The target or destination refused its settings (its own words).
    #[error("{0}")]
    Refused(String),
}
