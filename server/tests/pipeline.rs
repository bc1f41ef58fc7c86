//! The partition pipeline with an in-memory source and a scripted target:
//! batching (size, window, payload limit), partial batch responses, retries
//! and throttles, and what gets committed. Every test runs on tokio's paused
//! clock: windows, backoffs and throttle waits pass at once and exactly, so
//! the tests are fast and a loaded machine cannot make them flaky.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;
use sluice_app::metrics::Counter;
use sluice_server::engine::commit::Committer;
use sluice_server::engine::event::EventSource;
use sluice_server::engine::filter::Filter;
use sluice_server::engine::pipeline::{self, Pipeline};
use sluice_server::engine::target::{Outcome, Target};
use sluice_server::shared::status::LiveStatus;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Answers from a script (then succeeds), and records every event's offsets.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Outcome>>,
    calls: Mutex<Vec<Vec<i64>>>,
    /// Fails every batch holding this offset.
    poison: Option<i64>,
}

#[async_trait]
impl Target for Scripted {
    async fn invoke(&self, payload: String) -> Outcome {
        let v: serde_json::Value = serde_json::from_str(&payload).expect("the event is JSON");
        let offsets: Vec<i64> =
            v["records"]["t-0"].as_array().unwrap().iter().map(|r| r["offset"].as_i64().unwrap()).collect();
        let poisoned = self.poison.is_some_and(|p| offsets.contains(&p));
        self.calls.lock().unwrap().push(offsets);
        if poisoned {
            // As Lambda says which version ran (X-Amz-Executed-Version).
            return Outcome::FunctionError { message: "poison".into(), status: Some(500), version: Some("3".into()) };
        }
        self.script.lock().unwrap().pop_front().unwrap_or(Outcome::Success { body: vec![] })
    }
}

#[derive(Default)]
struct Commits(Mutex<Vec<i64>>);
impl Committer for Commits {
    fn commit(&self, _topic: &str, _partition: i32, next_offset: i64) {
        self.0.lock().unwrap().push(next_offset);
    }
}

fn record(offset: i64, size: usize) -> OwnedMessage {
    OwnedMessage::new(Some(vec![b'x'; size]), None, "t".into(), Timestamp::CreateTime(crate_now()), 0, offset, None)
}

fn crate_now() -> i64 {
    sluice_server::clock::now_ms()
}

struct Run {
    target: Arc<Scripted>,
    commits: Arc<Commits>,
    status: Arc<LiveStatus>,
}

fn pipeline(target: Arc<Scripted>, commits: Arc<Commits>, f: impl FnOnce(&mut Pipeline)) -> Arc<Pipeline> {
    let mut p =
        Pipeline { batch_size: 10, ..Pipeline::new(target, commits, EventSource::self_managed(&["b:1".into()])) };
    f(&mut p);
    Arc::new(p)
}

/// Feeds `records` (all at once), runs until every offset is committed or
/// `wait` passes.
async fn run(script: Vec<Outcome>, records: Vec<OwnedMessage>, f: impl FnOnce(&mut Pipeline)) -> Run {
    let target = Arc::new(Scripted { script: Mutex::new(script.into()), ..Default::default() });
    let commits = Arc::new(Commits::default());
    let p = pipeline(target.clone(), commits.clone(), f);
    let status = p.status.clone();
    let end = records.last().map(|r| rdkafka::Message::offset(r) + 1).unwrap_or(0);
    let (tx, rx) = mpsc::channel(100_000);
    for r in records {
        tx.send(r).await.unwrap();
    }
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline::run(p, "t".into(), 0, rx, stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while commits.0.lock().unwrap().last() != Some(&end) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let _ = task.await;
    Run { target, commits, status }
}

fn calls(r: &Run) -> Vec<Vec<i64>> {
    r.target.calls.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn batches_follow_batch_size_and_commit_after_each() {
    let r = run(vec![], (0..25).map(|o| record(o, 10)).collect(), |_| {}).await;
    let c = calls(&r);
    assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
    assert_eq!(c.concat(), (0..25).collect::<Vec<_>>());
    assert_eq!(*r.commits.0.lock().unwrap(), vec![10, 20, 25]);
    assert_eq!(r.status.get(), "OK");
}

#[tokio::test(start_paused = true)]
async fn the_payload_limit_cuts_batches_and_an_oversized_record_is_dropped_not_skipped_silently() {
    let r = run(vec![], vec![record(0, 300), record(1, 300), record(2, 5000), record(3, 300)], |p| {
        p.max_payload = 1000;
    })
    .await;
    // Base64 makes 300 bytes 400 characters: with the envelope, one record per 1000-byte event.
    let c = calls(&r);
    assert!(c.iter().all(|b| !b.contains(&2)), "the oversized record is never invoked: {c:?}");
    assert_eq!(c.concat(), vec![0, 1, 3]);
    assert_eq!(r.status.total(Counter::DroppedEvents), 1);
    assert_eq!(*r.commits.0.lock().unwrap().last().unwrap(), 4);
    // The ledger keeps it: dropped, never invoked, and why.
    let ledger = r.status.take_failed();
    assert_eq!(ledger.iter().map(|f| f.offset).collect::<Vec<_>>(), vec![2]);
    assert_eq!(ledger[0].condition, "MaximumPayloadSizeExceeded");
    assert_eq!((ledger[0].destination.as_str(), ledger[0].attempts), ("dropped", 0));
    assert!(ledger[0].error.contains("exceeds the 1000 byte payload limit"), "{}", ledger[0].error);
}

#[tokio::test(start_paused = true)]
async fn a_window_collects_records_that_arrive_late() {
    let target = Arc::new(Scripted::default());
    let commits = Arc::new(Commits::default());
    let p = pipeline(target.clone(), commits.clone(), |p| p.window = Duration::from_millis(300));
    let (tx, rx) = mpsc::channel(10);
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline::run(p, "t".into(), 0, rx, stop.clone()));
    tx.send(record(0, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send(record(1, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.cancel();
    let _ = task.await;
    assert_eq!(*target.calls.lock().unwrap(), vec![vec![0, 1]]);
}

#[tokio::test(start_paused = true)]
async fn partial_batch_response_retries_from_the_lowest_failed_offset() {
    let failure = |o: i64| serde_json::json!({"itemIdentifier": {"partition": "t-0", "offset": o}});
    let body = serde_json::json!({"batchItemFailures": [failure(7), failure(5)]}).to_string().into_bytes();
    let r = run(vec![Outcome::Success { body }], (0..10).map(|o| record(o, 1)).collect(), |p| {
        p.report_item_failures = true;
    })
    .await;
    assert_eq!(calls(&r), vec![(0..10).collect::<Vec<_>>(), (5..10).collect()]);
    assert_eq!(*r.commits.0.lock().unwrap(), vec![5, 10]);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_response_naming_an_unknown_record_fails_the_whole_batch() {
    let body = br#"{"batchItemFailures":[{"itemIdentifier":{"partition":"t-0","offset":99}}]}"#.to_vec();
    let r = run(vec![Outcome::Success { body }], (0..4).map(|o| record(o, 1)).collect(), |p| {
        p.report_item_failures = true;
    })
    .await;
    assert_eq!(calls(&r), vec![vec![0, 1, 2, 3], vec![0, 1, 2, 3]]);
    assert_eq!(*r.commits.0.lock().unwrap(), vec![4]);
}

#[tokio::test(start_paused = true)]
async fn errors_retry_until_max_retries_then_drop_and_move_on() {
    let err =
        || Outcome::FunctionError { message: "function returned 500: boom".into(), status: Some(500), version: None };
    let r = run(vec![err(), err(), err(), err()], (0..3).map(|o| record(o, 1)).collect(), |p| {
        p.max_retries = Some(2);
    })
    .await;
    // First attempt + 2 retries, then the batch is dropped (no destination).
    assert_eq!(calls(&r).len(), 3);
    assert_eq!(*r.commits.0.lock().unwrap(), vec![3]);
    assert!(r.status.get().contains("RetryAttemptsExhausted"), "{}", r.status.get());
    assert!(r.status.get().contains("boom"));
}

#[tokio::test(start_paused = true)]
async fn throttles_are_retried_without_counting_as_attempts() {
    let throttle = || Outcome::Throttled { message: "429".into(), retry_after: Some(Duration::from_millis(1)) };
    let r = run(vec![throttle(), throttle(), throttle()], vec![record(0, 1)], |p| p.max_retries = Some(0)).await;
    assert_eq!(calls(&r).len(), 4, "three throttles, then success");
    assert_eq!(*r.commits.0.lock().unwrap(), vec![1]);
    assert_eq!(r.status.get(), "OK");
}

#[tokio::test(start_paused = true)]
async fn nothing_is_committed_while_the_function_keeps_failing() {
    let target = Arc::new(Scripted {
        script: Mutex::new(
            (0..1000)
                .map(|_| Outcome::FunctionError { message: "down".into(), status: Some(500), version: None })
                .collect(),
        ),
        ..Default::default()
    });
    let commits = Arc::new(Commits::default());
    let p = pipeline(target, commits.clone(), |_| {});
    let status = p.status.clone();
    let (tx, rx) = mpsc::channel(10);
    tx.send(record(0, 1)).await.unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline::run(p, "t".into(), 0, rx, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let _ = task.await;
    assert!(commits.0.lock().unwrap().is_empty());
    assert!(status.get().starts_with("PROBLEM: Function call failed: down"), "{}", status.get());
}

fn json_record(offset: i64, value: &str) -> OwnedMessage {
    OwnedMessage::new(
        Some(value.as_bytes().to_vec()),
        None,
        "t".into(),
        Timestamp::CreateTime(crate_now()),
        0,
        offset,
        None,
    )
}

#[tokio::test(start_paused = true)]
async fn filters_invoke_matching_records_and_commit_the_rest_too() {
    let records = (0..20)
        .map(|o| json_record(o, &format!(r#"{{"type": "{}", "n": {o}}}"#, if o % 4 == 0 { "refund" } else { "order" })))
        .collect();
    let r = run(vec![], records, |p| {
        // As mappings run: matched straight off the records' bytes.
        p.filter = Filter::new(
            vec![
                sluice_app::filter::Pattern::compile(r#"{"value": {"type": ["refund"]}}"#).unwrap(),
                sluice_app::filter::Pattern::compile(r#"{"value": {"n": [{"numeric": [">=", 18]}]}}"#).unwrap(),
            ],
            false,
        );
    })
    .await;
    assert_eq!(calls(&r).concat(), vec![0, 4, 8, 12, 16, 18, 19], "filters OR, fields matched as JSON");
    assert_eq!(*r.commits.0.lock().unwrap().last().unwrap(), 20, "filtered-out records are committed");
    assert_eq!(r.status.total(Counter::FilteredOutEvents), 13);
}

#[tokio::test(start_paused = true)]
async fn a_partition_of_only_filtered_records_still_commits() {
    let r = run(vec![], (0..5).map(|o| json_record(o, "plain text")).collect(), |p| {
        p.filter = Filter::documents(
            vec![sluice_app::filter::Pattern::compile(r#"{"value": [{"prefix": "ERROR"}]}"#).unwrap()],
            false,
        );
    })
    .await;
    assert!(calls(&r).is_empty());
    assert_eq!(*r.commits.0.lock().unwrap().last().unwrap(), 5);
}

/// A destination that records what it was given, failing its first
/// `fail_first` deliveries.
#[derive(Default)]
struct Dlq {
    got: Mutex<Vec<(i64, String, serde_json::Value)>>,
    fail_first: Mutex<u32>,
}

#[async_trait]
impl sluice_server::engine::destination::Destination for Dlq {
    async fn deliver(&self, f: &sluice_server::engine::destination::Failed<'_>) -> Result<Vec<String>, String> {
        let mut n = self.fail_first.lock().unwrap();
        if *n > 0 {
            *n -= 1;
            return Err("destination down".into());
        }
        for r in f.records {
            let src = EventSource::self_managed(&["b:1".into()]);
            let env = sluice_server::engine::destination::failure_record(f, r, &src, "http://fn");
            self.got.lock().unwrap().push((r.offset, f.condition.to_string(), env));
        }
        Ok(f.records.iter().map(|r| format!("dlq message {}", r.offset)).collect())
    }
    fn describe(&self) -> String {
        "test-dlq".into()
    }
}

/// One poison record in a batch of `n`: bisect sends it to the destination
/// alone, every other record once and in order.
async fn bisect_case(n: i64, poison: i64) {
    let dlq = Arc::new(Dlq::default());
    let target = Arc::new(Scripted { poison: Some(poison), ..Default::default() });
    let commits = Arc::new(Commits::default());
    let d = dlq.clone();
    let p = pipeline(target.clone(), commits.clone(), move |p| {
        p.batch_size = n as usize;
        p.bisect = true;
        p.max_retries = Some(0);
        p.destination = Some(d);
    });
    let (tx, rx) = mpsc::channel(n as usize);
    for o in 0..n {
        tx.send(record(o, 1)).await.unwrap();
    }
    let stop = CancellationToken::new();
    let status = p.status.clone();
    let task = tokio::spawn(pipeline::run(p, "t".into(), 0, rx, stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while commits.0.lock().unwrap().last() != Some(&n) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let _ = task.await;
    let calls = target.calls.lock().unwrap().clone();
    let ok: Vec<i64> = calls.iter().filter(|c| !c.contains(&poison)).flatten().copied().collect();
    assert_eq!(ok, (0..n).filter(|o| *o != poison).collect::<Vec<_>>(), "every good record once, in order");
    let got = dlq.got.lock().unwrap();
    assert_eq!(got.iter().map(|g| (g.0, g.1.as_str())).collect::<Vec<_>>(), vec![(poison, "RetryAttemptsExhausted")]);
    let env = &got[0].2;
    assert_eq!(env["KafkaBatchInfo"]["batchSize"], 1);
    assert_eq!(env["KafkaBatchInfo"]["recordInfo"]["offset"], poison.to_string());
    assert_eq!(env["responseContext"]["statusCode"], 500);
    assert_eq!(env["responseContext"]["executedVersion"], "3", "the version that ran, as the function's answer said");
    let payload = env["payload"].clone();
    assert!(payload.is_object(), "the payload is an object, as AWS documents it: {payload}");
    assert_eq!(payload["records"]["t-0"][0]["offset"], poison);
    // The failure ledger names the poison record alone, with the
    // destination's id of its failure record.
    let ledger = status.take_failed();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    let entry = &ledger[0];
    assert_eq!((entry.partition, entry.offset, entry.condition.as_str()), (0, poison, "RetryAttemptsExhausted"));
    assert_eq!(entry.destination, "test-dlq");
    assert_eq!(entry.destination_message.as_deref(), Some(format!("dlq message {poison}").as_str()));
    assert!(entry.error.contains("after 1 attempts"), "{}", entry.error);
    // The failing invocations: the whole batch, then the half holding the
    // poison record at each level, down to it alone.
    let failed = calls.iter().filter(|c| c.contains(&poison)).count();
    let levels = (n as f64).log2().ceil() as usize;
    println!("bisect: batch of {n}, one poison record: {} invocations, {failed} of them failed (the rest delivered the good records)", calls.len());
    assert!(failed <= levels + 1, "{failed} failed invocations");
    assert!(calls.len() <= 1 + 2 * levels, "{} invocations", calls.len());
    assert_eq!(*commits.0.lock().unwrap().last().unwrap(), n);
}

#[tokio::test(start_paused = true)]
async fn bisect_isolates_the_poison_record_and_the_rest_is_invoked() {
    bisect_case(100, 37).await;
    bisect_case(1000, 613).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_destination_holds_the_partition_until_it_delivers() {
    let dlq = Arc::new(Dlq { fail_first: Mutex::new(3), ..Default::default() });
    let target = Arc::new(Scripted { poison: Some(1), ..Default::default() });
    let d = dlq.clone();
    let r = {
        let commits = Arc::new(Commits::default());
        let p = pipeline(target.clone(), commits.clone(), move |p| {
            p.max_retries = Some(0);
            p.destination = Some(d);
        });
        let status = p.status.clone();
        let (tx, rx) = mpsc::channel(10);
        for o in 0..3 {
            tx.send(record(o, 1)).await.unwrap();
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(pipeline::run(p, "t".into(), 0, rx, stop.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(commits.0.lock().unwrap().is_empty(), "nothing committed while the destination is down");
        assert!(status.get().contains("cannot deliver"), "{}", status.get());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while commits.0.lock().unwrap().last() != Some(&3) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        let _ = task.await;
        commits
    };
    assert_eq!(*r.0.lock().unwrap(), vec![3]);
    assert_eq!(dlq.got.lock().unwrap().len(), 3, "the batch's records, once delivered");
}

#[tokio::test(start_paused = true)]
async fn with_metadata_on_filters_can_match_key_headers_and_partition() {
    use rdkafka::message::{Header, OwnedHeaders};
    let rec = |o: i64, key: &str, tenant: &str| {
        let h = OwnedHeaders::new().insert(Header { key: "tenant", value: Some(tenant.as_bytes()) });
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(key.as_bytes().to_vec()),
            "t".into(),
            Timestamp::CreateTime(crate_now()),
            0,
            o,
            Some(h),
        )
    };
    let records = vec![rec(0, "eu-1", "acme"), rec(1, "us-1", "acme"), rec(2, "eu-2", "other"), rec(3, "eu-3", "acme")];
    let pattern = r#"{"key": [{"prefix": "eu-"}], "headers": {"tenant": ["acme"]}, "partition": [0]}"#;
    let on = run(vec![], records.clone(), |p| {
        p.filter = Filter::documents(vec![sluice_app::filter::Pattern::compile(pattern).unwrap()], true);
    })
    .await;
    assert_eq!(calls(&on).concat(), vec![0, 3]);
    // Off (the AWS default), the same pattern sees only `value`: nothing matches.
    let off = run(vec![], records, |p| {
        p.filter = Filter::documents(vec![sluice_app::filter::Pattern::compile(pattern).unwrap()], false)
    })
    .await;
    assert!(calls(&off).is_empty());
    assert_eq!(*off.commits.0.lock().unwrap().last().unwrap(), 4);
}
