//! A function outage of 30 s while records keep arriving, then recovery:
//! nothing lost, nothing out of order, and the mapping says what happened.
//! On a real broker (tansu) where installed, else on the mock cluster.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

async fn outage(b: Broker) {
    let topic = "outage";
    b.create_topic(topic, 3).await;
    let f = Recorder::default();
    let url = f.serve().await;
    let mut s = Sluice::start().await;
    let id = s.mappings.create(spec(b.bootstrap(), topic, &url, "g-outage")).await.unwrap().uuid;
    b.produce(topic, 3, 50, None).await;
    assert!(f.wait_for(150, Duration::from_secs(30)).await);

    // Down for 30 s (503 without Retry-After: a function error), while
    // records keep coming.
    *f.status.lock().unwrap() = 503;
    let down = Instant::now();
    let producer = {
        let servers = b.bootstrap().to_string();
        tokio::spawn(async move {
            for _ in 0..15 {
                produce_on(&servers, topic, 3, 20, None).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    while down.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let during = s.mappings.counters(id).unwrap();
    let result = s.mappings.get(id).await.unwrap().status.last_processing_result;
    assert!(result.contains("Function call failed"), "{result}");
    *f.status.lock().unwrap() = 200;
    let back = Instant::now();
    producer.await.unwrap();
    let ends = b.end_offsets(topic, 3);
    let total: i64 = ends.values().sum();
    assert!(f.wait_for(total as usize, Duration::from_secs(60)).await, "delivered {} of {total}", f.count());
    wait_committed(&b, "g-outage", topic, &ends, Duration::from_secs(90).saturating_sub(back.elapsed())).await;
    let caught_up = back.elapsed();
    assert_complete_and_ordered(&f.by_partition(), &ends, &BTreeMap::new());
    println!(
        "outage of 30 s: {} failed invocations (retries with backoff, capped at 30 s), caught up {:.1} s after recovery, {total} records delivered in order",
        during.errors,
        caught_up.as_secs_f64()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_outage_loses_nothing() {
    match Broker::tansu() {
        Some(b) => outage(b).await,
        None => outage(Broker::mock()).await,
    }
}
