//! Publishing each mapping's metrics to CloudWatch, with AWS's names and
//! dimensions (`FunctionName`, `EventSourceMappingUUID`, and `Partition` for
//! per-partition lag). Reads the collector's per-second points, sums them
//! over the interval, and sends them in batches. Its own task: a slow or
//! failing CloudWatch is logged and counted, and never touches processing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_smithy_types::error::display::DisplayErrorContext;
use sluice_app::metrics::{Counter, MetricPoint};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct CloudWatchSettings {
    pub namespace: String,
    pub interval: Duration,
}

/// What the publisher has done, for the console and the API.
#[derive(Default)]
pub struct CloudWatchStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

/// Datums per PutMetricData call (the service takes up to 1000).
const PER_CALL: usize = 500;

pub fn start(
    sdk: &aws_config::SdkConfig,
    settings: CloudWatchSettings,
    metrics: Arc<Metrics>,
    store: Store,
    stats: Arc<CloudWatchStats>,
) -> tokio::task::JoinHandle<()> {
    let client = aws_sdk_cloudwatch::Client::new(sdk);
    let mut ticks = metrics.subscribe();
    let closing = metrics.closing();
    tokio::spawn(async move {
        let mut acc: HashMap<Uuid, MetricPoint> = HashMap::new();
        let mut every = tokio::time::interval(settings.interval);
        every.tick().await;
        loop {
            tokio::select! {
                _ = closing.cancelled() => break,
                t = ticks.recv() => match t {
                    Ok(t) => for (id, p) in t.local.iter() {
                        acc.entry(*id).or_default().merge(p);
                    },
                    // Fell behind: those seconds are not published.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
                _ = every.tick() => {
                    let batch = std::mem::take(&mut acc);
                    if batch.is_empty() {
                        continue;
                    }
                    let names: HashMap<Uuid, String> = match store.list().await {
                        Ok(l) => l.into_iter().map(|m| (m.uuid, m.spec.function_name)).collect(),
                        Err(_) => HashMap::new(),
                    };
                    let data: Vec<MetricDatum> = batch
                        .iter()
                        .flat_map(|(id, p)| datums(*id, names.get(id).map(String::as_str).unwrap_or(""), p))
                        .collect();
                    for chunk in data.chunks(PER_CALL) {
                        let sent = client.put_metric_data().namespace(&settings.namespace).set_metric_data(Some(chunk.to_vec())).send().await;
                        match sent {
                            Ok(_) => {
                                stats.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                let msg = format!("CloudWatch PutMetricData to {}: {}", settings.namespace, DisplayErrorContext(&e));
                                tracing::warn!("{msg}");
                                stats.failed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                                *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
                            }
                        }
                    }
                }
            }
        }
    })
}

fn dim(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

/// One interval of one mapping as CloudWatch data.
pub fn datums(id: Uuid, function: &str, p: &MetricPoint) -> Vec<MetricDatum> {
    let at = DateTime::from_millis(p.time);
    let dims = vec![dim("FunctionName", function), dim("EventSourceMappingUUID", &id.to_string())];
    let datum = |name: &str, unit: StandardUnit| {
        MetricDatum::builder().metric_name(name).unit(unit).timestamp(at).set_dimensions(Some(dims.clone()))
    };
    let mut out: Vec<MetricDatum> = Counter::ALL
        .into_iter()
        .filter_map(|c| c.info().cloudwatch.map(|name| (name, c)))
        .map(|(name, c)| {
            let unit = if c.info().bytes { StandardUnit::Bytes } else { StandardUnit::Count };
            datum(name, unit).value(c.of(p) as f64).build()
        })
        .collect();
    out.push(datum("PolledEventCount", StandardUnit::Count).value(p.polled_event_count as f64).build());
    out.push(datum("PolledBytes", StandardUnit::Bytes).value(p.polled_bytes as f64).build());
    out.push(datum("ConcurrentExecutions", StandardUnit::Count).value(p.concurrent_executions as f64).build());
    if p.duration.count > 0 {
        // The histogram's buckets as values with counts: CloudWatch computes
        // percentiles from them.
        let (values, counts): (Vec<f64>, Vec<f64>) = p
            .duration
            .histogram
            .iter()
            .map(|[b, n]| ((1.2f64.powi(*b as i32)).min(p.duration.max_ms.max(0.001)), *n as f64))
            .unzip();
        out.push(
            datum("Duration", StandardUnit::Milliseconds).set_values(Some(values)).set_counts(Some(counts)).build(),
        );
    }
    if let Some(lag) = p.total_lag() {
        out.push(datum("OffsetLag", StandardUnit::Count).value(lag as f64).build());
        for part in &p.partitions {
            let mut d = dims.clone();
            d.push(dim("Partition", &part.partition.to_string()));
            out.push(
                MetricDatum::builder()
                    .metric_name("OffsetLag")
                    .unit(StandardUnit::Count)
                    .timestamp(at)
                    .set_dimensions(Some(d))
                    .value(part.offset_lag as f64)
                    .build(),
            );
        }
    }
    out
}
