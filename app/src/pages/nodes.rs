//! The cluster: every Sluice node on this database, its heartbeat and the
//! pollers it runs.

use leptos::prelude::*;

use crate::api::{get_nodes, list_mappings, now_s};
use crate::components::{PageTitle, ServerError};

fn ago(t: f64) -> String {
    let s = (now_s() as f64 - t).max(0.0);
    match s {
        s if s < 90.0 => format!("{s:.0} s ago"),
        s if s < 5400.0 => format!("{:.0} min ago", s / 60.0),
        s if s < 172_800.0 => format!("{:.0} h ago", s / 3600.0),
        s => format!("{:.0} days ago", s / 86_400.0),
    }
}

#[component]
pub fn Nodes() -> impl IntoView {
    let nodes = Resource::new(|| (), |_| get_nodes());
    let mappings = Resource::new(|| (), |_| list_mappings());
    // Heartbeats come every 2 s: look again as often.
    Effect::new(move |_| {
        if nodes.get().is_some() {
            set_timeout(move || nodes.refetch(), std::time::Duration::from_secs(2));
        }
    });
    view! {
        <PageTitle text="Nodes · Sluice"/>
        <div class="page-head"><h1>"Nodes"</h1></div>
        <p class="hint">
            "Every Sluice process on this database. The pollers of each mapping are consumers in its \
             consumer group, spread over these nodes by Kafka; the leader runs the autoscaler and the \
             metric rollups. A node silent for 10 s is counted out and its partitions move to the others."
        </p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let names: std::collections::HashMap<String, String> = mappings
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| (m.uuid.to_string(), m.label()))
                    .collect();
                match nodes.await {
                    Err(e) => view! { <ServerError error=e.to_string()/> }.into_any(),
                    Ok(list) => {
                        let alive = list.iter().filter(|n| n.alive).count().to_string();
                        view! {
                        <table class="nodes" data-alive=alive>
                            <thead>
                                <tr>
                                    <th>"Node"</th><th>"Address"</th><th>"Version"</th><th>"Started"</th>
                                    <th>"Last heartbeat"</th><th>"Role"</th><th>"Pollers"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {list.into_iter().map(|n| {
                                    let pollers = n.total_pollers();
                                    let title = n.pollers.iter().map(|(id, k)| format!("{id}: {k}")).collect::<Vec<_>>().join(", ");
                                    let detail = n.pollers.iter()
                                        .map(|(id, k)| format!("{}: {k}", names.get(id).cloned().unwrap_or_else(|| id.clone())))
                                        .collect::<Vec<_>>()
                                        .join(", ");
                                    let role = match (n.alive, n.leader) {
                                        (false, _) => "not answering",
                                        (true, true) => "leader",
                                        (true, false) => "member",
                                    };
                                    view! {
                                        <tr data-node=n.id.clone() class:dead=!n.alive>
                                            <td>
                                                <code>{n.id.clone()}</code>
                                                {n.this_node.then(|| view! { " " <span class="badge">"this node"</span> })}
                                            </td>
                                            <td><a href=n.address.clone()>{n.address.clone()}</a></td>
                                            <td>{n.version.clone()}</td>
                                            <td>{ago(n.started)}</td>
                                            <td>{ago(n.last_heartbeat)}</td>
                                            <td data-role=role>{role}</td>
                                            <td data-pollers=pollers.to_string() title=title>
                                                {pollers.to_string()}
                                                {(!detail.is_empty()).then(|| view! { <small>" ("{detail}")"</small> })}
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any()
                    }
                }
            })}
        </Transition>
    }
}
