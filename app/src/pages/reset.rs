//! The reset wizard: choose where the mapping continues from and which
//! partitions, preview what each partition gains or loses, then apply. Plain
//! POST forms (works without JavaScript): the server answers with this page
//! again, carrying the preview or the applied result.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

use crate::api::{get_mapping, get_reset_state, set_status};
use crate::components::{Csrf, PageTitle, ServerError};
use crate::reset::{time_zones, PartitionReset, PostedReset, ResetAudit, ResetForm, ResetOutcome, Strategy};
use crate::spec::{format_unix, FieldError};

fn posted_reset() -> Option<PostedReset> {
    SharedValue::new(use_context::<PostedReset>).into_inner()
}

#[component]
pub fn ResetMapping() -> impl IntoView {
    let posted = posted_reset();
    let params = use_params_map();
    let query = use_query_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let mapping = Resource::new(id, get_mapping);
    let state = Resource::new(id, get_reset_state);
    // Arriving from the edit form (a changed starting position), or a link: prefill.
    let from_query = query.with_untracked(|q| ResetForm {
        strategy: q.get("Strategy").unwrap_or_default(),
        timestamp: q.get("Timestamp").unwrap_or_default(),
        time_zone: q.get("TimeZone").unwrap_or_else(|| "UTC".into()),
        scope: "all".into(),
        ..Default::default()
    });
    let from_edit = query.with_untracked(|q| q.get("from").as_deref() == Some("edit"));
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || {
                let posted = posted.clone();
                let from_query = from_query.clone();
                Suspend::new(async move {
                    let (m, st) = (mapping.await, state.await);
                    let m = match m {
                        Err(e) => return view! { <ServerError error=e.to_string()/> }.into_any(),
                        Ok(None) => {
                            set_status(404);
                            return view! { <h1>"No such mapping"</h1><p><a href="/">"Back to the mappings"</a></p> }.into_any();
                        }
                        Ok(Some(m)) => m,
                    };
                    let st = match st {
                        Ok(Some(s)) => s,
                        Ok(None) => return ().into_any(),
                        Err(e) => return view! { <ServerError error=e.to_string()/> }.into_any(),
                    };
                    let (values, errors, outcome) = match posted {
                        Some(p) => (p.values, p.errors, p.outcome),
                        None => (from_query, vec![], None),
                    };
                    if !errors.is_empty() {
                        set_status(422);
                    }
                    let base = format!("/mappings/{}", m.uuid);
                    let partitions: Vec<PartitionReset> = st.current.as_ref().map(|c| c.partitions.clone()).unwrap_or_default();
                    view! {
                        <PageTitle text=format!("Reset {} · Sluice", m.label())/>
                        <h1>"Reset the position of " <a href=base.clone()>{m.label()}</a></h1>
                        <p class="hint">
                            "Topic " <strong>{m.spec.topic().to_string()}</strong> ", consumer group "
                            <span class="mono">{m.consumer_group()}</span>
                            ". Applying pauses the mapping's pollers (a batch in flight finishes, or is abandoned uncommitted and invoked again), commits the new offsets to the group, and resumes."
                        </p>
                        {from_edit.then(|| view! {
                            <p class="notice" data-notice="from-edit">
                                "The starting position you saved applies only to partitions the group has no committed offset for. To move the group now, preview and apply it here."
                            </p>
                        })}
                        {match &st.current {
                            Err(e) => view! { <p class="error-banner" data-field="Kafka">{format!("Cannot read the group's offsets: {e}")}</p> }.into_any(),
                            Ok(_) => ().into_any(),
                        }}
                        {outcome.clone().filter(|o| o.applied).map(|o| view! { <Applied o/> })}
                        <ResetFormView action=format!("{base}/reset") values=values.clone() errors partitions/>
                        {outcome.filter(|o| !o.applied).map(|o| view! { <Preview o values action=format!("{base}/reset")/> })}
                        <AuditLog audit=st.audit/>
                    }.into_any()
                })
            }}
        </Suspense>
    }
}

fn field_error(errors: &[FieldError], name: &str) -> Option<String> {
    errors.iter().find(|e| e.field == name || e.field.starts_with(&format!("{name}."))).map(|e| e.message.clone())
}

#[component]
fn ResetFormView(
    action: String,
    values: ResetForm,
    errors: Vec<FieldError>,
    partitions: Vec<PartitionReset>,
) -> impl IntoView {
    let chosen: Vec<i32> = values.partitions.split(',').filter_map(|p| p.trim().parse().ok()).collect();
    let err = |name: &str| {
        field_error(&errors, name).map(|m| view! { <p class="field-error" data-error-for=name.to_string()>{m}</p> })
    };
    let some = values.scope == "some";
    view! {
        <form method="post" action=action class="reset-form mapping-form">
            <Csrf/>
            <fieldset>
                <legend>"Continue from"</legend>
                {Strategy::ALL.into_iter().map(|s| view! {
                    <label class="check">
                        <input type="radio" name="Strategy" value=s.as_str() checked=values.strategy == s.as_str()/>
                        " " {s.label()}
                    </label>
                }).collect_view()}
                {err("Strategy")}
                <label for="Timestamp">"Time (for “at a time”)"</label>
                <div class="inline">
                    <input id="Timestamp" name="Timestamp" type="text" placeholder="2026-11-25T12:00" value=values.timestamp.clone()
                        aria-invalid=field_error(&errors, "Timestamp").is_some().then_some("true")/>
                    <select name="TimeZone" aria-label="Time zone">
                        {time_zones().into_iter().map(|z| {
                            let selected = z == values.time_zone || (values.time_zone.is_empty() && z == "UTC");
                            view! { <option value=z.clone() selected=selected>{z.clone()}</option> }
                        }).collect_view()}
                    </select>
                </div>
                <p class="help">"A date and time read in the chosen zone, or RFC 3339 with its own offset (2026-11-25T12:00:00+01:00)."</p>
                {err("Timestamp")}
                <label for="Offsets">"Offsets (for “specific offsets”)"</label>
                <input id="Offsets" name="Offsets" type="text" placeholder="0=120, 3=4000" value=values.offsets.clone()
                    aria-invalid=field_error(&errors, "Offsets").is_some().then_some("true")/>
                <p class="help">"PARTITION=OFFSET pairs; the partitions named are the ones changed."</p>
                {err("Offsets")}
                <label for="ShiftBy">"Shift by (for “shift”)"</label>
                <input id="ShiftBy" name="ShiftBy" type="number" placeholder="-100" value=values.shift_by.clone()
                    aria-invalid=field_error(&errors, "ShiftBy").is_some().then_some("true")/>
                <p class="help">"Negative: process the last N records again. Positive: skip N records."</p>
                {err("ShiftBy")}
            </fieldset>
            <fieldset>
                <legend>"Partitions"</legend>
                <label class="check"><input type="radio" name="Scope" value="all" checked=!some/>" All partitions"</label>
                <label class="check"><input type="radio" name="Scope" value="some" checked=some/>" Only these:"</label>
                <table class="lag">
                    <thead><tr><th></th><th>"Partition"</th><th>"Committed offset"</th><th>"Earliest"</th><th>"End"</th></tr></thead>
                    <tbody>
                        {partitions.into_iter().map(|p| view! {
                            <tr>
                                <td><input type="checkbox" name="Partitions" value=p.partition.to_string()
                                    checked=chosen.contains(&p.partition) aria-label=format!("partition {}", p.partition)/></td>
                                <td>{p.partition}</td>
                                <td>{p.before.map(|b| b.to_string()).unwrap_or_else(|| "none yet".into())}</td>
                                <td>{p.earliest_offset}</td>
                                <td>{p.end_offset}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
                {err("Partitions")}
            </fieldset>
            {err("")}
            <div class="form-actions">
                <button type="submit" name="Action" value="preview" class="button primary">"Preview"</button>
            </div>
        </form>
    }
}

fn change_table(partitions: &[PartitionReset]) -> impl IntoView {
    let rows = partitions.to_vec();
    view! {
        <table class="lag reset-plan">
            <thead><tr><th>"Partition"</th><th>"Committed now"</th><th>"After"</th><th>"Change"</th><th>"Processed again"</th><th>"Skipped"</th><th>"Note"</th></tr></thead>
            <tbody>
                {rows.into_iter().map(|p| view! {
                    <tr data-partition=p.partition>
                        <td>{p.partition}</td>
                        <td data-col="Before">{p.before.map(|b| b.to_string()).unwrap_or_else(|| "none".into())}</td>
                        <td data-col="After">{p.after}</td>
                        <td data-col="Delta">{if p.delta > 0 { format!("+{}", p.delta) } else { p.delta.to_string() }}</td>
                        <td data-col="Reprocessed">{p.reprocessed}</td>
                        <td data-col="Skipped">{p.skipped}</td>
                        <td class="hint">{p.note.clone().unwrap_or_default()}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn Preview(o: ResetOutcome, values: ResetForm, action: String) -> impl IntoView {
    let again: i64 = o.partitions.iter().map(|p| p.reprocessed).sum();
    let skipped: i64 = o.partitions.iter().map(|p| p.skipped).sum();
    let summary = format!(
        "{} partition(s): {again} record(s) will be processed again, {skipped} will be skipped.",
        o.partitions.len()
    );
    let hidden = [
        ("Strategy", values.strategy.clone()),
        ("Timestamp", values.timestamp.clone()),
        ("TimeZone", values.time_zone.clone()),
        ("Offsets", values.offsets.clone()),
        ("ShiftBy", values.shift_by.clone()),
        ("Scope", values.scope.clone()),
        ("Partitions", values.partitions.clone()),
    ];
    view! {
        <section class="preview" data-preview="true">
            <h2>"Preview"</h2>
            <p data-field="Summary">{summary}</p>
            {change_table(&o.partitions)}
            <p class="hint">"Offsets are read again when you apply: records that arrive or finish meanwhile are counted then. Nothing changes until you apply."</p>
            <form method="post" action=action>
                <Csrf/>
                {hidden.into_iter().map(|(k, v)| view! { <input type="hidden" name=k value=v/> }).collect_view()}
                <button type="submit" name="Action" value="apply" class="button danger">"Apply this reset"</button>
            </form>
        </section>
    }
}

#[component]
fn Applied(o: ResetOutcome) -> impl IntoView {
    view! {
        <section class="applied" data-applied="true">
            <p class="notice">{format!("Applied: the group {} now continues from the offsets below; the mapping's pollers resumed.", o.consumer_group)}</p>
            {change_table(&o.partitions)}
        </section>
    }
}

/// The audit log of applied resets (newest first).
#[component]
pub fn AuditLog(audit: Vec<ResetAudit>) -> impl IntoView {
    view! {
        <section class="audit">
            <h2>"Offset resets"</h2>
            {if audit.is_empty() {
                view! { <p class="hint" data-audit="none">"No reset so far."</p> }.into_any()
            } else {
                view! {
                    <table class="lag audit-log">
                        <thead><tr><th>"When"</th><th>"Who"</th><th>"Strategy"</th><th>"Partitions (before → after)"</th></tr></thead>
                        <tbody>
                            {audit.into_iter().map(|a| {
                                let detail = match a.request.strategy {
                                    Strategy::AtTimestamp => a.request.timestamp.map(|t| format!(" {}", format_unix(t / 1000))).unwrap_or_default(),
                                    Strategy::ShiftBy => a.request.shift_by.map(|n| format!(" {n:+}")).unwrap_or_default(),
                                    _ => String::new(),
                                };
                                let changes = a.partitions.iter()
                                    .map(|p| format!("{}: {} → {}", p.partition, p.before.map(|b| b.to_string()).unwrap_or_else(|| "none".into()), p.after))
                                    .collect::<Vec<_>>().join(", ");
                                view! {
                                    <tr data-audit=a.id.clone()>
                                        <td>{format_unix(a.time / 1000)}</td>
                                        <td>{a.actor.clone()}</td>
                                        <td>{format!("{}{detail}", a.request.strategy.as_str())}</td>
                                        <td>{changes}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}
