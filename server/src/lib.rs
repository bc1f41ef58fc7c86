//! Sluice's server: storage, the mapping service, the HTTP side and the
//! demo. `main.rs` is the CLI around it.

pub mod auth;
pub mod aws;
pub mod clock;
pub mod cloudwatch;
pub mod cluster;
pub mod demo;
pub mod engine;
pub mod http;
pub mod kafka_auth;
pub mod ledger;
pub mod logs;
pub mod metrics;
pub mod problem;
pub mod reach;
pub mod reset;
pub mod sample;
pub mod schema;
pub mod secrets;
pub mod service;
pub mod shared;
pub mod sigv4;
pub mod store;
pub mod throttle;

/// Writes a file only its owner may read (creating its directory).
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(f, "{text}")
}
