//! ParallelizationFactor (`cargo bench -p sluice-server --bench lanes`).
//! Prints figures; asserts nothing. In one run: the time to drain one
//! partition of 2,000 records over 200 and over 2,000 keys to a function that takes 50 ms a
//! call (BatchSize 10), at factors 1, 2, 5, 10 and 50, each as a ratio to
//! factor 1; and the CPU cost per record at factor 1 and factor 10 with a
//! function that answers at once (the lanes' own overhead).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::message::OwnedMessage;
use rdkafka::Timestamp;
use sluice_server::engine::commit::Committer;
use sluice_server::engine::event::EventSource;
use sluice_server::engine::pipeline::{self, Pipeline};
use sluice_server::engine::target::{Outcome, Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Function(Duration);

#[async_trait]
impl Target for Function {
    async fn invoke(&self, _payload: String) -> Outcome {
        if !self.0.is_zero() {
            tokio::time::sleep(self.0).await;
        }
        Outcome::Success { body: vec![] }
    }
}

#[derive(Default)]
struct Done(AtomicU64);
impl Committer for Done {
    fn commit(&self, _topic: &str, _partition: i32, next_offset: i64) {
        self.0.fetch_max(next_offset as u64, Ordering::Relaxed);
    }
}

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Drains `n` records over `keys` keys at `lanes`; wall time and CPU time.
async fn drain(lanes: usize, n: i64, keys: i64, call: Duration, batch: usize) -> (Duration, f64) {
    let done = Arc::new(Done::default());
    let p = Pipeline {
        batch_size: batch,
        lanes,
        ..Pipeline::new(Arc::new(Function(call)), done.clone(), EventSource::self_managed(&["b:1".into()]))
    };
    // Every record queued before the clock starts.
    let (tx, rx) = mpsc::channel(n as usize);
    let value = vec![b'x'; 400];
    for o in 0..n {
        let key = format!("customer-{}", o % keys).into_bytes();
        let m = OwnedMessage::new(Some(value.clone()), Some(key), "t".into(), Timestamp::CreateTime(1), 0, o, None);
        tx.send(m).await.unwrap();
    }
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline::run(Arc::new(p), "t".into(), 0, rx, stop.clone()));
    while done.0.load(Ordering::Relaxed) < n as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = (t.elapsed(), cpu_seconds() - cpu);
    stop.cancel();
    let _ = task.await;
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Lanes are chosen by key hash: with few keys a lane, some lanes get
    // more records than others, and the busiest lane sets the drain time.
    for keys in [200, 2_000] {
        println!("# ParallelizationFactor: one partition, 2000 records, {keys} keys, 50 ms a call, BatchSize 10");
        let mut base = None;
        for factor in [1, 2, 5, 10, 50] {
            let (t, _) = drain(factor, 2_000, keys, Duration::from_millis(50), 10).await;
            let b = *base.get_or_insert(t);
            println!(
                "factor {factor:>2}: drained in {:>6.2} s, {:>5.1}x faster than factor 1",
                t.as_secs_f64(),
                b.as_secs_f64() / t.as_secs_f64()
            );
        }
    }
    println!("# the lanes' own cost: 200,000 records, 1000 keys, a function answering at once, BatchSize 100");
    for round in 1..=3 {
        let mut line = format!("round {round}:");
        for factor in [1, 10] {
            let (t, cpu) = drain(factor, 200_000, 1_000, Duration::ZERO, 100).await;
            line += &format!(
                "  factor {factor}: {:.2} M records/s, {:.2} µs CPU a record",
                200_000.0 / t.as_secs_f64() / 1e6,
                cpu * 1e6 / 200_000.0
            );
        }
        println!("{line}");
    }
}
