//! AWS Lambda targets through aws-sdk-lambda. Two endpoints stand in for
//! AWS: `moto_server` (a separate process: a function is created and
//! invoked there), and a small Lambda Invoke endpoint in this test that
//! answers as Lambda does when a function fails or is throttled (moto's
//! functions without Docker only echo). The SDK finds both through
//! `AWS_ENDPOINT_URL`, as a deployment pointing at an emulator would; this
//! file is its own process, so setting the environment here is safe.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use common::*;

#[derive(Clone, Default)]
struct FakeLambda {
    /// (function name as called, records in the event)
    calls: Arc<Mutex<Vec<(String, usize)>>>,
    mode: Arc<Mutex<&'static str>>,
}

async fn invoke(State(f): State<FakeLambda>, Path(name): Path<String>, body: Bytes) -> impl IntoResponse {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let n = v["records"].as_object().map(|r| r.values().filter_map(|x| x.as_array()).map(Vec::len).sum()).unwrap_or(0);
    f.calls.lock().unwrap().push((name, n));
    let mut h = HeaderMap::new();
    h.insert("x-amz-executed-version", HeaderValue::from_static("7"));
    let mode = *f.mode.lock().unwrap();
    match mode {
        "error" => {
            h.insert("x-amz-function-error", HeaderValue::from_static("Unhandled"));
            (
                StatusCode::OK,
                h,
                r#"{"errorType":"OrderRejected","errorMessage":"order 42 has no customer"}"#.to_string(),
            )
        }
        "throttle" => {
            h.insert("x-amzn-errortype", HeaderValue::from_static("TooManyRequestsException"));
            (
                StatusCode::TOO_MANY_REQUESTS,
                h,
                r#"{"message":"Rate exceeded","Reason":"ReservedFunctionConcurrentInvocationLimitExceeded"}"#
                    .to_string(),
            )
        }
        "missing" => {
            h.insert("x-amzn-errortype", HeaderValue::from_static("ResourceNotFoundException"));
            (StatusCode::NOT_FOUND, h, r#"{"Type":"User","message":"Function not found: arn:aws:lambda:us-east-1:123456789012:function:orders:live"}"#.to_string())
        }
        _ => (StatusCode::OK, h, r#"{"batchItemFailures":[]}"#.to_string()),
    }
}

async fn serve_fake() -> (FakeLambda, String) {
    let f = FakeLambda::default();
    *f.mode.lock().unwrap() = "ok";
    let app = axum::Router::new()
        .route("/2015-03-31/functions/{name}/invocations", axum::routing::post(invoke))
        .with_state(f.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (f, format!("http://{addr}"))
}

fn aws_env(endpoint: &str) {
    std::env::set_var("AWS_ENDPOINT_URL", endpoint);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Both endpoints in one test: the environment names one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_functions_are_invoked_and_their_failures_reported() {
    // Part 1: the fake endpoint — success, function errors, throttles.
    let (fake, url) = serve_fake().await;
    aws_env(&url);
    let b = Broker::mock();
    b.create_topic("orders", 2).await;
    b.produce("orders", 2, 25, None).await;
    let mut s = Sluice::start().await;
    let arn = "arn:aws:lambda:us-east-1:123456789012:function:orders:live";
    let id = s.mappings.create(spec(b.bootstrap(), "orders", arn, "g-lambda")).await.unwrap().uuid;
    let total = || fake.calls.lock().unwrap().iter().map(|c| c.1).sum::<usize>();
    until("50 records through Lambda", Duration::from_secs(20), || total() >= 50).await;
    let called = fake.calls.lock().unwrap()[0].0.clone();
    assert_eq!(called, arn, "the function is called as the mapping names it, qualifier included");
    until("commits", Duration::from_secs(10), || b.committed("g-lambda", "orders", 2).values().all(|o| *o == 25)).await;

    *fake.mode.lock().unwrap() = "error";
    b.produce("orders", 2, 1, None).await;
    let result = wait_result(&s, id, "OrderRejected", Duration::from_secs(20)).await;
    assert!(
        result.contains("Unhandled") && result.contains("version 7") && result.contains("order 42 has no customer"),
        "{result}"
    );
    assert_eq!(b.committed("g-lambda", "orders", 2).values().sum::<i64>(), 50, "a failed batch is not committed");

    *fake.mode.lock().unwrap() = "throttle";
    until("a throttle", Duration::from_secs(30), || s.mappings.counters(id).is_some_and(|c| c.throttles > 0)).await;
    // The status reaches the store on the reconciler's next pass.
    let r = wait_result(&s, id, "throttled", Duration::from_secs(10)).await;
    assert!(r.contains("TooManyRequestsException"), "{r}");

    // A function that does not exist is reported by name (moto answers
    // such an invoke with 200, so this is asked of the fake endpoint).
    *fake.mode.lock().unwrap() = "missing";
    let r = wait_result(&s, id, "ResourceNotFoundException", Duration::from_secs(40)).await;
    assert!(r.contains("Function not found"), "{r}");

    *fake.mode.lock().unwrap() = "ok";
    until("the failed records, once the function recovers", Duration::from_secs(60), || {
        b.committed("g-lambda", "orders", 2).values().sum::<i64>() == 52
    })
    .await;
    s.stop().await;

    // Part 2: moto_server, a separate process with a real function in it.
    let Some(moto) = Moto::start() else {
        assert!(
            std::env::var("SLUICE_REQUIRE_MOTO").is_err(),
            "moto_server is required (SLUICE_REQUIRE_MOTO) but not installed"
        );
        eprintln!("moto_server not installed: skipped the moto part");
        return;
    };
    aws_env(&moto.endpoint);
    moto.create_function("echo");
    b.create_topic("payments", 3).await;
    b.produce("payments", 3, 40, None).await;
    let mut s = Sluice::start().await;
    // Metrics to moto's CloudWatch too, every second.
    let collector = s.mappings.metrics().start();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let cw = Arc::new(sluice_server::cloudwatch::CloudWatchStats::default());
    sluice_server::cloudwatch::start(
        &sdk,
        sluice_server::cloudwatch::CloudWatchSettings {
            namespace: "Sluice/Test".into(),
            interval: Duration::from_secs(1),
        },
        s.mappings.metrics().clone(),
        s.mappings.store().clone(),
        cw.clone(),
    );
    let id = s.mappings.create(spec(b.bootstrap(), "payments", "echo", "g-moto")).await.unwrap().uuid;
    until("120 records through moto's Lambda", Duration::from_secs(30), || {
        s.mappings.counters(id).is_some_and(|c| c.invoked_event_count == 120)
    })
    .await;
    until("commits", Duration::from_secs(10), || b.committed("g-moto", "payments", 3).values().all(|o| *o == 40)).await;
    assert_eq!(s.mappings.counters(id).unwrap().errors, 0);
    // The same function through an assumed role (STS AssumeRole at moto).
    let mut with_role = spec(b.bootstrap(), "payments", "echo", "g-role");
    with_role.invocation_role_arn = Some("arn:aws:iam::123456789012:role/sluice-test".into());
    let role_id = s.mappings.create(with_role).await.unwrap().uuid;
    until("120 records through the assumed role", Duration::from_secs(30), || {
        s.mappings.counters(role_id).is_some_and(|c| c.invoked_event_count == 120)
    })
    .await;
    // Lag is read every 3 s; then a publication carries it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let read: serde_json::Value = serde_json::from_str(&moto.python(LIST_METRICS, &[&id.to_string()])).unwrap();
    assert_eq!(read["invoked"], 120.0, "GetMetricData sums the published InvokedEventCount: {read}");
    let metrics = read["metrics"].clone();
    assert_eq!(cw.failed.load(std::sync::atomic::Ordering::Relaxed), 0, "{:?}", cw.last_error.lock().unwrap());
    let has = |name: &str, dims: &[&str]| {
        metrics.as_array().unwrap().iter().any(|m| {
            m["MetricName"] == name
                && m["Dimensions"].as_array().unwrap().iter().map(|d| d["Name"].as_str().unwrap()).collect::<Vec<_>>()
                    == dims
                && m["Dimensions"].as_array().unwrap().iter().any(|d| d["Value"] == id.to_string().as_str())
        })
    };
    for name in [
        "Invocations",
        "Errors",
        "Throttles",
        "Duration",
        "ConcurrentExecutions",
        "InvokedEventCount",
        "CommittedEventCount",
        "OffsetLag",
    ] {
        assert!(has(name, &["FunctionName", "EventSourceMappingUUID"]), "{name} in {metrics}");
    }
    assert!(
        has("OffsetLag", &["FunctionName", "EventSourceMappingUUID", "Partition"]),
        "per-partition lag in {metrics}"
    );
    s.mappings.metrics().close();
    let _ = collector.await;

    // Part 3: failed batches to an SQS queue, an SNS topic and an S3 bucket.
    moto.python(SETUP_DESTINATIONS, &[]);
    let f = Recorder::default();
    let url = f.serve().await;
    *f.status.lock().unwrap() = 500;
    b.create_topic("bad", 1).await;
    b.produce("bad", 1, 3, None).await;
    let mut ids = Vec::new();
    for (n, dest) in [
        "arn:aws:sqs:us-east-1:123456789012:failures",
        "arn:aws:sns:us-east-1:123456789012:failures",
        "arn:aws:s3:::failures",
    ]
    .into_iter()
    .enumerate()
    {
        let mut sp = spec(b.bootstrap(), "bad", &url, &format!("g-dest-{n}"));
        sp.maximum_retry_attempts = 0;
        sp.destination_config.on_failure = Some(sluice_app::spec::OnFailure { destination: dest.into() });
        ids.push(s.mappings.create(sp).await.unwrap().uuid);
    }
    for (n, id) in ids.iter().enumerate() {
        until("the failed batch at its destination", Duration::from_secs(30), || {
            s.mappings.counters(*id).is_some_and(|c| c.on_failure_destination_delivered_event_count == 3)
        })
        .await;
        until("the commit past it", Duration::from_secs(10), || b.committed(&format!("g-dest-{n}"), "bad", 1)[&0] == 3)
            .await;
    }
    let got: serde_json::Value =
        serde_json::from_str(&moto.python(READ_DESTINATIONS, &[&ids[2].to_string()])).expect("the reader's JSON");
    for (name, rec) in [("sqs", &got["sqs"]), ("sns", &got["sns"]), ("s3", &got["s3"])] {
        assert_eq!(rec["requestContext"]["condition"], "RetryAttemptsExhausted", "{name}: {rec}");
        assert_eq!(rec["requestContext"]["functionArn"], url.as_str(), "{name}");
        let info = &rec["KafkaBatchInfo"];
        assert_eq!(info["batchSize"], 3, "{name}: {info}");
        assert_eq!(info["recordsInfo"]["bad-0"]["firstRecordOffset"], "0", "{name}");
        assert_eq!(info["recordsInfo"]["bad-0"]["lastRecordOffset"], "2", "{name}");
        assert_eq!(rec.get("payload").is_some(), name == "s3", "{name}: only S3 carries the event");
    }
    let event: serde_json::Value = serde_json::from_str(got["s3"]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(event["records"]["bad-0"].as_array().unwrap().len(), 3);

    // The failure ledger names each record and its failure record's id at
    // the destination (SQS's message id, S3's object key).
    let all = sluice_app::failures::FailureFilter::default();
    for (n, id) in ids.iter().enumerate() {
        let t = Instant::now();
        let page = loop {
            let page = s.mappings.failures(*id, &all, None, 10).await.unwrap();
            if page.total == 3 || t.elapsed() > Duration::from_secs(10) {
                break page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(page.total, 3, "destination {n}: {page:?}");
        let message = page.failures[0].destination_message.clone().unwrap_or_default();
        match n {
            0 => assert_eq!(message, format!("message {}", got["sqs_id"].as_str().unwrap()), "SQS's message id"),
            1 => assert!(message.starts_with("message ") && message.len() > 20, "SNS's message id: {message}"),
            _ => assert_eq!(message, format!("object {}", got["s3_key"].as_str().unwrap()), "S3's object key"),
        }
        assert!(
            page.failures.iter().all(|f| f.destination_message.as_deref() == Some(message.as_str())),
            "one message per batch"
        );
    }
    // The function is fixed: a redrive of the SQS mapping's records.
    *f.status.lock().unwrap() = 200;
    let job = s
        .mappings
        .redrive(ids[0], &sluice_app::failures::RedriveRequest { all: true, ..Default::default() }, "tester")
        .await
        .unwrap();
    let t = Instant::now();
    let done = loop {
        let j = s.mappings.redrive_job(ids[0], &job.job_id).await.unwrap().unwrap();
        if j.state == "Done" || t.elapsed() > Duration::from_secs(30) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((done.succeeded, done.failed, done.gone), (3, 0, 0), "{done:?}");
    assert_eq!(f.by_partition().get(&0), Some(&vec![0, 1, 2]), "the three records, once, in order");
    s.stop().await;
}

/// ListMetrics, and GetMetricData's sum of InvokedEventCount for the mapping.
const LIST_METRICS: &str = r#"
import boto3, datetime, json, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
cw = boto3.client("cloudwatch", **kw)
metrics = cw.list_metrics(Namespace="Sluice/Test")["Metrics"]
dims = [m["Dimensions"] for m in metrics if m["MetricName"] == "InvokedEventCount" and any(d["Value"] == sys.argv[2] for d in m["Dimensions"])][0]
now = datetime.datetime.now(datetime.timezone.utc)
data = cw.get_metric_data(StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(minutes=5), MetricDataQueries=[{
    "Id": "invoked", "MetricStat": {"Metric": {"Namespace": "Sluice/Test", "MetricName": "InvokedEventCount", "Dimensions": dims},
    "Period": 60, "Stat": "Sum"}}])["MetricDataResults"][0]["Values"]
print(json.dumps({"metrics": metrics, "invoked": sum(data)}))
"#;

const SETUP_DESTINATIONS: &str = r#"
import boto3, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
sqs, sns = boto3.client("sqs", **kw), boto3.client("sns", **kw)
sqs.create_queue(QueueName="failures")
via = sqs.create_queue(QueueName="via-sns")["QueueUrl"]
topic = sns.create_topic(Name="failures")["TopicArn"]
sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint="arn:aws:sqs:us-east-1:123456789012:via-sns")
boto3.client("s3", **kw).create_bucket(Bucket="failures")
"#;

/// Prints the record found in each destination, as JSON.
const READ_DESTINATIONS: &str = r#"
import boto3, json, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
sqs, s3 = boto3.client("sqs", **kw), boto3.client("s3", **kw)
ids = {}
def one(queue):
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert len(msgs) == 1, msgs
    ids[queue] = msgs[0]["MessageId"]
    return json.loads(msgs[0]["Body"])
objects = s3.list_objects_v2(Bucket="failures", Prefix="aws/lambda/" + sys.argv[2] + "/bad-0/")["Contents"]
assert len(objects) == 1, objects
body = s3.get_object(Bucket="failures", Key=objects[0]["Key"])["Body"].read()
print(json.dumps({"sqs": one("failures"), "sns": json.loads(one("via-sns")["Message"]), "s3": json.loads(body),
                  "sqs_id": ids["failures"], "s3_key": objects[0]["Key"]}))
"#;

struct Moto {
    endpoint: String,
    child: std::process::Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Option<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let m = Moto { endpoint: format!("http://127.0.0.1:{port}"), child };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(30), "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(m)
    }

    /// Runs a Python script with boto3 (which moto brings) against this
    /// endpoint (its first argument); returns what it printed.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let out = std::process::Command::new("python3")
            .args(["-c", script, &self.endpoint])
            .args(args)
            .output()
            .expect("python3");
        assert!(out.status.success(), "python against moto: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Functions run without Docker (they echo their event).
    fn create_function(&self, name: &str) {
        let script = r#"
import boto3, io, json, sys, urllib.request, zipfile
endpoint, name = sys.argv[1], sys.argv[2]
urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/config", method="POST",
    data=json.dumps({"lambda": {"use_docker": False}}).encode(), headers={"content-type": "application/json"}))
kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
role = boto3.client("iam", **kw).create_role(RoleName="sluice-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
code = io.BytesIO()
with zipfile.ZipFile(code, "w") as z:
    z.writestr("handler.py", "def handler(event, context):\n    return {}\n")
boto3.client("lambda", **kw).create_function(FunctionName=name, Runtime="python3.11", Role=role,
    Handler="handler.handler", Code={"ZipFile": code.getvalue()})
"#;
        let out =
            std::process::Command::new("python3").args(["-c", script, &self.endpoint, name]).output().expect("python3");
        assert!(out.status.success(), "creating the function in moto: {}", String::from_utf8_lossy(&out.stderr));
    }
}
