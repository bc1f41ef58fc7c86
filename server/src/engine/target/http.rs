//! An HTTP endpoint as the function: the event is POSTed as JSON. 2xx is
//! success (its body may be a partial batch response), 429 and 503 with
//! Retry-After are throttles, anything else is a function error. An error's
//! body goes to the node's log only: it may repeat what the endpoint holds
//! (headers, credentials), and LastProcessingResult is shown to viewers.
//! Redirects are followed only on the same scheme, host and port, so a
//! mapping's events never go to a host its URL does not name.

use std::time::Duration;

use async_trait::async_trait;

use super::{excerpt, Outcome, Target};

pub struct HttpTarget {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl HttpTarget {
    /// `reach`: names resolve only to addresses it allows (when it is set).
    pub fn new(url: &str, timeout: Duration, reach: &crate::reach::Reach) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder();
        if reach.is_limited() {
            builder = builder.dns_resolver(std::sync::Arc::new(crate::reach::Resolver(reach.clone())));
        }
        let client = builder
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .redirect(same_origin_redirects())
            .build()?;
        Ok(HttpTarget { client, url: url.to_string(), timeout })
    }
}

fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let same = first.is_some_and(|f| {
            let u = attempt.url();
            f.scheme() == u.scheme()
                && f.host_str() == u.host_str()
                && f.port_or_known_default() == u.port_or_known_default()
        });
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if same {
            attempt.follow()
        } else {
            // The 3xx itself comes back as the answer: a function error.
            attempt.stop()
        }
    })
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
                return Outcome::FunctionError {
                    message: format!("cannot connect to {}: {}", self.url, root_cause(&e)),
                    status: None,
                    version: None,
                }
            }
            Err(e) => {
                return Outcome::FunctionError {
                    message: format!("request to {} failed: {}", self.url, root_cause(&e)),
                    status: None,
                    version: None,
                }
            }
        };
        let status = resp.status();
        let after = retry_after(resp.headers());
        let resp_location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| excerpt(l.as_bytes(), 200));
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
        let mut message = format!("function returned {status}");
        if status.is_redirection() {
            let to = resp_location.as_deref().unwrap_or("?");
            message +=
                &format!(" (a redirect to {to}: Sluice follows redirects only to the same scheme, host and port)");
        }
        if status.as_u16() == 429 || (status.as_u16() == 503 && after.is_some()) {
            tracing::debug!(url = %self.url, status = status.as_u16(), body = %excerpt(&body, 500), "the function throttled");
            return Outcome::Throttled { message, retry_after: after };
        }
        tracing::warn!(url = %self.url, status = status.as_u16(), body = %excerpt(&body, 500), "the function answered an error");
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
