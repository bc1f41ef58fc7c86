//! An HTTP endpoint as the function: the event is POSTed as JSON. 2xx is
//! success (its body may be a partial batch response), 429 and 503 with
//! Retry-After are throttles, anything else is a function error.

use std::time::Duration;

use async_trait::async_trait;

use super::{excerpt, Outcome, Target};

pub struct HttpTarget {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl HttpTarget {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpTarget { client, url: url.to_string(), timeout })
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[async_trait]
impl Target for HttpTarget {
    async fn invoke(&self, payload: String) -> Outcome {
        let sent = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(payload)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::FunctionError {
                    message: format!("{} timed out after {} ms", self.url, self.timeout.as_millis()),
                    status: None,
                    version: None,
                }
            }
            Err(e) if e.is_connect() => {
                return Outcome::FunctionError { message: format!("cannot connect to {}: {}", self.url, root_cause(&e)), status: None, version: None }
            }
            Err(e) => {
                return Outcome::FunctionError { message: format!("request to {} failed: {}", self.url, root_cause(&e)), status: None, version: None }
            }
        };
        let status = resp.status();
        let after = retry_after(resp.headers());
        let body = match resp.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => {
                return Outcome::FunctionError {
                    message: format!("{} answered {status} but its body broke off: {e}", self.url),
                    status: Some(status.as_u16()),
                    version: None,
                }
            }
        };
        if status.is_success() {
            return Outcome::Success { body };
        }
        let message = format!("function returned {}: {}", status, excerpt(&body, 200));
        if status.as_u16() == 429 || (status.as_u16() == 503 && after.is_some()) {
            return Outcome::Throttled { message, retry_after: after };
        }
        Outcome::FunctionError { message, status: Some(status.as_u16()), version: None }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
