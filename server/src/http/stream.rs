//! Live metrics: server-sent events for open pages, and the Prometheus
//! exposition. A page that reconnects (the browser does so by itself) sends
//! `Last-Event-ID`, the time of the last point it has, and first gets the
//! points it missed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use sluice_app::metrics::MetricPoint;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use super::AppState;

fn point_event(p: &MetricPoint) -> Event {
    Event::default().event("point").id(p.time.to_string()).data(serde_json::to_string(p).unwrap_or_default())
}

fn last_event_id(h: &HeaderMap) -> Option<i64> {
    h.get("last-event-id")?.to_str().ok()?.parse().ok()
}

fn sse(s: impl Stream<Item = Event> + Send + 'static) -> Response {
    Sse::new(s.map(Ok::<_, Infallible>)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

/// One mapping's points, one `point` event a second.
#[derive(serde::Deserialize)]
pub struct After {
    /// Time (ms) of the newest point the page has (on its first connect;
    /// reconnects send `Last-Event-ID`).
    after: Option<i64>,
}

pub async fn mapping(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<After>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return (StatusCode::NOT_FOUND, "no such mapping").into_response();
    };
    let metrics = s.mappings.metrics().clone();
    let ticks = BroadcastStream::new(metrics.subscribe());
    let missed: Vec<Event> = match last_event_id(&headers).or(q.after) {
        Some(after) => metrics.recent(id, after).iter().map(point_event).collect(),
        None => vec![],
    };
    // A retry hint of 1 s: after a server restart, pages are back at once.
    let first = Event::default().retry(Duration::from_secs(1)).comment("sluice metrics");
    let live = ticks.filter_map(move |t| {
        let ev = t.ok().and_then(|t| t.points.iter().find(|(m, _)| *m == id).map(|(_, p)| point_event(p)));
        async move { ev }
    });
    let events =
        stream::iter(std::iter::once(first).chain(missed)).chain(live).take_until(metrics.closing().cancelled_owned());
    sse(events)
}

/// Every running mapping's newest point, keyed by UUID, once a second.
pub async fn all(State(s): State<AppState>) -> Response {
    let metrics = s.mappings.metrics().clone();
    let ticks = BroadcastStream::new(metrics.subscribe());
    let first = Event::default().retry(Duration::from_secs(1)).comment("sluice metrics");
    let live = ticks.filter_map(|t| async move {
        let t = t.ok()?;
        let map: HashMap<String, &MetricPoint> = t.points.iter().map(|(id, p)| (id.to_string(), p)).collect();
        Some(
            Event::default()
                .event("points")
                .id(t.time.to_string())
                .data(serde_json::to_string(&map).unwrap_or_default()),
        )
    });
    let events = stream::once(async move { first }).chain(live).take_until(metrics.closing().cancelled_owned());
    sse(events)
}

/// Prometheus text format, per mapping and per partition.
pub async fn prometheus(State(s): State<AppState>) -> Response {
    let names: HashMap<Uuid, (String, String)> = match s.mappings.list().await {
        Ok(list) => {
            list.into_iter().map(|m| (m.uuid, (m.spec.function_name.clone(), m.spec.topic().to_string()))).collect()
        }
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("database unavailable: {e}\n")).into_response(),
    };
    let failed = s.mappings.open_failure_counts().await;
    let body = crate::metrics::prometheus(&s.mappings.live(), &names, &failed);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
