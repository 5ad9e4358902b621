//! fraudstream: a fraud-detection stream processor beside Apache Kafka.
//!
//! Modules in pipeline order:
//! - [`config`]: `config/default.toml` + file + `FRAUD__` env → checked [`config::Config`]
//! - [`source`]: consumer group, labels consumer, topic checks
//! - [`decode`]: bytes → [`decode::Transaction`] or a dead-letter reason
//! - [`state`]: per-account and per-merchant event-time windows in sharded tables
//! - [`features`]: (transaction, state) → [`features::FeatureVector`]
//! - [`model`]: model file, scoring, training
//! - [`engine`]: the per-event path shared by `run`, `score` and `train`, and its [`engine::Decision`]
//! - [`reasons`]: why an alert fired, in words and structured
//! - [`alert`]: the alert message (risk band, reasons)
//! - [`sink`]: alerts and dead-letter topics; [`kafka_client`]: every client's settings
//! - [`pipeline`]: wires `run` (partition tasks, assignment and warm-up, labels, model reload);
//!   [`http`]: `/metrics`, `/healthz`, `/readyz` and the health they report
//! - [`replay`]: `score` and `train` over files; [`train`]: the training split and report;
//!   [`produce`]: file → Kafka;
//!   [`eval`]: scores against labels, the fraud team's way; [`ranking`]: ROC AUC, average
//!   precision, precision/recall at a threshold (shared by training and `eval`)
//! - [`generate`]: synthetic transactions with fraud patterns
//! - [`metrics`]: every metric name; [`shutdown`]: signals → cancellation
//! - [`progress`]: progress bars and periodic progress lines of the offline commands
//! - [`cli`]: the command line

pub mod alert;
pub mod cli;
pub mod config;
pub mod decode;
pub mod engine;
pub mod eval;
pub mod features;
pub mod generate;
pub mod http;
pub mod kafka_client;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod produce;
pub mod progress;
pub mod ranking;
pub mod reasons;
pub mod replay;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod state;
pub mod train;
