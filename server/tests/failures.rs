//! The failure ledger and redrive against a real broker (tansu; the mock
//! cluster when tansu is not installed): poison records listed with their
//! offsets and condition, redriven once the function is fixed (each
//! succeeds once), records the topic no longer holds come back Gone, and a
//! redrive of thousands beside live traffic whose latency is measured.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use sluice_app::failures::{FailureFilter, RecordRef, RedriveJob, RedriveRequest, RedriveResult};
use sluice_server::service::MappingService;

async fn until(what: &str, within: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_job(m: &MappingService, id: uuid::Uuid, job: &str, within: Duration) -> RedriveJob {
    let t = Instant::now();
    loop {
        let j = m.redrive_job(id, job).await.unwrap().expect("the job");
        if j.state == "Done" {
            return j;
        }
        assert!(t.elapsed() < within, "the redrive did not end in {within:?}: {j:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn broker() -> Broker {
    Broker::tansu().unwrap_or_else(Broker::mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_listed_and_redriven_once_the_function_is_fixed() {
    let b = broker();
    let mut s = Sluice::start().await;
    let f = Recorder::default();
    let url = f.serve().await;
    let poison: Vec<(i32, i64)> = vec![(0, 7), (0, 77), (0, 150), (1, 7), (1, 120)];
    for (p, i) in &poison {
        f.poisoned.lock().unwrap().insert(format!("{p}-{i}"));
    }
    b.create_topic("orders", 2).await;
    b.produce("orders", 2, 200, None).await;
    let mut sp = spec(b.bootstrap(), "orders", &url, "g-ledger");
    // No retries, no destination: bisect isolates each poison record, which is dropped.
    sp.maximum_retry_attempts = 0;
    sp.bisect_batch_on_function_error = true;
    sp.batch_size = 50;
    let id = s.mappings.create(sp).await.unwrap().uuid;
    let all = FailureFilter::default();
    until("the poison records in the ledger", Duration::from_secs(60), async || {
        s.mappings.failures(id, &all, None, 100).await.unwrap().total == 5
    })
    .await;
    until("everything committed", Duration::from_secs(30), async || {
        b.committed("g-ledger", "orders", 2).values().all(|o| *o == 200)
    })
    .await;
    let page = s.mappings.failures(id, &all, None, 100).await.unwrap();
    let mut listed: Vec<(i32, i64)> = page.failures.iter().map(|r| (r.partition, r.offset)).collect();
    listed.sort();
    assert_eq!(listed, poison, "exactly the poison records, by partition and offset");
    for r in &page.failures {
        assert_eq!(r.condition, "RetryAttemptsExhausted", "{r:?}");
        assert_eq!((r.destination.as_str(), r.destination_message.as_deref()), ("dropped", None));
        assert_eq!(r.attempts, 1);
        assert!(r.error.contains("500"), "the function's error: {}", r.error);
        assert_eq!(r.key.as_deref(), Some("aw=="), "the key, base64 as in the event");
        assert!(r.redrive.is_none());
    }
    println!("ledger: {:?}", page.failures.iter().map(|r| (r.partition, r.offset, &r.error)).collect::<Vec<_>>());
    // Newest first, paged: two pages of 3 and 2, nothing twice.
    let first = s.mappings.failures(id, &all, None, 3).await.unwrap();
    let marker = first.next_marker.clone().expect("a second page");
    let second = s.mappings.failures(id, &all, Some(&marker), 3).await.unwrap();
    assert_eq!((first.failures.len(), second.failures.len(), second.next_marker.as_deref()), (3, 2, None));
    assert!(first
        .failures
        .iter()
        .all(|a| second.failures.iter().all(|b| (a.partition, a.offset) != (b.partition, b.offset))));
    assert!(first.failures.last().unwrap().failed_at >= second.failures[0].failed_at, "newest first");
    let p1 =
        s.mappings.failures(id, &FailureFilter { partition: Some(1), ..Default::default() }, None, 100).await.unwrap();
    assert_eq!(p1.total, 2, "filtered by partition");

    // The function is fixed: one redrive sends each record once more.
    f.poisoned.lock().unwrap().clear();
    let before = f.count();
    let job = s.mappings.redrive(id, &RedriveRequest { all: true, ..Default::default() }, "tester").await.unwrap();
    assert_eq!((job.total, job.state.as_str()), (5, "Running"));
    let started = Instant::now();
    let done = wait_job(&s.mappings, id, &job.job_id, Duration::from_secs(60)).await;
    println!("redrive of 5: {:?}", started.elapsed());
    assert_eq!((done.succeeded, done.failed, done.gone), (5, 0, 0), "{done:?}");
    assert!(done.results.iter().all(|r| r.result == RedriveResult::Succeeded));
    let seen: Vec<(i32, i64)> = f.seen.lock().unwrap()[before..].iter().map(|(p, o, _)| (*p, *o)).collect();
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, poison, "each poison record invoked once by the redrive, nothing else");
    // Every record of the topic reached the function exactly once.
    let mut counts: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (p, o, _) in f.seen.lock().unwrap().iter() {
        *counts.entry((*p, *o)).or_default() += 1;
    }
    assert_eq!(counts.len(), 400);
    assert!(counts.values().all(|n| *n == 1), "no record twice");
    let after = s.mappings.failures(id, &all, None, 100).await.unwrap();
    for r in &after.failures {
        let d = r.redrive.as_ref().expect("the redrive is recorded");
        assert_eq!(
            (d.result, d.by.as_str(), d.job.as_str()),
            (RedriveResult::Succeeded, "tester", job.job_id.as_str())
        );
    }
    assert_eq!(s.mappings.open_failure_counts().await.get(&id), None, "nothing left to redrive");

    // A record that fails again stays, with the new error.
    f.poisoned.lock().unwrap().insert("1-120".into());
    let one = RedriveRequest { records: Some(vec![RecordRef { partition: 1, offset: 120 }]), ..Default::default() };
    let j = s.mappings.redrive(id, &one, "tester").await.unwrap();
    let j = wait_job(&s.mappings, id, &j.job_id, Duration::from_secs(60)).await;
    assert_eq!((j.succeeded, j.failed), (0, 1), "{j:?}");
    let again = j.results[0].error.clone().unwrap_or_default();
    assert!(again.contains("500") && again.contains("after 1 attempts"), "{j:?}");
    let failed_again = s
        .mappings
        .failures(id, &FailureFilter { redrive: Some("Failed".into()), ..Default::default() }, None, 10)
        .await
        .unwrap();
    assert_eq!(failed_again.failures.len(), 1);
    assert_eq!(failed_again.failures[0].error, again, "the ledger keeps the redrive's error");
    assert_eq!(failed_again.failures[0].redrive.as_ref().map(|d| d.result), Some(RedriveResult::Failed));
    f.poisoned.lock().unwrap().clear();

    // Records the topic no longer holds. Neither tansu 0.6 nor the mock
    // cluster deletes records (DeleteRecords: tansu drops the connection),
    // so the mapping moves to a new topic, as when a topic is replaced;
    // other records sit at the failed records' offsets there.
    b.create_topic("orders-v2", 2).await;
    b.produce("orders-v2", 2, 100, None).await;
    let mut moved = s.mappings.get(id).await.unwrap().spec;
    moved.topics = vec!["orders-v2".into()];
    s.mappings.replace(id, moved).await.unwrap();
    let some = RedriveRequest {
        records: Some(vec![RecordRef { partition: 0, offset: 7 }, RecordRef { partition: 0, offset: 150 }]),
        ..Default::default()
    };
    let j = s.mappings.redrive(id, &some, "tester").await.unwrap();
    let j = wait_job(&s.mappings, id, &j.job_id, Duration::from_secs(60)).await;
    let by: BTreeMap<i64, (RedriveResult, String)> =
        j.results.iter().map(|r| (r.offset, (r.result, r.error.clone().unwrap_or_default()))).collect();
    println!("after replacing the topic: {by:?}");
    assert_eq!(by[&7].0, RedriveResult::Gone, "another record sits at offset 7 now");
    assert!(by[&7].1.contains("not the one that failed"), "{}", by[&7].1);
    assert_eq!(by[&150].0, RedriveResult::Gone, "past the end");
    assert!(by[&150].1.contains("no copy: it was dropped"), "where its copy went: {}", by[&150].1);
    s.stop().await;
}

fn percentile(v: &mut [i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Thousands of failed records on a `kafka://` destination, redriven while
/// live records keep arriving: the live records' latency before and during
/// the redrive, side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_redrive_runs_beside_live_traffic() {
    if std::env::var_os("SLUICE_TEST_POSTGRES").is_some() {
        return; // Broker-heavy; the database does not matter here.
    }
    let b = broker();
    let mut s = Sluice::start().await;
    let f = Recorder::default();
    let url = f.serve().await;
    b.create_topic("events", 2).await;
    b.create_topic("events-dlq", 1).await;
    let mut sp = spec(b.bootstrap(), "events", &url, "g-big");
    sp.maximum_retry_attempts = 0;
    sp.batch_size = 100;
    sp.destination_config.on_failure = Some(sluice_app::spec::OnFailure { destination: "kafka://events-dlq".into() });
    // The function is down while 2 × 1,500 records arrive.
    *f.status.lock().unwrap() = 500;
    let id = s.mappings.create(sp).await.unwrap().uuid;
    b.produce("events", 2, 1500, None).await;
    let all = FailureFilter::default();
    until("3,000 records in the ledger", Duration::from_secs(120), async || {
        s.mappings.failures(id, &all, None, 1).await.unwrap().total == 3000
    })
    .await;
    let page = s.mappings.failures(id, &all, None, 1000).await.unwrap();
    for r in &page.failures {
        assert_eq!(r.destination, "kafka://events-dlq");
        let m = r.destination_message.as_deref().unwrap_or("");
        assert!(m.starts_with("partition 0 offset "), "the failure record's place on the topic: {m}");
    }
    // Each failure record has its own place on the dead-letter topic.
    let mut places: Vec<&str> = page.failures.iter().filter_map(|r| r.destination_message.as_deref()).collect();
    places.sort();
    places.dedup();
    assert_eq!(places.len(), page.failures.len());

    // The function is back; live records (10 every 100 ms) measure latency.
    *f.status.lock().unwrap() = 200;
    *f.delay_ms.lock().unwrap() = 5;
    let live = {
        let bootstrap = b.bootstrap().to_string();
        tokio::spawn(async move {
            let producer = bulk_producer(&bootstrap);
            for i in 0..400 {
                let v = format!("live-{}", sluice_server::clock::now_ms());
                let rec =
                    rdkafka::producer::FutureRecord::<str, str>::to("events").partition(i % 2).payload(&v).key("l");
                let _ = producer.send(rec, Duration::from_secs(5)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline: Vec<i64> = f.latencies.lock().unwrap().clone();
    let mark = baseline.len();
    let t = Instant::now();
    let job = s.mappings.redrive(id, &RedriveRequest { all: true, ..Default::default() }, "tester").await.unwrap();
    let done = wait_job(&s.mappings, id, &job.job_id, Duration::from_secs(180)).await;
    let took = t.elapsed();
    let during: Vec<i64> = f.latencies.lock().unwrap()[mark..].to_vec();
    live.await.unwrap();
    assert_eq!((done.succeeded, done.failed, done.gone), (3000, 0, 0), "{:?}", done.error);
    // Each redriven record reached the function once, in offset order per partition.
    let redriven: Vec<(i32, i64)> =
        f.seen.lock().unwrap().iter().filter(|(_, _, v)| !v.starts_with("live-")).map(|(p, o, _)| (*p, *o)).collect();
    assert_eq!(redriven.len(), 3000);
    for p in 0..2 {
        let offs: Vec<i64> = redriven.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]), "partition {p} in offset order");
    }
    let (mut before, mut while_) = (baseline, during);
    let (b50, b99, d50, d99) = (
        percentile(&mut before, 0.5),
        percentile(&mut before, 0.99),
        percentile(&mut while_, 0.5),
        percentile(&mut while_, 0.99),
    );
    println!(
        "redrive of 3,000 records: {took:?} ({:.0} records/s); live latency before: p50 {b50} ms, p99 {b99} ms ({} records); during: p50 {d50} ms, p99 {d99} ms ({} records)",
        3000.0 / took.as_secs_f64(),
        before.len(),
        while_.len()
    );
    assert!(!while_.is_empty(), "live records were delivered while the redrive ran");
    // Live processing is never queued behind the redrive (a second is far
    // above either; the figures above are the measurement).
    assert!(d99 < 1000.max(b99 * 5), "live p99 {d99} ms during the redrive, {b99} ms before");
    s.stop().await;
}

/// Past the retention the ledger forgets; a record given up on again
/// replaces its entry (and its redrive) rather than adding one.
#[tokio::test]
async fn the_ledger_keeps_one_entry_per_record_for_its_retention() {
    use sluice_app::failures::FailedRecord;
    use sluice_server::ledger::Ledger;
    let dir = tempfile::tempdir().unwrap();
    let store = sluice_server::store::Store::open(&database_url(dir.path()).await).await.unwrap();
    let ledger = Ledger::new(&store);
    let id = uuid::Uuid::new_v4();
    let now = sluice_server::clock::now_ms();
    let day = 86_400_000;
    let entry = |offset: i64, failed_at: i64, error: &str| FailedRecord {
        partition: 0,
        offset,
        key: None,
        timestamp: failed_at - 1000,
        condition: "RecordAgeExceeded".into(),
        attempts: 2,
        error: error.into(),
        destination: "dropped".into(),
        destination_message: None,
        failed_at,
        redrive: None,
    };
    ledger.record(id, "n1", &[entry(1, now - 20 * day, "old"), entry(2, now - day, "first")]).await.unwrap();
    ledger.record(id, "n2", &[entry(2, now, "second")]).await.unwrap();
    let page = ledger.list(id, &FailureFilter::default(), None, 10).await.unwrap();
    assert_eq!(page.total, 2);
    assert_eq!(page.failures[0].error, "second", "the newer failure replaced the entry");
    let since = FailureFilter { since: Some(now - 2 * day), ..Default::default() };
    assert_eq!(ledger.list(id, &since, None, 10).await.unwrap().total, 1, "filtered by time");
    assert_eq!(ledger.purge(now - 14 * day).await.unwrap(), 1, "the 20-day-old entry goes");
    let left = ledger.list(id, &FailureFilter::default(), None, 10).await.unwrap();
    assert_eq!(left.failures.iter().map(|f| f.offset).collect::<Vec<_>>(), vec![2]);
    // Bounded per mapping: the newest entries stay.
    let many: Vec<FailedRecord> = (10..15).map(|o| entry(o, now + o, "flood")).collect();
    ledger.record(id, "n1", &many).await.unwrap();
    assert_eq!(ledger.trim(id, 2).await.unwrap(), 4, "all but the newest two");
    let kept = ledger.list(id, &FailureFilter::default(), None, 10).await.unwrap();
    assert_eq!(kept.failures.iter().map(|f| f.offset).collect::<Vec<_>>(), vec![14, 13]);
}
