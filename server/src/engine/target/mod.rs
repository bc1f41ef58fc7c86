//! Invoking a function: one small trait, one file per kind of target.
//! The engine only sees `Outcome`.

pub mod http;
pub mod lambda;

use std::time::Duration;

use async_trait::async_trait;

/// What came of one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function ran and returned; `body` may hold a partial batch response.
    Success { body: Vec<u8> },
    /// The function failed, could not be reached, or timed out. `message` is
    /// written for a person (it ends up in LastProcessingResult).
    /// `version`: the function version that ran, when the target says (Lambda).
    FunctionError { message: String, status: Option<u16>, version: Option<String> },
    /// The target asked us to slow down. Not a failed attempt.
    Throttled { message: String, retry_after: Option<Duration> },
}

#[async_trait]
pub trait Target: Send + Sync {
    async fn invoke(&self, payload: String) -> Outcome;
}

/// The first `max` characters of a body, for error messages.
pub fn excerpt(body: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}
