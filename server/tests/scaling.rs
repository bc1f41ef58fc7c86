//! Pollers follow the lag: a slow function behind a backlog gets more
//! pollers (consumers in the mapping's group) within seconds, the rebalances
//! lose and reorder nothing, and ProvisionedPollerConfig bounds the count.
//! On a real broker (tansu) where installed, else on the mock cluster.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use sluice_app::spec::ProvisionedPollerConfig;
use uuid::Uuid;

fn pollers(s: &Sluice, id: Uuid) -> u64 {
    s.mappings.live().lock().unwrap().get(&id).map(|st| st.pollers.load(Ordering::Relaxed)).unwrap_or(0)
}

async fn lag_adds_pollers(b: Broker) {
    let topic = "backlog";
    b.create_topic(topic, 6).await;
    b.produce(topic, 6, 1000, None).await;
    let f = Recorder::default();
    let url = f.serve().await;
    // About 120 records/s: the backlog would take 50 s.
    *f.delay_ms.lock().unwrap() = 1000;
    let mut s = Sluice::start().await;
    let mut sp = spec(b.bootstrap(), topic, &url, "g-scale");
    sp.batch_size = 20;
    sp.provisioned_poller_config =
        Some(ProvisionedPollerConfig { minimum_pollers: None, maximum_pollers: Some(3), poller_group_name: None });
    let t = Instant::now();
    let id = s.mappings.create(sp).await.unwrap().uuid;
    let mut most = 0;
    let mut second_after = None;
    while t.elapsed() < Duration::from_secs(20) {
        let n = pollers(&s, id);
        if n >= 2 && second_after.is_none() {
            second_after = Some(t.elapsed());
        }
        most = most.max(n);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second_after = second_after.expect("a sustained lag must add a poller");
    println!("second poller {:.1} s after the mapping started; most pollers {most}", second_after.as_secs_f64());
    // The first lag reading comes after up to 3 s; then 5 s of sustained lag.
    assert!(second_after < Duration::from_secs(12), "{second_after:?}");
    assert_eq!(most, 3, "MaximumPollers bounds the count");
    *f.delay_ms.lock().unwrap() = 0;
    assert!(f.wait_for(6000, Duration::from_secs(60)).await, "delivered {}", f.count());
    let ends = b.end_offsets(topic, 6);
    wait_committed(&b, "g-scale", topic, &ends, Duration::from_secs(30)).await;
    // Rebalances may repeat an abandoned batch, never skip or reorder.
    assert_complete_and_ordered(&f.by_partition(), &ends, &BTreeMap::new());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_lag_adds_pollers_and_nothing_is_lost() {
    match Broker::tansu() {
        Some(b) => lag_adds_pollers(b).await,
        None => lag_adds_pollers(Broker::mock()).await,
    }
}
