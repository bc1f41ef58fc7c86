//! Shared by the engine tests: a Kafka broker (librdkafka's mock cluster, or
//! a real tansu process when one is installed), a recording HTTP function,
//! and a Sluice engine on a temporary SQLite database.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice_app::spec::*;
use sluice_server::engine::{Engine, EngineHandle, EngineSettings};
use sluice_server::service::MappingService;
use sluice_server::store::Store;

/// Requests to the thread that owns the mock cluster (it is not `Send`).
pub enum MockCmd {
    CreateTopic(String, i32, std::sync::mpsc::Sender<()>),
}

pub enum Broker {
    Mock { bootstrap: String, stop: std::sync::mpsc::Sender<MockCmd> },
    Tansu { bootstrap: String, _child: Reaped, _dir: tempfile::TempDir },
}

/// The tansu binary: `TANSU_BIN`, or where scripts/test.sh installs it.
pub fn tansu_bin() -> Option<std::path::PathBuf> {
    let p = std::env::var_os("TANSU_BIN").map(Into::into).or_else(|| {
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/sluice-tools/bin/tansu"))
    })?;
    p.is_file().then_some(p)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Broker {
    pub fn mock() -> Broker {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, cmds) = std::sync::mpsc::channel::<MockCmd>();
        std::thread::spawn(move || {
            let c = rdkafka::mocking::MockCluster::new(1).unwrap();
            tx.send(c.bootstrap_servers()).unwrap();
            while let Ok(MockCmd::CreateTopic(t, n, done)) = cmds.recv() {
                c.create_topic(&t, n, 1).unwrap();
                let _ = done.send(());
            }
        });
        Broker::Mock { bootstrap: rx.recv().unwrap(), stop }
    }

    /// A real broker in its own process (tansu, SQLite storage). None when
    /// tansu is not installed.
    pub fn tansu() -> Option<Broker> {
        let Some(bin) = tansu_bin() else {
            // scripts/test.sh installs tansu and sets this: there, a missing
            // broker is a failure, not a skip.
            assert!(std::env::var_os("SLUICE_REQUIRE_TANSU").is_none(), "tansu is required but not installed");
            eprintln!("tansu not installed: real-broker test skipped (scripts/test.sh installs it)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = format!("127.0.0.1:{}", free_port());
        let child = spawn_tansu(&bin, dir.path(), &bootstrap, &bootstrap, &[]);
        Some(Broker::Tansu { bootstrap, _child: child, _dir: dir })
    }

    pub fn bootstrap(&self) -> &str {
        match self {
            Broker::Mock { bootstrap, .. } | Broker::Tansu { bootstrap, .. } => bootstrap,
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, Broker::Tansu { .. })
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        if let Broker::Mock { stop, .. } = self {
            let (done, wait) = std::sync::mpsc::channel();
            stop.send(MockCmd::CreateTopic(topic.into(), partitions, done)).unwrap();
            wait.recv().unwrap();
            return;
        }
        create_topic_on(self.bootstrap(), topic, partitions).await
    }

    pub fn producer(&self) -> FutureProducer {
        bulk_producer(self.bootstrap())
    }

    /// Produces `n` records per partition with values `p-i`; waits for every ack.
    pub async fn produce(&self, topic: &str, partitions: i32, n: usize, timestamp_ms: Option<i64>) {
        produce_on(self.bootstrap(), topic, partitions, n, timestamp_ms).await
    }

    /// The group's committed offset per partition (-1: none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        committed_on(self.bootstrap(), group, topic, partitions)
    }

    pub fn end_offsets(&self, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        end_offsets_on(self.bootstrap(), topic, partitions)
    }
}

pub async fn create_topic_on(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let r = admin
        .create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .unwrap();
    for x in r {
        x.unwrap();
    }
}

/// The group's committed offset per partition (-1: none).
pub fn committed_on(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let r = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    r.elements().iter().map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 })).collect()
}

pub fn end_offsets_on(bootstrap: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    (0..partitions).map(|p| (p, c.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1)).collect()
}

/// The mapping once `done` holds for its status (30 s at most).
pub async fn wait_status(
    s: &Sluice,
    id: uuid::Uuid,
    done: impl Fn(&sluice_app::model::MappingStatus) -> bool,
) -> sluice_app::model::MappingView {
    let t = Instant::now();
    loop {
        let v = s.mappings.get(id).await.unwrap();
        if done(&v.status) {
            return v;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "status: {:?}", v.status);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// StateTransitionReason EVENT_SOURCE_AUTHN_ERROR.
pub fn authn_error(s: &sluice_app::model::MappingStatus) -> bool {
    s.state_transition_reason == "EVENT_SOURCE_AUTHN_ERROR"
}

/// A child process killed when dropped (a failing test leaves no broker behind).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tansu broker on `listen` (host:port), advertising `advertised`, its
/// SQLite storage in `dir`; returns once it accepts connections.
pub fn spawn_tansu(
    bin: &std::path::Path,
    dir: &std::path::Path,
    listen: &str,
    advertised: &str,
    extra: &[&str],
) -> Reaped {
    // tansu misreads absolute sqlite paths: give it a relative one.
    let child = Command::new(bin)
        .current_dir(dir)
        .args(["broker", "--storage-engine", "sqlite://tansu.db"])
        .args(["--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts");
    let child = Reaped(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {listen}");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// tansu on a plain port of its own, advertising `advertised` (a proxy the
/// test puts in front of it). The process, its directory, its plain address.
pub fn tansu_behind(bin: &std::path::Path, advertised: &str) -> (Reaped, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let plain = format!("127.0.0.1:{}", free_port());
    (spawn_tansu(bin, dir.path(), &plain, advertised, &[]), dir, plain)
}

/// An HTTP function that records every (partition, offset) it is sent, and
/// answers with a status chosen by the test.
#[derive(Clone, Default)]
pub struct Recorder {
    pub seen: Arc<Mutex<Vec<(i32, i64, String)>>>,
    pub invocations: Arc<Mutex<usize>>,
    pub status: Arc<Mutex<u16>>,
    pub delay_ms: Arc<Mutex<u64>>,
    /// Fails (500) every batch holding a record with this value.
    pub poison: Arc<Mutex<Option<String>>>,
    /// Fails (500) every batch holding a record with one of these values.
    pub poisoned: Arc<Mutex<std::collections::BTreeSet<String>>>,
    /// For values `live-<unix ms>`: milliseconds from then to delivery.
    pub latencies: Arc<Mutex<Vec<i64>>>,
}

async fn record(State(r): State<Recorder>, body: Bytes) -> (StatusCode, String) {
    let status = *r.status.lock().unwrap();
    *r.invocations.lock().unwrap() += 1;
    let delay = *r.delay_ms.lock().unwrap();
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if status != 200 {
        return (StatusCode::from_u16(status).unwrap(), "{\"errorMessage\":\"the test function is failing\"}".into());
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    if let Some(poison) = r.poison.lock().unwrap().clone() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(poison);
        if body.windows(b64.len()).any(|w| w == b64.as_bytes()) {
            return (StatusCode::INTERNAL_SERVER_ERROR, "{\"errorMessage\":\"poison record\"}".into());
        }
    }
    let mut got = Vec::new();
    for (_, recs) in v["records"].as_object().unwrap() {
        for rec in recs.as_array().unwrap() {
            use base64::Engine as _;
            let value = base64::engine::general_purpose::STANDARD.decode(rec["value"].as_str().unwrap()).unwrap();
            got.push((
                rec["partition"].as_i64().unwrap() as i32,
                rec["offset"].as_i64().unwrap(),
                String::from_utf8(value).unwrap(),
            ));
        }
    }
    {
        let poisoned = r.poisoned.lock().unwrap();
        if got.iter().any(|(_, _, v)| poisoned.contains(v)) {
            return (StatusCode::INTERNAL_SERVER_ERROR, "{\"errorMessage\":\"poisoned record\"}".into());
        }
    }
    let now = sluice_server::clock::now_ms();
    for (_, _, v) in &got {
        if let Some(ms) = v.strip_prefix("live-").and_then(|t| t.parse::<i64>().ok()) {
            r.latencies.lock().unwrap().push(now - ms);
        }
    }
    r.seen.lock().unwrap().extend(got);
    (StatusCode::OK, String::new())
}

impl Recorder {
    pub async fn serve(&self) -> String {
        *self.status.lock().unwrap() = 200;
        let app = axum::Router::new().route("/fn", post(record)).with_state(self.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}/fn")
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Per partition, the offsets in the order they were delivered.
    pub fn by_partition(&self) -> BTreeMap<i32, Vec<i64>> {
        let mut m: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (p, o, _) in self.seen.lock().unwrap().iter() {
            m.entry(*p).or_default().push(*o);
        }
        m
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.count() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

pub struct Sluice {
    pub mappings: Arc<MappingService>,
    pub engine: Option<EngineHandle>,
    _dir: tempfile::TempDir,
}

/// The database for a test's Sluice: SQLite in `dir`, or, with
/// SLUICE_TEST_POSTGRES (a server URL), a fresh PostgreSQL database there.
pub async fn database_url(dir: &std::path::Path) -> String {
    let Ok(server) = std::env::var("SLUICE_TEST_POSTGRES") else {
        return format!("sqlite://{}?mode=rwc", dir.join("s.db").display());
    };
    use sqlx::Connection;
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!("sluice_t_{}_{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(&format!("{server}/postgres")).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
    format!("{server}/{name}")
}

impl Sluice {
    pub async fn start() -> Sluice {
        let dir = tempfile::tempdir().unwrap();
        let url = database_url(dir.path()).await;
        let mappings = MappingService::new(Store::open(&url).await.unwrap());
        let engine = Engine::start(
            mappings.shared(),
            EngineSettings {
                http_timeout: Duration::from_secs(5),
                grace: Duration::from_secs(5),
                ..Default::default()
            },
        );
        Sluice { mappings, engine: Some(engine), _dir: dir }
    }

    pub async fn stop(&mut self) {
        if let Some(e) = self.engine.take() {
            e.shutdown().await;
        }
    }
}

pub fn spec(bootstrap: &str, topic: &str, function: &str, group: &str) -> MappingSpec {
    MappingSpec {
        name: Some(format!("test-{topic}")),
        description: None,
        function_name: function.into(),
        topics: vec![topic.into()],
        self_managed_event_source: SelfManagedEventSource {
            endpoints: Endpoints { kafka_bootstrap_servers: vec![bootstrap.into()] },
        },
        self_managed_kafka_event_source_config: SelfManagedKafkaEventSourceConfig {
            consumer_group_id: Some(group.into()),
            ..Default::default()
        },
        batch_size: 500,
        maximum_batching_window_in_seconds: Some(0),
        starting_position: StartingPosition::TrimHorizon,
        starting_position_timestamp: None,
        filter_criteria: FilterCriteria::default(),
        destination_config: DestinationConfig::default(),
        maximum_retry_attempts: -1,
        maximum_record_age_in_seconds: -1,
        bisect_batch_on_function_error: false,
        function_response_types: vec![],
        parallelization_factor: None,
        provisioned_poller_config: None,
        enabled: true,
        filter_on_record_metadata: false,
        event_source_arn: None,
        amazon_managed_kafka_event_source_config: None,
        invocation_role_arn: None,
        source_access_configurations: vec![],
        kms_key_arn: None,
        metrics_config: None,
        logging_config: None,
    }
}

/// Every offset below `end` delivered, each partition's first deliveries in
/// offset order (redeliveries after a failure may repeat a suffix).
pub fn assert_complete_and_ordered(
    seen: &BTreeMap<i32, Vec<i64>>,
    ends: &BTreeMap<i32, i64>,
    starts: &BTreeMap<i32, i64>,
) {
    for (p, end) in ends {
        let start = starts.get(p).copied().unwrap_or(0);
        let got = seen.get(p).cloned().unwrap_or_default();
        let mut first_seen = Vec::new();
        let mut max = -1;
        for o in got {
            if o > max {
                assert_eq!(o, max.max(start - 1) + 1, "partition {p}: offset {o} delivered before {}", max + 1);
                first_seen.push(o);
                max = o;
            }
        }
        assert_eq!(first_seen, (start..*end).collect::<Vec<_>>(), "partition {p}: every offset from {start} to {end}");
    }
}

/// `Broker::produce` on any bootstrap address (from a task of its own).
/// `n` records on partition 0 of `topic`, keyed `k0` to `k{keys-1}` in
/// turn, each valued `KEY:SEQUENCE` (so a function can check order per key).
pub async fn produce_keyed(bootstrap: &str, topic: &str, n: usize, keys: usize) {
    let producer = bulk_producer(bootstrap);
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("k{}", i % keys);
        let value = format!("{key}:{i}");
        let rec = FutureRecord::to(topic).partition(0).payload(&value).key(&key);
        acks.push(producer.send_result(rec).map_err(|(e, _)| e).unwrap());
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
}

/// Per key (the value's part before `:`), the sequence numbers in the
/// order the function first saw them; each must rise.
pub fn sequences_by_key(seen: &[(i32, i64, String)]) -> BTreeMap<String, Vec<u64>> {
    let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut first = std::collections::HashSet::new();
    for (_, offset, v) in seen {
        if !first.insert(*offset) {
            continue;
        }
        if let Some((k, i)) = v.split_once(':') {
            m.entry(k.to_string()).or_default().push(i.parse().unwrap_or(0));
        }
    }
    m
}

/// A producer for many records at once (a deep queue, short linger).
pub fn bulk_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap()
}

pub async fn produce_on(bootstrap: &str, topic: &str, partitions: i32, n: usize, timestamp_ms: Option<i64>) {
    let producer = bulk_producer(bootstrap);

    let mut acks = Vec::with_capacity(n * partitions as usize);
    for i in 0..n {
        for p in 0..partitions {
            let value = format!("{p}-{i}");
            let mut rec = FutureRecord::<str, str>::to(topic).partition(p).payload(&value).key("k");
            if let Some(ts) = timestamp_ms {
                rec = rec.timestamp(ts);
            }
            loop {
                match producer.send_result(rec) {
                    Ok(f) => {
                        acks.push(f);
                        break;
                    }
                    Err((_, r)) => {
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
}

/// Waits until the mapping's LastProcessingResult says `needle`; returns it.
pub async fn wait_result(s: &Sluice, id: uuid::Uuid, needle: &str, within: Duration) -> String {
    let t = Instant::now();
    loop {
        let r = s.mappings.get(id).await.unwrap().status.last_processing_result;
        if r.contains(needle) {
            return r;
        }
        assert!(t.elapsed() < within, "LastProcessingResult never said {needle:?}; last: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the group has committed exactly `want` (partition → offset).
pub async fn wait_committed(b: &Broker, group: &str, topic: &str, want: &BTreeMap<i32, i64>, within: Duration) {
    let t = Instant::now();
    loop {
        let got = b.committed(group, topic, want.len() as i32);
        if &got == want {
            return;
        }
        assert!(t.elapsed() < within, "committed {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin API token every Sluice a test starts is given
/// (SLUICE_BOOTSTRAP_TOKEN).
pub const TOKEN: &str = "sluice-test-admin-token-0123456789";

/// An HTTP client that authenticates as `TOKEN`.
pub fn api_client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    reqwest::Client::builder().default_headers(h).build().unwrap()
}

/// A Sluice server in a process of its own (the `sluice` binary), killed
/// when dropped. Its log goes to stderr when `SLUICE_TEST_LOG` is set.
pub struct SluiceProcess {
    pub child: Child,
    pub url: String,
}

impl SluiceProcess {
    pub fn start(data_dir: &std::path::Path, db: &str, env: &[(&str, &str)]) -> SluiceProcess {
        use std::io::{BufRead, BufReader};
        let log = std::env::var("SLUICE_TEST_LOG").ok();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db, "--data-dir"])
            .arg(data_dir)
            .env("SLUICE_BOOTSTRAP_TOKEN", TOKEN)
            .env("SLUICE_LOG", log.clone().unwrap_or_else(|| "warn".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if log.is_some() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("sluice printed its address").unwrap();
            if let Some(rest) = line.split("console: ").nth(1) {
                break rest.trim_end_matches('/').to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        SluiceProcess { child, url }
    }

    /// Creates a mapping through the API; its UUID.
    pub async fn create(&self, spec: &MappingSpec) -> String {
        let r = post_json(&format!("{}/api/v1/mappings", self.url), &serde_json::to_value(spec).unwrap()).await;
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        v["UUID"].as_str().unwrap().to_string()
    }

    /// GET on an API path: the status and the JSON body (Null if none);
    /// Err when no answer came within `within`.
    pub async fn get(&self, path: &str, within: Duration) -> Result<(u16, serde_json::Value), String> {
        let r = api_client()
            .get(format!("{}{path}", self.url))
            .timeout(within)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)))
    }

    /// The mapping's LastProcessingResult.
    pub async fn last_result(&self, id: &str) -> String {
        match self.get(&format!("/api/v1/mappings/{id}"), Duration::from_secs(5)).await {
            Ok((_, v)) => v["LastProcessingResult"].as_str().unwrap_or("").to_string(),
            Err(e) => e,
        }
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process (`STOP`, `CONT`, `KILL`).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([format!("-{sig}"), pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A TCP relay in front of a broker, counting the connections it accepts
/// (each client's reconnect attempts while the broker is down show up
/// here). Frozen, it moves no byte either way: to its clients, a broker
/// that accepts connections and never answers. A connection that carried
/// bytes into the freeze is closed when it ends, those bytes undelivered.
pub struct Relay {
    pub addr: String,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    /// A Kafka API key whose requests are swallowed (never answered); -1: none.
    swallow: Arc<std::sync::atomic::AtomicI32>,
}

impl Relay {
    pub async fn start(addr: &str, upstream: String) -> Relay {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swallow = Arc::new(std::sync::atomic::AtomicI32::new(-1));
        let (count, ice, gulp) = (accepted.clone(), frozen.clone(), swallow.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = l.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (upstream, ice, gulp) = (upstream.clone(), ice.clone(), gulp.clone());
                tokio::spawn(async move {
                    if let Ok(up) = tokio::net::TcpStream::connect(&upstream).await {
                        let (dr, dw) = down.into_split();
                        let (ur, uw) = up.into_split();
                        tokio::spawn(pump(dr, uw, ice.clone(), Some(gulp)));
                        tokio::spawn(pump(ur, dw, ice, None));
                    }
                });
            }
        });
        Relay { addr: addr.to_string(), accepted, frozen, swallow }
    }

    /// Swallows every request of one Kafka API (e.g. 9, OffsetFetch): the
    /// broker answers everything else. None: stop.
    pub fn swallow(&self, api_key: Option<i16>) {
        self.swallow.store(api_key.map_or(-1, i32::from), std::sync::atomic::Ordering::Relaxed);
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Copies one direction of a relayed connection, holding bytes while
/// frozen. Client to broker (`swallow` given), it reads Kafka's frames
/// (a 4-byte length, then the API key) to drop the swallowed API's.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    swallow: Option<Arc<std::sync::atomic::AtomicI32>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 << 10];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let mut n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(api) = &swallow {
            pending.extend_from_slice(&buf[..n]);
            let mut out = Vec::new();
            while pending.len() >= 6 {
                let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
                if pending.len() < 4 + len {
                    break;
                }
                let frame: Vec<u8> = pending.drain(..4 + len).collect();
                if i32::from(i16::from_be_bytes([frame[4], frame[5]])) != api.load(std::sync::atomic::Ordering::Relaxed)
                {
                    out.extend_from_slice(&frame);
                }
            }
            if out.len() > buf.len() {
                buf.resize(out.len(), 0);
            }
            buf[..out.len()].copy_from_slice(&out);
            n = out.len();
            if n == 0 {
                continue;
            }
        }
        let mut held = false;
        while frozen.load(std::sync::atomic::Ordering::Relaxed) {
            held = true;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if held || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A free loopback address (`127.0.0.1:port`).
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// POSTs JSON as the admin token.
pub async fn post_json(url: &str, body: &serde_json::Value) -> reqwest::Response {
    api_client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap()
}
