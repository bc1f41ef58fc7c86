//! TLS to the brokers: a private CA (SERVER_ROOT_CA_CERTIFICATE) and mutual
//! TLS (CLIENT_CERTIFICATE_TLS_AUTH), against a real broker.
//!
//! tansu 0.6 takes `--cert`/`--key` but never wraps its connections in TLS
//! (its broker builds the acceptor and leaves it unused), so a TLS proxy
//! written here (OpenSSL) sits in front of it: tansu advertises the proxy's
//! address, the proxy requires a client certificate signed by the test CA
//! when asked to, and forwards plain bytes. The certificates are made with
//! the `openssl` command. A schema registry over mutual TLS is reached the
//! same way (the proxy in front of a stand-in registry).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use sluice_app::spec::SourceAccessConfiguration;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("the openssl command");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// signed by the CA; and a second CA nobody trusts.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sluice-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=someone-else",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    // X.509 v3 (an extension makes it so): rustls refuses v1 certificates.
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for name in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        let (csr, out) = (format!("{name}.csr"), format!("{name}.pem"));
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &out,
        ];
        args.extend(["-extfile", if name == "server" { "san.ext" } else { "client.ext" }]);
        openssl(dir, &args);
    }
}

/// Accepts TLS on `listener` and forwards each connection to `upstream`.
fn serve_tls_proxy(listener: tokio::net::TcpListener, upstream: String, dir: &Path, require_client_cert: bool) {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_certificate_chain_file(dir.join("server.pem")).unwrap();
    b.set_private_key_file(dir.join("server.key"), SslFiletype::PEM).unwrap();
    if require_client_cert {
        b.set_ca_file(dir.join("ca.pem")).unwrap();
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    let acceptor = Arc::new(b.build());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let ssl = Ssl::new(acceptor.context()).unwrap();
                let mut tls = tokio_openssl::SslStream::new(ssl, tcp).unwrap();
                if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                    return;
                }
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

fn pem(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_delivers_and_an_untrusted_one_says_so() {
    tls_round(false).await;
}

/// This round (and, less often, the one above) used to stall: the poller's
/// rebalance callback blocked a tokio worker on the committed-offset
/// look-up while the proxy's task that would carry the answer waited in
/// that worker's queue. The callback now runs with `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_delivers_and_no_client_certificate_says_so() {
    tls_round(true).await;
}

async fn tls_round(mutual: bool) {
    let _ =
        tracing_subscriber::fmt().with_env_filter(std::env::var("TLS_LOG").unwrap_or_else(|_| "off".into())).try_init();
    let Some(bin) = tansu_bin() else {
        assert!(std::env::var_os("SLUICE_REQUIRE_TANSU").is_none(), "tansu is required but not installed");
        eprintln!("tansu not installed: TLS test skipped");
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());

    {
        // tansu on a plain port, advertising the proxy's.
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap().to_string();
        let (_tansu, _dir, plain) = tansu_behind(&bin, &proxy_addr);
        serve_tls_proxy(proxy, plain.clone(), certs.path(), mutual);
        // Topic and records through the TLS listener, as any client would.
        let admin_cfg = |cfg: &mut rdkafka::ClientConfig| {
            cfg.set("bootstrap.servers", &proxy_addr)
                .set("security.protocol", "ssl")
                .set("ssl.ca.pem", pem(certs.path(), "ca.pem"));
            if mutual {
                cfg.set("ssl.certificate.pem", pem(certs.path(), "client.pem"))
                    .set("ssl.key.pem", pem(certs.path(), "client.key"));
            }
        };
        {
            use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
            use rdkafka::producer::{FutureProducer, FutureRecord};
            let mut cfg = rdkafka::ClientConfig::new();
            admin_cfg(&mut cfg);
            let admin: AdminClient<rdkafka::client::DefaultClientContext> = cfg.create().unwrap();
            for r in admin
                .create_topics(&[NewTopic::new("tls", 2, TopicReplication::Fixed(1))], &AdminOptions::new())
                .await
                .unwrap()
            {
                r.unwrap();
            }
            let producer: FutureProducer = cfg.create().unwrap();
            for i in 0..50 {
                let v = format!("r-{i}");
                producer
                    .send(FutureRecord::<(), _>::to("tls").partition(i % 2).payload(&v), Duration::from_secs(10))
                    .await
                    .unwrap();
            }
        }

        let f = Recorder::default();
        let url = f.serve().await;
        let mut s = Sluice::start().await;
        let mut m = spec(&proxy_addr, "tls", &url, if mutual { "g-mtls" } else { "g-tls" });
        m.source_access_configurations = vec![SourceAccessConfiguration {
            kind: "SERVER_ROOT_CA_CERTIFICATE".into(),
            certificate: Some(pem(certs.path(), "ca.pem")),
            ..Default::default()
        }];
        if mutual {
            m.source_access_configurations.push(SourceAccessConfiguration {
                kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(),
                certificate: Some(pem(certs.path(), "client.pem")),
                private_key: Some(pem(certs.path(), "client.key")),
                ..Default::default()
            });
        }
        assert_eq!(m.security_protocol(), "SSL");
        let id = s.mappings.create(m.clone()).await.unwrap().uuid;
        if !f.wait_for(50, Duration::from_secs(60)).await {
            let status = s.mappings.get(id).await.unwrap().status;
            panic!(
                "{}: {} of 50 delivered; status {status:?}",
                if mutual { "mutual TLS" } else { "private CA" },
                f.count()
            );
        }
        println!(
            "{}: 50 records delivered over TLS",
            if mutual { "mutual TLS (client certificate)" } else { "TLS with a private CA" }
        );

        // The wrong CA (or, with mutual TLS, no client certificate): refused, and said so.
        let mut bad = spec(&proxy_addr, "tls", &url, "g-tls-bad");
        bad.source_access_configurations = vec![SourceAccessConfiguration {
            kind: "SERVER_ROOT_CA_CERTIFICATE".into(),
            certificate: Some(pem(certs.path(), if mutual { "ca.pem" } else { "other-ca.pem" })),
            ..Default::default()
        }];
        let bad_id = s.mappings.create(bad).await.unwrap().uuid;
        let v = wait_status(&s, bad_id, |st| st.last_processing_result.starts_with("PROBLEM")).await;
        println!(
            "{}: {} / {}",
            if mutual { "no client certificate" } else { "an untrusted CA" },
            v.status.state_transition_reason,
            v.status.last_processing_result
        );
        assert!(
            v.status.last_processing_result.starts_with("PROBLEM: TLS handshake with the brokers failed"),
            "{}",
            v.status.last_processing_result
        );
        let why = if mutual { "certificate required" } else { "certificate verify failed" };
        assert!(v.status.last_processing_result.contains(why), "{}", v.status.last_processing_result);
        assert_eq!(v.status.state_transition_reason, "EVENT_SOURCE_AUTHN_ERROR");

        // A client key encrypted with a password: given a wrong one, the
        // key cannot be opened, and the mapping says so (never the password).
        if !mutual {
            openssl(
                certs.path(),
                &[
                    "pkcs8",
                    "-topk8",
                    "-v2",
                    "aes-256-cbc",
                    "-in",
                    "client.key",
                    "-out",
                    "client-enc.key",
                    "-passout",
                    "pass:right-key-pass",
                ],
            );
            let mut locked = spec(&proxy_addr, "tls", &url, "g-tls-locked");
            locked.source_access_configurations = vec![SourceAccessConfiguration {
                kind: "CLIENT_CERTIFICATE_TLS_AUTH".into(),
                certificate: Some(pem(certs.path(), "client.pem")),
                private_key: Some(pem(certs.path(), "client-enc.key")),
                private_key_password: Some("wrong-key-pass".into()),
                ..Default::default()
            }];
            let locked_id = s.mappings.create(locked).await.unwrap().uuid;
            let v = wait_status(&s, locked_id, authn_error).await;
            println!("a wrong key password: {}", v.status.last_processing_result);
            assert!(
                v.status.last_processing_result.starts_with("PROBLEM: Cannot use the client certificate or key"),
                "{}",
                v.status.last_processing_result
            );
            assert!(!v.status.last_processing_result.contains("wrong-key-pass"));
        }
        s.stop().await;
    }
}

/// A schema registry over TLS: its CA (SERVER_ROOT_CA_CERTIFICATE) and a
/// client certificate (CLIENT_CERTIFICATE_TLS_AUTH), as "Test connection"
/// and the pollers reach it; without either, the reason is said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_registry_over_mutual_tls() {
    use sluice_app::spec::{AccessKind, SchemaRegistryConfig, SchemaValidationConfig};
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let schema =
        serde_json::json!({"schema": r#"{"type":"record","name":"R","fields":[{"name":"id","type":"long"}]}"#});
    let app = axum::Router::new()
        .route("/schemas/ids/{id}", axum::routing::get(move || std::future::ready(axum::Json(schema.clone()))));
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = plain.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(plain, app).await.unwrap() });
    let tls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", tls.local_addr().unwrap().port());
    serve_tls_proxy(tls, upstream, certs.path(), true);

    let dir = certs.path();
    let ca = SourceAccessConfiguration {
        kind: AccessKind::ServerRootCaCertificate,
        certificate: Some(pem(dir, "ca.pem")),
        ..Default::default()
    };
    let client = SourceAccessConfiguration {
        kind: AccessKind::ClientCertificateTls,
        certificate: Some(pem(dir, "client.pem")),
        private_key: Some(pem(dir, "client.key")),
        ..Default::default()
    };
    let probe = |access: Vec<SourceAccessConfiguration>| {
        let config = SchemaRegistryConfig {
            schema_registry_uri: Some(url.clone()),
            event_record_format: Some("JSON".into()),
            schema_validation_configs: vec![SchemaValidationConfig { attribute: "VALUE".into() }],
            access_configs: access,
        };
        async move {
            let registry = sluice_server::schema::registry::Registry::new(&config, None, &Default::default())?;
            registry.probe(Some("1")).await
        }
    };
    let ok = probe(vec![ca.clone(), client.clone()]).await.unwrap();
    assert!(ok.contains("read schema 1 (AVRO) and compiled it"), "{ok}");
    let no_client = probe(vec![ca.clone()]).await.unwrap_err();
    assert!(no_client.contains(&url), "{no_client}");
    let untrusted = probe(vec![client]).await.unwrap_err();
    assert!(untrusted.to_lowercase().contains("certificate"), "the reason names the certificate: {untrusted}");
    println!("registry TLS: {ok} | without a client certificate: {no_client} | without the CA: {untrusted}");
}
