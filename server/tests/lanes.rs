//! More than one batch per partition (ParallelizationFactor), on the
//! partition pipeline with an in-memory source and tokio's paused clock: one
//! key's records in offset order, different keys at once, and a committed
//! offset that never passes a record some lane has not finished.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;
use sluice_server::engine::commit::Committer;
use sluice_server::engine::event::EventSource;
use sluice_server::engine::pipeline::{self, Pipeline};
use sluice_server::engine::target::{Outcome, Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A function that takes 50 ms a call, records (key, offset) per call and
/// the most calls at once; it never answers for `stuck`'s batches.
#[derive(Default)]
struct Slow {
    calls: Mutex<Vec<Vec<(String, i64)>>>,
    now: AtomicUsize,
    most: AtomicUsize,
    stuck: Option<String>,
}

#[async_trait]
impl Target for Slow {
    async fn invoke(&self, payload: String) -> Outcome {
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let recs: Vec<(String, i64)> = v["records"]["t-0"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let key = base64::engine::general_purpose::STANDARD.decode(r["key"].as_str().unwrap()).unwrap();
                (String::from_utf8(key).unwrap(), r["offset"].as_i64().unwrap())
            })
            .collect();
        let stuck = self.stuck.as_ref().is_some_and(|s| recs.iter().any(|(k, _)| k == s));
        self.calls.lock().unwrap().push(recs);
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(if stuck { Duration::from_secs(3600) } else { Duration::from_millis(50) }).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Outcome::Success { body: vec![] }
    }
}

#[derive(Default)]
struct Commits(Mutex<Vec<i64>>);
impl Committer for Commits {
    fn commit(&self, _topic: &str, _partition: i32, next_offset: i64) {
        self.0.lock().unwrap().push(next_offset);
    }
}

fn record(offset: i64, key: &str) -> OwnedMessage {
    let now = sluice_server::clock::now_ms();
    OwnedMessage::new(
        Some(b"{}".to_vec()),
        Some(key.as_bytes().to_vec()),
        "t".into(),
        Timestamp::CreateTime(now),
        0,
        offset,
        None,
    )
}

/// Runs `n` records over `keys` keys at `lanes`, until everything is
/// committed or `within` passes; then stops.
/// Answers the commits made before the stop.
async fn run(lanes: usize, n: i64, keys: i64, target: Arc<Slow>, within: Duration) -> Vec<i64> {
    let commits = Arc::new(Commits::default());
    let p = Pipeline {
        batch_size: 5,
        lanes,
        ..Pipeline::new(target, commits.clone(), EventSource::self_managed(&["b:1".into()]))
    };
    let (tx, rx) = mpsc::channel(100_000);
    for o in 0..n {
        tx.send(record(o, &format!("k{}", o % keys))).await.unwrap();
    }
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline::run(Arc::new(p), "t".into(), 0, rx, stop.clone()));
    let deadline = tokio::time::Instant::now() + within;
    while commits.0.lock().unwrap().last() != Some(&n) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let made = commits.0.lock().unwrap().clone();
    stop.cancel();
    let _ = task.await;
    made
}

/// Per key, the offsets in the order the function saw them.
fn by_key(calls: &[Vec<(String, i64)>]) -> BTreeMap<String, Vec<i64>> {
    let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (k, o) in calls.iter().flatten() {
        m.entry(k.clone()).or_default().push(*o);
    }
    m
}

#[tokio::test(start_paused = true)]
async fn ten_lanes_keep_each_keys_order_run_keys_at_once_and_commit_to_the_end() {
    let target = Arc::new(Slow::default());
    let commits = run(10, 400, 40, target.clone(), Duration::from_secs(60)).await;
    let calls = target.calls.lock().unwrap().clone();
    let seen: Vec<i64> = calls.iter().flatten().map(|(_, o)| *o).collect();
    assert_eq!(seen.len(), 400, "each record once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 400);
    for (key, offsets) in by_key(&calls) {
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{key} out of order: {offsets:?}");
    }
    let most = target.most.load(Ordering::SeqCst);
    assert!(most > 1 && most <= 10, "at most 10 batches at once, and more than one: {most}");
    let c = commits;
    assert_eq!(c.last(), Some(&400), "committed to the end");
    assert!(c.windows(2).all(|w| w[0] < w[1]), "commits only move forward: {c:?}");
}

#[tokio::test(start_paused = true)]
async fn one_lane_is_todays_pipeline_one_batch_at_a_time() {
    let target = Arc::new(Slow::default());
    let commits = run(1, 50, 10, target.clone(), Duration::from_secs(60)).await;
    assert_eq!(target.most.load(Ordering::SeqCst), 1);
    let seen: Vec<i64> = target.calls.lock().unwrap().iter().flatten().map(|(_, o)| *o).collect();
    assert_eq!(seen, (0..50).collect::<Vec<_>>(), "strictly in offset order");
    assert_eq!(commits.last(), Some(&50));
}

#[tokio::test(start_paused = true)]
async fn a_lane_that_has_not_finished_holds_the_partitions_commit_back() {
    // Key k3's first batch never returns: other keys finish, yet nothing at
    // or after k3's first record (offset 3) may be committed.
    let target = Arc::new(Slow { stuck: Some("k3".into()), ..Default::default() });
    let commits = run(4, 200, 8, target.clone(), Duration::from_secs(30)).await;
    assert!(commits.iter().all(|o| *o <= 3), "committed past an unfinished record: {commits:?}");
    let done_elsewhere = target.calls.lock().unwrap().iter().flatten().filter(|(k, _)| k != "k3").count();
    assert!(done_elsewhere > 100, "the other keys went on: {done_elsewhere} records");
}

/// On a real broker (tansu): 2,000 records of 50 keys in one partition, a
/// function taking 50 ms a call, BatchSize 10: at factor 1, and at factor
/// 10 changed to 4 halfway, every record delivered, in order per key,
/// committed to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_real_broker_factor_ten_keeps_key_order_and_commits_everything() {
    let Some(b) = common::Broker::tansu() else { return };
    let mut s = common::Sluice::start().await;
    let mut took = Vec::new();
    for factor in [1, 10] {
        let topic = format!("lanes-{factor}");
        b.create_topic(&topic, 1).await;
        common::produce_keyed(b.bootstrap(), &topic, 2_000, 50).await;
        let f = common::Recorder::default();
        let url = f.serve().await;
        *f.delay_ms.lock().unwrap() = 50;
        let group = format!("g-lanes-{factor}");
        let mut spec = common::spec(b.bootstrap(), &topic, &url, &group);
        spec.batch_size = 10;
        spec.parallelization_factor = Some(factor);
        let t = std::time::Instant::now();
        let id = s.mappings.create(spec).await.unwrap().uuid;
        if factor > 1 {
            // Changed while it runs: the pollers restart with 4 lanes, from what is committed.
            assert!(f.wait_for(1_000, Duration::from_secs(120)).await, "factor {factor}: {} of 1000", f.count());
            s.mappings.patch(id, &serde_json::json!({"ParallelizationFactor": 4})).await.unwrap();
        }
        assert!(f.wait_for(2_000, Duration::from_secs(120)).await, "factor {factor}: {} of 2000", f.count());
        took.push(t.elapsed());
        common::wait_committed(&b, &group, &topic, &BTreeMap::from([(0, 2_000)]), Duration::from_secs(30)).await;
        for (key, seq) in common::sequences_by_key(&f.seen.lock().unwrap()) {
            assert!(seq.windows(2).all(|w| w[0] < w[1]), "factor {factor}, {key} out of order: {seq:?}");
        }
        let offsets: HashSet<i64> = f.seen.lock().unwrap().iter().map(|(_, o, _)| *o).collect();
        assert_eq!(offsets.len(), 2_000, "factor {factor}: every offset");
        s.mappings.delete(id).await.unwrap();
    }
    println!("2000 records, 50 ms a call, BatchSize 10: factor 1 {:?}, factor 10 {:?}", took[0], took[1]);
    s.stop().await;
}
