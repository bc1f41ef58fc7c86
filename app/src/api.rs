//! Server functions the pages load their data with, and the `Backend` seam
//! the server implements (the app crate never sees the database).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::form::MappingForm;
use crate::model::MappingView;
use crate::spec::FieldError;

/// A form the browser posted without JavaScript that did not validate: the
/// server renders the page again with it, and hydration reads it back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PostedForm {
    pub values: MappingForm,
    pub errors: Vec<FieldError>,
}

#[cfg(feature = "ssr")]
pub mod backend {
    use std::sync::Arc;

    use crate::model::MappingView;

    /// What the console needs from the server side. Implemented in `server/`.
    #[async_trait::async_trait]
    pub trait Backend: Send + Sync + 'static {
        // Errors cross the seam as text: the page shows them, nothing matches on them.
        async fn list(&self) -> Result<Vec<MappingView>, String>;
        async fn get(&self, id: uuid::Uuid) -> Result<Option<MappingView>, String>;
        /// None while no poller runs for the mapping.
        fn counters(&self, id: uuid::Uuid) -> Option<crate::model::MappingCounters>;
        /// None: no such mapping.
        async fn history(
            &self,
            id: uuid::Uuid,
            range: crate::metrics::Range,
        ) -> Result<Option<crate::metrics::History>, String>;
        async fn overview(&self) -> Result<Vec<crate::metrics::Overview>, String>;
        async fn insight(&self, id: uuid::Uuid) -> Result<Option<crate::metrics::Insight>, String>;
        /// None: no such mapping.
        async fn reset_state(&self, id: uuid::Uuid) -> Result<Option<crate::reset::ResetState>, String>;
        async fn resets(&self, id: uuid::Uuid) -> Result<Vec<crate::reset::ResetAudit>, String>;
        fn system(&self) -> crate::model::SystemInfo;
        async fn nodes(&self) -> Result<Vec<crate::model::NodeView>, String>;
        /// Up to `n` of the newest records of the mapping's topic.
        async fn sample(&self, id: uuid::Uuid, n: usize) -> Result<Vec<crate::filter::Sample>, String>;
        /// "Test connection" for a schema registry: reaches it and reads one
        /// schema. `id`: the mapping being edited (its stored secrets are used
        /// for the same registry).
        async fn test_registry(
            &self,
            id: Option<uuid::Uuid>,
            registry: crate::spec::SchemaRegistryConfig,
            schema_id: Option<String>,
        ) -> Result<String, String>;
        /// The newest `n` entries of the audit log.
        async fn audit(&self, n: usize) -> Result<Vec<crate::model::AuditEntry>, String>;
        /// The API tokens (never their secrets).
        async fn tokens(&self) -> Result<Vec<crate::model::TokenView>, String>;
        /// A page of the mapping's failed records, newest first.
        async fn failures(
            &self,
            id: uuid::Uuid,
            filter: crate::failures::FailureFilter,
            marker: Option<String>,
        ) -> Result<crate::failures::FailurePage, String>;
        /// The mapping's redrives, newest first; and one with its results.
        async fn redrives(&self, id: uuid::Uuid) -> Result<Vec<crate::failures::RedriveJob>, String>;
        async fn redrive_job(&self, id: uuid::Uuid, job: String)
            -> Result<Option<crate::failures::RedriveJob>, String>;
        /// A record of the topic, decoded as the filter tester shows it (None: gone).
        async fn failed_record(
            &self,
            id: uuid::Uuid,
            partition: i32,
            offset: i64,
        ) -> Result<Option<crate::filter::Sample>, String>;
    }

    /// Who the request being served is from (the server's access guard
    /// puts it on every request it lets through).
    pub fn session() -> Option<crate::model::Session> {
        leptos::prelude::use_context::<http::request::Parts>()?.extensions.get::<crate::model::Session>().cloned()
    }

    /// Refuses a server function to a caller below `role`.
    pub fn require(role: crate::model::Role) -> Result<crate::model::Session, leptos::prelude::ServerFnError> {
        match session() {
            Some(s) if s.role >= role => Ok(s),
            Some(_) => Err(leptos::prelude::ServerFnError::new(format!("this needs the {} role", role.as_str()))),
            None => Err(leptos::prelude::ServerFnError::new("sign in first")),
        }
    }

    /// This response's Content-Security-Policy nonce (the server's security
    /// headers put it on the request; the shell gives it to Leptos's scripts).
    #[derive(Clone)]
    pub struct CspNonce(pub String);

    /// The sign-in form's CSRF token, before there is a session (the guard
    /// puts it on the request to `/login` and in a cookie beside it).
    #[derive(Clone)]
    pub struct LoginCsrf(pub String);

    fn extension<T: Clone + Send + Sync + 'static>() -> Option<T> {
        leptos::prelude::use_context::<http::request::Parts>()?.extensions.get::<T>().cloned()
    }

    /// The nonce of this response, for Leptos's inline scripts.
    pub fn provide_nonce() {
        if let Some(n) = extension::<CspNonce>() {
            leptos::prelude::provide_context(leptos::nonce::Nonce::from_value(n.0));
        }
    }

    /// The CSRF token forms of this page carry: the session's, or before
    /// sign-in the sign-in form's.
    pub fn form_token() -> String {
        session().map(|s| s.csrf).or_else(|| extension::<LoginCsrf>().map(|t| t.0)).unwrap_or_default()
    }

    #[derive(Clone)]
    pub struct BackendHandle(pub Arc<dyn Backend>);

    /// The server side, for a signed-in caller (every server function
    /// reads through here; pages call them in-process while rendering).
    pub fn backend() -> Result<BackendHandle, leptos::prelude::ServerFnError> {
        require(crate::model::Role::Viewer)?;
        leptos::prelude::use_context::<BackendHandle>()
            .ok_or_else(|| leptos::prelude::ServerFnError::new("the console has no backend in context"))
    }
}

#[server(endpoint = "list_mappings")]
pub async fn list_mappings() -> Result<Vec<MappingView>, ServerFnError> {
    backend::backend()?.0.list().await.map_err(ServerFnError::new)
}

#[server(endpoint = "get_mapping")]
pub async fn get_mapping(id: String) -> Result<Option<MappingView>, ServerFnError> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Ok(None);
    };
    backend::backend()?.0.get(id).await.map_err(ServerFnError::new)
}

/// Every running mapping's live counts, keyed by UUID (for the list page).
#[server(endpoint = "list_counters")]
pub async fn list_counters(
) -> Result<std::collections::HashMap<uuid::Uuid, crate::model::MappingCounters>, ServerFnError> {
    let b = backend::backend()?;
    let all = b.0.list().await.map_err(ServerFnError::new)?;
    Ok(all.into_iter().filter_map(|m| b.0.counters(m.uuid).map(|c| (m.uuid, c))).collect())
}

#[server(endpoint = "get_counters")]
pub async fn get_counters(id: String) -> Result<Option<crate::model::MappingCounters>, ServerFnError> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Ok(None);
    };
    Ok(backend::backend()?.0.counters(id))
}

/// A mapping's metrics over a range (`15m`, `1h`, `24h`, `7d`).
#[server(endpoint = "get_history")]
pub async fn get_history(id: String, range: String) -> Result<Option<crate::metrics::History>, ServerFnError> {
    let (Ok(id), Some(range)) = (uuid::Uuid::parse_str(&id), crate::metrics::Range::parse(&range)) else {
        return Ok(None);
    };
    backend::backend()?.0.history(id, range).await.map_err(ServerFnError::new)
}

/// A mapping's health, advice and baseline figures.
#[server(endpoint = "get_insight")]
pub async fn get_insight(id: String) -> Result<Option<crate::metrics::Insight>, ServerFnError> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Ok(None);
    };
    backend::backend()?.0.insight(id).await.map_err(ServerFnError::new)
}

/// Where the mapping's group stands per partition, and its reset audit log.
#[server(endpoint = "get_reset_state")]
pub async fn get_reset_state(id: String) -> Result<Option<crate::reset::ResetState>, ServerFnError> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Ok(None);
    };
    backend::backend()?.0.reset_state(id).await.map_err(ServerFnError::new)
}

/// The mapping's reset audit log, newest first.
#[server(endpoint = "get_resets")]
pub async fn get_resets(id: String) -> Result<Vec<crate::reset::ResetAudit>, ServerFnError> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Ok(vec![]);
    };
    backend::backend()?.0.resets(id).await.map_err(ServerFnError::new)
}

/// What this node can do (AWS features and why some are off).
#[server(endpoint = "get_system")]
pub async fn get_system() -> Result<crate::model::SystemInfo, ServerFnError> {
    Ok(backend::backend()?.0.system())
}

/// The Sluice nodes sharing this database.
#[server(endpoint = "get_nodes")]
pub async fn get_nodes() -> Result<Vec<crate::model::NodeView>, ServerFnError> {
    backend::backend()?.0.nodes().await.map_err(ServerFnError::new)
}

/// The newest records of a mapping's topic, for the filter tester.
#[server(endpoint = "sample_records")]
pub async fn sample_records(id: String, n: usize) -> Result<Vec<crate::filter::Sample>, ServerFnError> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Ok(vec![]);
    };
    backend::require(crate::model::Role::Operator)?;
    backend::backend()?.0.sample(id, n.clamp(1, 100)).await.map_err(ServerFnError::new)
}

/// The form's "Test connection" for its schema registry: what was read,
/// or why not.
#[server(endpoint = "test_schema_registry")]
pub async fn test_schema_registry(
    id: Option<String>,
    registry: crate::spec::SchemaRegistryConfig,
    // Apart: secrets never serialize inside a spec.
    password: Option<String>,
    schema_id: Option<String>,
) -> Result<String, ServerFnError> {
    backend::require(crate::model::Role::Operator)?;
    let id = id.and_then(|i| uuid::Uuid::parse_str(&i).ok());
    let mut registry = registry;
    if let Some(basic) = registry.access_configs.iter_mut().find(|c| c.kind == crate::spec::AccessKind::BasicAuth) {
        basic.password = password.filter(|p| !p.is_empty());
    }
    backend::backend()?.0.test_registry(id, registry, schema_id).await.map_err(ServerFnError::new)
}

/// A page of a mapping's failed records (the "Failed records" tab).
#[server(endpoint = "get_failures")]
pub async fn get_failures(
    id: String,
    // Flat: the browser sends server functions' arguments as a form.
    partition: Option<i32>,
    condition: Option<String>,
    redrive: Option<String>,
    marker: Option<String>,
) -> Result<crate::failures::FailurePage, ServerFnError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ServerFnError::new("not a mapping UUID"))?;
    let filter = crate::failures::FailureFilter { partition, condition, redrive, since: None, until: None };
    backend::backend()?.0.failures(id, filter, marker).await.map_err(ServerFnError::new)
}

/// The mapping's redrives, newest first.
#[server(endpoint = "get_redrives")]
pub async fn get_redrives(id: String) -> Result<Vec<crate::failures::RedriveJob>, ServerFnError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ServerFnError::new("not a mapping UUID"))?;
    backend::backend()?.0.redrives(id).await.map_err(ServerFnError::new)
}

/// One redrive's progress and per-record results.
#[server(endpoint = "get_redrive_job")]
pub async fn get_redrive_job(id: String, job: String) -> Result<Option<crate::failures::RedriveJob>, ServerFnError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ServerFnError::new("not a mapping UUID"))?;
    backend::backend()?.0.redrive_job(id, job).await.map_err(ServerFnError::new)
}

/// A failed record's contents, read from the topic (operators: records
/// hold data, as the filter tester's samples do).
#[server(endpoint = "failed_record")]
pub async fn failed_record(
    id: String,
    partition: i32,
    offset: i64,
) -> Result<Option<crate::filter::Sample>, ServerFnError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ServerFnError::new("not a mapping UUID"))?;
    backend::require(crate::model::Role::Operator)?;
    backend::backend()?.0.failed_record(id, partition, offset).await.map_err(ServerFnError::new)
}

/// Who is signed in (None on the sign-in page).
#[server(endpoint = "get_session")]
pub async fn get_session() -> Result<Option<crate::model::Session>, ServerFnError> {
    Ok(backend::session())
}

/// The newest changes, for operators and admins.
/// The API tokens, for admins.
#[server(endpoint = "get_tokens")]
pub async fn get_tokens() -> Result<Vec<crate::model::TokenView>, ServerFnError> {
    backend::require(crate::model::Role::Admin)?;
    backend::backend()?.0.tokens().await.map_err(ServerFnError::new)
}

#[server(endpoint = "get_audit")]
pub async fn get_audit() -> Result<Vec<crate::model::AuditEntry>, ServerFnError> {
    backend::require(crate::model::Role::Operator)?;
    backend::backend()?.0.audit(500).await.map_err(ServerFnError::new)
}

/// Health, lag sparkline and rates of every mapping.
#[server(endpoint = "get_overview")]
pub async fn get_overview() -> Result<Vec<crate::metrics::Overview>, ServerFnError> {
    backend::backend()?.0.overview().await.map_err(ServerFnError::new)
}

/// The CSRF token of the signed-in session (or of the sign-in form): from the request
/// on the server, from the page's `<meta name="csrf-token">` in the browser.
pub fn csrf_token() -> String {
    #[cfg(feature = "ssr")]
    {
        backend::form_token()
    }
    #[cfg(feature = "hydrate")]
    {
        web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.query_selector("meta[name=csrf-token]").ok().flatten())
            .and_then(|m| m.get_attribute("content"))
            .unwrap_or_default()
    }
    #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
    {
        String::new()
    }
}

/// Sets the HTTP status of the page being rendered on the server.
pub fn set_status(code: u16) {
    #[cfg(feature = "ssr")]
    if let Some(r) = use_context::<leptos_axum::ResponseOptions>() {
        if let Ok(s) = http::StatusCode::from_u16(code) {
            r.set_status(s);
        }
    }
    #[cfg(not(feature = "ssr"))]
    let _ = code;
}

/// Current Unix time, in the browser or on the server.
pub fn now_s() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        (js_sys::Date::now() / 1000.0) as i64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}
