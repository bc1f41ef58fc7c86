//! Faults outside Sluice, against real processes: a broker killed and
//! restarted on the same storage, a broker hung (SIGSTOP), a broker that
//! does not answer while a poller starts, and functions slower than the
//! invocation timeout. Each checks that nothing is lost or committed early,
//! and that the mapping's status says what is wrong while it lasts.
//!
//! The broker is tansu behind a relay the test owns, so the clients'
//! reconnect attempts can be counted and the path to the broker can hang. Kept to a few thousand records per
//! topic: tansu 0.6 on SQLite stops serving fetches of a topic holding
//! about 20,000 records from a batching producer.
//!
//! The database does not matter here: these run on SQLite only.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

/// One at a time: each kills or stops a broker and measures how long
/// recovery takes; two at once on two cores blur the figures.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A tansu broker behind a relay: killed, stopped and restarted on the
/// same storage and port.
struct Faulty {
    bin: std::path::PathBuf,
    tansu: Option<Reaped>,
    dir: tempfile::TempDir,
    plain: String,
    relay: Relay,
}

impl Faulty {
    /// None (the test is skipped) without tansu, or on a PostgreSQL run.
    async fn start() -> Option<Faulty> {
        if std::env::var_os("SLUICE_TEST_POSTGRES").is_some() {
            eprintln!("broker faults do not depend on the database: run on SQLite only");
            return None;
        }
        let Some(bin) = tansu_bin() else {
            assert!(std::env::var_os("SLUICE_REQUIRE_TANSU").is_none(), "tansu is required but not installed");
            eprintln!("tansu not installed: broker fault test skipped");
            return None;
        };
        let public = free_addr();
        let (tansu, dir, plain) = tansu_behind(&bin, &public);
        let relay = Relay::start(&public, plain.clone()).await;
        Some(Faulty { bin, tansu: Some(tansu), dir, plain, relay })
    }

    fn bootstrap(&self) -> &str {
        &self.relay.addr
    }

    fn pid(&self) -> u32 {
        self.tansu.as_ref().unwrap().0.id()
    }

    fn kill(&mut self) {
        if let Some(mut t) = self.tansu.take() {
            t.0.kill().unwrap();
            t.0.wait().unwrap();
        }
    }

    fn restart(&mut self) {
        self.tansu = Some(spawn_tansu(&self.bin, self.dir.path(), &self.plain, &self.relay.addr, &[]));
    }
}

/// Produces `per_tick` records to each partition every 100 ms until told to
/// stop; records sent while the broker is down wait in the producer and go
/// when it is back. Returns how many were acknowledged (all, or it panics).
fn keep_producing(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    per_tick: usize,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let (topic, flag) = (topic.to_string(), stop.clone());
    let task = tokio::spawn(async move {
        let mut acks = Vec::new();
        let mut i = 0usize;
        while !flag.load(Ordering::Relaxed) {
            for p in 0..partitions {
                for _ in 0..per_tick {
                    let value = format!("{p}-{i}");
                    let rec = FutureRecord::<str, str>::to(&topic).partition(p).payload(&value).key("k");
                    acks.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
                    i += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let n = acks.len();
        for a in acks {
            a.await.unwrap().unwrap();
        }
        n
    });
    (stop, task)
}

async fn wait_count(f: &Recorder, n: usize, within: Duration, what: &str) -> Duration {
    let t = Instant::now();
    assert!(f.wait_for(n, within).await, "{what}: {} deliveries of {n} within {within:?}", f.count());
    t.elapsed()
}

/// Every offset up to the end delivered and committed; deliveries and
/// duplicates.
async fn wait_all_done(
    s: &SluiceProcess,
    id: &str,
    b: &str,
    topic: &str,
    group: &str,
    partitions: i32,
    f: &Recorder,
) -> Duration {
    let t = Instant::now();
    let ends = end_offsets_on(b, topic, partitions);
    let starts = (0..partitions).map(|p| (p, 0)).collect();
    loop {
        let seen = f.by_partition();
        let complete = ends.iter().all(|(p, end)| {
            let mut got = seen.get(p).cloned().unwrap_or_default();
            got.sort_unstable();
            got.dedup();
            got.len() as i64 == *end
        });
        if complete {
            assert_complete_and_ordered(&seen, &ends, &starts);
            break;
        }
        if t.elapsed() > Duration::from_secs(180) {
            panic!(
                "not everything delivered: {} deliveries, ends {ends:?}; status: {}",
                f.count(),
                s.last_result(id).await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        if committed_on(b, group, topic, partitions) == ends {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(200),
            "final commit missing: {:?}",
            committed_on(b, group, topic, partitions)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The mapping's Health and HealthReason on the overview.
async fn health(s: &SluiceProcess, id: &str) -> (String, String) {
    let Ok((_, v)) = s.get("/api/v1/overview", Duration::from_secs(5)).await else { return Default::default() };
    let m = v["Mappings"].as_array().into_iter().flatten().find(|m| m["UUID"] == id).cloned().unwrap_or_default();
    (m["Health"].as_str().unwrap_or("").into(), m["Reason"].as_str().unwrap_or("").into())
}

/// What most tests here begin with: tansu behind a relay, `topic` with
/// `partitions` holding `n` records each, a recording function and a
/// Sluice process.
struct Rig {
    broker: Faulty,
    f: Recorder,
    url: String,
    s: SluiceProcess,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(topic: &str, partitions: i32, n: usize) -> Option<Rig> {
        let broker = Faulty::start().await?;
        create_topic_on(broker.bootstrap(), topic, partitions).await;
        produce_on(broker.bootstrap(), topic, partitions, n, None).await;
        let f = Recorder::default();
        let url = f.serve().await;
        let dir = tempfile::tempdir().unwrap();
        let db = database_url(dir.path()).await;
        let s = SluiceProcess::start(dir.path(), &db, &[]);
        Some(Rig { broker, f, url, s, _dir: dir })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_twice_mid_stream_loses_nothing_and_says_so() {
    const PARTITIONS: i32 = 3;
    let Some(Rig { mut broker, f, url, s, _dir }) = Rig::new("kill", PARTITIONS, 0).await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    *f.delay_ms.lock().unwrap() = 2;
    let mut spec = spec(broker.bootstrap(), "kill", &url, "g-kill");
    spec.batch_size = 100;
    let id = s.create(&spec).await;
    // 60 records/s in all, while the broker is up and while it is down.
    let (stop, producing) = keep_producing(broker.bootstrap(), "kill", PARTITIONS, 2);
    wait_count(&f, 300, Duration::from_secs(60), "before the first kill").await;

    for round in 1..=2 {
        let before = committed_on(broker.bootstrap(), "g-kill", "kill", PARTITIONS);
        let delivered: Vec<i64> = f.by_partition().values().map(|v| v.iter().copied().max().unwrap_or(-1)).collect();
        broker.kill();
        let (down, accepted) = (Instant::now(), broker.relay.accepted());
        let (mut said, mut judged) = (String::new(), (String::new(), String::new()));
        while down.elapsed() < Duration::from_secs(20) {
            // The console keeps answering while the brokers are away.
            let r = s.last_result(&id).await;
            if r.contains("Connection error") {
                said = r;
                judged = health(&s, &id).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let reconnects = broker.relay.accepted() - accepted;
        assert!(
            said.contains("cannot reach the Kafka brokers"),
            "round {round}: the status never said the brokers are down"
        );
        assert_eq!(judged.0, "Stalled", "round {round}: health during the outage: {judged:?}");
        let n = f.count();
        broker.restart();
        let resumed = wait_count(&f, n + 1, Duration::from_secs(120), "after the broker's return").await;
        let after = committed_on(broker.bootstrap(), "g-kill", "kill", PARTITIONS);
        let redelivered_from: Vec<i64> = f.seen.lock().unwrap()[n..].iter().map(|(_, o, _)| *o).take(3).collect();
        println!("outage {round}: committed {before:?} before the kill (delivered up to {delivered:?}), {after:?} after the return; first deliveries after: {redelivered_from:?}");
        println!(
            "outage {round}: status {said:?}; health {judged:?}; {reconnects} connection attempts in 20 s ({:.1}/s, every client); delivery resumed {:.1} s after the broker's return",
            reconnects as f64 / 20.0,
            resumed.as_secs_f64()
        );
        assert!(reconnects < 20 * 20, "retry storm: {reconnects} connection attempts in 20 s");
        wait_count(&f, f.count() + 300, Duration::from_secs(60), "between outages").await;
    }
    stop.store(true, Ordering::Relaxed);
    let total = producing.await.unwrap();
    let back = wait_all_done(&s, &id, broker.bootstrap(), "kill", "g-kill", PARTITIONS, &f).await;
    // The producer's retries across an outage can write a record twice:
    // the topic may hold more than were acknowledged.
    let in_topic: i64 = end_offsets_on(broker.bootstrap(), "kill", PARTITIONS).values().sum();
    let deliveries = f.count();
    println!(
        "broker killed twice: {total} records acknowledged, {in_topic} in the topic, {deliveries} deliveries ({} of a record already delivered), everything committed {:.1} s after the producer stopped",
        deliveries as i64 - in_topic,
        back.as_secs_f64()
    );
    assert_eq!(s.last_result(&id).await, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_hung_for_30_s_then_everything_arrives_and_nothing_hangs_a_page() {
    const PARTITIONS: i32 = 2;
    let Some(Rig { broker, f, url, s, _dir }) = Rig::new("hang", PARTITIONS, 0).await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut spec = spec(broker.bootstrap(), "hang", &url, "g-hang");
    spec.batch_size = 50;
    let id = s.create(&spec).await;
    let (stop, producing) = keep_producing(broker.bootstrap(), "hang", PARTITIONS, 2);
    wait_count(&f, 200, Duration::from_secs(60), "before the hang").await;

    // Hung: connections stay open and nothing answers; when it ends, the
    // connections that carried requests into it are reset. (SIGSTOP on
    // tansu would deliver those stale requests after SIGCONT, and tansu 0.6
    // makes a full group member of a stale JoinGroup's new member id: the
    // consumer that sent it has moved on, and the partition the group
    // leader then assigns that ghost is read by no one. Kafka keeps such a
    // member pending until it joins again, so this is tansu's bug.)
    broker.relay.freeze(true);
    let hung = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut said = String::new();
    // Every page and API call answers while the broker hangs; the reset
    // preview (which asks the broker) answers with why it cannot.
    while hung.elapsed() < Duration::from_secs(30) {
        for path in [format!("/api/v1/mappings/{id}"), format!("/mappings/{id}"), "/api/v1/overview".to_string()] {
            let t = Instant::now();
            let (status, _) = s.get(&path, Duration::from_secs(5)).await.unwrap();
            assert_eq!(status, 200, "{path}");
            slowest = slowest.max(t.elapsed());
        }
        let r = s.last_result(&id).await;
        if r.starts_with("PROBLEM") {
            said = r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The filter tester samples the topic: its page says it cannot.
    let t = Instant::now();
    let page = api_client()
        .get(format!("{}/mappings/{id}/filters?load=20", s.url))
        .timeout(Duration::from_secs(40))
        .send()
        .await
        .expect("the filter tester answers while the broker hangs");
    let sample_took = t.elapsed();
    let page = page.text().await.unwrap();
    assert!(page.contains("Cannot read the topic"), "the filter tester says why it has no records");
    let t = Instant::now();
    let preview = post_json(
        &format!("{}/api/v1/mappings/{id}/reset", s.url),
        &serde_json::json!({"Strategy": "TRIM_HORIZON", "DryRun": true}),
    )
    .await;
    let preview_took = t.elapsed();
    let (code, text) = (preview.status().as_u16(), preview.text().await.unwrap());
    assert!(code >= 400, "a preview with a hung broker cannot succeed: {code} {text}");
    assert!(text.contains("KafkaException"), "the preview says the brokers failed it: {text}");
    assert!(preview_took < Duration::from_secs(35), "the preview took {preview_took:?}");

    let n = f.count();
    broker.relay.freeze(false);
    let resumed = wait_count(&f, n + 1, Duration::from_secs(120), "after the hang").await;
    stop.store(true, Ordering::Relaxed);
    let total = producing.await.unwrap();
    wait_all_done(&s, &id, broker.bootstrap(), "hang", "g-hang", PARTITIONS, &f).await;
    println!(
        "broker hung 30 s: slowest page {} ms; status during the hang {said:?}; filter tester answered in {:.1} s; reset preview answered {code} in {:.1} s; delivery resumed {:.1} s after the hang; {total} records, {} duplicates",
        slowest.as_millis(),
        sample_took.as_secs_f64(),
        preview_took.as_secs_f64(),
        resumed.as_secs_f64(),
        f.count() - total
    );
    assert!(said.starts_with("PROBLEM"), "the status never said the broker was not answering");
    assert!(slowest < Duration::from_secs(2), "a page took {slowest:?} while the broker hung");
}

/// The late-start tests' topics.
const LATE_PARTITIONS: i32 = 2;

/// A LATEST mapping (group `g-TOPIC`) that could not start at once: its
/// starting positions (the `n` records there before it) are committed
/// without a restart, and what is produced then arrives from there. The
/// time until the positions were taken.
async fn starts_at_latest(broker: &Faulty, topic: &str, n: i64, f: &Recorder) -> Duration {
    let t = Instant::now();
    let group = format!("g-{topic}");
    while !committed_on(broker.bootstrap(), &group, topic, LATE_PARTITIONS).values().all(|o| *o == n) {
        assert!(t.elapsed() < Duration::from_secs(90), "the poller never took its starting positions");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = t.elapsed();
    produce_on(broker.bootstrap(), topic, LATE_PARTITIONS, 50, None).await;
    wait_count(f, 100, Duration::from_secs(60), "records produced after the start").await;
    for (p, got) in f.by_partition() {
        assert_eq!(got.first(), Some(&n), "partition {p} starts at LATEST as of its start");
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_whose_first_lookups_time_out_recovers_without_a_restart() {
    let Some(Rig { broker, f, url, s, _dir }) = Rig::new("late", LATE_PARTITIONS, 300).await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    // The broker stops answering before the poller's first look-ups (group
    // coordinator, committed offsets, watermarks), past every timeout.
    signal(broker.pid(), "STOP");
    let mut spec = spec(broker.bootstrap(), "late", &url, "g-late");
    spec.starting_position = sluice_app::spec::StartingPosition::Latest;
    let id = s.create(&spec).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let during = s.last_result(&id).await;
    assert_eq!(f.count(), 0);
    signal(broker.pid(), "CONT");
    let started = starts_at_latest(&broker, "late", 300, &f).await;
    println!(
        "first look-ups timed out (status meanwhile: {during:?}); starting positions committed {:.1} s after the broker answered; new records delivered from there",
        started.as_secs_f64()
    );
    assert!(during.starts_with("PROBLEM") || during == "No records processed", "{during}");
}

/// The note from the TLS work: a poller whose first committed-offset
/// look-up timed out never started. Here the broker answers the group
/// protocol but swallows every OffsetFetch for 25 s: the poller must not
/// start its partitions at `auto.offset.reset` (the mapping says LATEST),
/// must say why, and must take them by itself once look-ups work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offset_lookups_that_time_out_at_assignment_are_retried() {
    let Some(Rig { broker, f, url, s, _dir }) = Rig::new("fetch", LATE_PARTITIONS, 200).await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    broker.relay.swallow(Some(9)); // OffsetFetch
    let mut spec = spec(broker.bootstrap(), "fetch", &url, "g-fetch");
    spec.starting_position = sluice_app::spec::StartingPosition::Latest;
    let id = s.create(&spec).await;
    let t = Instant::now();
    let mut said = String::new();
    while t.elapsed() < Duration::from_secs(25) {
        let r = s.last_result(&id).await;
        if r.contains("cannot read the group's committed offsets") {
            said = r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(said.contains("Timed out") || said.contains("timed out"), "the status never said the look-up timed out");
    assert_eq!(f.count(), 0, "nothing may start before the starting positions are known");
    broker.relay.swallow(None);
    let took = starts_at_latest(&broker, "fetch", 200, &f).await;
    println!(
        "OffsetFetch swallowed for 25 s: status {said:?}; partitions taken at LATEST {:.1} s after look-ups worked again, without a restart",
        took.as_secs_f64()
    );
}

/// When each call reached a test function.
type Calls = Arc<std::sync::Mutex<Vec<Instant>>>;

/// An HTTP function that answers 200 after `after`, or (None) accepts
/// connections and never answers; records when each call arrived.
async fn late_function(after: Option<Duration>) -> (String, Calls) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fn", l.local_addr().unwrap());
    let calls: Calls = Default::default();
    let seen = calls.clone();
    match after {
        Some(after) => {
            let app = axum::Router::new().route(
                "/fn",
                axum::routing::post(move || {
                    seen.lock().unwrap().push(Instant::now());
                    async move {
                        tokio::time::sleep(after).await;
                        "{}"
                    }
                }),
            );
            tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        }
        None => {
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((c, _)) = l.accept().await {
                    seen.lock().unwrap().push(Instant::now());
                    held.push(c);
                }
            });
        }
    }
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_slower_than_the_timeout_are_retried_and_nothing_commits_early() {
    let Some(broker) = Faulty::start().await else { return };
    let _turn = ONE_AT_A_TIME.lock().await;
    create_topic_on(broker.bootstrap(), "slow", 1).await;
    produce_on(broker.bootstrap(), "slow", 1, 20, None).await;
    // One answers after 4 s; the other never does. The timeout is 1.5 s.
    let timeout = Duration::from_millis(1500);
    let (slow_url, slow) = late_function(Some(Duration::from_secs(4))).await;
    let (silent_url, silent) = late_function(None).await;
    let dir = tempfile::tempdir().unwrap();
    let db = database_url(dir.path()).await;
    let s = SluiceProcess::start(dir.path(), &db, &[("SLUICE_HTTP_TIMEOUT_MS", "1500")]);
    let mut ids = Vec::new();
    for (name, url, calls) in [("slow", &slow_url, &slow), ("silent", &silent_url, &silent)] {
        let mut m = spec(broker.bootstrap(), "slow", url, &format!("g-{name}"));
        m.maximum_retry_attempts = 2;
        ids.push((name, s.create(&m).await, calls.clone()));
    }
    let t = Instant::now();
    let mut said = std::collections::BTreeMap::new();
    // Three calls each (the first and two retries), every one timing out:
    // until the third has, nothing is committed; the result names the timeout.
    loop {
        let mut done = true;
        for (name, id, calls) in &ids {
            let c = committed_on(broker.bootstrap(), &format!("g-{name}"), "slow", 1)[&0];
            let read_at = Instant::now();
            let third = calls.lock().unwrap().get(2).copied();
            if c > 0 {
                // (The call arrives a moment after the client's clock starts.)
                let over = third.is_some_and(|t| read_at + Duration::from_millis(50) >= t + timeout);
                assert!(over, "{name}: committed {c} before its third call timed out");
            }
            let r = s.last_result(id).await;
            if r.contains("timed out after 1500 ms") {
                said.insert(*name, r.clone());
            }
            if c < 20 || !r.contains("RetryAttemptsExhausted") {
                done = false;
            }
        }
        if done {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "retries not over: {:?}", said);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (name, id, calls) in &ids {
        assert!(said.contains_key(name), "{name}: the result never named the timeout");
        // Exactly three: a poller that lost its partitions meanwhile would
        // have read the batch again from offset 0 and started its attempts
        // over (tansu does not list group members to check it directly).
        assert_eq!(calls.lock().unwrap().len(), 3, "{name}: the first call and two retries");
        println!(
            "{name} function: 3 calls timed out after 1.5 s, nothing committed meanwhile, then {}",
            s.last_result(id).await
        );
    }
}

/// A small tmpfs of its own (a disk that can fill up), unmounted when
/// dropped. None where mounting is not allowed (not root).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).and_then(|_| f.flush()).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_sqlite_fails_writes_clearly_and_loses_nothing() {
    if std::env::var_os("SLUICE_TEST_POSTGRES").is_some() {
        return;
    }
    let Some(disk) = SmallDisk::mount("16m") else {
        eprintln!("cannot mount a tmpfs here (not root?): full-disk test skipped");
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().await;
    let broker = Broker::tansu().unwrap_or_else(Broker::mock);
    broker.create_topic("full", 2).await;
    broker.produce("full", 2, 200, None).await;
    let f = Recorder::default();
    let url = f.serve().await;
    let data = disk.dir.path();
    let db = format!("sqlite://{}?mode=rwc", data.join("s.db").display());
    let s = SluiceProcess::start(data, &db, &[]);
    let id = s.create(&spec(broker.bootstrap(), "full", &url, "g-full")).await;
    wait_committed(&broker, "g-full", "full", &[(0, 200), (1, 200)].into(), Duration::from_secs(60)).await;

    let filler = disk.fill();
    // Records keep flowing and being committed: offsets live in Kafka.
    broker.produce("full", 2, 200, None).await;
    wait_committed(&broker, "g-full", "full", &[(0, 400), (1, 400)].into(), Duration::from_secs(60)).await;
    // The node says why it is not ready; saving fails with the reason.
    let t = Instant::now();
    let said = loop {
        let (code, v) = s.get("/readyz", Duration::from_secs(5)).await.unwrap();
        if code == 503 {
            break v["Database"].as_str().unwrap_or("").to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "/readyz still {code} {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(said.contains("full"), "{said}");
    // Another (disabled) mapping: the save is what is tried.
    let another = |group: &str| {
        let mut m = spec(broker.bootstrap(), "full", &url, group);
        m.enabled = false;
        m
    };
    let r = post_json(&format!("{}/api/v1/mappings", s.url), &serde_json::to_value(another("g-full-2")).unwrap()).await;
    let (code, text) = (r.status().as_u16(), r.text().await.unwrap());
    assert!(code >= 500 && text.contains("full"), "saving on a full disk: {code} {text}");
    // Every console page says so.
    let page = api_client().get(format!("{}/", s.url)).send().await.unwrap().text().await.unwrap();
    let banner = page.split("data-system=\"database\"").nth(1).map(|b| b.split("</p>").next().unwrap_or(""));
    assert!(banner.is_some_and(|b| b.contains("cannot write to its database") && b.contains("full")), "no banner");

    // Space again: ready, saves work, and the status written meanwhile is
    // caught up.
    std::fs::remove_file(filler).unwrap();
    let t = Instant::now();
    loop {
        let (code, _) = s.get("/readyz", Duration::from_secs(5)).await.unwrap();
        if code == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "not ready after space came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = t.elapsed();
    s.create(&another("g-full-3")).await;
    broker.produce("full", 2, 50, None).await;
    wait_committed(&broker, "g-full", "full", &[(0, 450), (1, 450)].into(), Duration::from_secs(60)).await;
    assert_eq!(s.last_result(&id).await, "OK");
    assert_complete_and_ordered(&f.by_partition(), &[(0, 450), (1, 450)].into(), &Default::default());
    println!(
        "disk full under SQLite: /readyz said {said:?}; 400 records delivered and committed while full; ready again {} ms after space came back",
        recovered.as_millis()
    );
}
