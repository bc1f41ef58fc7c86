//! Per-partition offset lag, read apart from the poll loop (a stalled or
//! failing mapping must still show its lag growing): every few seconds, the
//! group's committed offsets and the partitions' end offsets, from a client
//! of its own that never joins the group.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_app::model::PartitionLag;
use tokio_util::sync::CancellationToken;

use crate::kafka_auth::AuthContext;
use crate::problem::Problem;

use crate::shared::status::LiveStatus;

pub const EVERY: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(5);
/// Reads in a row that found no broker answering before the status says so
/// (one slow answer is not an outage).
const SILENT_AFTER: u32 = 2;

/// A failure that means the brokers did not answer (not a refusal).
fn unreachable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(C::OperationTimedOut | C::RequestTimedOut | C::BrokerTransportFailure | C::AllBrokersDown | C::Resolve)
    )
}

pub async fn run(
    servers: String,
    group: String,
    topic: String,
    auth: crate::kafka_auth::KafkaAuth,
    status: Arc<LiveStatus>,
    stop: CancellationToken,
) {
    let client = match auth.consumer(
        ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false"),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("lag reader for {topic}: {e}");
            return;
        }
    };
    let client = Arc::new(client);
    let mut failures = 0u32;
    loop {
        let c = client.clone();
        let t = topic.clone();
        match tokio::task::spawn_blocking(move || read(&c, &t)).await {
            Ok(Ok(lags)) => {
                failures = 0;
                status.set_lag(lags);
                status.brokers_answer();
            }
            // This reader is the mapping's probe of the brokers: the poll
            // loop's own requests wait up to a minute before librdkafka
            // says anything of a broker that stopped answering.
            Ok(Err(e)) if unreachable(&e) => {
                failures += 1;
                if failures == SILENT_AFTER {
                    tracing::warn!("the brokers of {topic} do not answer: {e}");
                    // A lag from before the outage would look current.
                    status.set_lag(vec![]);
                    status.brokers_silent(Problem::Unreachable {
                        servers: auth.redact(&servers),
                        reason: format!("no answer within {} s ({e})", TIMEOUT.as_secs()),
                    });
                }
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => break,
        }
    }
    // Dropping a client blocks briefly: not on the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(client)).await;
}

fn read(c: &BaseConsumer<AuthContext>, topic: &str) -> rdkafka::error::KafkaResult<Vec<PartitionLag>> {
    // Nothing polls this client for records: its token requests are served here.
    c.context().0.serve(c);
    let md = c.fetch_metadata(Some(topic), TIMEOUT)?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else { return Ok(vec![]) };
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition(topic, p.id());
    }
    let committed = c.committed_offsets(tpl, TIMEOUT)?;
    let mut out = Vec::new();
    for e in committed.elements() {
        let (low, high) = c.fetch_watermarks(topic, e.partition(), TIMEOUT)?;
        let committed = match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        };
        // Without a commit, everything still in the partition is ahead of the group.
        let lag = (high - committed.unwrap_or(low)).max(0);
        out.push(PartitionLag {
            partition: e.partition(),
            committed_offset: committed,
            end_offset: high,
            offset_lag: lag,
            ..Default::default()
        });
    }
    out.sort_by_key(|l| l.partition);
    Ok(out)
}
