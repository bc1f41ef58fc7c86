//! The list of mappings: the console's home page.

use leptos::prelude::*;

use std::collections::HashMap;

use crate::api::{get_overview, list_counters, list_mappings};
use crate::charts::sparkline;
use crate::components::{ForOperators, PageTitle, ServerError, StateBadge};
use crate::live::health_class;
use crate::metrics::Overview;
use crate::model::MappingCounters;

#[component]
pub fn MappingList() -> impl IntoView {
    let mappings = Resource::new(|| (), |_| list_mappings());
    // States, lag and activity move: look again every two seconds.
    let counters = Resource::new(|| (), |_| list_counters());
    let overview = Resource::new(|| (), |_| get_overview());
    Effect::new(move |_| {
        if counters.get().is_some() {
            set_timeout(
                move || {
                    mappings.refetch();
                    counters.refetch();
                    overview.refetch();
                },
                std::time::Duration::from_secs(2),
            );
        }
    });
    view! {
        <PageTitle text="Mappings · Sluice"/>
        <div class="page-head">
            <h1>"Mappings"</h1>
            <ForOperators>
                <a class="button primary" href="/mappings/new">"Create mapping"</a>
            </ForOperators>
        </div>
        // A transition: the table stays on screen while the counts reload.
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let live = counters.await.unwrap_or_default();
                let health: HashMap<uuid::Uuid, Overview> =
                    overview.await.unwrap_or_default().into_iter().map(|o| (o.uuid, o)).collect();
                match mappings.await {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(list) if list.is_empty() => view! {
                        <p class="empty">
                            "No mappings yet. A mapping reads a Kafka topic and invokes a function with its records. "
                            <a href="/mappings/new">"Create the first one"</a>"."
                        </p>
                    }.into_any(),
                    Ok(list) => view! {
                        <table class="mappings">
                            <thead>
                                <tr>
                                    <th>"Mapping"</th><th>"Health"</th><th>"State"</th><th>"Topic"</th>
                                    <th>"Function"</th><th>"Lag, last 15 min"</th><th>"Offset lag"</th><th>"Records/s"</th>
                                    <th>"Error rate"</th><th>"Invocations"</th><th>"Errors"</th><th>"Failed records"</th><th>"Last processing result"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {list.into_iter().map(|m| {
                                    let href = format!("/mappings/{}", m.uuid);
                                    view! {
                                        <tr data-uuid=m.uuid.to_string()>
                                            <td><a href=href>{m.label()}</a></td>
                                            <HealthCells o=health.get(&m.uuid).cloned()/>
                                            <td><StateBadge state=m.status.state/></td>
                                            <td>{m.spec.topic().to_string()}</td>
                                            <td class="mono">{m.spec.function_name.clone()}</td>
                                            <td class="spark" inner_html=health.get(&m.uuid).map(|o| sparkline(&o.lag_sparkline, o.start, o.end)).unwrap_or_default()></td>
                                            <Live c=live.get(&m.uuid).cloned() o=health.get(&m.uuid).cloned()/>
                                            <td data-live="failed-records">{match health.get(&m.uuid).map(|o| o.failed_records) {
                                                Some(n) if n > 0 => view! { <a href=format!("/mappings/{}/failures", m.uuid)>{n}</a> }.into_any(),
                                                Some(_) => "0".into_any(),
                                                None => "—".into_any(),
                                            }}</td>
                                            <td>{m.status.last_processing_result.clone()}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The live cells of one row: total lag, invocations, errors ("—" while no
/// poller runs).
#[component]
fn Live(c: Option<MappingCounters>, o: Option<Overview>) -> impl IntoView {
    let cell = |f: fn(&MappingCounters) -> String| c.as_ref().map(f).unwrap_or_else(|| "—".into());
    let rate = o.as_ref().map(|o| format!("{:.1}", o.records_per_s)).unwrap_or_else(|| "—".into());
    let errors =
        o.as_ref().and_then(|o| o.error_rate).map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "—".into());
    view! {
        <td data-live="lag">{cell(|c| c.partitions.iter().map(|p| p.offset_lag).sum::<i64>().to_string())}</td>
        <td data-live="records-per-s">{rate}</td>
        <td data-live="error-rate">{errors}</td>
        <td data-live="invocations">{cell(|c| c.invocations.to_string())}</td>
        <td data-live="errors">{cell(|c| c.errors.to_string())}</td>
    }
}

/// The health verdict, with its reason on hover and for screen readers.
#[component]
fn HealthCells(o: Option<Overview>) -> impl IntoView {
    match o {
        None => view! { <td>"—"</td> }.into_any(),
        Some(o) => view! {
            <td>
                <span class=health_class(o.health) data-health=o.health.as_str() title=o.reason.clone()>{o.health.as_str()}</span>
                <span class="sr-only">{format!(": {}", o.reason)}</span>
            </td>
        }.into_any(),
    }
}
