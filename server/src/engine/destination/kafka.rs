//! `kafka://<topic>`: a topic on the mapping's own cluster. One record per
//! failed record, with the original key and AWS's failure record as value;
//! an idempotent producer, and a delivery only counts once acknowledged.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

use super::{failure_record, Destination, Failed};
use crate::engine::event::EventSource;
use crate::kafka_auth::{AuthContext, KafkaAuth};

pub struct KafkaDestination {
    producer: FutureProducer<AuthContext>,
    topic: String,
    source: EventSource,
    function: String,
}

impl KafkaDestination {
    /// `auth`: the mapping's own (the topic is on its cluster).
    pub fn new(
        bootstrap: &str,
        topic: &str,
        source: EventSource,
        function: &str,
        auth: &KafkaAuth,
    ) -> Result<Self, String> {
        let producer = auth
            .apply(&mut ClientConfig::new())
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "5")
            .create_with_context(AuthContext(auth.clone()))
            .map_err(|e| format!("cannot create the producer for kafka://{topic}: {e}"))?;
        Ok(KafkaDestination { producer, topic: topic.into(), source, function: function.into() })
    }
}

#[async_trait]
impl Destination for KafkaDestination {
    async fn deliver(&self, f: &Failed<'_>) -> Result<Vec<String>, String> {
        let values: Vec<(Option<&[u8]>, String)> = f
            .records
            .iter()
            .map(|r| (r.key.as_deref(), failure_record(f, r, &self.source, &self.function).to_string()))
            .collect();
        let sends = values.iter().map(|(key, value)| {
            let mut rec = FutureRecord::<[u8], str>::to(&self.topic).payload(value);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            self.producer.send(rec, Timeout::After(Duration::from_secs(30)))
        });
        let mut at = Vec::with_capacity(values.len());
        for r in futures::future::join_all(sends).await {
            let d = r.map_err(|(e, _)| format!("kafka://{}: {e}", self.topic))?;
            at.push(format!("partition {} offset {}", d.partition, d.offset));
        }
        Ok(at)
    }

    fn describe(&self) -> String {
        format!("kafka://{}", self.topic)
    }
}
