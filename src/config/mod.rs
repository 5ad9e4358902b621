//! Configuration: `config/default.toml` (embedded), layered with a `--config` file, then with
//! `FRAUD__SECTION__KEY` environment variables, checked into a [`Config`].
//!
//! Every problem is collected, so an operator fixes a bad config in one go: unknown keys, values of
//! the wrong type, and values out of range or inconsistent with each other.
//!
//! Why one file of about 1,000 lines: it is the list of every key, its check and its derived
//! value, in the order of `config/default.toml`; split by section, the cross-section rules
//! (drain timeout below session timeout, distinct topic names, pass-through settings by client)
//! would have no home. Tests are in `tests.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use serde::Deserialize;

/// The complete default configuration, documented key by key.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "FRAUD__";

/// Keys that may be set but have no default (they are commented out in `default.toml`), with the
/// type they take.
const OPTIONAL_KEYS: &[(&str, Kind)] = &[("model.threshold", Kind::Float)];

/// The table whose keys are passed to librdkafka unchanged.
const LIBRDKAFKA_TABLE: &str = "kafka.librdkafka";

/// librdkafka settings that fraudstream sets itself, with the key to use instead.
const RESERVED_LIBRDKAFKA: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.bootstrap_servers"),
    ("group.id", "kafka.group_id"),
    ("session.timeout.ms", "kafka.session_timeout_ms"),
    ("statistics.interval.ms", "kafka.statistics_interval_ms"),
    ("auto.offset.reset", "kafka.auto_offset_reset"),
    (
        "enable.auto.offset.store",
        "(none: offsets are stored after delivery)",
    ),
    (
        "enable.auto.commit",
        "(none: stored offsets are auto-committed)",
    ),
    ("acks", "(none: producers always use acks=all)"),
    (
        "request.required.acks",
        "(none: producers always use acks=all)",
    ),
    (
        "enable.idempotence",
        "(none: producers are always idempotent)",
    ),
    ("transactional.id", "kafka.transactional_id"),
    ("transaction.timeout.ms", "kafka.transaction_timeout_ms"),
];

/// A configuration that could not be loaded: every problem found, one per line.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// Each problem, naming the key and the value.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// A value that must not appear in logs: Debug and Display print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive<T>(pub T);

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A librdkafka setting passed through: plain, or masked when its name or its value suggests a
/// secret (see [`is_secret`]).
#[derive(Clone, PartialEq, Eq)]
pub enum PassThrough {
    /// Shown in logs.
    Plain(String),
    /// Masked in logs and `check-config`.
    Secret(Sensitive<String>),
}

impl PassThrough {
    /// The value to hand to librdkafka.
    pub fn expose(&self) -> &str {
        match self {
            PassThrough::Plain(s) => s,
            PassThrough::Secret(s) => &s.0,
        }
    }
}

impl fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassThrough::Plain(s) => write!(f, "{s:?}"),
            PassThrough::Secret(s) => write!(f, "{s:?}"),
        }
    }
}

/// `[kafka]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    bootstrap_servers: String,
    group_id: String,
    session_timeout_ms: u64,
    statistics_interval_ms: u64,
    auto_offset_reset: String,
    delivery: String,
    commit_interval_ms: u64,
    transactional_id: String,
    transaction_timeout_ms: u64,
    #[serde(default)]
    librdkafka: BTreeMap<String, String>,
}

/// `[topics]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopics {
    transactions: String,
    alerts: String,
    dead_letter: String,
    labels: String,
    changelog: String,
    merchant_snapshot: String,
    create: bool,
    partitions: i64,
    replication_factor: i64,
}

/// `[input]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    max_message_bytes: i64,
    max_buffered_bytes: i64,
    max_amount: f64,
    max_future_secs: i64,
}

/// `[state]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    max_accounts: i64,
    max_merchants: i64,
    idle_ttl_secs: i64,
    max_future_secs: i64,
    warmup_secs: i64,
    label_lookup_entries: i64,
    merchant_scope: String,
    merchant_sync_max_wait_ms: i64,
    merchant_partition_idle_ms: i64,
    merchant_live_grace_ms: i64,
    changelog: bool,
    changelog_flush_ms: i64,
    merchant_snapshot_secs: i64,
}

/// `[model]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: String,
    threshold: Option<f64>,
    watch_interval_ms: u64,
}

/// `[metrics]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
    stall_timeout_ms: u64,
}

/// `[shutdown]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    drain_timeout_ms: u64,
}

/// The merged configuration before its values are checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kafka: RawKafka,
    topics: RawTopics,
    input: RawInput,
    state: RawState,
    model: RawModel,
    metrics: RawMetrics,
    shutdown: RawShutdown,
}

/// Kafka connection and consumer group.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Comma-separated host:port list.
    pub bootstrap_servers: String,
    /// Consumer group of the workers.
    pub group_id: String,
    /// Consumer group session timeout.
    pub session_timeout_ms: u64,
    /// librdkafka statistics interval (consumer lag); 0 disables.
    pub statistics_interval_ms: u64,
    /// "earliest" or "latest".
    pub auto_offset_reset: String,
    /// At-least-once (offsets stored after delivery) or exactly-once (Kafka transactions).
    pub delivery: Delivery,
    /// Exactly-once: how often the open transaction (alerts, dead letters, offsets) commits.
    pub commit_interval_ms: u64,
    /// Exactly-once: the producer's `transactional.id`, stable per worker instance.
    pub transactional_id: String,
    /// Exactly-once: `transaction.timeout.ms`, after which the broker aborts an open
    /// transaction of a dead worker that did not come back.
    pub transaction_timeout_ms: u64,
    /// Other librdkafka settings, passed through.
    pub librdkafka: BTreeMap<String, PassThrough>,
}

/// How decisions and consumed offsets reach Kafka (`kafka.delivery`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Offsets stored after the decision is acknowledged and auto-committed: a crash
    /// re-delivers, so a `read_committed` reader may see an alert twice.
    AtLeastOnce,
    /// Alerts, dead letters and the consumed offsets in one Kafka transaction per
    /// `kafka.commit_interval_ms` (EOS v2, KIP-447): a `read_committed` reader sees each once.
    ExactlyOnce,
}

impl Delivery {
    /// The names accepted by `kafka.delivery`.
    pub const NAMES: [&'static str; 2] = ["at_least_once", "exactly_once"];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::AtLeastOnce => "at_least_once",
            Delivery::ExactlyOnce => "exactly_once",
        }
    }

    /// Parses a `kafka.delivery` value; the error names the value and the closest name.
    pub fn parse(v: &str) -> Result<Delivery, String> {
        match v {
            "at_least_once" => Ok(Delivery::AtLeastOnce),
            "exactly_once" => Ok(Delivery::ExactlyOnce),
            _ => {
                let norm = v.trim().to_ascii_lowercase().replace(['-', ' '], "_");
                let best = Delivery::NAMES
                    .iter()
                    .map(|n| (edit_distance(n, &norm), *n))
                    .min_by_key(|(d, _)| *d)
                    .filter(|(d, _)| *d <= 4)
                    .map(|(_, n)| n);
                Err(match best {
                    Some(n) => format!(
                        "kafka.delivery: expected \"at_least_once\" or \"exactly_once\", got {v:?}; did you mean {n:?}?"
                    ),
                    None => format!(
                        "kafka.delivery: expected \"at_least_once\" or \"exactly_once\", got {v:?}"
                    ),
                })
            }
        }
    }
}

/// `topics.changelog`, or when empty `<group_id>-state-changelog`.
pub fn changelog_topic_of(group_id: &str, written: &str) -> String {
    if written.trim().is_empty() {
        format!("{group_id}-state-changelog")
    } else {
        written.to_string()
    }
}

/// `topics.merchant_snapshot`, or when empty `<group_id>-merchant-snapshot`.
pub fn merchant_snapshot_topic_of(group_id: &str, written: &str) -> String {
    if written.trim().is_empty() {
        format!("{group_id}-merchant-snapshot")
    } else {
        written.to_string()
    }
}

impl Config {
    /// The state changelog topic: `topics.changelog`, or `<kafka.group_id>-state-changelog`.
    pub fn changelog_topic(&self) -> String {
        changelog_topic_of(&self.kafka.group_id, &self.topics.changelog)
    }

    /// The merchant table's snapshot topic: `topics.merchant_snapshot`, or
    /// `<kafka.group_id>-merchant-snapshot`.
    pub fn merchant_snapshot_topic(&self) -> String {
        merchant_snapshot_topic_of(&self.kafka.group_id, &self.topics.merchant_snapshot)
    }

    /// True when the merchant table is snapshotted and restored from its snapshots.
    pub fn merchant_snapshots(&self) -> bool {
        self.state.changelog
            && self.state.merchant_scope == MerchantScope::Global
            && self.state.merchant_snapshot_secs > 0
    }
}

/// The default `transactional.id`: `fraudstream-<group_id>-<hostname>`, stable across restarts
/// of the worker on one host, so that a restarted worker aborts its predecessor's open
/// transaction at once (`init_transactions`).
pub fn default_transactional_id(group_id: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_string());
    format!("fraudstream-{group_id}-{host}")
}

/// Topic names and creation settings.
#[derive(Debug, Clone)]
pub struct TopicsConfig {
    /// Input transactions.
    pub transactions: String,
    /// Output alerts.
    pub alerts: String,
    /// Dead letters.
    pub dead_letter: String,
    /// Confirmed frauds.
    pub labels: String,
    /// The state changelog (compacted, one partition per transactions partition) as written;
    /// empty: [`Config::changelog_topic`] derives it from the group.
    pub changelog: String,
    /// The merchant table's snapshots as written; empty: [`Config::merchant_snapshot_topic`].
    pub merchant_snapshot: String,
    /// Create missing topics at start.
    pub create: bool,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication_factor: i32,
}

/// Limits on input messages.
#[derive(Debug, Clone, Copy)]
pub struct InputConfig {
    /// Largest message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Bytes of messages the worker holds at once (queued for partition tasks and in flight
    /// to Kafka), all partitions together; beyond it, partitions are paused.
    pub max_buffered_bytes: usize,
    /// Largest amount accepted.
    pub max_amount: f64,
    /// How far ahead of the wall clock an event timestamp may be, in seconds.
    pub max_future_secs: i64,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            max_message_bytes: 65536,
            max_buffered_bytes: 256 << 20,
            max_amount: 1_000_000.0,
            max_future_secs: 86_400,
        }
    }
}

/// Bounds of the windowed state.
#[derive(Debug, Clone, Copy)]
pub struct StateConfig {
    /// Most accounts held.
    pub max_accounts: u64,
    /// Most merchants held.
    pub max_merchants: u64,
    /// Idle time after which an entity is evicted, in seconds.
    pub idle_ttl_secs: u64,
    /// How far ahead of the newest event time applied (and of the wall clock) an event may be
    /// and still be applied to state, in seconds.
    pub max_future_secs: i64,
    /// History replayed into state when a partition starts, in seconds; 0 disables.
    pub warmup_secs: u64,
    /// Most recent transactions remembered (tx id → merchant, time) to credit a label that
    /// carries no `merchant_id`/`ts` to its merchant; 0 disables.
    pub label_lookup_entries: u64,
    /// Which transactions a merchant's windows see.
    pub merchant_scope: MerchantScope,
    /// Longest wait of a transaction for the merchant windows (global scope), in ms.
    pub merchant_sync_max_wait_ms: u64,
    /// How long the merchant table waits for a partition that has nothing buffered and is not
    /// at its end before it merges the others without it, in ms (global scope).
    pub merchant_partition_idle_ms: u64,
    /// How long a decision waits for every partition that looks read to its end to show a
    /// transaction at or after its own time before it trusts the end, in ms (global scope; 0:
    /// trusts it at once).
    pub merchant_live_grace_ms: u64,
    /// Write changed accounts to `topics.changelog` and restore from it on assignment.
    pub changelog: bool,
    /// How often a partition's changed accounts are written, in ms (at-least-once; in
    /// exactly-once mode, at every commit).
    pub changelog_flush_ms: u64,
    /// How often the merchant table is written to `topics.merchant_snapshot`, in seconds (with
    /// `changelog` and the global merchant scope; 0: never, the table is rebuilt by replay).
    pub merchant_snapshot_secs: u64,
}

/// `state.merchant_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantScope {
    /// Every partition of the topic, in event-time order (every worker reads the whole topic).
    Global,
    /// The partitions this worker decides.
    Partition,
}

impl MerchantScope {
    /// The value as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            MerchantScope::Global => "global",
            MerchantScope::Partition => "partition",
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_accounts: 1_000_000,
            max_merchants: 200_000,
            idle_ttl_secs: 35 * 86_400,
            max_future_secs: 300,
            warmup_secs: 30 * 86_400,
            label_lookup_entries: 4_000_000,
            merchant_scope: MerchantScope::Global,
            merchant_sync_max_wait_ms: 2_000,
            merchant_partition_idle_ms: 200,
            merchant_live_grace_ms: 0,
            changelog: true,
            changelog_flush_ms: 1_000,
            merchant_snapshot_secs: 60,
        }
    }
}

/// The model to load.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Model file.
    pub path: PathBuf,
    /// Threshold overriding the model's own.
    pub threshold: Option<f64>,
    /// Model file check interval; 0 disables (SIGHUP still reloads).
    pub watch_interval_ms: u64,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[topics]`.
    pub topics: TopicsConfig,
    /// `[input]`.
    pub input: InputConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// `[model]`.
    pub model: ModelConfig,
    /// `metrics.listen`.
    pub metrics_listen: SocketAddr,
    /// `metrics.stall_timeout_ms`: `/healthz` fails once the poll loop has not run this long.
    pub stall_timeout_ms: u64,
    /// `shutdown.drain_timeout_ms`.
    pub drain_timeout_ms: u64,
}

impl Config {
    /// The effective configuration as TOML, with the keys of `default.toml`; secrets (the
    /// librdkafka settings [`is_secret`] masks) print as `"***"`.
    pub fn to_toml(&self) -> String {
        use std::fmt::Write;
        fn q(s: &str) -> String {
            toml::Value::String(s.to_string()).to_string()
        }
        let k = &self.kafka;
        let t = &self.topics;
        let i = &self.input;
        let st = &self.state;
        let m = &self.model;
        let mut o = String::new();
        let _ = writeln!(o, "[kafka]");
        let _ = writeln!(o, "bootstrap_servers = {}", q(&k.bootstrap_servers));
        let _ = writeln!(o, "group_id = {}", q(&k.group_id));
        let _ = writeln!(o, "session_timeout_ms = {}", k.session_timeout_ms);
        let _ = writeln!(o, "statistics_interval_ms = {}", k.statistics_interval_ms);
        let _ = writeln!(o, "auto_offset_reset = {}", q(&k.auto_offset_reset));
        let _ = writeln!(o, "delivery = {}", q(k.delivery.name()));
        let _ = writeln!(o, "commit_interval_ms = {}", k.commit_interval_ms);
        let _ = writeln!(o, "transactional_id = {}", q(&k.transactional_id));
        let _ = writeln!(o, "transaction_timeout_ms = {}", k.transaction_timeout_ms);
        let _ = writeln!(o, "\n[kafka.librdkafka]");
        for (name, v) in &k.librdkafka {
            let shown = match v {
                PassThrough::Plain(s) => q(s),
                PassThrough::Secret(_) => q("***"),
            };
            let _ = writeln!(o, "{} = {shown}", q(name));
        }
        let _ = writeln!(o, "\n[topics]");
        let _ = writeln!(o, "transactions = {}", q(&t.transactions));
        let _ = writeln!(o, "alerts = {}", q(&t.alerts));
        let _ = writeln!(o, "dead_letter = {}", q(&t.dead_letter));
        let _ = writeln!(o, "labels = {}", q(&t.labels));
        let _ = writeln!(o, "changelog = {}", q(&t.changelog));
        let _ = writeln!(o, "merchant_snapshot = {}", q(&t.merchant_snapshot));
        let _ = writeln!(o, "create = {}", t.create);
        let _ = writeln!(o, "partitions = {}", t.partitions);
        let _ = writeln!(o, "replication_factor = {}", t.replication_factor);
        let _ = writeln!(o, "\n[input]");
        let _ = writeln!(o, "max_message_bytes = {}", i.max_message_bytes);
        let _ = writeln!(o, "max_amount = {}", toml::Value::Float(i.max_amount));
        let _ = writeln!(o, "max_future_secs = {}", i.max_future_secs);
        let _ = writeln!(o, "\n[state]");
        let _ = writeln!(o, "max_accounts = {}", st.max_accounts);
        let _ = writeln!(o, "max_merchants = {}", st.max_merchants);
        let _ = writeln!(o, "idle_ttl_secs = {}", st.idle_ttl_secs);
        let _ = writeln!(o, "max_future_secs = {}", st.max_future_secs);
        let _ = writeln!(o, "warmup_secs = {}", st.warmup_secs);
        let _ = writeln!(o, "label_lookup_entries = {}", st.label_lookup_entries);
        let _ = writeln!(o, "merchant_scope = {}", q(st.merchant_scope.as_str()));
        let _ = writeln!(
            o,
            "merchant_sync_max_wait_ms = {}",
            st.merchant_sync_max_wait_ms
        );
        let _ = writeln!(
            o,
            "merchant_partition_idle_ms = {}",
            st.merchant_partition_idle_ms
        );
        let _ = writeln!(o, "merchant_live_grace_ms = {}", st.merchant_live_grace_ms);
        let _ = writeln!(o, "changelog = {}", st.changelog);
        let _ = writeln!(o, "changelog_flush_ms = {}", st.changelog_flush_ms);
        let _ = writeln!(o, "merchant_snapshot_secs = {}", st.merchant_snapshot_secs);
        let _ = writeln!(o, "\n[model]");
        let _ = writeln!(o, "path = {}", q(&m.path.display().to_string()));
        match m.threshold {
            Some(th) => {
                let _ = writeln!(o, "threshold = {}", toml::Value::Float(th));
            }
            None => {
                let _ = writeln!(o, "# threshold: unset, the model file's own");
            }
        }
        let _ = writeln!(o, "watch_interval_ms = {}", m.watch_interval_ms);
        let _ = writeln!(o, "\n[metrics]");
        let _ = writeln!(o, "listen = {}", q(&self.metrics_listen.to_string()));
        let _ = writeln!(o, "stall_timeout_ms = {}", self.stall_timeout_ms);
        let _ = writeln!(o, "\n[shutdown]");
        let _ = writeln!(o, "drain_timeout_ms = {}", self.drain_timeout_ms);
        o
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    Table,
}

impl Kind {
    fn of(v: &Value) -> Kind {
        match v {
            Value::String(..) | Value::Char(..) => Kind::Str,
            Value::Bool(..) => Kind::Bool,
            // Num::to_f64 answers only for float variants.
            Value::Num(_, n) if n.to_f64().is_some() => Kind::Float,
            Value::Num(..) => Kind::Int,
            Value::Dict(..) | Value::Array(..) | Value::Empty(..) => Kind::Table,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Float => "a number",
            Kind::Bool => "true or false",
            Kind::Table => "a table",
        }
    }
}

/// The defaults of `config/default.toml` alone, without the `FRAUD__…` environment (for tests
/// that must not see what other tests set).
pub fn defaults() -> Config {
    let fig = Figment::from(Toml::string(DEFAULT_TOML));
    let mut cfg = from_figment(&fig).expect("config/default.toml is valid");
    cfg.model.path = resolve_model_path(&cfg.model.path, &PathOrigin::Default);
    cfg
}

/// Loads the default configuration, layered with `file` and the environment.
///
/// A relative `model.path` is resolved by where it was set (see [`resolve_model_path`]).
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError {
                problems: vec![format!("--config {}: file not found", path.display())],
            });
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__"));
    let mut cfg = from_figment(&fig)?;
    let origin = match fig.find_metadata("model.path") {
        Some(m) => match &m.source {
            Some(figment::Source::File(f)) => PathOrigin::File(f.clone()),
            _ if m.name.contains("environment") => PathOrigin::Env,
            _ => PathOrigin::Default,
        },
        None => PathOrigin::Default,
    };
    cfg.model.path = resolve_model_path(&cfg.model.path, &origin);
    Ok(cfg)
}

/// Where a setting holding a path was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathOrigin {
    /// In a `--config` file.
    File(PathBuf),
    /// In a `FRAUD__…` environment variable.
    Env,
    /// The built-in default.
    Default,
}

/// Resolves a relative `model.path`:
/// - set in a `--config` file: against that file's folder (the file and the model travel together);
/// - set by `FRAUD__MODEL__PATH`: against the working directory, as a shell would;
/// - the built-in default (`models/default.json`): the working directory if the file is there,
///   else `<executable's folder>/../share/fraudstream/` (an installed layout), else the source
///   tree the binary was built from (`cargo run` or `target/*/fraudstream` from anywhere);
///   when none has it, the path stays relative to the working directory and loading it fails
///   with a message naming `model.path`.
///
/// Absolute paths are kept.
pub fn resolve_model_path(path: &Path, origin: &PathOrigin) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match origin {
        PathOrigin::File(f) => {
            let dir = f.parent().unwrap_or(Path::new(""));
            let dir = std::fs::canonicalize(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            .unwrap_or_else(|_| dir.to_path_buf());
            dir.join(path)
        }
        PathOrigin::Env => path.to_path_buf(),
        PathOrigin::Default => {
            if path.exists() {
                return path.to_path_buf();
            }
            let share = std::env::current_exe().ok().and_then(|e| {
                e.parent()
                    .map(|d| d.join("../share/fraudstream").join(path))
            });
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            share
                .into_iter()
                .chain(std::iter::once(repo))
                .find(|p| p.exists())
                .unwrap_or_else(|| path.to_path_buf())
        }
    }
}

/// Loads the model file named by `model.path`, as `run` will: a missing or invalid file is a
/// configuration problem naming the setting to change.
pub fn check_model(cfg: &Config) -> Result<crate::model::Model, ConfigError> {
    crate::model::Model::load(&cfg.model.path).map_err(|e| ConfigError {
        problems: vec![format!(
            "model.path: {e} (set model.path in the --config file, whose folder a relative path \
             is resolved against, or FRAUD__MODEL__PATH)"
        )],
    })
}

/// Checks a merged figment into a [`Config`]; separate from [`load`] for tests.
pub fn from_figment(fig: &Figment) -> Result<Config, ConfigError> {
    let merged: Dict = fig.extract().map_err(|e| ConfigError {
        problems: e.into_iter().map(|e| e.to_string()).collect(),
    })?;
    let defaults: Dict = Figment::from(Toml::string(DEFAULT_TOML))
        .extract()
        .map_err(|e| ConfigError {
            problems: vec![format!("built-in default.toml: {e}")],
        })?;
    let mut problems = Vec::new();
    // Unknown keys and values of the wrong type are reported and replaced by their default, so
    // the range and cross-field checks below still run: every problem shows in one round.
    let checked = check_tree(&merged, &defaults, &defaults, "", &mut problems);
    let json = to_json(&Value::from(checked));
    let raw: RawConfig = serde_json::from_value(json).map_err(|e| {
        problems.push(e.to_string());
        ConfigError {
            problems: problems.clone(),
        }
    })?;
    match Config::try_from(raw) {
        Ok(cfg) if problems.is_empty() => Ok(cfg),
        Ok(_) => Err(ConfigError { problems }),
        Err(e) => {
            problems.extend(e.problems);
            Err(ConfigError { problems })
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Every known dotted key (tables included), from the defaults and the optional keys.
fn known_keys(defaults: &Dict, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in defaults {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let Value::Dict(_, sub) = v {
            if path != LIBRDKAFKA_TABLE {
                known_keys(sub, &path, out);
            }
        }
        out.push(path);
    }
    if prefix.is_empty() {
        out.extend(OPTIONAL_KEYS.iter().map(|(k, _)| k.to_string()));
    }
}

/// The known key closest to an unknown `path`: a sibling within a small edit distance, or the
/// same key name in another section (`topics.group_id` → `kafka.group_id`).
fn suggestion(path: &str, defaults: &Dict) -> Option<String> {
    let mut keys = Vec::new();
    known_keys(defaults, "", &mut keys);
    let (section, name) = path.rsplit_once('.').unwrap_or(("", path));
    let parent = |k: &str| k.rsplit_once('.').map_or("", |(p, _)| p).to_string();
    let limit = (name.chars().count() / 3).clamp(2, 3);
    let siblings = keys
        .iter()
        .filter(|k| parent(k) == section)
        .map(|k| (edit_distance(k, path), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone());
    siblings.or_else(|| {
        keys.iter()
            .filter(|k| k.rsplit_once('.').map_or(k.as_str(), |(_, n)| n) == name)
            .map(|k| k.to_string())
            .next()
    })
}

/// Walks the merged tree beside the defaults: reports unknown keys and wrong types, coerces
/// scalars into strings where a string is expected (environment variables are typed by their
/// look), and flattens the librdkafka table to dotted names.
fn check_tree(
    merged: &Dict,
    defaults: &Dict,
    root: &Dict,
    prefix: &str,
    problems: &mut Vec<String>,
) -> Dict {
    let mut out = Dict::new();
    for (key, value) in merged {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if path == LIBRDKAFKA_TABLE {
            let mut flat = Dict::new();
            flatten_passthrough(value, "", &path, &mut flat, problems);
            out.insert(key.clone(), Value::from(flat));
            continue;
        }
        let expected = match defaults.get(key) {
            Some(d) => Some(Kind::of(d)),
            None => OPTIONAL_KEYS
                .iter()
                .find(|(k, _)| *k == path)
                .map(|(_, kind)| *kind),
        };
        let Some(expected) = expected else {
            match suggestion(&path, root) {
                Some(k) => problems.push(format!("{path}: unknown key; did you mean {k}?")),
                None => problems.push(format!("{path}: unknown key")),
            }
            continue;
        };
        let got = Kind::of(value);
        match (expected, got) {
            (Kind::Table, Kind::Table) => {
                let (Value::Dict(_, sub), Some(Value::Dict(_, dsub))) = (value, defaults.get(key))
                else {
                    problems.push(format!("{path}: expected a table"));
                    continue;
                };
                let inner = check_tree(sub, dsub, root, &path, problems);
                out.insert(key.clone(), Value::from(inner));
            }
            (Kind::Str, Kind::Int | Kind::Float | Kind::Bool) => {
                out.insert(key.clone(), Value::from(scalar_string(value)));
            }
            (Kind::Float, Kind::Int) => {
                let f = match value {
                    Value::Num(_, n) => num_f64(n),
                    _ => f64::NAN,
                };
                out.insert(key.clone(), Value::from(f));
            }
            (e, g) if e == g => {
                out.insert(key.clone(), value.clone());
            }
            (e, _) => {
                problems.push(format!(
                    "{path}: expected {}, got {}",
                    e.name(),
                    describe(value)
                ));
                // Go on with the default so that the other checks still run.
                if let Some(d) = defaults.get(key) {
                    out.insert(key.clone(), d.clone());
                }
            }
        }
    }
    out
}

fn flatten_passthrough(
    value: &Value,
    prefix: &str,
    path: &str,
    out: &mut Dict,
    problems: &mut Vec<String>,
) {
    let Value::Dict(_, dict) = value else {
        problems.push(format!("{path}: expected a table, got {}", describe(value)));
        return;
    };
    for (k, v) in dict {
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Dict(..) => flatten_passthrough(v, &name, path, out, problems),
            Value::Array(..) | Value::Empty(..) => problems.push(format!(
                "{path}.\"{name}\": expected a string, number or boolean, got {}",
                describe(v)
            )),
            _ => {
                out.insert(name, Value::from(scalar_string(v)));
            }
        }
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(_, s) => s.clone(),
        Value::Char(_, c) => c.to_string(),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => num_i128(n)
            .map(|i| i.to_string())
            .unwrap_or_else(|| num_f64(n).to_string()),
        other => describe(other),
    }
}

/// Any integer variant (figment's `to_i128` answers only for signed ones).
fn num_i128(n: &figment::value::Num) -> Option<i128> {
    n.to_i128()
        .or_else(|| n.to_u128().and_then(|u| i128::try_from(u).ok()))
}

/// Any number as f64.
fn num_f64(n: &figment::value::Num) -> f64 {
    n.to_f64()
        .or_else(|| num_i128(n).map(|i| i as f64))
        .unwrap_or(f64::NAN)
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(_, s) => format!("{s:?}"),
        Value::Dict(..) => "a table".to_string(),
        Value::Array(..) => "an array".to_string(),
        Value::Empty(..) => "nothing".to_string(),
        other => scalar_string(other),
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::String(_, s) => serde_json::Value::String(s.clone()),
        Value::Char(_, c) => serde_json::Value::String(c.to_string()),
        Value::Bool(_, b) => serde_json::Value::Bool(*b),
        Value::Num(_, n) => match num_i128(n).and_then(|i| i64::try_from(i).ok()) {
            Some(i) => serde_json::Value::from(i),
            None => serde_json::Number::from_f64(num_f64(n))
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
        },
        Value::Empty(..) => serde_json::Value::Null,
        Value::Array(_, a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Dict(_, d) => serde_json::Value::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
    }
}

/// `host:port` to a socket address: an IP address as it is, a host name resolved (the first
/// address, IPv4 preferred: `localhost:9898` → 127.0.0.1:9898).
fn resolve_listen(listen: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = listen.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !listen.contains(':') {
        return Err("no port".into());
    }
    let addrs: Vec<SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| "the host name resolves to no address".into())
}

/// True when a pass-through setting must be masked: by name, anything under `sasl.` and any
/// name containing `password`, `secret`, `key` (e.g. `ssl.key.password`, `ssl.keystore.*`),
/// `token` or `credential`; by value, a URL holding credentials (`scheme://user:pass@host`) or
/// an inline `password=`, `secret=`, `token=` (as in `sasl.oauthbearer.config`).
pub fn is_secret(name: &str, value: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let by_name = n.starts_with("sasl.")
        || ["password", "secret", "key", "token", "credential"]
            .iter()
            .any(|w| n.contains(w));
    let v = value.to_ascii_lowercase();
    let inline = ["password=", "passwd=", "pwd=", "secret=", "token="]
        .iter()
        .any(|w| v.contains(w));
    by_name || inline || has_url_credentials(value)
}

/// `scheme://user:pass@host...` anywhere in `value`.
fn has_url_credentials(value: &str) -> bool {
    value.match_indices("://").any(|(i, _)| {
        let rest = &value[i + 3..];
        let authority = rest
            .split(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c == ',')
            .next()
            .unwrap_or_default();
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

fn positive(problems: &mut Vec<String>, key: &str, v: i64) -> u64 {
    if v <= 0 {
        problems.push(format!("{key}: must be > 0, got {v}"));
        0
    } else {
        v as u64
    }
}

fn non_empty(problems: &mut Vec<String>, key: &str, v: &str) {
    if v.trim().is_empty() {
        problems.push(format!("{key}: must not be empty, got {v:?}"));
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut p = Vec::new();
        let k = raw.kafka;
        non_empty(&mut p, "kafka.bootstrap_servers", &k.bootstrap_servers);
        non_empty(&mut p, "kafka.group_id", &k.group_id);
        if k.session_timeout_ms == 0 {
            p.push("kafka.session_timeout_ms: must be > 0, got 0".into());
        }
        if !matches!(k.auto_offset_reset.as_str(), "earliest" | "latest") {
            p.push(format!(
                "kafka.auto_offset_reset: expected \"earliest\" or \"latest\", got {:?}",
                k.auto_offset_reset
            ));
        }
        let delivery = Delivery::parse(&k.delivery).unwrap_or_else(|e| {
            p.push(e);
            Delivery::AtLeastOnce
        });
        if !(1..=60_000).contains(&k.commit_interval_ms) {
            p.push(format!(
                "kafka.commit_interval_ms: must be in 1..=60000, got {}",
                k.commit_interval_ms
            ));
        }
        if !(1_000..=900_000).contains(&k.transaction_timeout_ms) {
            p.push(format!(
                "kafka.transaction_timeout_ms: must be in 1000..=900000 (the broker's default transaction.max.timeout.ms), got {}",
                k.transaction_timeout_ms
            ));
        } else if k.transaction_timeout_ms <= k.commit_interval_ms {
            p.push(format!(
                "kafka.transaction_timeout_ms ({}) must be above kafka.commit_interval_ms ({})",
                k.transaction_timeout_ms, k.commit_interval_ms
            ));
        }
        let transactional_id = if k.transactional_id.trim().is_empty() {
            default_transactional_id(&k.group_id)
        } else {
            k.transactional_id.clone()
        };
        let mut librdkafka = BTreeMap::new();
        for (name, value) in k.librdkafka {
            if let Some((_, instead)) = RESERVED_LIBRDKAFKA.iter().find(|(r, _)| *r == name) {
                p.push(format!(
                    "kafka.librdkafka.\"{name}\": set by fraudstream, use {instead}"
                ));
                continue;
            }
            let v = if is_secret(&name, &value) {
                PassThrough::Secret(Sensitive(value))
            } else {
                PassThrough::Plain(value)
            };
            librdkafka.insert(name, v);
        }

        if let Some(v) = librdkafka.get("max.poll.interval.ms") {
            match v.expose().parse::<u64>() {
                Ok(ms) if ms < k.session_timeout_ms => p.push(format!(
                    "kafka.librdkafka.\"max.poll.interval.ms\" ({ms}) must be at least kafka.session_timeout_ms ({})",
                    k.session_timeout_ms
                )),
                Ok(_) => {}
                Err(_) => p.push(format!(
                    "kafka.librdkafka.\"max.poll.interval.ms\": expected milliseconds, got {:?}",
                    v.expose()
                )),
            }
        }

        let t = raw.topics;
        let derived_changelog = changelog_topic_of(&k.group_id, &t.changelog);
        let derived_snapshot = merchant_snapshot_topic_of(&k.group_id, &t.merchant_snapshot);
        let names = [
            ("topics.transactions", &t.transactions),
            ("topics.alerts", &t.alerts),
            ("topics.dead_letter", &t.dead_letter),
            ("topics.labels", &t.labels),
            ("topics.changelog", &derived_changelog),
            ("topics.merchant_snapshot", &derived_snapshot),
        ];
        for (i, (key, name)) in names.iter().enumerate() {
            non_empty(&mut p, key, name);
            if name.len() > 249
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                p.push(format!(
                    "{key}: {name:?} is not a valid Kafka topic name (letters, digits, '.', '_', '-', at most 249)"
                ));
            }
            for (other_key, other) in &names[..i] {
                if other == name {
                    p.push(format!(
                        "{key}: {name:?} is also {other_key}; topics must differ"
                    ));
                }
            }
        }
        if !(1..=10_000).contains(&t.partitions) {
            p.push(format!(
                "topics.partitions: must be in 1..=10000, got {}",
                t.partitions
            ));
        }
        if !(1..=32).contains(&t.replication_factor) {
            p.push(format!(
                "topics.replication_factor: must be in 1..=32, got {}",
                t.replication_factor
            ));
        }

        let i = raw.input;
        let max_message_bytes = positive(&mut p, "input.max_message_bytes", i.max_message_bytes);
        let max_buffered_bytes = positive(&mut p, "input.max_buffered_bytes", i.max_buffered_bytes);
        if !(i.max_amount.is_finite() && i.max_amount > 0.0) {
            p.push(format!(
                "input.max_amount: must be > 0, got {}",
                i.max_amount
            ));
        }
        let max_future_secs = positive(&mut p, "input.max_future_secs", i.max_future_secs);

        let s = raw.state;
        let max_accounts = positive(&mut p, "state.max_accounts", s.max_accounts);
        let max_merchants = positive(&mut p, "state.max_merchants", s.max_merchants);
        let idle_ttl_secs = positive(&mut p, "state.idle_ttl_secs", s.idle_ttl_secs);
        if !(0..=90 * 86_400).contains(&s.warmup_secs) {
            p.push(format!(
                "state.warmup_secs: must be in 0..=7776000 (90 days), got {}",
                s.warmup_secs
            ));
        }
        if !(0..=1_000_000_000).contains(&s.label_lookup_entries) {
            p.push(format!(
                "state.label_lookup_entries: must be in 0..=1000000000, got {}",
                s.label_lookup_entries
            ));
        }
        let merchant_scope = match s.merchant_scope.as_str() {
            "global" => MerchantScope::Global,
            "partition" => MerchantScope::Partition,
            other => {
                p.push(format!(
                    "state.merchant_scope: expected \"global\" or \"partition\", got {other:?}"
                ));
                MerchantScope::Global
            }
        };
        if !(0..=600_000).contains(&s.merchant_partition_idle_ms) {
            p.push(format!(
                "state.merchant_partition_idle_ms: must be in 0..=600000, got {}",
                s.merchant_partition_idle_ms
            ));
        }
        if !(0..=60_000).contains(&s.merchant_live_grace_ms) {
            p.push(format!(
                "state.merchant_live_grace_ms: must be in 0..=60000, got {}",
                s.merchant_live_grace_ms
            ));
        }
        if !(0..=86_400).contains(&s.merchant_snapshot_secs) {
            p.push(format!(
                "state.merchant_snapshot_secs: must be in 0..=86400, got {}",
                s.merchant_snapshot_secs
            ));
        }
        if !(10..=600_000).contains(&s.changelog_flush_ms) {
            p.push(format!(
                "state.changelog_flush_ms: must be in 10..=600000, got {}",
                s.changelog_flush_ms
            ));
        }
        if !(0..=600_000).contains(&s.merchant_sync_max_wait_ms) {
            p.push(format!(
                "state.merchant_sync_max_wait_ms: must be in 0..=600000, got {}",
                s.merchant_sync_max_wait_ms
            ));
        }
        if !(0..=86_400 * 365).contains(&s.max_future_secs) {
            p.push(format!(
                "state.max_future_secs: must be in 0..=31536000, got {}",
                s.max_future_secs
            ));
        }

        non_empty(&mut p, "model.path", &raw.model.path);
        if let Some(th) = raw.model.threshold {
            if !(0.0..=1.0).contains(&th) {
                p.push(format!("model.threshold: must be in [0, 1], got {th}"));
            }
        }

        let metrics_listen = match resolve_listen(&raw.metrics.listen) {
            Ok(a) => Some(a),
            Err(why) => {
                p.push(format!(
                    "metrics.listen: expected host:port such as 127.0.0.1:9898 or localhost:9898, got {:?} ({why})",
                    raw.metrics.listen
                ));
                None
            }
        };
        let drain = raw.shutdown.drain_timeout_ms;
        if drain == 0 {
            p.push("shutdown.drain_timeout_ms: must be > 0, got 0".into());
        }
        if drain >= k.session_timeout_ms {
            p.push(format!(
                "shutdown.drain_timeout_ms ({drain}) must be below kafka.session_timeout_ms ({})",
                k.session_timeout_ms
            ));
        }

        let stall = raw.metrics.stall_timeout_ms;
        if stall != 0 && stall <= drain {
            p.push(format!(
                "metrics.stall_timeout_ms ({stall}) must be above shutdown.drain_timeout_ms ({drain}) (a revocation waits up to the drain timeout), or 0 to disable"
            ));
        }

        match metrics_listen {
            Some(metrics_listen) if p.is_empty() => Ok(Config {
                kafka: KafkaConfig {
                    bootstrap_servers: k.bootstrap_servers,
                    group_id: k.group_id,
                    session_timeout_ms: k.session_timeout_ms,
                    statistics_interval_ms: k.statistics_interval_ms,
                    auto_offset_reset: k.auto_offset_reset,
                    delivery,
                    commit_interval_ms: k.commit_interval_ms,
                    transactional_id,
                    transaction_timeout_ms: k.transaction_timeout_ms,
                    librdkafka,
                },
                topics: TopicsConfig {
                    transactions: t.transactions,
                    alerts: t.alerts,
                    dead_letter: t.dead_letter,
                    labels: t.labels,
                    changelog: t.changelog,
                    merchant_snapshot: t.merchant_snapshot,
                    create: t.create,
                    partitions: t.partitions as i32,
                    replication_factor: t.replication_factor as i32,
                },
                input: InputConfig {
                    max_message_bytes: max_message_bytes as usize,
                    max_buffered_bytes: max_buffered_bytes as usize,
                    max_amount: i.max_amount,
                    max_future_secs: max_future_secs as i64,
                },
                state: StateConfig {
                    max_accounts,
                    max_merchants,
                    idle_ttl_secs,
                    max_future_secs: s.max_future_secs,
                    warmup_secs: s.warmup_secs.max(0) as u64,
                    label_lookup_entries: s.label_lookup_entries.max(0) as u64,
                    merchant_scope,
                    merchant_sync_max_wait_ms: s.merchant_sync_max_wait_ms.max(0) as u64,
                    merchant_partition_idle_ms: s.merchant_partition_idle_ms.max(0) as u64,
                    merchant_live_grace_ms: s.merchant_live_grace_ms.max(0) as u64,
                    changelog: s.changelog,
                    changelog_flush_ms: s.changelog_flush_ms.max(0) as u64,
                    merchant_snapshot_secs: s.merchant_snapshot_secs.max(0) as u64,
                },
                model: ModelConfig {
                    path: PathBuf::from(raw.model.path),
                    threshold: raw.model.threshold,
                    watch_interval_ms: raw.model.watch_interval_ms,
                },
                metrics_listen,
                stall_timeout_ms: raw.metrics.stall_timeout_ms,
                drain_timeout_ms: drain,
            }),
            _ => Err(ConfigError { problems: p }),
        }
    }
}

#[cfg(test)]
mod tests;
