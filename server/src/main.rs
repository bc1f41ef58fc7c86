//! `sluice`: the binary. `serve` runs the console, API and (later) engine;
//! `demo` does the same next to an embedded Kafka cluster with traffic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use leptos::prelude::LeptosOptions;
use sluice_server::{cloudwatch, demo, engine, http, metrics, service, store};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Run functions on Kafka streams: a self-hosted Kafka event source mapping with a live console."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the console and the API on the configured database.
    Serve(ServeArgs),
    /// Serve, next to an embedded Kafka cluster, a traffic generator, a demo
    /// HTTP function and a mapping between them: live data with no setup.
    Demo(DemoArgs),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Database URL [default: sqlite://DATA_DIR/sluice.db].
    #[arg(long, env = "SLUICE_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory for Sluice's own files (the SQLite database)
    /// [default: ./sluice-data, or ./sluice-demo-data for `demo`].
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory with the console's built assets (pkg/sluice.js, .wasm, .css)
    /// [default: `site` beside the executable].
    #[arg(long, env = "SLUICE_SITE_ROOT")]
    site_root: Option<PathBuf>,
    /// Timeout of one invocation of an HTTP function, in milliseconds.
    #[arg(long, env = "SLUICE_HTTP_TIMEOUT_MS", default_value_t = 30_000)]
    http_timeout_ms: u64,
    /// Days of metric history kept (15-minute points; 1-minute points are kept two days).
    #[arg(long, env = "SLUICE_METRICS_RETENTION_DAYS", default_value_t = 30)]
    metrics_retention_days: u64,
    /// Days the failure ledger keeps a record a mapping gave up on (and
    /// redrives their results).
    #[arg(long, env = "SLUICE_FAILURES_RETENTION_DAYS", default_value_t = 14)]
    failures_retention_days: u64,
    /// Publish every mapping's metrics to CloudWatch under this namespace
    /// (AWS credentials and region from the standard chain). Off when unset.
    #[arg(long, env = "SLUICE_CLOUDWATCH_NAMESPACE")]
    cloudwatch_namespace: Option<String>,
    /// The URL other nodes and operators reach this node's console at, as
    /// the cluster view lists it [default: http://LISTEN/].
    #[arg(long, env = "SLUICE_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Seconds between CloudWatch publications.
    #[arg(long, env = "SLUICE_CLOUDWATCH_INTERVAL_S", default_value_t = 60)]
    cloudwatch_interval_s: u64,
    /// Hosts and networks mappings may point their HTTP function and
    /// brokers at, e.g. `*.internal,10.0.0.0/8` [default: anywhere].
    #[arg(long, env = "SLUICE_ALLOWED_HOSTS")]
    allowed_hosts: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Records per second the generator produces between bursts.
    #[arg(long, default_value_t = 40)]
    rate: u32,
    /// Share (0 to 1) of the records that go to one hot key, hence one
    /// partition, at all times (a skewed producer, for the advisor).
    #[arg(long, default_value_t = 0.0)]
    hot_key_share: f64,
}

#[tokio::main]
async fn main() {
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        use tracing_subscriber::Layer as _;
        let env = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
            .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn,aws_config=error".into());
        // SLUICE_LOG, except for the lines of mappings with their own level.
        let filter = sluice_server::logs::MappingLevels::new(env);
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter))
            .init();
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Serve(a) => serve(a, "sluice-data", None).await,
        Cmd::Demo(d) => serve(d.serve, "sluice-demo-data", Some((d.rate, d.hot_key_share))).await,
    };
    if let Err(e) = result {
        eprintln!("sluice: {e:#}");
        std::process::exit(1);
    }
}

/// Where the console's built assets are. Without them the API and engine
/// still run; the pages then have no styles or scripts, so say so loudly.
fn site_root(arg: Option<PathBuf>) -> PathBuf {
    let candidates: Vec<PathBuf> = match arg {
        Some(p) => vec![p],
        None => {
            let beside_exe = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("site")));
            beside_exe.into_iter().chain([PathBuf::from("target/site")]).collect()
        }
    };
    if let Some(found) = candidates.iter().find(|c| c.join("pkg").join("sluice.js").is_file()) {
        return found.clone();
    }
    eprintln!(
        "sluice: warning: the console's assets are not built (no pkg/sluice.js in {}); pages will have no styles or scripts. Run scripts/build.sh, or pass --site-root.",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    candidates[0].clone()
}

fn database_url(args: &ServeArgs, data_dir: &Path) -> Result<String> {
    if let Some(u) = &args.database_url {
        return Ok(u.clone());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    Ok(format!("sqlite://{}?mode=rwc", data_dir.join("sluice.db").display()))
}

async fn serve(args: ServeArgs, default_dir: &str, demo: Option<(u32, f64)>) -> Result<()> {
    let data_dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from(default_dir));
    let url = database_url(&args, &data_dir)?;
    let site = site_root(args.site_root.clone());
    let sealer = sluice_server::secrets::Sealer::from_environment(&data_dir.join("secret.key"))?;
    let store = store::Store::open_with(&url, sealer).await?;
    let settings = metrics::MetricsSettings {
        retention: Duration::from_secs(args.metrics_retention_days.max(1) * 86_400),
        failures_retention: Duration::from_secs(args.failures_retention_days.max(1) * 86_400),
        ..Default::default()
    };
    let shared = sluice_server::shared::Shared::new(store);
    let mappings = service::MappingService::with_shared(shared.clone(), settings);
    let reach = match &args.allowed_hosts {
        Some(list) => {
            sluice_server::reach::Reach::parse(list).map_err(|e| anyhow::anyhow!("SLUICE_ALLOWED_HOSTS: {e}"))?
        }
        None => Default::default(),
    };
    mappings.set_reach(reach.clone());
    mappings.set_http_timeout(Duration::from_millis(args.http_timeout_ms));
    mappings.end_abandoned_redrives().await;
    let admin_password = std::env::var("SLUICE_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    let bootstrap_token = std::env::var("SLUICE_BOOTSTRAP_TOKEN").ok().filter(|p| !p.is_empty());
    let generated = mappings.auth().bootstrap(admin_password.as_deref(), bootstrap_token.as_deref()).await?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let options = LeptosOptions::builder()
        .output_name("sluice")
        .site_root(site.display().to_string())
        .site_pkg_dir("pkg")
        .site_addr(addr)
        .build();
    let state = http::AppState::new(options, mappings.clone());

    let (extra, _demo) = match demo {
        Some((rate, hot)) => {
            let d = demo::Demo::start(rate, hot, addr, &mappings).await?;
            (demo::routes(), Some(d))
        }
        None => (axum::Router::new(), None),
    };
    let engine = engine::Engine::start(
        &shared,
        engine::EngineSettings {
            http_timeout: Duration::from_millis(args.http_timeout_ms),
            reach,
            ..Default::default()
        },
    );
    let collector = mappings.metrics().start();
    // Expired sessions are refused on sight; this only keeps the table small.
    {
        let auth = mappings.auth().clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(600));
            loop {
                every.tick().await;
                if let Err(e) = auth.purge_sessions().await {
                    tracing::warn!("cannot purge expired sessions: {e:#}");
                }
            }
        });
    }
    let shown = if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
    let cluster = sluice_server::cluster::start(
        shared.clone(),
        mappings.metrics().clone(),
        args.advertise_url.clone().unwrap_or_else(|| format!("http://{shown}/")),
    );
    tokio::spawn(aws_start(args.clone(), mappings.clone(), shared.aws.clone()));
    let app = http::router(state, extra);
    println!("Sluice {} console: http://{shown}/", env!("CARGO_PKG_VERSION"));
    println!("  database: {url}");
    println!("  node: {}", mappings.node().id);
    if let Some(pw) = generated {
        // Only its argon2 hash is stored; the file (owner-only) is for
        // whoever missed this line.
        let file = data_dir.join("initial-admin-password");
        let saved = sluice_server::write_private(&file, &pw)
            .map(|_| format!(", also in {}", file.display()))
            .unwrap_or_default();
        println!("  first start: sign in as admin with password {pw}{saved} (change it once signed in; SLUICE_ADMIN_PASSWORD chooses it)");
    }
    tracing::info!(%addr, site = %site.display(), "listening");
    let metrics = mappings.metrics().clone();
    let node = mappings.node().clone();
    // Live streams end first: open pages must not hold the shutdown up; a
    // load balancer sees the node not ready from the first moment.
    let stop = async move {
        shutdown_signal().await;
        node.stopping();
        metrics.close();
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(stop).await?;
    // Redrives stop (their jobs end as stopped); in-flight batches finish
    // (or are abandoned uncommitted) before exit.
    mappings.stop_redrives();
    engine.shutdown().await;
    let _ = collector.await;
    cluster.shutdown().await;
    println!("Sluice stopped.");
    Ok(())
}

/// Reads the AWS configuration (standard chain) in the background, says in
/// the console what it allows, and starts CloudWatch publishing if asked.
async fn aws_start(
    args: ServeArgs,
    mappings: std::sync::Arc<service::MappingService>,
    aws: sluice_server::aws::NodeAws,
) {
    use aws_credential_types::provider::ProvideCredentials as _;
    let sdk = aws.get().await;
    let mut lines = Vec::new();
    match sdk.region() {
        Some(r) => lines.push(format!("AWS region {r}: Lambda functions and SQS, SNS and S3 destinations can be used.")),
        None => lines.push(
            "No AWS region configured: Lambda functions and SQS/SNS destinations given by full ARN still work (the ARN names the region); by name they need AWS_REGION or a profile with a region.".into(),
        ),
    }
    let creds = match sdk.credentials_provider() {
        Some(p) => tokio::time::timeout(Duration::from_secs(5), p.provide_credentials()).await.ok().map(|r| r.is_ok()),
        None => Some(false),
    };
    if creds != Some(true) {
        lines.push("No AWS credentials found (environment, shared profile, web identity, container or instance metadata): AWS calls will fail until some are provided.".into());
    }
    match &args.cloudwatch_namespace {
        Some(ns) if sdk.region().is_some() => {
            let settings = cloudwatch::CloudWatchSettings {
                namespace: ns.clone(),
                interval: Duration::from_secs(args.cloudwatch_interval_s.max(1)),
            };
            lines.push(format!(
                "CloudWatch: publishing every mapping's metrics to namespace {ns} every {} s.",
                settings.interval.as_secs()
            ));
            cloudwatch::start(sdk, settings, mappings.metrics().clone(), mappings.store().clone(), Default::default());
        }
        Some(ns) => lines.push(format!("CloudWatch: not publishing to {ns}: no AWS region configured.")),
        None => lines.push("CloudWatch: off (--cloudwatch-namespace NAME publishes every mapping's metrics).".into()),
    }
    mappings.set_aws_status(lines);
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
