//! Sluice's server: storage, the mapping service, the HTTP side and the
//! demo. `main.rs` is the CLI around it.

pub mod auth;
pub mod cloudwatch;
pub mod cluster;
pub mod demo;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod reset;
pub mod sample;
pub mod service;
pub mod store;
