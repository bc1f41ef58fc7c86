//! Offset resets against a real broker (tansu): preview numbers, what gets
//! delivered after a reset, and nothing lost while records flow. Skipped
//! where tansu is not installed (scripts/test.sh installs it and requires it).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use sluice_app::reset::{ResetRequest, Strategy};
use sluice_server::service::ServiceError;
use uuid::Uuid;

fn req(strategy: Strategy) -> ResetRequest {
    ResetRequest { strategy, timestamp: None, offsets: None, shift_by: None, partitions: None, dry_run: false }
}

/// Offsets delivered per partition after the first `skip` deliveries.
fn delivered_after(f: &Recorder, skip: usize) -> BTreeMap<i32, Vec<i64>> {
    let mut m: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o, _) in f.seen.lock().unwrap().iter().skip(skip) {
        m.entry(*p).or_default().push(*o);
    }
    m
}

async fn started(b: &Broker, topic: &str, partitions: i32) -> (Sluice, Recorder, Uuid) {
    b.create_topic(topic, partitions).await;
    let f = Recorder::default();
    let url = f.serve().await;
    let s = Sluice::start().await;
    let id = s.mappings.create(spec(b.bootstrap(), topic, &url, &format!("g-{topic}"))).await.unwrap().uuid;
    (s, f, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_to_a_time_continues_at_the_first_record_at_or_after_it() {
    let Some(b) = Broker::tansu() else { return };
    let now = sluice_server::clock::now_ms();
    let (t0, t1) = (now - 600_000, now - 300_000);
    let topic = "by-time";
    b.create_topic(topic, 3).await;
    b.produce(topic, 3, 50, Some(t0)).await;
    b.produce(topic, 3, 50, Some(t1)).await;
    let f = Recorder::default();
    let url = f.serve().await;
    let mut s = Sluice::start().await;
    let id = s.mappings.create(spec(b.bootstrap(), topic, &url, "g-time")).await.unwrap().uuid;
    assert!(f.wait_for(300, Duration::from_secs(30)).await);
    wait_committed(&b, "g-time", topic, &(0..3).map(|p| (p, 100)).collect(), Duration::from_secs(30)).await;

    // Preview: from 100 back to 50 on each partition, 50 to re-process.
    let preview = s
        .mappings
        .reset(id, ResetRequest { timestamp: Some(t1), dry_run: true, ..req(Strategy::AtTimestamp) }, "test")
        .await
        .unwrap();
    assert!(!preview.applied);
    for p in &preview.partitions {
        assert_eq!((p.before, p.after, p.delta, p.reprocessed, p.skipped), (Some(100), 50, -50, 50, 0), "{p:?}");
    }
    assert_eq!(f.count(), 300, "a preview changes nothing");

    let done =
        s.mappings.reset(id, ResetRequest { timestamp: Some(t1), ..req(Strategy::AtTimestamp) }, "test").await.unwrap();
    assert!(done.applied);
    assert!(f.wait_for(450, Duration::from_secs(30)).await, "re-delivered {}", f.count() - 300);
    let again = delivered_after(&f, 300);
    for p in 0..3 {
        assert_eq!(
            again[&p],
            (50..100).collect::<Vec<_>>(),
            "partition {p} resumes at the first record at or after the time"
        );
    }
    // Delivered is not yet committed: the preview below starts from the commits.
    wait_committed(&b, "g-time", topic, &(0..3).map(|p| (p, 100)).collect(), Duration::from_secs(30)).await;

    // A time after the last record: the end, never a rewind (tansu answers
    // such a look-up with offset 0).
    let past = s
        .mappings
        .reset(id, ResetRequest { timestamp: Some(t1 + 1000), dry_run: true, ..req(Strategy::AtTimestamp) }, "test")
        .await
        .unwrap();
    for p in &past.partitions {
        assert_eq!((p.after, p.delta), (100, 0), "{p:?}");
    }

    // The audit log has the applied reset, with offsets before and after.
    let log = s.mappings.resets(id).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].actor, "test");
    assert_eq!(log[0].request.strategy, Strategy::AtTimestamp);
    assert!(log[0].partitions.iter().all(|p| p.before == Some(100) && p.after == 50));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shift_by_redelivers_exactly_the_last_records_of_the_chosen_partitions() {
    let Some(b) = Broker::tansu() else { return };
    let topic = "shift";
    let (mut s, f, id) = started(&b, topic, 3).await;
    b.produce(topic, 3, 150, None).await;
    assert!(f.wait_for(450, Duration::from_secs(30)).await);
    wait_committed(&b, "g-shift", topic, &(0..3).map(|p| (p, 150)).collect(), Duration::from_secs(30)).await;

    let r = ResetRequest { shift_by: Some(-100), partitions: Some(vec![1]), ..req(Strategy::ShiftBy) };
    let out = s.mappings.reset(id, r, "test").await.unwrap();
    assert_eq!(out.partitions.len(), 1);
    assert_eq!(
        (out.partitions[0].before, out.partitions[0].after, out.partitions[0].reprocessed),
        (Some(150), 50, 100)
    );
    assert!(f.wait_for(550, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = delivered_after(&f, 450);
    assert_eq!(again.get(&1), Some(&(50..150).collect::<Vec<_>>()));
    assert_eq!(again.get(&0), None, "partition 0 left alone");
    assert_eq!(again.get(&2), None, "partition 2 left alone");

    // Out of range: clamped, and said so.
    let far = s
        .mappings
        .reset(id, ResetRequest { shift_by: Some(-1000), dry_run: true, ..req(Strategy::ShiftBy) }, "test")
        .await
        .unwrap();
    assert!(
        far.partitions.iter().all(|p| p.after == 0 && p.note.as_deref().is_some_and(|n| n.contains("clamped"))),
        "{far:?}"
    );
    // At i64's very ends: clamped the same way (it overflowed before).
    for (shift, after) in [(i64::MAX, 150), (i64::MIN + 1, 0), (i64::MIN, 0)] {
        let r = s
            .mappings
            .reset(id, ResetRequest { shift_by: Some(shift), dry_run: true, ..req(Strategy::ShiftBy) }, "test")
            .await
            .unwrap();
        assert!(
            r.partitions.iter().all(|p| p.after == after && p.note.is_some() && p.reprocessed >= 0 && p.skipped >= 0),
            "{shift}: {r:?}"
        );
    }
    // A partition the topic lacks is refused by name.
    let bad = s.mappings.reset(id, ResetRequest { partitions: Some(vec![7]), ..req(Strategy::Latest) }, "test").await;
    match bad {
        Err(ServiceError::Invalid(e)) => {
            assert!(e[0].field == "Partitions" && e[0].message.contains("does not exist"), "{e:?}")
        }
        other => panic!("{other:?}"),
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_exactly_the_lag_in_the_preview_and_one_reset_runs_at_a_time() {
    let Some(b) = Broker::tansu() else { return };
    let topic = "latest";
    let (mut s, f, id) = started(&b, topic, 2).await;
    b.produce(topic, 2, 20, None).await;
    assert!(f.wait_for(40, Duration::from_secs(30)).await);
    wait_committed(&b, "g-latest", topic, &(0..2).map(|p| (p, 20)).collect(), Duration::from_secs(30)).await;
    // The function stops answering: a backlog builds.
    *f.status.lock().unwrap() = 503;
    b.produce(topic, 2, 80, None).await;
    let preview = s.mappings.reset(id, ResetRequest { dry_run: true, ..req(Strategy::Latest) }, "test").await.unwrap();
    let skipped: i64 = preview.partitions.iter().map(|p| p.skipped).sum();
    assert_eq!(skipped, 160, "{preview:?}");

    // Two operators at once: one applies, the other is told to wait.
    let (a, c) = tokio::join!(
        s.mappings.reset(id, req(Strategy::Latest), "alice"),
        s.mappings.reset(id, req(Strategy::Latest), "bob")
    );
    let conflicts = [&a, &c].iter().filter(|r| matches!(r, Err(ServiceError::Conflict(_)))).count();
    assert_eq!(conflicts, 1, "{a:?} / {c:?}");
    *f.status.lock().unwrap() = 200;
    let seen = f.count();
    b.produce(topic, 2, 10, None).await;
    assert!(f.wait_for(seen + 20, Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = delivered_after(&f, seen);
    for p in 0..2 {
        assert_eq!(after[&p], (100..110).collect::<Vec<_>>(), "partition {p}: the skipped backlog is not delivered");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_while_records_flow_loses_nothing_outside_the_change() {
    let Some(b) = Broker::tansu() else { return };
    let topic = "flowing";
    let (mut s, f, id) = started(&b, topic, 3).await;
    let producer = {
        let servers = b.bootstrap().to_string();
        tokio::spawn(async move {
            for _ in 0..20 {
                produce_on(&servers, topic, 3, 50, None).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let out = s
        .mappings
        .reset(id, ResetRequest { shift_by: Some(-10), partitions: Some(vec![0]), ..req(Strategy::ShiftBy) }, "test")
        .await
        .unwrap();
    producer.await.unwrap();
    assert!(f.wait_for(3000 + 10, Duration::from_secs(60)).await, "delivered {}", f.count());
    let ends = b.end_offsets(topic, 3);
    wait_committed(&b, "g-flowing", topic, &ends, Duration::from_secs(30)).await;
    // Every record of every partition was delivered, in order per partition
    // (a reset or a restart may repeat a suffix, never skip).
    assert_complete_and_ordered(&f.by_partition(), &ends, &BTreeMap::new());
    let p0 = &out.partitions[0];
    assert_eq!(p0.reprocessed, p0.before.unwrap_or(0) - p0.after);
    s.stop().await;
}
