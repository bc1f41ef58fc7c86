//! The console's cost (`cargo bench -p sluice-server --bench console`):
//! 50 mappings × 12 partitions with live traffic, the metrics collector
//! storing their points, open pages streaming them. Prints figures; asserts
//! nothing. Traffic is simulated by bumping the pollers' counters directly
//! (the engine's own cost is the `engine` benchmark's): what is measured is
//! what metrics add. Reported:
//!  - CPU share of one core spent on metrics (collector + storage + streams),
//!    against the simulated traffic's own CPU in the same run;
//!  - resident memory of the process;
//!  - database growth per day at the default retention;
//!  - page weight of a mapping page (raw and gzip) and the wasm (gzip);
//!  - delay from an event to its point reaching an open stream.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leptos::prelude::LeptosOptions;
use rand::Rng;
use sluice_app::metrics::Counter;
use sluice_app::model::PartitionLag;
use sluice_server::shared::status::LiveStatus;
use sluice_server::{http, service, store};

const MAPPINGS: usize = 50;
const PARTITIONS: i32 = 12;
const SECONDS: u64 = 30;

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

fn gzip_len(bytes: &[u8]) -> usize {
    let mut child = std::process::Command::new("gzip")
        .arg("-6")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip output");
    let _ = writer.join();
    out.stdout.len()
}

/// Bumps counters as a mapping's pollers would: about `batches_per_s`
/// batches of 10 records each, spread over the partitions.
async fn traffic(statuses: Vec<Arc<LiveStatus>>, batches_per_s: u64, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (batches_per_s / 100).max(1);
    let mut lag_at = Instant::now();
    let mut offsets = vec![[0i64; PARTITIONS as usize]; statuses.len()];
    while !stop.is_cancelled() {
        tick.tick().await;
        let mut rng = rand::rng();
        for (i, s) in statuses.iter().enumerate() {
            for _ in 0..per_tick {
                let p = rng.random_range(0..PARTITIONS);
                let c = s.partition(p);
                LiveStatus::add(&c.polled, 10);
                LiveStatus::add(&c.bytes, 4000);
                offsets[i][p as usize] += 10;
                let _g = s.begin_invoke(10, 4500);
                s.record_duration(Duration::from_micros(rng.random_range(2000..40_000)));
                s.count(Counter::InvokedEvents, 10);
                s.count(Counter::CommittedEvents, 10);
            }
        }
        // The lag reader's cadence.
        if lag_at.elapsed() >= Duration::from_secs(3) {
            lag_at = Instant::now();
            for (i, s) in statuses.iter().enumerate() {
                s.set_lag(
                    (0..PARTITIONS)
                        .map(|p| {
                            let end = offsets[i][p as usize] + 5;
                            PartitionLag {
                                partition: p,
                                committed_offset: Some(end - 5),
                                end_offset: end,
                                offset_lag: 5,
                                ..Default::default()
                            }
                        })
                        .collect(),
                );
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let st = store::Store::open(&url).await.unwrap();
    let svc = service::MappingService::new(st.clone());
    svc.auth().bootstrap(None, Some(common::TOKEN)).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..MAPPINGS {
        let spec = common::spec("127.0.0.1:9", &format!("topic-{i}"), "http://127.0.0.1:9/fn", &format!("group-{i}"));
        ids.push(svc.create(spec).await.unwrap().uuid);
    }
    let statuses: Vec<Arc<LiveStatus>> = ids.iter().map(|_| Arc::new(LiveStatus::default())).collect();
    {
        let registry = svc.live();
        let mut live = registry.lock().unwrap();
        for (id, s) in ids.iter().zip(&statuses) {
            live.insert(*id, s.clone());
        }
    }
    println!("console cost: {MAPPINGS} mappings × {PARTITIONS} partitions, ~100 batches/s per mapping, {SECONDS} s per phase");

    // Phase 1: traffic alone (the baseline).
    let stop = tokio_util::sync::CancellationToken::new();
    let t = tokio::spawn(traffic(statuses.clone(), 100, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, w0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    let traffic_cpu = (cpu_seconds() - c0) / w0.elapsed().as_secs_f64();

    // Phase 2: traffic + collector + console server with open streams.
    let metrics = svc.metrics().clone();
    let collector = metrics.start();
    let site = std::env::var("SLUICE_SITE_ROOT").unwrap_or_else(|_| {
        format!("{}/debug/site", std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = LeptosOptions::builder()
        .output_name("sluice")
        .site_root(site.clone())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build();
    let app = http::router(http::AppState::new(options, svc.clone()), axum::Router::new());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    let client = common::api_client();
    // Ten open mapping pages and one overview.
    let mut streams = Vec::new();
    for id in ids.iter().take(10) {
        streams.push(client.get(format!("{base}/api/v1/mappings/{id}/metrics/stream")).send().await.unwrap());
    }
    streams.push(client.get(format!("{base}/api/v1/metrics/stream")).send().await.unwrap());
    let streamed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for mut r in streams {
        let n = streamed.clone();
        tokio::spawn(async move {
            while let Ok(Some(b)) = r.chunk().await {
                n.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy0 = metrics.busy_ns.load(std::sync::atomic::Ordering::Relaxed);
    let full_window = async {
        // Fill the 15 minutes of live points a long-running node holds, so
        // memory and page weight are measured at their steady state.
        let mut t = sluice_server::clock::now_ms() - sluice_server::metrics::LIVE_WINDOW;
        for _ in 0..(sluice_server::metrics::LIVE_WINDOW / 1000) {
            t += 1000;
            let _ = metrics.collect(t);
        }
    };
    let (c1, w1) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    let wall = w1.elapsed().as_secs_f64();
    let with_cpu = (cpu_seconds() - c1) / wall;
    let busy = (metrics.busy_ns.load(std::sync::atomic::Ordering::Relaxed) - busy0) as f64 / 1e9 / wall;
    println!(
        "CPU: traffic alone {:.1}% of a core; with metrics, storage and 11 open streams {:.1}%: metrics cost {:.1}% of one core (collector alone {:.2}%; goal < 5%)",
        traffic_cpu * 100.0,
        with_cpu * 100.0,
        (with_cpu - traffic_cpu).max(0.0) * 100.0,
        busy * 100.0
    );
    println!(
        "streams: {:.1} kB/s to 10 mapping pages and an overview",
        streamed.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e3 / (wall + 2.0)
    );
    let before_fill = rss_mb();
    full_window.await;
    println!(
        "resident memory: {:.0} MB with {SECONDS} s of points, {:.0} MB with the full 15-minute window in memory (goal < 300 MB)",
        before_fill,
        rss_mb()
    );

    // Delay: an event, then its point on an open stream.
    let target = ids[0];
    let mut delays = Vec::new();
    for _ in 0..8 {
        let mut r = client.get(format!("{base}/api/v1/mappings/{target}/metrics/stream")).send().await.unwrap();
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..1000))).await;
        let at = Instant::now();
        statuses[0].count(Counter::Throttles, 1);
        let mut buf = String::new();
        'read: while let Ok(Some(b)) = r.chunk().await {
            buf.push_str(&String::from_utf8_lossy(&b));
            while let Some(i) = buf.find("\n\n") {
                let ev: String = buf.drain(..i + 2).collect();
                if ev.contains("\"Throttles\":") {
                    delays.push(at.elapsed().as_secs_f64() * 1000.0);
                    break 'read;
                }
            }
        }
    }
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "event → point on an open stream: median {:.0} ms, max {:.0} ms over {} events (collection every 1 s; goal < 1 s)",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );

    // Page weight.
    let page = client.get(format!("{base}/mappings/{target}")).send().await.unwrap().bytes().await.unwrap();
    let overview = client.get(format!("{base}/")).send().await.unwrap().bytes().await.unwrap();
    println!(
        "page weight: mapping page {:.0} kB ({:.0} kB gzip), overview {:.0} kB ({:.0} kB gzip)",
        page.len() as f64 / 1e3,
        gzip_len(&page) as f64 / 1e3,
        overview.len() as f64 / 1e3,
        gzip_len(&overview) as f64 / 1e3
    );
    match std::fs::read(format!("{site}/pkg/sluice_bg.wasm")) {
        Ok(w) => println!(
            "wasm: {:.0} kB, {:.0} kB gzip (goal < 1 MB compressed), from {site}",
            w.len() as f64 / 1e3,
            gzip_len(&w) as f64 / 1e3
        ),
        Err(e) => println!("wasm: not measured ({site}/pkg/sluice_bg.wasm: {e}); build it with scripts/build.sh"),
    }

    // Database growth: the stored minute points of this run, per day.
    stop.cancel();
    let _ = t.await;
    metrics.close();
    let _ = collector.await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (rows, bytes): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(LENGTH(point) + LENGTH(uuid) + 24), 0) FROM metric_points")
            .fetch_one(&pool)
            .await
            .unwrap();
    let per_row = bytes as f64 / rows.max(1) as f64;
    let day_minutes = MAPPINGS as f64 * 1440.0 * per_row;
    let day_quarters = MAPPINGS as f64 * 96.0 * per_row;
    println!(
        "database: {rows} points stored, {per_row:.0} bytes each ({PARTITIONS} partitions): {:.0} MB per day of 1-minute points (kept 2 days: {:.0} MB) + {:.1} MB per day of 15-minute points (kept 30 days: {:.0} MB); steady state ≈ {:.0} MB",
        day_minutes / 1e6,
        2.0 * day_minutes / 1e6,
        day_quarters / 1e6,
        30.0 * day_quarters / 1e6,
        (2.0 * day_minutes + 30.0 * day_quarters) / 1e6
    );
}
