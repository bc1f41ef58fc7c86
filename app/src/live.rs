//! The live parts of the mapping page: charts over a chosen range, redrawn
//! as points arrive over server-sent events, and the health, advice and
//! baseline figures (looked at again every few seconds).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::api::{get_history, get_insight};
use crate::charts::{draw, series, Kind};
use crate::metrics::{format_span, Health, History, Insight, MetricPoint, Range};

/// Adds a live point to bucketed points: into the last bucket if it falls
/// there, else as a new one; drops what left the range. Points the page
/// already has (a reconnect replays a few) are ignored.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
pub fn push_point(points: &mut Vec<MetricPoint>, p: MetricPoint, step: i64, range: Range) {
    if points.last().is_some_and(|l| p.time <= l.time && (l.time - 1).div_euclid(step) != (p.time - 1).div_euclid(step))
    {
        return;
    }
    let key = (p.time - 1).div_euclid(step);
    match points.last_mut() {
        Some(last) if (last.time - 1).div_euclid(step) == key => {
            if p.time > last.time {
                last.merge(&p)
            }
        }
        _ => points.push(p.clone()),
    }
    let from = p.time - range.millis();
    let old = points.iter().take_while(|x| x.time <= from).count();
    points.drain(..old);
}

#[component]
pub fn MetricsPanel(id: String) -> impl IntoView {
    let query = use_query_map();
    let range = move || query.read().get("range").and_then(|r| Range::parse(&r)).unwrap_or_default();
    let history = {
        let id = id.clone();
        Resource::new(move || (id.clone(), range()), |(id, r)| get_history(id, r.as_str().to_string()))
    };
    view! {
        <section class="metrics">
            <div class="section-head">
                <h2>"Metrics"</h2>
                <nav class="ranges" aria-label="Time range">
                    {Range::ALL.into_iter().map(|r| view! {
                        <a href=format!("?range={}", r.as_str()) data-range=r.as_str()
                            aria-current=move || (range() == r).then_some("true")>{r.label()}</a>
                    }).collect_view()}
                </nav>
            </div>
            <Transition fallback=|| view! { <p>"Loading the charts…"</p> }>
                {
                    let id = id.clone();
                    move || {
                        let id = id.clone();
                        Suspend::new(async move {
                            match history.await {
                                Ok(Some(h)) => view! { <Charts h id/> }.into_any(),
                                Ok(None) => view! { <p class="hint">"No metrics for this mapping."</p> }.into_any(),
                                Err(e) => view! { <p class="error">{format!("Cannot load the metrics: {e}")}</p> }.into_any(),
                            }
                        })
                    }
                }
            </Transition>
        </section>
    }
}

#[component]
fn Charts(h: History, id: String) -> impl IntoView {
    let (range, step) = (h.range, h.step_ms);
    let points = RwSignal::new(h.points);
    let end = RwSignal::new(h.end);
    let live = RwSignal::new(false);
    #[cfg(feature = "hydrate")]
    {
        let url = format!("/api/v1/mappings/{id}/metrics/stream?after={}", h.end);
        let source = stream::open(
            &url,
            "point",
            move |data| {
                if let Ok(p) = serde_json::from_str::<MetricPoint>(&data) {
                    end.set(p.time);
                    points.update(|v| push_point(v, p, step, range));
                }
            },
            move |open| live.set(open),
        );
        on_cleanup(move || drop(source));
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = id;
    view! {
        <p class="live" data-live=move || live.get().to_string()>
            {move || if live.get() { "● live: new points every second" } else { "○ not live (reconnecting, or scripts off)" }}
            " · times in UTC"
        </p>
        <div class="charts" data-end=move || end.get()>
            {Kind::ALL.into_iter().map(|kind| view! { <Chart kind points end range step/> }).collect_view()}
        </div>
    }
}

#[component]
fn Chart(kind: Kind, points: RwSignal<Vec<MetricPoint>>, end: RwSignal<i64>, range: Range, step: i64) -> impl IntoView {
    let svg = move || points.with(|p| draw(kind, &series(kind, p), range, end.get(), step));
    let legend = move || {
        points.with(|p| {
            series(kind, p)
                .into_iter()
                .map(|s| {
                    let (r, g, b) = s.color;
                    let last = s.points.iter().rev().find_map(|(_, v)| *v).map(fmt_value).unwrap_or_else(|| "—".into());
                    view! {
                        <li data-series=s.name.clone() class:bold=s.bold>
                            // An SVG square, not a style attribute: the CSP allows no inline styles.
                            <svg class="swatch" viewBox="0 0 10 10" preserveAspectRatio="none" aria-hidden="true"><rect width="10" height="10" fill=format!("rgb({r},{g},{b})")/></svg>
                            {s.name.clone()}" "<span class="last" data-last=last.clone()>{last.clone()}</span>
                        </li>
                    }
                })
                .collect_view()
        })
    };
    view! {
        <figure class="chart" data-chart=kind.id() data-points=move || points.with(|p| p.len())>
            <figcaption><strong>{kind.title()}</strong>" "<span class="unit">{kind.unit()}</span></figcaption>
            <div class="plot" inner_html=svg></div>
            <ul class="legend">{legend}</ul>
        </figure>
    }
}

pub fn fmt_value(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{}{unit}", fmt_value(v))).unwrap_or_else(|| "—".into())
}

fn bytes(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1} MB", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kB", v / 1e3)
    } else {
        format!("{v:.0} B")
    }
}

/// Health verdict, advice and the baseline tables; refreshed every 3 s.
#[component]
pub fn InsightPanel(insight: Resource<Result<Option<Insight>, ServerFnError>>, verdict: bool) -> impl IntoView {
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match insight.await {
                    Ok(Some(i)) if verdict => view! { <Verdict i/> }.into_any(),
                    Ok(Some(i)) => view! { <InsightView i/> }.into_any(),
                    _ => ().into_any(),
                }
            })}
        </Transition>
    }
}

/// A mapping's insight, looked at again every 3 s (the verdict at the top
/// of its page and the advisor below read the same one).
pub fn insight_resource(id: String) -> Resource<Result<Option<Insight>, ServerFnError>> {
    let insight = Resource::new(move || id.clone(), get_insight);
    Effect::new(move |_| {
        if insight.get().is_some() {
            set_timeout(move || insight.refetch(), std::time::Duration::from_secs(3));
        }
    });
    insight
}

/// The health verdict and why.
#[component]
fn Verdict(i: Insight) -> impl IntoView {
    view! {
        <section class="insight verdict-only">
            <div class="verdict">
                <span class=health_class(i.health) data-health=i.health.as_str()>{i.health.as_str()}</span>
                <span class="reason" data-field="HealthReason">{i.reason.clone()}</span>
                <span class="hint">" (judged over the last " {format_span(crate::metrics::HEALTH_WINDOW_MS as f64 / 1000.0)} ")"</span>
            </div>
        </section>
    }
}

pub fn health_class(h: Health) -> &'static str {
    match h {
        Health::Ok => "health ok",
        Health::Lagging => "health lagging",
        Health::Stalled => "health stalled",
        Health::Failing => "health failing",
        Health::Disabled => "health disabled",
        Health::Starting => "health starting",
    }
}

/// A baseline table row: its label and how to write the figure.
type BaselineRow = (&'static str, fn(&crate::metrics::Baseline) -> String);

#[component]
fn InsightView(i: Insight) -> impl IntoView {
    let rows: [BaselineRow; 11] = [
        ("Records in", |b| format!("{}/s", fmt_value(b.records_per_s))),
        ("Bytes in", |b| format!("{}/s", bytes(b.bytes_per_s))),
        ("Average record size", |b| b.average_record_bytes.map(bytes).unwrap_or("—".into())),
        ("Average batch (records)", |b| opt(b.average_batch_records, "")),
        ("Average batch (bytes)", |b| b.average_batch_bytes.map(bytes).unwrap_or("—".into())),
        ("Time per batch", |b| opt(b.ms_per_batch, " ms")),
        ("Time per record", |b| opt(b.ms_per_record, " ms")),
        ("Invocations", |b| b.invocations.to_string()),
        ("Errors", |b| b.errors.to_string()),
        ("Retries", |b| b.retries.to_string()),
        ("Throttles", |b| b.throttles.to_string()),
    ];
    let baseline = i.baseline.clone();
    view! {
        <section class="insight">
            <h2>"Advisor"</h2>
            {if i.advice.is_empty() {
                view! { <p class="hint" data-advice="none">"Nothing to advise from the last 15 minutes."</p> }.into_any()
            } else {
                view! {
                    <ul class="advice">
                        {i.advice.iter().map(|a| view! { <li data-advice=a.rule.clone()>{a.text.clone()}</li> }).collect_view()}
                    </ul>
                }.into_any()
            }}
            <h2>"Performance baseline"</h2>
            <table class="baseline">
                <thead><tr><th></th>{baseline.iter().map(|b| view! { <th>{b.window.clone()}</th> }).collect_view()}</tr></thead>
                <tbody>
                    {rows.into_iter().map(|(label, f)| view! {
                        <tr><th>{label}</th>{baseline.iter().map(|b| view! { <td>{f(b)}</td> }).collect_view()}</tr>
                    }).collect_view()}
                </tbody>
            </table>
            {(!i.partitions.is_empty()).then(|| view! {
                <table class="baseline partitions">
                    <caption>"Per partition, last 15 minutes"</caption>
                    <thead><tr><th>"Partition"</th><th>"Records in"</th><th>"Bytes in"</th><th>"Average record"</th><th>"Offset lag"</th><th>"Time lag"</th></tr></thead>
                    <tbody>
                        {i.partitions.iter().map(|p| view! {
                            <tr data-partition=p.partition>
                                <td>{p.partition}</td>
                                <td>{format!("{}/s", fmt_value(p.records_per_s))}</td>
                                <td>{format!("{}/s", bytes(p.bytes_per_s))}</td>
                                <td>{p.average_record_bytes.map(bytes).unwrap_or("—".into())}</td>
                                <td>{p.offset_lag}</td>
                                <td>{format!("{} s", fmt_value(p.time_lag_s))}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </section>
    }
}

/// Server-sent events in the browser. The browser reconnects by itself
/// (after a network drop or a server restart) and sends the last event's
/// id, so the server replays what the page missed.
#[cfg(feature = "hydrate")]
pub mod stream {
    use wasm_bindgen::closure::Closure;
    use wasm_bindgen::JsCast;

    pub struct Source {
        es: web_sys::EventSource,
        _handlers: Vec<Closure<dyn FnMut(web_sys::Event)>>,
    }

    impl Drop for Source {
        fn drop(&mut self) {
            self.es.close();
        }
    }

    /// Opens `url`, calls `on_data` with each `event`'s data and `on_state`
    /// with whether the stream is open. Dropping the result closes it.
    pub fn open(
        url: &str,
        event: &str,
        on_data: impl Fn(String) + 'static,
        on_state: impl Fn(bool) + 'static,
    ) -> send_wrapper::SendWrapper<Option<Source>> {
        let Ok(es) = web_sys::EventSource::new(url) else { return send_wrapper::SendWrapper::new(None) };
        let on_state = std::rc::Rc::new(on_state);
        let data = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            if let Some(s) = e.dyn_ref::<web_sys::MessageEvent>().and_then(|m| m.data().as_string()) {
                on_data(s);
            }
        });
        let opened = {
            let f = on_state.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |_| f(true))
        };
        let failed = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| on_state(false));
        let _ = es.add_event_listener_with_callback(event, data.as_ref().unchecked_ref());
        let _ = es.add_event_listener_with_callback("open", opened.as_ref().unchecked_ref());
        let _ = es.add_event_listener_with_callback("error", failed.as_ref().unchecked_ref());
        send_wrapper::SendWrapper::new(Some(Source { es, _handlers: vec![data, opened, failed] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(time: i64, invocations: u64) -> MetricPoint {
        MetricPoint { time, period_ms: 1000, invocations, ..Default::default() }
    }

    #[test]
    fn live_points_merge_into_their_bucket_and_replays_are_ignored() {
        let mut v = vec![p(2000, 1)];
        push_point(&mut v, p(3000, 1), 2000, Range::M15);
        push_point(&mut v, p(4000, 1), 2000, Range::M15);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].invocations, 2);
        // A replayed point changes nothing.
        push_point(&mut v, p(4000, 1), 2000, Range::M15);
        push_point(&mut v, p(1000, 5), 2000, Range::M15);
        assert_eq!(v.iter().map(|x| x.invocations).sum::<u64>(), 3);
        // Points older than the range leave.
        push_point(&mut v, p(4000 + Range::M15.millis(), 1), 2000, Range::M15);
        assert_eq!(v.len(), 1);
    }
}
