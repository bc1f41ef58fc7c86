//! MSK IAM: SASL/OAUTHBEARER with a token that is a SigV4-presigned URL,
//! signed with the mapping's AWS credentials.
//!
//! No broker here speaks MSK IAM (tansu 0.6 has no OAUTHBEARER), so a proxy
//! written here sits in front of tansu and does what MSK does: it answers
//! SaslHandshake and SaslAuthenticate itself, checks the token's signature
//! (with its own SigV4 code, not aws-sigv4's), refuses every other request
//! until then, and afterwards forwards bytes. tansu advertises the proxy.
//! The test's own producer signs in with librdkafka's unsecured JWT, which
//! the proxy accepts only for that principal.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use common::*;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ACCESS_KEY: &str = "AKIASLUICETEST000001";
const SECRET_KEY: &str = "sluice/test+secret=key/0123456789abcdefghij";
const SESSION_TOKEN: &str = "session/token+with=odd/chars";
const CLUSTER_ARN: &str = "arn:aws:kafka:eu-west-1:123456789012:cluster/orders/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab-1";
const PRODUCER_PRINCIPAL: &str = "test-producer";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What an MSK broker checks of a token, done here from the SigV4
/// specification: the URL, its parameters, its age, and its signature.
fn verify(token: &str, secret: &str, region: &str, now: SystemTime) -> Result<BTreeMap<String, String>, String> {
    let url =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|e| format!("not base64url: {e}"))?;
    let url = String::from_utf8(url).map_err(|_| "not text".to_string())?;
    let host = format!("kafka.{region}.amazonaws.com");
    let query =
        url.strip_prefix(&format!("https://{host}/?")).ok_or(format!("not a presigned URL for {host}: {url}"))?;
    let params: BTreeMap<String, String> = query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let p = |k: &str| params.get(k).cloned().ok_or(format!("no {k}"));
    if p("Action")? != "kafka-cluster:Connect"
        || p("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256"
        || p("X-Amz-SignedHeaders")? != "host"
    {
        return Err(format!("wrong action, algorithm or signed headers: {params:?}"));
    }
    let amz_date = p("X-Amz-Date")?;
    let day = &amz_date[..8];
    let scope = format!("{day}/{region}/kafka-cluster/aws4_request");
    if p("X-Amz-Credential")? != format!("{ACCESS_KEY}/{scope}") {
        return Err(format!("wrong credential scope: {}", p("X-Amz-Credential")?));
    }
    let expires: u64 = p("X-Amz-Expires")?.parse().map_err(|_| "bad expiry")?;
    let signed_at = time_of(&amz_date);
    if now > signed_at + Duration::from_secs(expires) || signed_at > now + Duration::from_secs(300) {
        return Err("expired or from the future".into());
    }
    let mut canonical: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| *k != "X-Amz-Signature" && *k != "User-Agent")
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    canonical.sort();
    let canonical_query = canonical.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let request = format!("GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{}", hex(&Sha256::digest(b"")));
    let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(request.as_bytes())));
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), day);
    for part in [region, "kafka-cluster", "aws4_request"] {
        key = hmac(&key, part);
    }
    if hex(&hmac(&key, &to_sign)) != p("X-Amz-Signature")? {
        return Err("signature mismatch".into());
    }
    Ok(params)
}

/// `20261126T103000Z` as a time.
fn time_of(amz: &str) -> SystemTime {
    let n = |a: usize, b: usize| amz[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(4, 6), n(6, 8));
    // Days from the civil date (proleptic Gregorian), then seconds.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(9, 11) * 3600 + n(11, 13) * 60 + n(13, 15);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
}

fn msk_spec(bootstrap: &str, topic: &str, function: &str, group: &str) -> sluice_app::spec::MappingSpec {
    let mut m = spec(bootstrap, topic, function, group);
    m.event_source_arn = Some(CLUSTER_ARN.into());
    m.self_managed_kafka_event_source_config.security_protocol = Some("SASL_PLAINTEXT".into());
    m
}

fn static_aws(secret: &str) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new(ACCESS_KEY, secret, Some(SESSION_TOKEN.into()), None, "test");
    aws_config::SdkConfig::builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
        .build()
}

#[tokio::test]
async fn tokens_are_presigned_urls_an_msk_broker_accepts() {
    let m = msk_spec("b:9098", "t", "http://f/", "g");
    assert!(m.msk_iam(), "an MSK mapping on SASL with no SASL credentials signs in with IAM");
    assert!(m.validate(0).is_empty(), "{:?}", m.validate(0));
    let auth = sluice_server::kafka_auth::KafkaAuth::of(&m);
    assert!(auth.oauth_token().is_err(), "no token before the credentials are loaded");
    auth.load_credentials(&static_aws(SECRET_KEY)).await.unwrap();
    let token = auth.oauth_token().unwrap();
    let params = verify(&token.token, SECRET_KEY, "eu-west-1", SystemTime::now()).unwrap();
    assert_eq!(params["X-Amz-Security-Token"], SESSION_TOKEN);
    assert_eq!(params["X-Amz-Expires"], "900");
    assert!(params["User-Agent"].starts_with("sluice/"));
    let lifetime =
        token.lifetime_ms - SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((890_000..=900_000).contains(&lifetime), "a token lives 15 minutes ({lifetime} ms)");
    // Signed with another secret, the broker would refuse it.
    let other = sluice_server::kafka_auth::KafkaAuth::of(&m);
    other.load_credentials(&static_aws("some-other-secret")).await.unwrap();
    assert_eq!(
        verify(&other.oauth_token().unwrap().token, SECRET_KEY, "eu-west-1", SystemTime::now()).unwrap_err(),
        "signature mismatch"
    );
    // Not an MSK mapping, or SASL credentials given: no IAM.
    let mut plain = m.clone();
    plain.event_source_arn = None;
    plain.self_managed_kafka_event_source_config.security_protocol = None;
    assert!(!plain.msk_iam());
    let mut scram = m.clone();
    scram.source_access_configurations = vec![sluice_app::spec::SourceAccessConfiguration {
        kind: "SASL_SCRAM_512_AUTH".into(),
        username: Some("u".into()),
        password: Some("p".into()),
        ..Default::default()
    }];
    assert!(!scram.msk_iam());
    // Without the ARN, SASL with no credentials is still refused, by field.
    let fields: Vec<String> = plain_sasl().validate(0).into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["SelfManagedKafkaEventSourceConfig.SecurityProtocol"]);
}

fn plain_sasl() -> sluice_app::spec::MappingSpec {
    let mut m = msk_spec("b:9098", "t", "http://f/", "g");
    m.event_source_arn = None;
    m
}

/// What the proxy saw: sign-ins accepted and refused (by kind).
#[derive(Default)]
struct Seen {
    iam_ok: usize,
    iam_refused: Vec<String>,
    producer_ok: usize,
    refused_before_auth: usize,
}

struct Proxy {
    /// The secret a token must be signed with (MSK's view of the role).
    secret: Mutex<String>,
    seen: Mutex<Seen>,
}

async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let n = s.read_i32().await.ok()?;
    let mut b = vec![0; usize::try_from(n).ok()?];
    s.read_exact(&mut b).await.ok()?;
    Some(b)
}

async fn write_frame(s: &mut TcpStream, body: &[u8]) -> Option<()> {
    s.write_i32(body.len() as i32).await.ok()?;
    s.write_all(body).await.ok()
}

fn uvarint(b: &[u8], i: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let x = b[*i];
        *i += 1;
        v |= ((x & 0x7f) as u64) << shift;
        if x & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// Checks a client's first OAUTHBEARER message (RFC 7628):
/// `n,,\x01auth=Bearer <token>\x01\x01`.
fn check_bearer(p: &Proxy, msg: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(msg);
    let token = text.split('\x01').find_map(|kv| kv.strip_prefix("auth=Bearer ")).ok_or("no bearer token")?.to_string();
    // librdkafka's unsecured JWT (header.payload.): the test's producer only.
    if token.matches('.').count() == 2 {
        let payload = token.split('.').nth(1).unwrap();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|e| e.to_string())?;
        let claims: serde_json::Value = serde_json::from_slice(&claims).map_err(|e| e.to_string())?;
        if claims["sub"] == PRODUCER_PRINCIPAL {
            p.seen.lock().unwrap().producer_ok += 1;
            return Ok(());
        }
        return Err("unsigned token".into());
    }
    let secret = p.secret.lock().unwrap().clone();
    match verify(&token, &secret, "eu-west-1", SystemTime::now()) {
        Ok(_) => {
            p.seen.lock().unwrap().iam_ok += 1;
            Ok(())
        }
        Err(e) => {
            p.seen.lock().unwrap().iam_refused.push(e.clone());
            Err(e)
        }
    }
}

/// One client connection: ApiVersions is forwarded, the SASL exchange is
/// answered here, anything else before it is refused (the connection
/// closed), and after it every byte is forwarded.
async fn serve_client(p: Arc<Proxy>, mut client: TcpStream, upstream: String) {
    let Ok(mut broker) = TcpStream::connect(&upstream).await else { return };
    loop {
        let Some(req) = read_frame(&mut client).await else { return };
        let (api_key, version) = (i16::from_be_bytes([req[0], req[1]]), i16::from_be_bytes([req[2], req[3]]));
        let correlation = &req[4..8];
        let client_id_len = i16::from_be_bytes([req[8], req[9]]).max(0) as usize;
        let mut i = 10 + client_id_len;
        match api_key {
            18 => {
                // ApiVersions: the broker's own answer.
                write_frame(&mut broker, &req).await;
                let Some(resp) = read_frame(&mut broker).await else { return };
                write_frame(&mut client, &resp).await;
            }
            17 => {
                // SaslHandshake: only OAUTHBEARER.
                let mut resp = correlation.to_vec();
                let m = b"OAUTHBEARER";
                resp.extend(0i16.to_be_bytes());
                resp.extend(1i32.to_be_bytes());
                resp.extend((m.len() as i16).to_be_bytes());
                resp.extend(m);
                write_frame(&mut client, &resp).await;
                assert!(version >= 1, "SaslHandshake v0 (raw SASL frames) is not handled here");
            }
            36 => {
                // SaslAuthenticate.
                let flexible = version >= 2;
                let auth = if flexible {
                    let _tags = uvarint(&req, &mut i);
                    let n = uvarint(&req, &mut i) as usize - 1;
                    req[i..i + n].to_vec()
                } else {
                    let n = i32::from_be_bytes(req[i..i + 4].try_into().unwrap()) as usize;
                    req[i + 4..i + 4 + n].to_vec()
                };
                let verdict = check_bearer(&p, &auth);
                let mut resp = correlation.to_vec();
                if flexible {
                    resp.push(0);
                }
                resp.extend(if verdict.is_ok() { 0i16 } else { 58i16 }.to_be_bytes());
                let message = verdict.as_ref().err().map(|e| format!("MSK IAM refused the token: {e}"));
                match (&message, flexible) {
                    (Some(m), false) => {
                        resp.extend((m.len() as i16).to_be_bytes());
                        resp.extend(m.as_bytes());
                    }
                    (None, false) => resp.extend((-1i16).to_be_bytes()),
                    (Some(m), true) => {
                        resp.push(m.len() as u8 + 1);
                        resp.extend(m.as_bytes());
                    }
                    (None, true) => resp.push(0),
                }
                if flexible {
                    resp.push(1); // empty auth bytes
                } else {
                    resp.extend(0i32.to_be_bytes());
                }
                if version >= 1 {
                    resp.extend(3_600_000i64.to_be_bytes());
                }
                if flexible {
                    resp.push(0);
                }
                write_frame(&mut client, &resp).await;
                if verdict.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                return;
            }
            _ => {
                p.seen.lock().unwrap().refused_before_auth += 1;
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_msk_iam_mapping_signs_in_and_delivers_and_a_bad_signature_says_so() {
    let Some(bin) = tansu_bin() else {
        assert!(std::env::var_os("SLUICE_REQUIRE_TANSU").is_none(), "tansu is required but not installed");
        eprintln!("tansu not installed: MSK IAM test skipped");
        return;
    };
    // The node's AWS credentials (this file is its own process).
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_SESSION_TOKEN", SESSION_TOKEN);
    std::env::set_var("AWS_REGION", "eu-west-1");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap().to_string();
    let (_tansu, _dir, plain) = tansu_behind(&bin, &proxy_addr);
    let proxy = Arc::new(Proxy { secret: Mutex::new(SECRET_KEY.into()), seen: Default::default() });
    {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            loop {
                let Ok((c, _)) = listener.accept().await else { return };
                tokio::spawn(serve_client(proxy.clone(), c, plain.clone()));
            }
        });
    }

    // A client that does not sign in gets nothing.
    {
        let c: rdkafka::consumer::BaseConsumer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &proxy_addr).create().unwrap();
        assert!(rdkafka::consumer::Consumer::fetch_metadata(&c, None, Duration::from_secs(3)).is_err());
        assert!(proxy.seen.lock().unwrap().refused_before_auth > 0);
    }

    // Topic and records, from the test's own (unsecured-JWT) client.
    let total = 60;
    let mut test_client = rdkafka::ClientConfig::new();
    test_client
        .set("bootstrap.servers", &proxy_addr)
        .set("security.protocol", "sasl_plaintext")
        .set("sasl.mechanism", "OAUTHBEARER")
        .set("enable.sasl.oauthbearer.unsecure.jwt", "true")
        .set("sasl.oauthbearer.config", format!("principal={PRODUCER_PRINCIPAL}"));
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let cfg = test_client.clone();
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = cfg.create().unwrap();
        let topics = [
            NewTopic::new("iam", 2, TopicReplication::Fixed(1)),
            NewTopic::new("iam-dlq", 1, TopicReplication::Fixed(1)),
        ];
        for r in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
            r.unwrap();
        }
        let producer: FutureProducer = cfg.create().unwrap();
        for i in 0..total {
            let v = format!("r-{i}");
            producer
                .send(FutureRecord::<(), _>::to("iam").partition(i % 2).payload(&v), Duration::from_secs(10))
                .await
                .unwrap();
        }
    }

    let f = Recorder::default();
    let url = f.serve().await;
    let mut s = Sluice::start().await;
    let id = s.mappings.create(msk_spec(&proxy_addr, "iam", &url, "g-iam")).await.unwrap().uuid;
    if !f.wait_for(total as usize, Duration::from_secs(60)).await {
        let status = s.mappings.get(id).await.unwrap().status;
        panic!(
            "MSK IAM: {} of {total} delivered; status {status:?}; refused {:?}",
            f.count(),
            proxy.seen.lock().unwrap().iam_refused
        );
    }
    let signed_in = proxy.seen.lock().unwrap().iam_ok;
    assert!(signed_in >= 1, "Sluice's clients signed in with IAM tokens");
    assert!(proxy.seen.lock().unwrap().iam_refused.is_empty(), "{:?}", proxy.seen.lock().unwrap().iam_refused);
    // The lag reader signs in too: the mapping's lag is read (0 when done).
    let t = Instant::now();
    loop {
        let lag = s.mappings.live().lock().unwrap().get(&id).map(|st| st.lag()).unwrap_or_default();
        if lag.len() == 2 && lag.iter().all(|l| l.offset_lag == 0 && l.committed_offset.is_some()) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "lag through IAM: {lag:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("MSK IAM: {total} records delivered and committed; {signed_in} connections signed in with SigV4 tokens");

    // A failing record goes to a Kafka failure destination on the same
    // cluster: the destination's producer signs in with IAM too.
    *f.poison.lock().unwrap() = Some("r-7".into());
    let mut dlq = msk_spec(&proxy_addr, "iam", &url, "g-iam-dlq");
    dlq.maximum_retry_attempts = 0;
    dlq.destination_config.on_failure = Some(sluice_app::spec::OnFailure { destination: "kafka://iam-dlq".into() });
    let dlq_id = s.mappings.create(dlq).await.unwrap().uuid;
    let reader: rdkafka::consumer::BaseConsumer = test_client.clone().set("group.id", "test-reader").create().unwrap();
    let t = Instant::now();
    let diverted = loop {
        let c = tokio::task::block_in_place(|| {
            rdkafka::consumer::Consumer::fetch_watermarks(&reader, "iam-dlq", 0, Duration::from_secs(5))
        });
        if let Ok((_, high)) = c {
            if high > 0 {
                break high;
            }
        }
        let status = s.mappings.get(dlq_id).await.unwrap().status;
        assert!(t.elapsed() < Duration::from_secs(60), "nothing reached kafka://iam-dlq; status {status:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!("MSK IAM: {diverted} failed records written to kafka://iam-dlq by the destination's producer");
    *f.poison.lock().unwrap() = None;

    // MSK no longer accepts this role's signature: said in AWS's terms.
    *proxy.secret.lock().unwrap() = "rotated-elsewhere".into();
    let bad_id = s.mappings.create(msk_spec(&proxy_addr, "iam", &url, "g-iam-refused")).await.unwrap().uuid;
    let v = wait_status(&s, bad_id, authn_error).await;
    println!("a refused signature: {}", v.status.last_processing_result);
    assert!(
        v.status.last_processing_result.contains("SASL authentication failed"),
        "{}",
        v.status.last_processing_result
    );
    assert!(v.status.last_processing_result.contains("signature mismatch"), "{}", v.status.last_processing_result);
    assert!(!v.status.last_processing_result.contains(SECRET_KEY));
    s.stop().await;
}
