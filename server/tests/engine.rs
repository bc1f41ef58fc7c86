//! The engine end to end: a broker, Sluice's reconciler and pollers, and a
//! recording HTTP function. Runs on librdkafka's mock cluster always, and on
//! a real broker process (tansu) where it is installed (scripts/test.sh
//! installs it).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use sluice_app::model::MappingState;
use sluice_app::spec::StartingPosition;
use uuid::Uuid;

async fn wait_state(s: &Sluice, id: Uuid, state: MappingState, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let m = s.mappings.get(id).await.unwrap();
        if m.status.state == state {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "{id} still {:?} ({}) after {within:?}",
            m.status.state,
            m.status.last_processing_result
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn order_and_commits(b: Broker, per_partition: usize) {
    let topic = "orders";
    b.create_topic(topic, 6).await;
    let f = Recorder::default();
    let url = f.serve().await;
    let mut s = Sluice::start().await;
    let t = Instant::now();
    b.produce(topic, 6, per_partition, None).await;
    let produced = t.elapsed();
    let m = s.mappings.create(spec(b.bootstrap(), topic, &url, "g-order")).await.unwrap();
    let t = Instant::now();
    assert!(
        f.wait_for(6 * per_partition, Duration::from_secs(120)).await,
        "delivered {} of {}",
        f.count(),
        6 * per_partition
    );
    let consumed = t.elapsed();
    let ends = b.end_offsets(topic, 6);
    assert_complete_and_ordered(&f.by_partition(), &ends, &BTreeMap::new());
    wait_committed(&b, "g-order", topic, &ends, Duration::from_secs(10)).await;
    wait_result(&s, m.uuid, "OK", Duration::from_secs(5)).await;
    assert_eq!(s.mappings.get(m.uuid).await.unwrap().status.state, MappingState::Enabled);
    println!(
        "{} records on 6 partitions: produced in {produced:?}, delivered in order and committed in {consumed:?} ({:.0} records/s)",
        6 * per_partition,
        (6 * per_partition) as f64 / consumed.as_secs_f64()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_every_record_in_order_and_committed() {
    order_and_commits(Broker::mock(), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_100k_records_on_6_partitions_in_order_and_committed() {
    let Some(b) = Broker::tansu() else { return };
    order_and_commits(b, 100_000 / 6 + 1).await;
}

/// TRIM_HORIZON reads what is there; LATEST skips it; a committed offset
/// wins over both; AT_TIMESTAMP starts at the first record at or after the
/// time (real broker only: the mock cluster has no timestamp look-up).
async fn starting_positions(b: Broker) {
    let topic = "positions";
    b.create_topic(topic, 2).await;
    let now = sluice_server::clock::now_ms();
    b.produce(topic, 2, 10, Some(now - 60_000)).await; // offsets 0..10, a minute old
    b.produce(topic, 2, 10, Some(now - 10_000)).await; // offsets 10..20, ten seconds old
    let mut s = Sluice::start().await;

    let run = |position: StartingPosition, ts: Option<i64>, group: &'static str| {
        let b = &b;
        let s = &s;
        async move {
            let f = Recorder::default();
            let url = f.serve().await;
            let mut sp = spec(b.bootstrap(), topic, &url, group);
            sp.starting_position = position;
            sp.starting_position_timestamp = ts;
            let m = s.mappings.create(sp).await.unwrap();
            (f, m.uuid)
        }
    };

    let (trim, _) = run(StartingPosition::TrimHorizon, None, "g-trim").await;
    assert!(trim.wait_for(40, Duration::from_secs(30)).await);
    let (latest, latest_id) = run(StartingPosition::Latest, None, "g-latest").await;
    wait_committed(&b, "g-latest", topic, &BTreeMap::from([(0, 20), (1, 20)]), Duration::from_secs(20)).await;
    b.produce(topic, 2, 5, None).await; // offsets 20..25
    assert!(latest.wait_for(10, Duration::from_secs(30)).await);
    assert_complete_and_ordered(
        &latest.by_partition(),
        &BTreeMap::from([(0, 25), (1, 25)]),
        &BTreeMap::from([(0, 20), (1, 20)]),
    );

    // The same group again, now with TRIM_HORIZON: its committed offset wins.
    s.mappings.delete(latest_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (again, _) = run(StartingPosition::TrimHorizon, None, "g-latest").await;
    b.produce(topic, 2, 1, None).await; // offset 25
    assert!(again.wait_for(2, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(again.by_partition(), BTreeMap::from([(0, vec![25]), (1, vec![25])]));

    if b.is_real() {
        let (at, _) = run(StartingPosition::AtTimestamp, Some((now - 30_000) / 1000), "g-at").await;
        assert!(at.wait_for(32, Duration::from_secs(30)).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_complete_and_ordered(
            &at.by_partition(),
            &BTreeMap::from([(0, 26), (1, 26)]),
            &BTreeMap::from([(0, 10), (1, 10)]),
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_starting_positions() {
    starting_positions(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_starting_positions() {
    let Some(b) = Broker::tansu() else { return };
    starting_positions(b).await;
}

/// Edits restart the poller; records keep flowing and none is lost.
async fn edit_mid_stream(b: Broker, per_partition: usize) {
    let topic = "edits";
    b.create_topic(topic, 3).await;
    let f = Recorder::default();
    let url = f.serve().await;
    let mut s = Sluice::start().await;
    let mut sp = spec(b.bootstrap(), topic, &url, "g-edit");
    sp.starting_position = StartingPosition::Latest;
    let m = s.mappings.create(sp).await.unwrap();
    wait_state(&s, m.uuid, MappingState::Enabled, Duration::from_secs(2)).await;
    wait_committed(&b, "g-edit", topic, &BTreeMap::from([(0, 0), (1, 0), (2, 0)]), Duration::from_secs(20)).await;

    let editing = {
        let mappings = s.mappings.clone();
        tokio::spawn(async move {
            for size in [7, 300, 1, 50] {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let mut cur = mappings.get(m.uuid).await.unwrap().spec;
                cur.batch_size = size;
                mappings.replace(m.uuid, cur).await.unwrap();
            }
        })
    };
    for _ in 0..10 {
        b.produce(topic, 3, per_partition / 10, None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    editing.await.unwrap();
    let ends = b.end_offsets(topic, 3);
    let total: i64 = ends.values().sum();
    assert!(f.wait_for(total as usize, Duration::from_secs(60)).await, "delivered {} of {total}", f.count());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_complete_and_ordered(&f.by_partition(), &ends, &BTreeMap::new());
    wait_committed(&b, "g-edit", topic, &ends, Duration::from_secs(10)).await;
    println!("{total} records across 4 edits: {} deliveries ({} duplicates)", f.count(), f.count() as i64 - total);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_editing_batch_size_mid_stream_loses_nothing() {
    edit_mid_stream(Broker::mock(), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_editing_batch_size_mid_stream_loses_nothing() {
    let Some(b) = Broker::tansu() else { return };
    edit_mid_stream(b, 3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_follow_create_disable_enable_delete_within_two_seconds() {
    let b = Broker::mock();
    b.create_topic("states", 1).await;
    let f = Recorder::default();
    let url = f.serve().await;
    let s = Sluice::start().await;
    let m = s.mappings.create(spec(b.bootstrap(), "states", &url, "g-states")).await.unwrap();
    assert_eq!(m.status.state, MappingState::Creating);
    let took = wait_state(&s, m.uuid, MappingState::Enabled, Duration::from_secs(2)).await;
    println!("Creating → Enabled in {took:?}");
    let m2 = s.mappings.set_enabled(m.uuid, false).await.unwrap();
    assert_eq!(m2.status.state, MappingState::Disabling);
    wait_state(&s, m.uuid, MappingState::Disabled, Duration::from_secs(2)).await;
    b.produce("states", 1, 3, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.count(), 0, "a disabled mapping invokes nothing");
    assert_eq!(s.mappings.set_enabled(m.uuid, true).await.unwrap().status.state, MappingState::Enabling);
    wait_state(&s, m.uuid, MappingState::Enabled, Duration::from_secs(2)).await;
    assert!(f.wait_for(3, Duration::from_secs(20)).await);
    s.mappings.delete(m.uuid).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = f.count();
    b.produce("states", 1, 3, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(f.count(), before, "a deleted mapping invokes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_explains_an_unreachable_broker_and_a_failing_function() {
    let s = Sluice::start().await;
    let dead = "127.0.0.1:1";
    let m = s.mappings.create(spec(dead, "nowhere", "http://127.0.0.1:1/fn", "g-dead")).await.unwrap();
    let r = wait_result(&s, m.uuid, "PROBLEM: Connection error", Duration::from_secs(20)).await;
    assert!(r.contains("127.0.0.1:1"), "{r}");

    let b = Broker::mock();
    let m = s.mappings.create(spec(b.bootstrap(), "missing", "http://127.0.0.1:1/fn", "g-missing")).await.unwrap();
    let r = wait_result(&s, m.uuid, "PROBLEM: Topic `missing` does not exist", Duration::from_secs(20)).await;
    assert!(r.contains(b.bootstrap()), "{r}");

    b.create_topic("failing", 1).await;
    let f = Recorder::default();
    let url = f.serve().await;
    *f.status.lock().unwrap() = 500;
    let m = s.mappings.create(spec(b.bootstrap(), "failing", &url, "g-fail")).await.unwrap();
    b.produce("failing", 1, 2, None).await;
    let r = wait_result(&s, m.uuid, "PROBLEM: Function call failed", Duration::from_secs(20)).await;
    // The status code, not the body: the body may repeat the endpoint's secrets,
    // and viewers read LastProcessingResult (the body goes to the node's log).
    assert!(r.contains("500") && !r.contains("the test function is failing"), "{r}");
    assert_eq!(b.committed("g-fail", "failing", 1)[&0], 0, "nothing past the failing batch is committed");
    // The lag reader sees the stalled partition's two records.
    let t = Instant::now();
    loop {
        let lag = s.mappings.counters(m.uuid).map(|c| c.partitions).unwrap_or_default();
        if lag.len() == 1 && (lag[0].committed_offset, lag[0].end_offset, lag[0].offset_lag) == (Some(0), 2, 2) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "lag never read as 2: {lag:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The function recovers: the same records arrive, then OK.
    *f.status.lock().unwrap() = 200;
    assert!(f.wait_for(2, Duration::from_secs(40)).await);
    wait_result(&s, m.uuid, "OK", Duration::from_secs(5)).await;
}

/// A poison record goes to the dead-letter topic after its retries, with its
/// key and AWS's failure record; the rest of its partition carries on.
async fn poison_to_dead_letter_topic(b: Broker) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::FutureRecord;
    use rdkafka::Message;
    b.create_topic("payments", 1).await;
    b.create_topic("payments-dlq", 1).await;
    let producer = b.producer();
    for i in 0..40 {
        let value = if i == 17 { "poison".to_string() } else { format!("ok-{i}") };
        producer
            .send(FutureRecord::to("payments").key(&format!("key-{i}")).payload(&value), Duration::from_secs(5))
            .await
            .unwrap();
    }
    let f = Recorder::default();
    let url = f.serve().await;
    *f.poison.lock().unwrap() = Some("poison".into());
    let s = Sluice::start().await;
    let mut sp = spec(b.bootstrap(), "payments", &url, "g-poison");
    sp.batch_size = 10;
    sp.maximum_retry_attempts = 2;
    sp.bisect_batch_on_function_error = true;
    sp.destination_config.on_failure = Some(sluice_app::spec::OnFailure { destination: "kafka://payments-dlq".into() });
    let m = s.mappings.create(sp).await.unwrap();
    assert!(f.wait_for(39, Duration::from_secs(60)).await, "delivered {}", f.count());
    wait_committed(&b, "g-poison", "payments", &BTreeMap::from([(0, 40)]), Duration::from_secs(30)).await;
    let good: Vec<i64> = f.by_partition()[&0].clone();
    assert_eq!(good, (0..40).filter(|o| *o != 17).collect::<Vec<_>>());

    let bootstrap = b.bootstrap().to_string();
    let dead = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "dlq-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        c.subscribe(&["payments-dlq"]).unwrap();
        let t = Instant::now();
        loop {
            if let Some(Ok(msg)) = c.poll(Duration::from_millis(200)) {
                return (msg.key().map(|k| k.to_vec()), msg.payload().map(|p| p.to_vec()).unwrap());
            }
            assert!(t.elapsed() < Duration::from_secs(30), "nothing on the dead-letter topic");
        }
    })
    .await
    .unwrap();
    assert_eq!(dead.0.as_deref(), Some(&b"key-17"[..]), "the original key");
    let env: serde_json::Value = serde_json::from_slice(&dead.1).unwrap();
    assert_eq!(env["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(env["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(env["KafkaBatchInfo"]["recordInfo"]["offset"], "17");
    let payload = env["payload"].clone();
    assert!(payload.is_object(), "the payload is an object, as AWS documents it: {payload}");
    assert_eq!(payload["records"]["payments-0"][0]["value"], "cG9pc29u");
    let r = s.mappings.get(m.uuid).await.unwrap().status.last_processing_result;
    println!("poison: {} invocations; status: {r}", f.invocations.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_poison_record_goes_to_the_dead_letter_topic() {
    poison_to_dead_letter_topic(Broker::mock()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_poison_record_goes_to_the_dead_letter_topic() {
    let Some(b) = Broker::tansu() else { return };
    poison_to_dead_letter_topic(b).await;
}

/// A mapping whose pollers are stopping (their batch still in the function,
/// within the grace period) does not hold up the others: a mapping created
/// meanwhile starts and delivers, and the slow one settles as Disabled only
/// once its batch has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_mapping_stopping_does_not_hold_up_another() {
    use sluice_server::engine::{Engine, EngineSettings};
    use sluice_server::service::MappingService;
    use sluice_server::store::Store;
    let b = Broker::mock();
    b.create_topic("slow", 1).await;
    b.create_topic("quick", 1).await;
    let (slow, quick) = (Recorder::default(), Recorder::default());
    let (slow_url, quick_url) = (slow.serve().await, quick.serve().await);
    *slow.delay_ms.lock().unwrap() = 15_000;
    let dir = tempfile::tempdir().unwrap();
    let mappings = MappingService::new(Store::open(&database_url(dir.path()).await).await.unwrap());
    // Long enough that the slow batch, not a timeout, decides when its stop ends.
    let settings =
        EngineSettings { http_timeout: Duration::from_secs(60), grace: Duration::from_secs(60), ..Default::default() };
    let engine = Engine::start(mappings.shared(), settings);

    let s1 = mappings.create(spec(b.bootstrap(), "slow", &slow_url, "g-slow")).await.unwrap();
    b.produce("slow", 1, 1, None).await;
    let t = Instant::now();
    while *slow.invocations.lock().unwrap() == 0 {
        assert!(t.elapsed() < Duration::from_secs(20), "the slow function is never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let disabled_at = Instant::now();
    mappings.set_enabled(s1.uuid, false).await.unwrap();
    let s2 = mappings.create(spec(b.bootstrap(), "quick", &quick_url, "g-quick")).await.unwrap();
    b.produce("quick", 1, 3, None).await;
    assert!(quick.wait_for(3, Duration::from_secs(12)).await, "the new mapping waits for the slow one's stop");
    let slow_state = mappings.get(s1.uuid).await.unwrap().status.state;
    assert_eq!(slow_state, MappingState::Disabling, "the slow batch is still in the function");
    assert_eq!(mappings.get(s2.uuid).await.unwrap().status.state, MappingState::Enabled);
    println!("quick mapping delivered {:?} after the slow one was disabled", disabled_at.elapsed());
    let t = Instant::now();
    while mappings.get(s1.uuid).await.unwrap().status.state != MappingState::Disabled {
        assert!(t.elapsed() < Duration::from_secs(30), "the slow mapping never settles");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(disabled_at.elapsed() >= Duration::from_secs(10), "settled only once its batch ended");
    engine.shutdown().await;
}
