//! Soak (`cargo bench -p sluice-server --bench soak`): the `sluice` binary
//! runs one mapping at a steady rate for SOAK_MINUTES (default 10; 30 for
//! the long form) against librdkafka's mock cluster, with a function that
//! fails one call in 50 (the mapping retries it). Prints the process's RSS,
//! open file descriptors, threads and database size after a warm-up and then
//! every minute, and the end as a ratio to the start: flat is within a few
//! percent (the database grows by its metric minutes, kept two days).
//! Asserts nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const TOKEN: &str = "sluice-soak-admin-token-0123456789";
const PARTITIONS: i32 = 4;

#[derive(Clone, Copy, Debug)]
struct Reading {
    rss_kb: u64,
    fds: usize,
    threads: u64,
    /// The database's own size (its pages, wherever they are).
    db_kb: u64,
    /// The write-ahead log's file, which grows to SQLite's checkpoint size.
    wal_kb: u64,
}

/// The database's size in pages, read through a read-only connection (the
/// file alone says little: until a checkpoint, new pages live in the WAL).
async fn db_kb(data: &std::path::Path) -> u64 {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", data.join("s.db").display());
    let Ok(mut c) = sqlx::SqliteConnection::connect(&url).await else { return 0 };
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&mut c).await.unwrap_or(0);
    let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&mut c).await.unwrap_or(0);
    let _ = c.close().await;
    (pages * size / 1024) as u64
}

async fn read(pid: u32, data: &std::path::Path) -> Reading {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    let wal_kb = std::fs::metadata(data.join("s.db-wal")).map(|m| m.len() / 1024).unwrap_or(0);
    Reading { rss_kb: field("VmRSS:"), fds, threads: field("Threads:"), db_kb: db_kb(data).await, wal_kb }
}

fn line(label: &str, r: Reading, delivered: u64) {
    println!(
        "{label:>8}: RSS {:>7} KiB, {:>3} fds, {:>3} threads, database {:>6} KiB (WAL file {:>5} KiB), {delivered} records delivered",
        r.rss_kb, r.fds, r.threads, r.db_kb, r.wal_kb
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let minutes: u64 = std::env::var("SOAK_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(10);
    let rate: u64 = std::env::var("SOAK_RATE").ok().and_then(|m| m.parse().ok()).unwrap_or(200);

    // The broker: the mock cluster on a thread of its own (it is not Send).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let c = rdkafka::mocking::MockCluster::new(1).unwrap();
        c.create_topic("soak", PARTITIONS, 1).unwrap();
        tx.send(c.bootstrap_servers()).unwrap();
        loop {
            std::thread::park();
        }
    });
    let bootstrap = rx.recv().unwrap();

    // The function: answers at once, fails one call in 50.
    let calls = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/fn",
        axum::routing::post({
            let (calls, delivered) = (calls.clone(), delivered.clone());
            move |body: axum::body::Bytes| async move {
                if calls.fetch_add(1, Ordering::Relaxed) % 50 == 49 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let n = body.windows(9).filter(|w| w == b"\"offset\":").count();
                delivered.fetch_add(n as u64, Ordering::Relaxed);
                StatusCode::OK
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fn_url = format!("http://{}/fn", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db, "--data-dir"])
        .arg(dir.path())
        .env("SLUICE_BOOTSTRAP_TOKEN", TOKEN)
        .env("SLUICE_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let l = lines.next().expect("sluice printed its address").unwrap();
            if let Some(rest) = l.split("console: ").nth(1) {
                break rest.trim_end_matches('/').to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        url
    };
    let mapping = serde_json::json!({
        "FunctionName": fn_url,
        "Topics": ["soak"],
        "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": [bootstrap]}},
        "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": "soak"},
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": 100,
        "MaximumBatchingWindowInSeconds": 1,
        "MaximumRetryAttempts": 3,
    });
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/mappings"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(mapping.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());

    // A steady rate: rate/10 records every 100 ms, ~400 bytes each.
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("linger.ms", "5").create().unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    tokio::spawn({
        let produced = produced.clone();
        async move {
            let value = "x".repeat(400);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut i = 0u64;
            loop {
                tick.tick().await;
                for _ in 0..rate / 10 {
                    let key = format!("k{}", i % 1000);
                    let rec =
                        FutureRecord::to("soak").key(&key).payload(&value).partition((i % PARTITIONS as u64) as i32);
                    if producer.send_result(rec).is_ok() {
                        produced.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            }
        }
    });

    println!("soak: {rate} records/s for {minutes} min, one call in 50 failing; sluice pid {}", child.id());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let start = read(child.id(), dir.path()).await;
    line("start", start, delivered.load(Ordering::Relaxed));
    let t = Instant::now();
    let mut end = start;
    for m in 1..=minutes {
        tokio::time::sleep(Duration::from_secs(60)).await;
        end = read(child.id(), dir.path()).await;
        line(&format!("{m} min"), end, delivered.load(Ordering::Relaxed));
    }
    let ratio = |a: f64, b: f64| if a > 0.0 { b / a } else { f64::NAN };
    println!(
        "after {:.0} min (end / start): RSS {:.3}, fds {:.3}, threads {:.3}, database {:.3} ({} KiB → {} KiB); {} produced, {} delivered, {} calls",
        t.elapsed().as_secs_f64() / 60.0,
        ratio(start.rss_kb as f64, end.rss_kb as f64),
        ratio(start.fds as f64, end.fds as f64),
        ratio(start.threads as f64, end.threads as f64),
        ratio(start.db_kb as f64, end.db_kb as f64),
        start.db_kb,
        end.db_kb,
        produced.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
        calls.load(Ordering::Relaxed),
    );
    let _ = child.kill();
    let _ = child.wait();
}
