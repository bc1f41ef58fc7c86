//! One mapping's page: its settings, its status, and the actions on it.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::{get_counters, get_mapping, get_resets};
use crate::components::{Csrf, ForOperators, NoSuchMapping, PageTitle, ServerError, StateBadge};
use crate::live::{insight_resource, InsightPanel, MetricsPanel};
use crate::model::{MappingCounters, MappingState, MappingView};
use crate::pages::{AuditLog, MappingTabs};
use crate::spec::{format_unix, target_kind, TargetKind};

#[component]
pub fn MappingDetail() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let mapping = Resource::new(id, get_mapping);
    // The live panels keep their streams for the page's life: read once.
    let id_now = params.with_untracked(|p| p.get("id").unwrap_or_default());
    let insight = insight_resource(id_now.clone());
    // The status moves: look again every 3 s, and shortly while the engine
    // moves the mapping between states.
    Effect::new(move |_| {
        if let Some(Ok(Some(m))) = mapping.get() {
            let settled = matches!(m.status.state, MappingState::Enabled | MappingState::Disabled);
            let after = if settled { 3000 } else { 700 };
            set_timeout(move || mapping.refetch(), std::time::Duration::from_millis(after));
        }
    });
    // Live counts: looked at again every two seconds while the page is open.
    let counters = Resource::new(id, get_counters);
    Effect::new(move |_| {
        if counters.get().is_some() {
            set_timeout(move || counters.refetch(), std::time::Duration::from_secs(2));
        }
    });
    view! {
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match mapping.await {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(None) => view! { <NoSuchMapping/> }.into_any(),
                    Ok(Some(m)) => view! { <Head m/> }.into_any(),
                }
            })}
        </Transition>
        {position_notice(&id_now)}
        // What users watch most first: the verdict, the live charts (offset
        // lag first) and lag per partition; the settings below.
        <InsightPanel insight verdict=true/>
        <MetricsPanel id=id_now.clone()/>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match counters.await {
                    Ok(Some(c)) => view! { <Counters c/> }.into_any(),
                    Ok(None) => view! {
                        <section class="counters"><h2>"Activity"</h2><p class="hint">"No poller is running for this mapping."</p></section>
                    }.into_any(),
                    Err(_) => ().into_any(),
                }
            })}
        </Transition>
        <InsightPanel insight verdict=false/>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match mapping.await {
                    Ok(Some(m)) => view! { <Settings m/> }.into_any(),
                    _ => ().into_any(),
                }
            })}
        </Transition>
        <Resets id=id_now/>
    }
}

/// After an edit changed the starting position: it moves nothing the group
/// has committed, so offer the reset that does, prefilled.
fn position_notice(id: &str) -> Option<impl IntoView> {
    let q = use_query_map();
    let (position, at) = q.with_untracked(|q| (q.get("position_changed"), q.get("at")));
    let position = position?;
    let mut link = vec![("from", "edit".to_string()), ("Strategy", position.clone())];
    if let Some(at) = at {
        link.push(("Timestamp", at));
    }
    let query: Vec<String> = link.iter().map(|(k, v)| format!("{k}={}", crate::uri_encode(v))).collect();
    let href = format!("/mappings/{id}/reset?{}", query.join("&"));
    Some(view! {
        <p class="notice" data-notice="position-changed">
            "Starting position saved: " <strong>{position}</strong>
            ". It applies to partitions the consumer group has no committed offset for; the others continue from their commits. "
            <a href=href>"Move the group there now (preview first)…"</a>
        </p>
    })
}

/// The mapping's applied offset resets.
#[component]
fn Resets(id: String) -> impl IntoView {
    let audit = Resource::new(move || id.clone(), get_resets);
    view! {
        <Transition fallback=|| ()>
            {move || Suspend::new(async move { audit.await.ok().map(|audit| view! { <AuditLog audit/> }) })}
        </Transition>
    }
}

#[component]
fn Counters(c: MappingCounters) -> impl IntoView {
    let rows = [
        ("Invocations", "Invocations", c.invocations),
        ("Errors", "Errors", c.errors),
        ("Throttles", "Throttles", c.throttles),
        ("Records invoked", "InvokedEventCount", c.invoked_event_count),
        ("Records filtered out", "FilteredOutEventCount", c.filtered_out_event_count),
        ("Records dropped", "DroppedEventCount", c.dropped_event_count),
        (
            "Records sent to the failure destination",
            "OnFailureDestinationDeliveredEventCount",
            c.on_failure_destination_delivered_event_count,
        ),
        ("Records committed", "CommittedEventCount", c.committed_event_count),
    ];
    let total: i64 = c.partitions.iter().map(|p| p.offset_lag).sum();
    let partitions = c.partitions.clone();
    view! {
        <section class="counters">
            <h2>"Offset lag"</h2>
            {if partitions.is_empty() {
                view! { <p class="hint">"Not read yet (every 3 s)."</p> }.into_any()
            } else {
                view! {
                    <table class="lag">
                        <thead><tr><th>"Partition"</th><th>"Committed offset"</th><th>"End offset"</th><th>"Lag (records)"</th><th>"Batches in flight"</th></tr></thead>
                        <tbody>
                            {partitions.into_iter().map(|p| view! {
                                <tr data-partition=p.partition>
                                    <td>{p.partition}</td>
                                    <td>{p.committed_offset.map(|o| o.to_string()).unwrap_or_else(|| "none yet".into())}</td>
                                    <td>{p.end_offset}</td>
                                    <td data-lag=p.partition>{p.offset_lag}</td>
                                    <td data-in-flight=p.partition>{format!("{} of {}", p.in_flight, p.lanes.max(1))}</td>
                                </tr>
                            }).collect_view()}
                            <tr class="total"><td>"Total"</td><td></td><td></td><td data-lag="total">{total}</td><td></td></tr>
                        </tbody>
                    </table>
                }.into_any()
            }}
            <h2>"Activity since the poller started"</h2>
            <dl>
                {rows.into_iter().map(|(label, key, n)| view! { <dt>{label}</dt><dd data-counter=key>{n}</dd> }).collect_view()}
            </dl>
        </section>
    }
}

fn or_dash(s: Option<String>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or_else(|| "—".into())
}

/// The top of the page: name, state, actions, tabs and the last result.
#[component]
fn Head(m: MappingView) -> impl IntoView {
    let base = format!("/mappings/{}", m.uuid);
    let s = &m.spec;
    let toggle = if s.enabled { "disable" } else { "enable" };
    let toggle_label = if s.enabled { "Disable" } else { "Enable" };
    let (actions_base, label) = (base.clone(), m.label());
    view! {
        <PageTitle text=format!("{} · Sluice", m.label())/>
        <div class="page-head">
            <h1>{m.label()}</h1>
            <StateBadge state=m.status.state/>
        </div>
        {s.description.clone().map(|d| view! { <p class="description">{d}</p> })}
        <div class="actions">
            <ForOperators>
                <a class="button" href=format!("{actions_base}/edit")>"Edit"</a>
                <a class="button" href=format!("{actions_base}/reset")>"Reset position…"</a>
                <a class="button" href=format!("{actions_base}/filters")>"Test filters"</a>
                <form method="post" action=format!("{actions_base}/{toggle}")>
                    <Csrf/>
                    <button type="submit" class="button">{toggle_label}</button>
                </form>
                <details class="confirm">
                    <summary class="button danger">"Delete…"</summary>
                    <div class="confirm-box">
                        <p>"Delete " <strong>{label.clone()}</strong> "? Polling stops; the consumer group's committed offsets stay in Kafka."</p>
                        <form method="post" action=format!("{actions_base}/delete")>
                            <Csrf/>
                            <button type="submit" class="button danger">"Yes, delete this mapping"</button>
                        </form>
                    </div>
                </details>
            </ForOperators>
            <a class="button subtle" href=format!("/api/v1/mappings/{}", m.uuid) rel="external">"JSON"</a>
        </div>
        <MappingTabs id=m.uuid.to_string() current="overview"/>
        <p class="last-result">"Last processing result: " <span data-field="LastProcessingResult">{m.status.last_processing_result.clone()}</span></p>
    }
}

/// Status and settings, below what users watch.
#[component]
fn Settings(m: MappingView) -> impl IntoView {
    let s = &m.spec;
    let target = match target_kind(&s.function_name) {
        TargetKind::Http => "HTTP endpoint",
        TargetKind::Lambda => "AWS Lambda function",
    };
    let window =
        s.maximum_batching_window_in_seconds.map(|w| format!("{w} s")).unwrap_or_else(|| "0.5 s (default)".into());
    let position = match s.starting_position_timestamp {
        Some(t) => format!("{} ({})", s.starting_position.as_str(), format_unix(t)),
        None => s.starting_position.as_str().to_string(),
    };
    let filters = s.filter_criteria.filters.iter().map(|f| f.pattern.clone()).collect::<Vec<_>>();
    let pollers = s.provisioned_poller_config.as_ref().map(|p| {
        format!(
            "min {}, max {}",
            p.minimum_pollers.map(|n| n.to_string()).unwrap_or("—".into()),
            p.maximum_pollers.map(|n| n.to_string()).unwrap_or("—".into())
        )
    });
    // What AWS definitions set that Sluice keeps and answers but does not act on.
    let mut aws_kept = Vec::new();
    if let Some(k) = &s.kms_key_arn {
        aws_kept.push(format!("KMS key {k} (not applicable: the database holds the spec)"));
    }
    if let Some(m) = &s.metrics_config {
        aws_kept.push(format!("metrics {} (Sluice publishes all of them)", m.metrics.join(", ")));
    }
    if let Some(l) = s.logging_config.as_ref().and_then(|l| l.system_log_level.clone()) {
        aws_kept.push(format!("system log level {l}"));
    }
    if let Some(g) = s.provisioned_poller_config.as_ref().and_then(|p| p.poller_group_name.clone()) {
        aws_kept.push(format!("poller group {g} (Sluice's pollers are per mapping)"));
    }
    view! {
        <section class="status">
            <h2>"Status"</h2>
            <dl>
                <dt>"State"</dt><dd data-field="State">{m.status.state.as_str()}</dd>
                <dt>"State transition reason"</dt><dd data-field="StateTransitionReason">{m.status.state_transition_reason.clone()}</dd>
                <dt>"Last processing result"</dt><dd>{m.status.last_processing_result.clone()}</dd>
                <dt>"Last modified"</dt><dd data-field="LastModified">{format_unix(m.last_modified as i64)}</dd>
            </dl>
        </section>
        <section class="settings">
            <h2>"Settings"</h2>
            <dl>
                <dt>"UUID"</dt><dd class="mono" data-field="UUID">{m.uuid.to_string()}</dd>
                <dt>"Function"</dt><dd data-field="FunctionName"><span class="mono">{s.function_name.clone()}</span>" ("{target}")"</dd>
                <dt>"Topic"</dt><dd data-field="Topics">{s.topic().to_string()}</dd>
                <dt>"Bootstrap servers"</dt><dd class="mono" data-field="KAFKA_BOOTSTRAP_SERVERS">{s.bootstrap_servers().join(", ")}</dd>
                <dt>"Consumer group"</dt><dd class="mono" data-field="ConsumerGroupId">{m.consumer_group()}</dd>
                <dt>"Kafka authentication"</dt>
                <dd data-field="SourceAccessConfigurations">
                    {s.security_protocol()}
                    {s.source_access_configurations.iter().map(|c| {
                        let who = c.username.clone().map(|u| format!(" as {u}")).unwrap_or_default();
                        let secret = if c.secret_stored { " (secret stored, never shown)" } else { "" };
                        if c.kind.is_network() {
                            let uri = c.uri.clone().unwrap_or_default();
                            return format!("; {} {uri} (not applicable: Sluice reaches the brokers from its own network)", c.kind);
                        }
                        format!("; {}{who}{secret}", c.kind)
                    }).collect::<String>()}
                </dd>
                <dt>"Schema registry"</dt>
                <dd data-field="SchemaRegistryConfig">
                    {match s.schema_registry() {
                        None => "none: records reach filters and the function as they are".to_string(),
                        Some(r) => {
                            let what: Vec<&str> = r.schema_validation_configs.iter().map(|c| c.attribute.as_str()).collect();
                            let access: String = r.access_configs.iter().map(|c| {
                                let who = c.username.clone().map(|u| format!(" as {u}")).unwrap_or_default();
                                let from = c.uri.clone().map(|u| format!(" from {u}")).unwrap_or_default();
                                let secret = if c.secret_stored { " (secret stored, never shown)" } else { "" };
                                format!("; {}{who}{from}{secret}", c.kind)
                            }).collect();
                            format!(
                                "{}; decodes the {}; delivers {}{access}",
                                r.schema_registry_uri.clone().unwrap_or_default(),
                                what.join(" and ").to_lowercase(),
                                r.event_record_format.clone().unwrap_or_default(),
                            )
                        }
                    }}
                </dd>
                <dt>"Batch size"</dt><dd data-field="BatchSize">{s.batch_size}</dd>
                <dt>"Batching window"</dt><dd data-field="MaximumBatchingWindowInSeconds">{window}</dd>
                <dt>"Starting position"</dt><dd data-field="StartingPosition">{position}</dd>
                <dt>"Filters"</dt>
                <dd data-field="FilterCriteria">
                    {if filters.is_empty() {
                        view! { "none: every record is invoked" }.into_any()
                    } else {
                        view! { <ol class="filters">{filters.into_iter().map(|f| view! { <li><code>{f}</code></li> }).collect_view()}</ol> }.into_any()
                    }}
                </dd>
                <dt>"Filters see"</dt>
                <dd data-field="FilterOnRecordMetadata">{if s.filter_on_record_metadata { "value, key, headers, topic, partition, timestamp" } else { "value (as AWS)" }}</dd>
                <dt>"On-failure destination"</dt>
                <dd data-field="DestinationConfig">{or_dash(s.destination_config.on_failure.as_ref().map(|o| o.destination.clone()))}</dd>
                <dt>"Maximum retry attempts"</dt>
                <dd data-field="MaximumRetryAttempts">{if s.maximum_retry_attempts < 0 { "-1 (until the record expires)".to_string() } else { s.maximum_retry_attempts.to_string() }}</dd>
                <dt>"Maximum record age"</dt>
                <dd data-field="MaximumRecordAgeInSeconds">{if s.maximum_record_age_in_seconds < 0 { "-1 (no limit)".to_string() } else { format!("{} s", s.maximum_record_age_in_seconds) }}</dd>
                <dt>"Bisect batch on function error"</dt><dd data-field="BisectBatchOnFunctionError">{if s.bisect_batch_on_function_error { "yes" } else { "no" }}</dd>
                <dt>"Report batch item failures"</dt><dd data-field="FunctionResponseTypes">{if s.function_response_types.is_empty() { "no" } else { "yes" }}</dd>
                <dt>"Pollers"</dt><dd data-field="ProvisionedPollerConfig">{pollers.unwrap_or_else(|| "on demand (follows the lag)".into())}</dd>
                <dt>"Batches in flight per partition"</dt>
                <dd data-field="ParallelizationFactor">{match s.lanes() {
                    1 => "1 (one batch at a time, in offset order)".to_string(),
                    n => format!("up to {n} (records spread over {n} lanes by key; one key stays in order)"),
                }}</dd>
                <dt>"Enabled"</dt><dd data-field="Enabled">{if s.enabled { "yes" } else { "no" }}</dd>
                {(!aws_kept.is_empty()).then(|| view! {
                    <dt>"AWS settings kept"</dt>
                    <dd data-field="AwsKept">{aws_kept.join("; ")}</dd>
                })}
                <dt>"Tags"</dt>
                <dd data-field="Tags">
                    {if m.tags.is_empty() {
                        view! { "none" }.into_any()
                    } else {
                        view! { <ul class="tags">{m.tags.iter().map(|(k, v)| view! { <li><code>{k.clone()}</code>" = "<code>{v.clone()}</code></li> }).collect_view()}</ul> }.into_any()
                    }}
                </dd>
            </dl>
        </section>
    }
}
