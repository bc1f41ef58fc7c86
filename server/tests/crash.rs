//! Crash test: Sluice runs as its own process and is killed with SIGKILL
//! several times while it works, then restarted. Every record must reach the
//! function at least once, no committed offset may run ahead of what the
//! function received, and duplicates stay within the batches in flight
//! (invoked, or invoked and not yet committed).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

const PARTITIONS: i32 = 6;
const BATCH: i64 = 100;

/// Highest offset below which every record of the partition was delivered.
fn contiguous(seen: &BTreeMap<i32, Vec<i64>>) -> BTreeMap<i32, i64> {
    (0..PARTITIONS)
        .map(|p| {
            let mut got: Vec<i64> = seen.get(&p).cloned().unwrap_or_default();
            got.sort_unstable();
            got.dedup();
            let n = got.iter().enumerate().take_while(|(i, o)| **o == *i as i64).count();
            (p, n as i64)
        })
        .collect()
}

/// One crash test at a time: each runs Sluice and a broker as processes and
/// kills them, and two at once on two cores starve each other's restarts.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_repeatedly_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let broker = Broker::tansu().unwrap_or_else(Broker::mock);
    let total_per_partition = 2_000;
    broker.create_topic("crash", PARTITIONS).await;
    broker.produce("crash", PARTITIONS, total_per_partition, None).await;
    let f = Recorder::default();
    let url = f.serve().await;
    *f.delay_ms.lock().unwrap() = 5;

    let dir = tempfile::tempdir().unwrap();
    let db = database_url(dir.path()).await;
    let mut p = SluiceProcess::start(dir.path(), &db, &[]);
    let mut spec = spec(broker.bootstrap(), "crash", &url, "g-crash");
    spec.batch_size = BATCH;
    p.create(&spec).await;

    let total = (total_per_partition as i64 * PARTITIONS as i64) as usize;
    let kills = 4;
    for k in 1..=kills {
        let target = total * k / (kills + 1);
        assert!(f.wait_for(target, Duration::from_secs(120)).await, "stalled at {} before kill {k}", f.count());
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Nothing committed beyond what the function received.
        let committed = broker.committed("g-crash", "crash", PARTITIONS);
        let delivered = contiguous(&f.by_partition());
        for (part, c) in &committed {
            assert!(*c <= delivered[part], "partition {part}: committed {c} but only {} delivered", delivered[part]);
        }
        println!("kill {k}: {} deliveries so far, committed {committed:?}", f.count());
        p = SluiceProcess::start(dir.path(), &db, &[]);
    }
    let t = Instant::now();
    let ends = broker.end_offsets("crash", PARTITIONS);
    loop {
        let c = contiguous(&f.by_partition());
        if c == ends {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "after the last restart, delivered {c:?} of {ends:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A killed member's partitions move on only once the broker counts it
    // out (its session timeout) and the group rebalances: slow on a loaded machine.
    let committed_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = broker.committed("g-crash", "crash", PARTITIONS);
        if committed == ends {
            break;
        }
        assert!(Instant::now() < committed_deadline, "final commit missing: committed {committed:?}, ends {ends:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.child.kill().unwrap();
    let _ = p.child.wait();

    let deliveries = f.count();
    let duplicates = deliveries - total;
    // At each kill, per partition: the batch being invoked, and the one
    // before it if its (asynchronous) commit had not reached the broker yet.
    let bound = kills * PARTITIONS as usize * 2 * BATCH as usize;
    println!(
        "{} broker: {total} records, {kills} kills, {deliveries} deliveries, {duplicates} duplicates (bound {bound}), every offset delivered and committed",
        if broker.is_real() { "tansu" } else { "mock" }
    );
    assert!(duplicates <= bound, "{duplicates} duplicates exceed {bound}");
}

/// Ten batches in flight in one partition (ParallelizationFactor 10), killed
/// twice: nothing is ever committed past a record some lane had not
/// finished, so a restart re-delivers only records at or after the
/// committed offset; every record arrives, each key's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ten_lanes_redelivers_only_after_the_committed_offset() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let broker = Broker::tansu().unwrap_or_else(Broker::mock);
    let total = 2_000usize;
    broker.create_topic("crash-lanes", 1).await;
    produce_keyed(broker.bootstrap(), "crash-lanes", total, 50).await;
    let f = Recorder::default();
    let url = f.serve().await;
    *f.delay_ms.lock().unwrap() = 20;

    let dir = tempfile::tempdir().unwrap();
    let db = database_url(dir.path()).await;
    let mut p = SluiceProcess::start(dir.path(), &db, &[]);
    let mut spec = spec(broker.bootstrap(), "crash-lanes", &url, "g-crash-lanes");
    spec.batch_size = 10;
    spec.parallelization_factor = Some(10);
    p.create(&spec).await;

    let first_seen = |f: &Recorder| {
        let mut got: Vec<i64> = f.by_partition().get(&0).cloned().unwrap_or_default();
        got.sort_unstable();
        got.dedup();
        got.iter().enumerate().take_while(|(i, o)| **o == *i as i64).count() as i64
    };
    for k in 1..=2 {
        assert!(f.wait_for(total * k / 3, Duration::from_secs(120)).await, "stalled at {} before kill {k}", f.count());
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let committed = broker.committed("g-crash-lanes", "crash-lanes", 1)[&0];
        let delivered = first_seen(&f);
        assert!(committed <= delivered, "committed {committed} but only {delivered} delivered without a gap");
        println!("ten lanes, kill {k}: {} deliveries so far, committed {committed}", f.count());
        p = SluiceProcess::start(dir.path(), &db, &[]);
    }
    let t = Instant::now();
    while first_seen(&f) < total as i64 {
        assert!(t.elapsed() < Duration::from_secs(120), "after the last restart, {} of {total}", first_seen(&f));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while broker.committed("g-crash-lanes", "crash-lanes", 1)[&0] != total as i64 {
        assert!(Instant::now() < deadline, "final commit missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.child.kill().unwrap();
    let _ = p.child.wait();
    for (key, seq) in sequences_by_key(&f.seen.lock().unwrap()) {
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{key} out of order: {seq:?}");
    }
    println!("ten lanes: {total} records, 2 kills, {} deliveries ({} duplicates)", f.count(), f.count() - total);
}
