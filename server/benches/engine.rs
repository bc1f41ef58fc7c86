//! Sluice's benchmark (`cargo bench -p sluice-server --bench engine`). Prints
//! figures; asserts nothing. Measures in one run:
//!  (a) topic → no-op HTTP function on loopback at BatchSize 1000, against a
//!      plain rdkafka consumer draining the same topic on the same broker;
//!  (b) Sluice's own cost without a broker: in-memory records through
//!      batch → invoke → commit, to an in-process no-op target and to a
//!      loopback HTTP target, per core of CPU time;
//!  (c) produce-to-invoke latency at window 0, light load;
//! and the peak resident memory.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message, Timestamp};
use sluice_server::engine::commit::Committer;
use sluice_server::engine::event::EventSource;
use sluice_server::engine::pipeline::{self, Pipeline};
use sluice_server::engine::target::http::HttpTarget;
use sluice_server::engine::target::{Outcome, Target};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const VALUE_BYTES: usize = 400;

fn rusage() -> libc::rusage {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u
}

fn cpu_seconds() -> f64 {
    let u = rusage();
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn peak_rss_mb() -> f64 {
    rusage().ru_maxrss as f64 / 1024.0
}

struct Noop;
#[async_trait]
impl Target for Noop {
    async fn invoke(&self, payload: String) -> Outcome {
        std::hint::black_box(payload);
        Outcome::Success { body: vec![] }
    }
}

struct CountCommits(AtomicU64);
impl Committer for CountCommits {
    fn commit(&self, _t: &str, _p: i32, next: i64) {
        self.0.store(next as u64, Ordering::Release);
    }
}

/// An HTTP function on loopback that only counts records.
async fn noop_function() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().route(
        "/fn",
        axum::routing::post(move |body: Bytes| {
            let c = c.clone();
            async move {
                // Count records without parsing: each has one "offset" key.
                let n = body.windows(9).filter(|w| w == b"\"offset\":").count();
                c.fetch_add(n as u64, Ordering::Relaxed);
                ""
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}/fn"), count)
}

async fn in_memory(target: Arc<dyn Target>, n: usize, label: &str, feeder_cpu: f64) {
    let commits = Arc::new(CountCommits(AtomicU64::new(0)));
    let p = Arc::new(Pipeline {
        batch_size: 1000,
        ..Pipeline::new(target, commits.clone(), EventSource::self_managed(&["b:9092".into()]))
    });
    let value = vec![b'v'; VALUE_BYTES];
    let (tx, rx) = mpsc::channel(10_000);
    let stop = CancellationToken::new();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let task = tokio::spawn(pipeline::run(p, "bench".into(), 0, rx, stop.clone()));
    for o in 0..n as i64 {
        let m = OwnedMessage::new(
            Some(value.clone()),
            Some(b"key".to_vec()),
            "bench".into(),
            Timestamp::CreateTime(1),
            0,
            o,
            None,
        );
        tx.send(m).await.unwrap();
    }
    while commits.0.load(Ordering::Acquire) < n as u64 {
        // Sleep, not spin: CPU time is what is measured.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    stop.cancel();
    let _ = task.await;
    println!(
        "(b) in-memory → {label}: {n} records in {wall:.2} s wall, {cpu:.2} s CPU: {:.0} records/s, {:.0} records/s per core; Sluice's part alone {:.0} records/s per core",
        n as f64 / wall,
        n as f64 / cpu,
        n as f64 / (cpu - feeder_cpu).max(1e-9)
    );
}

async fn baseline_consumer(bootstrap: String, topic: &str, n: usize, round: u32) -> f64 {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("bench-baseline-{round}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .unwrap();
        c.subscribe(&[&topic]).unwrap();
        let mut got = 0;
        let mut t = None;
        while got < n {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                t.get_or_insert_with(Instant::now);
                got += 1;
                std::hint::black_box(m.payload());
            }
        }
        n as f64 / t.unwrap().elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// The cost of making and sending the records alone (no pipeline), to
/// subtract from (b).
async fn feeder_only(n: usize) -> f64 {
    let value = vec![b'v'; VALUE_BYTES];
    let (tx, mut rx) = mpsc::channel::<OwnedMessage>(10_000);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let cpu0 = cpu_seconds();
    for o in 0..n as i64 {
        let m = OwnedMessage::new(
            Some(value.clone()),
            Some(b"key".to_vec()),
            "bench".into(),
            Timestamp::CreateTime(1),
            0,
            o,
            None,
        );
        tx.send(m).await.unwrap();
    }
    drop(tx);
    drain.await.unwrap();
    cpu_seconds() - cpu0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n_mem: usize = std::env::var("BENCH_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    println!(
        "machine: {} cores; value size {VALUE_BYTES} bytes",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );

    // (b) first: no broker noise. On a single-threaded runtime of its own,
    // so one core does everything and CPU time is not blurred by wake-ups
    // between threads.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let feeder = feeder_only(n_mem).await;
            println!("(b) one thread: making and queueing {n_mem} records alone: {feeder:.2} s CPU (included below)");
            in_memory(Arc::new(Noop), n_mem, "in-process no-op target, one thread", feeder).await;
        });
    })
    .join()
    .unwrap();
    let feeder = feeder_only(n_mem).await;
    let (url, _) = noop_function().await;
    in_memory(
        Arc::new(HttpTarget::new(&url, Duration::from_secs(30), &Default::default()).unwrap()),
        n_mem / 5,
        "loopback HTTP no-op function",
        feeder / 5.0,
    )
    .await;

    // (a) through a broker.
    let broker = Broker::tansu().unwrap_or_else(Broker::mock);
    let name = if broker.is_real() { "tansu 0.6.0 (sqlite storage)" } else { "librdkafka mock cluster" };
    let per_partition: usize =
        std::env::var("BENCH_BROKER_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000) / 6;
    let n = per_partition * 6;
    broker.create_topic("bench-a", 6).await;
    let producer = broker.producer();
    let value = vec![b'v'; VALUE_BYTES];
    let t = Instant::now();
    let mut acks = Vec::new();
    for i in 0..n {
        let key = format!("k{i}");
        let rec = FutureRecord::to("bench-a").key(&key).payload(&value[..]).partition((i % 6) as i32);
        acks.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    println!("(a) broker: {name}; produced {n} records in {:.1} s", t.elapsed().as_secs_f64());
    let mb = |r: f64| r * VALUE_BYTES as f64 / 1e6;
    let (url, count) = noop_function().await;
    let mut s = Sluice::start().await;
    let mut ratios = Vec::new();
    // Broker throughput varies from run to run: alternate the two, three times.
    for round in 1..=3 {
        let base = baseline_consumer(broker.bootstrap().to_string(), "bench-a", n, round).await;
        count.store(0, Ordering::Relaxed);
        let mut sp = spec(broker.bootstrap(), "bench-a", &url, &format!("bench-sluice-{round}"));
        sp.batch_size = 1000;
        sp.maximum_batching_window_in_seconds = std::env::var("BENCH_WINDOW").ok().and_then(|w| w.parse().ok());
        let t = Instant::now();
        let m = s.mappings.create(sp).await.unwrap();
        let mut first: Option<Instant> = None;
        while (count.load(Ordering::Relaxed) as usize) < n {
            if first.is_none() && count.load(Ordering::Relaxed) > 0 {
                first = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sluice = n as f64 / first.unwrap_or(t).elapsed().as_secs_f64();
        s.mappings.delete(m.uuid).await.unwrap();
        println!(
            "(a) round {round}: plain rdkafka consumer {base:.0} records/s ({:.1} MB/s); Sluice → loopback HTTP no-op, BatchSize 1000: {sluice:.0} records/s ({:.1} MB/s, first invocation {:.1} s after create); ratio {:.2}",
            mb(base),
            mb(sluice),
            first.map(|f| (f - t).as_secs_f64()).unwrap_or(0.0),
            sluice / base
        );
        ratios.push(sluice / base);
    }
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("(a) median ratio Sluice / plain consumer: {:.2}", ratios[1]);
    s.stop().await;

    // (c) latency at window 0, one record every 20 ms.
    broker.create_topic("bench-c", 1).await;
    let lat = Arc::new(Mutex::new(Vec::<f64>::new()));
    let l2 = lat.clone();
    let app = axum::Router::new().route(
        "/fn",
        axum::routing::post(move |body: Bytes| {
            let l2 = l2.clone();
            async move {
                let now = sluice_server::clock::now_ms() as f64;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for recs in v["records"].as_object().unwrap().values() {
                    for r in recs.as_array().unwrap() {
                        l2.lock().unwrap().push(now - r["timestamp"].as_f64().unwrap());
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fn", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut s = Sluice::start().await;
    let mut sp = spec(broker.bootstrap(), "bench-c", &url, "bench-latency");
    sp.maximum_batching_window_in_seconds = Some(0);
    sp.starting_position = sluice_app::spec::StartingPosition::Latest;
    let m = s.mappings.create(sp).await.unwrap();
    while s.mappings.get(m.uuid).await.unwrap().status.state != sluice_app::model::MappingState::Enabled {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let producer: rdkafka::producer::FutureProducer =
        ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).set("linger.ms", "0").create().unwrap();
    let samples = 300;
    for i in 0..samples {
        let ts = sluice_server::clock::now_ms();
        let v = format!("{i}");
        producer
            .send(FutureRecord::<str, str>::to("bench-c").payload(&v).timestamp(ts), Duration::from_secs(5))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut l = lat.lock().unwrap().clone();
    s.stop().await;
    let baseline = {
        // The same records, read by a plain consumer with the same fetch settings.
        let bootstrap = broker.bootstrap().to_string();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "bench-latency-baseline")
                .set("auto.offset.reset", "latest")
                .set("fetch.wait.max.ms", "10")
                .set("socket.nagle.disable", "true")
                .create()
                .unwrap();
            c.subscribe(&["bench-c"]).unwrap();
            let p: rdkafka::producer::BaseProducer =
                ClientConfig::new().set("bootstrap.servers", &bootstrap).set("linger.ms", "0").create().unwrap();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                c.poll(Duration::from_millis(50));
            }
            let mut l = Vec::new();
            for i in 0..100 {
                let v = format!("b{i}");
                p.send(
                    rdkafka::producer::BaseRecord::<str, str>::to("bench-c")
                        .payload(&v)
                        .timestamp(sluice_server::clock::now_ms()),
                )
                .unwrap();
                p.poll(Duration::ZERO);
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(500) {
                    if let Some(Ok(m)) = c.poll(Duration::from_millis(1)) {
                        l.push((sluice_server::clock::now_ms() - m.timestamp().to_millis().unwrap()) as f64);
                        break;
                    }
                }
            }
            l.sort_by(|a, b| a.partial_cmp(b).unwrap());
            l
        })
        .await
        .unwrap()
    };
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| l.get(((l.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
    println!(
        "(c) produce → invoke latency at window 0 ({} of {samples} records): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let bp = |q: f64| baseline.get(((baseline.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
    println!("(c) baseline, plain consumer on the same broker: p50 {:.1} ms, p99 {:.1} ms", bp(0.5), bp(0.99));
    println!("peak resident memory of this benchmark process: {:.0} MB", peak_rss_mb());

    // (d) Sluice's memory against the backlog: the real binary drains a
    // small and a ten times larger backlog; its peak RSS should not follow.
    // On the mock cluster always: tansu 0.6 on SQLite stops serving fetches
    // of a topic past about 20,000 records from a batching producer.
    let broker = Broker::mock();
    let small: usize = std::env::var("BENCH_BACKLOG").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    for (i, backlog) in [small, small * 10].into_iter().enumerate() {
        let topic = format!("bench-d{i}");
        broker.create_topic(&topic, 6).await;
        let t = Instant::now();
        produce_n(&broker, &topic, backlog).await;
        let produced = t.elapsed().as_secs_f64();
        let (url, count) = noop_function().await;
        let peak = drain_with_binary(&broker, &topic, &url, backlog, &count).await;
        println!("(d) backlog of {backlog} records (produced in {produced:.0} s): sluice process peak RSS {peak:.0} MB while draining it");
    }
}

async fn produce_n(broker: &Broker, topic: &str, n: usize) {
    let producer = broker.producer();
    let value = vec![b'v'; VALUE_BYTES];
    let mut acks = std::collections::VecDeque::new();
    for i in 0..n {
        let rec = FutureRecord::<str, [u8]>::to(topic).payload(&value[..]).partition((i % 6) as i32);
        acks.push_back(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
        if acks.len() > 50_000 {
            acks.pop_front().unwrap().await.unwrap().unwrap();
        }
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
}

/// Runs the `sluice` binary on the backlog; returns its peak RSS in MB.
async fn drain_with_binary(broker: &Broker, topic: &str, url: &str, n: usize, count: &AtomicU64) -> f64 {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SLUICE_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let api = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(u) = l.split("console: ").nth(1) {
            break u.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let mut sp = spec(broker.bootstrap(), topic, url, &format!("bench-{topic}"));
    sp.batch_size = 1000;
    reqwest::Client::new()
        .post(format!("{api}/api/v1/mappings"))
        .header("content-type", "application/json")
        .body(serde_json::to_string(&sp).unwrap())
        .send()
        .await
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let rss = || {
        std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while (count.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = rss();
    let _ = child.kill();
    let _ = child.wait();
    peak
}
