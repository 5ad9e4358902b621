//! Every metric name and its registration. Telemetry stays out of stage logic: stages call the
//! methods of [`Metrics`], one per event, which count (and the callers log).
//!
//! Why one file of about 1,000 lines: it is the list of every metric name with its help text,
//! buckets, registration and the counters resolved once at start, so that a name is defined in
//! one place and the table below, the README's and the dashboard's stay in step; the process
//! collector (`/proc/self`) and the merchant table's metrics are the parts that could move out.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `fraud_messages_received_total` | counter | topic, partition |
//! | `fraud_errors_total` | counter | stage, error_code |
//! | `fraud_messages_discarded_total` | counter | reason |
//! | `fraud_decisions_total` | counter | decision |
//! | `fraud_late_events_total` | counter | |
//! | `fraud_labels_total` | counter | outcome |
//! | `fraud_state_warmup_events_total` | counter | |
//! | `fraud_state_warmup_duration_seconds` | histogram | |
//! | `fraud_changelog_records_total` | counter | op (written, restored, invalid) |
//! | `fraud_changelog_restore_duration_seconds` | histogram | |
//! | `fraud_merchant_table_events_total` | counter | |
//! | `fraud_merchant_table_watermark_seconds` | gauge | |
//! | `fraud_merchant_sync_wait_seconds` | histogram | |
//! | `fraud_merchant_sync_timeouts_total` | counter | |
//! | `fraud_merchant_snapshots_total` | counter | op (written, restored, failed) |
//! | `fraud_processing_duration_seconds` | histogram | |
//! | `fraud_model_inference_duration_seconds` | histogram | |
//! | `fraud_event_lag_seconds` | histogram | |
//! | `fraud_model_score` | histogram (0–1) | |
//! | `fraud_window_entries` | gauge | |
//! | `fraud_kafka_consumer_lag` | gauge | topic, partition |
//! | `fraud_build_info` | gauge = 1 | version, model_version |
//! | `fraud_labels_consumer_lag` | gauge | partition |
//! | `fraud_assigned_partitions` | gauge | |
//! | `fraud_rebalances_total` | counter | kind (assign, revoke) |
//! | `fraud_transactions_total` | counter | outcome (committed, aborted) |
//! | `fraud_model_threshold` | gauge | |
//! | `fraud_model_alert_budget_ratio` | gauge | |
//! | `fraud_model_last_reload_timestamp_seconds` | gauge | |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, `process_threads` | (from `/proc/self`, Linux) | |

use prometheus::core::{Collector, Desc};
use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::decode::DecodeError;

/// Exactly-once: Kafka transactions ended, by outcome.
pub const TRANSACTIONS: &str = "fraud_transactions_total";
/// `fraud_transactions_total{outcome}`: committed.
pub const TXN_COMMITTED: &str = "committed";
/// `fraud_transactions_total{outcome}`: aborted (the worker rewound to the committed offsets).
pub const TXN_ABORTED: &str = "aborted";

/// Messages received.
pub const MESSAGES_RECEIVED: &str = "fraud_messages_received_total";
/// Errors by stage and code.
pub const ERRORS: &str = "fraud_errors_total";
/// Messages sent to the dead-letter topic, by reason.
pub const MESSAGES_DISCARDED: &str = "fraud_messages_discarded_total";
/// Decisions (alert or pass).
pub const DECISIONS: &str = "fraud_decisions_total";
/// Events applied to no state of their account or merchant (too old for its span, or too far ahead).
pub const LATE_EVENTS: &str = "fraud_late_events_total";
/// Labels consumed, by outcome.
pub const LABELS: &str = "fraud_labels_total";
/// Events applied to state from a partition's history before its first decision.
pub const WARMUP_EVENTS: &str = "fraud_state_warmup_events_total";
/// Time a partition's warm-up (state restore) took.
pub const WARMUP_DURATION: &str = "fraud_state_warmup_duration_seconds";
/// State changelog records, by what was done with them.
pub const CHANGELOG_RECORDS: &str = "fraud_changelog_records_total";
/// `fraud_changelog_records_total{op}`: written (accounts, tombstones and flush markers).
pub const CHANGELOG_WRITTEN: &str = "written";
/// `fraud_changelog_records_total{op}`: read back at a restore.
pub const CHANGELOG_RESTORED: &str = "restored";
/// `fraud_changelog_records_total{op}`: read back and unreadable (skipped).
pub const CHANGELOG_INVALID: &str = "invalid";
/// Time a partition's restore from the changelog took (its replay after it is in the warm-up).
pub const CHANGELOG_RESTORE_DURATION: &str = "fraud_changelog_restore_duration_seconds";
/// Time from message received to decision delivered and offset stored.
pub const PROCESSING_DURATION: &str = "fraud_processing_duration_seconds";
/// Time in the model.
pub const INFERENCE_DURATION: &str = "fraud_model_inference_duration_seconds";
/// Wall clock minus event time at processing.
pub const EVENT_LAG: &str = "fraud_event_lag_seconds";
/// Scores.
pub const MODEL_SCORE: &str = "fraud_model_score";
/// Accounts plus merchants in state.
pub const WINDOW_ENTRIES: &str = "fraud_window_entries";
/// Consumer lag in messages, from librdkafka statistics.
pub const CONSUMER_LAG: &str = "fraud_kafka_consumer_lag";
/// Build and model version.
pub const BUILD_INFO: &str = "fraud_build_info";
/// Labels not yet read, by partition of the labels topic.
pub const LABELS_LAG: &str = "fraud_labels_consumer_lag";
/// Partitions of the transactions topic assigned to this worker.
pub const ASSIGNED_PARTITIONS: &str = "fraud_assigned_partitions";
/// Rebalances seen by this worker, by kind.
pub const REBALANCES: &str = "fraud_rebalances_total";
/// The alert threshold in use (the override, or the model's own).
pub const MODEL_THRESHOLD: &str = "fraud_model_threshold";
/// The alert rate the model's threshold was chosen for (its alert budget), 0-1.
pub const MODEL_ALERT_BUDGET: &str = "fraud_model_alert_budget_ratio";
/// When the model in use was loaded (start or reload), Unix seconds.
pub const MODEL_LAST_RELOAD: &str = "fraud_model_last_reload_timestamp_seconds";

/// Label names.
pub const L_TOPIC: &str = "topic";
/// Label names.
pub const L_PARTITION: &str = "partition";
/// Label names.
pub const L_STAGE: &str = "stage";
/// Label names.
pub const L_ERROR_CODE: &str = "error_code";
/// Label names.
pub const L_REASON: &str = "reason";
/// Label names.
pub const L_DECISION: &str = "decision";
/// Label names.
pub const L_OUTCOME: &str = "outcome";
/// Label names.
pub const L_KIND: &str = "kind";

/// Rebalance kind label values.
pub const REBALANCE_ASSIGN: &str = "assign";
/// Rebalance kind label values.
pub const REBALANCE_REVOKE: &str = "revoke";

/// Stage label values.
pub const STAGE_RECEIVING: &str = "receiving";
/// Stage label values.
pub const STAGE_PROCESSING: &str = "processing";
/// Stage label values.
pub const STAGE_SENDING: &str = "sending";

/// Error codes (a fixed set).
pub const ERROR_CODES: [&str; 9] = [
    "kafka_consume",
    "kafka_produce",
    "offset_store",
    "serialize",
    "bad_label",
    "model_reload",
    DEAD_LETTER_TRUNCATED,
    DEAD_LETTER_REFUSED,
    ALERT_REFUSED,
];

/// Error code: a dead letter went out truncated (Kafka refused it whole).
pub const DEAD_LETTER_TRUNCATED: &str = "dead_letter_truncated";
/// Error code: a dead letter was refused even truncated; skipped, its offset stored.
pub const DEAD_LETTER_REFUSED: &str = "dead_letter_refused";
/// Error code: an alert was refused by Kafka (too large); its transaction was dead-lettered.
pub const ALERT_REFUSED: &str = "alert_refused";

/// Decision label values.
pub const DECISION_ALERT: &str = "alert";
/// Decision label values.
pub const DECISION_PASS: &str = "pass";

/// Label outcome values (`fraud_labels_total{outcome}`).
pub const LABEL_OUTCOMES: [&str; 3] = ["applied", "account_only", "genuine"];

/// The (stage, error_code) series that exist from the start (at 0).
pub const ERROR_SERIES: [(&str, &str); 9] = [
    (STAGE_RECEIVING, "kafka_consume"),
    (STAGE_PROCESSING, "bad_label"),
    (STAGE_PROCESSING, "model_reload"),
    (STAGE_SENDING, "kafka_produce"),
    (STAGE_SENDING, "offset_store"),
    (STAGE_SENDING, "serialize"),
    (STAGE_SENDING, DEAD_LETTER_TRUNCATED),
    (STAGE_SENDING, DEAD_LETTER_REFUSED),
    (STAGE_SENDING, ALERT_REFUSED),
];

/// The counters of every known label value, resolved once at registration: counting one of
/// them takes no label lookup (no hashing of label values, no lock of the metric vector).
struct Resolved {
    discarded: Vec<(&'static str, IntCounter)>,
    errors: Vec<((&'static str, &'static str), IntCounter)>,
    labels: Vec<(&'static str, IntCounter)>,
}

/// The counter of `key` among pre-resolved ones.
fn find<'a, K: PartialEq + ?Sized>(
    v: &'a [(&'static K, IntCounter)],
    key: &K,
) -> Option<&'a IntCounter> {
    v.iter().find(|(k, _)| *k == key).map(|(_, c)| c)
}

/// All metrics of one worker, registered on one registry. Cloning is cheap (shared handles).
///
/// Hot paths take handles once instead of naming labels per event:
/// [`Metrics::received_counter`], [`Metrics::decision_counters`],
/// [`Metrics::discarded_counter`], [`Metrics::error_counter`], [`Metrics::label_counter`].
/// The per-event methods ([`Metrics::discarded`], [`Metrics::error`], [`Metrics::label`]) use
/// the same pre-resolved counters for every known label value.
#[derive(Clone)]
pub struct Metrics {
    /// The registry (a fresh one per worker and per test).
    pub registry: Registry,
    resolved: std::sync::Arc<Resolved>,
    received: IntCounterVec,
    errors: IntCounterVec,
    discarded: IntCounterVec,
    decisions: IntCounterVec,
    late: IntCounter,
    labels: IntCounterVec,
    warmup: IntCounter,
    warmup_duration: Histogram,
    changelog_records: IntCounterVec,
    changelog_restore: Histogram,
    /// Processing time.
    pub processing: Histogram,
    /// Inference time.
    pub inference: Histogram,
    event_lag: Histogram,
    score: Histogram,
    window_entries: IntGauge,
    consumer_lag: IntGaugeVec,
    build_info: IntGaugeVec,
    labels_lag: IntGaugeVec,
    assigned_partitions: IntGauge,
    rebalances: IntCounterVec,
    transactions: IntCounterVec,
    model_threshold: Gauge,
    model_alert_budget: Gauge,
    model_last_reload: Gauge,
}

fn buckets_seconds() -> Vec<f64> {
    vec![
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
}

/// Event-time lag: 10 ms to 30 days. A live worker lags seconds; a day or more means a
/// backlog or a replay of old data (whose lag lands in `+Inf`: watch consumer lag instead).
fn event_lag_buckets() -> Vec<f64> {
    vec![
        0.01,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        60.0,
        300.0,
        900.0,
        3_600.0,
        21_600.0,
        86_400.0,
        604_800.0,
        2_592_000.0,
    ]
}

/// Scores: log-spaced from 0.001 (supervised models put thresholds at 0.01-0.1) up to 0.5, then
/// fine steps towards 1 (k-means thresholds sit at 0.99-0.9999).
fn score_buckets() -> Vec<f64> {
    vec![
        0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.8,
        0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 1.0,
    ]
}

impl Metrics {
    /// Registers every metric on `registry`.
    pub fn new(registry: Registry) -> Result<Metrics, prometheus::Error> {
        let received = IntCounterVec::new(
            Opts::new(MESSAGES_RECEIVED, "Messages received from Kafka."),
            &[L_TOPIC, L_PARTITION],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(ERRORS, "Errors by pipeline stage and error code."),
            &[L_STAGE, L_ERROR_CODE],
        )?;
        let discarded = IntCounterVec::new(
            Opts::new(
                MESSAGES_DISCARDED,
                "Messages sent to the dead-letter topic, by reason.",
            ),
            &[L_REASON],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new(
                DECISIONS,
                "Scored transactions by decision (alert or pass).",
            ),
            &[L_DECISION],
        )?;
        let late = IntCounter::new(
            LATE_EVENTS,
            "Events older than their entity's 30-day span or more than state.max_future_secs ahead: scored, not applied to state.",
        )?;
        let labels = IntCounterVec::new(
            Opts::new(LABELS, "Fraud labels consumed, by what applying them did."),
            &[L_OUTCOME],
        )?;
        let warmup = IntCounter::new(
            WARMUP_EVENTS,
            "Events applied to state from partition history before the first decision.",
        )?;
        let warmup_duration = Histogram::with_opts(
            HistogramOpts::new(
                WARMUP_DURATION,
                "Seconds a partition's state warm-up (restore) took before its first decision.",
            )
            .buckets(vec![0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )?;
        let changelog_records = IntCounterVec::new(
            Opts::new(
                CHANGELOG_RECORDS,
                "State changelog records written, or read back at a restore (restored, invalid).",
            ),
            &["op"],
        )?;
        let changelog_restore = Histogram::with_opts(
            HistogramOpts::new(
                CHANGELOG_RESTORE_DURATION,
                "Seconds a partition's restore from the state changelog took.",
            )
            .buckets(vec![0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )?;
        let processing = Histogram::with_opts(
            HistogramOpts::new(
                PROCESSING_DURATION,
                "Seconds from receiving a transaction to its decision delivered.",
            )
            .buckets(buckets_seconds()),
        )?;
        let inference = Histogram::with_opts(
            HistogramOpts::new(
                INFERENCE_DURATION,
                "Seconds spent in state, features and model.",
            )
            .buckets(buckets_seconds()),
        )?;
        let event_lag = Histogram::with_opts(
            HistogramOpts::new(EVENT_LAG, "Wall clock minus event time, seconds.")
                .buckets(event_lag_buckets()),
        )?;
        let score = Histogram::with_opts(
            HistogramOpts::new(MODEL_SCORE, "Model scores (0 to 1).").buckets(score_buckets()),
        )?;
        let window_entries = IntGauge::new(WINDOW_ENTRIES, "Accounts plus merchants in state.")?;
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                CONSUMER_LAG,
                "Consumer lag in messages (librdkafka statistics).",
            ),
            &[L_TOPIC, L_PARTITION],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "Always 1: the build and the model in use."),
            &["version", "model_version"],
        )?;
        let labels_lag = IntGaugeVec::new(
            Opts::new(
                LABELS_LAG,
                "Labels not yet read by this worker, by labels partition (librdkafka statistics).",
            ),
            &[L_PARTITION],
        )?;
        registry.register(Box::new(labels_lag.clone()))?;
        let assigned_partitions = IntGauge::new(
            ASSIGNED_PARTITIONS,
            "Partitions of the transactions topic assigned to this worker.",
        )?;
        let rebalances = IntCounterVec::new(
            Opts::new(
                REBALANCES,
                "Consumer group rebalances seen by this worker (assign or revoke).",
            ),
            &[L_KIND],
        )?;
        let model_threshold = Gauge::new(
            MODEL_THRESHOLD,
            "Alert threshold in use: model.threshold, or the model's own.",
        )?;
        let model_alert_budget = Gauge::new(
            MODEL_ALERT_BUDGET,
            "Share of transactions the model's threshold was chosen to alert on (its alert budget).",
        )?;
        let model_last_reload = Gauge::new(
            MODEL_LAST_RELOAD,
            "Unix time the model in use was loaded (at start or by a reload).",
        )?;
        registry.register(Box::new(assigned_partitions.clone()))?;
        registry.register(Box::new(rebalances.clone()))?;
        let transactions = IntCounterVec::new(
            Opts::new(
                TRANSACTIONS,
                "Exactly-once: Kafka transactions ended (alerts, dead letters and offsets), by outcome.",
            ),
            &[L_OUTCOME],
        )?;
        registry.register(Box::new(transactions.clone()))?;
        for o in [TXN_COMMITTED, TXN_ABORTED] {
            transactions.with_label_values(&[o]);
        }
        registry.register(Box::new(model_threshold.clone()))?;
        registry.register(Box::new(model_alert_budget.clone()))?;
        registry.register(Box::new(model_last_reload.clone()))?;
        registry.register(Box::new(ProcessCollector::new()?))?;
        for k in [REBALANCE_ASSIGN, REBALANCE_REVOKE] {
            rebalances.with_label_values(&[k]);
        }
        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(discarded.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(late.clone()))?;
        registry.register(Box::new(labels.clone()))?;
        registry.register(Box::new(warmup.clone()))?;
        registry.register(Box::new(warmup_duration.clone()))?;
        registry.register(Box::new(changelog_records.clone()))?;
        registry.register(Box::new(changelog_restore.clone()))?;
        for op in [CHANGELOG_WRITTEN, CHANGELOG_RESTORED, CHANGELOG_INVALID] {
            changelog_records.with_label_values(&[op]);
        }
        registry.register(Box::new(processing.clone()))?;
        registry.register(Box::new(inference.clone()))?;
        registry.register(Box::new(event_lag.clone()))?;
        registry.register(Box::new(score.clone()))?;
        registry.register(Box::new(window_entries.clone()))?;
        registry.register(Box::new(consumer_lag.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        // Known label values start at 0, so dashboards show 0 rather than "no data".
        for r in DecodeError::REASONS {
            discarded.with_label_values(&[r]);
        }
        for d in [DECISION_ALERT, DECISION_PASS] {
            decisions.with_label_values(&[d]);
        }
        let resolved = std::sync::Arc::new(Resolved {
            discarded: DecodeError::REASONS
                .iter()
                .map(|r| (*r, discarded.with_label_values(&[r])))
                .collect(),
            errors: ERROR_SERIES
                .iter()
                .map(|&(stage, code)| ((stage, code), errors.with_label_values(&[stage, code])))
                .collect(),
            labels: LABEL_OUTCOMES
                .iter()
                .map(|o| (*o, labels.with_label_values(&[o])))
                .collect(),
        });
        Ok(Metrics {
            registry,
            resolved,
            received,
            errors,
            discarded,
            decisions,
            late,
            labels,
            warmup,
            warmup_duration,
            changelog_records,
            changelog_restore,
            processing,
            inference,
            event_lag,
            score,
            window_entries,
            consumer_lag,
            build_info,
            labels_lag,
            assigned_partitions,
            rebalances,
            transactions,
            model_threshold,
            model_alert_budget,
            model_last_reload,
        })
    }

    /// The per-partition received counter, resolved once per partition task.
    pub fn received_counter(&self, topic: &str, partition: i32) -> IntCounter {
        self.received
            .with_label_values(&[topic, &partition.to_string()])
    }

    /// A message went to the dead-letter topic.
    pub fn discarded(&self, reason: &str) {
        match find(&self.resolved.discarded, reason) {
            Some(c) => c.inc(),
            None => self.discarded.with_label_values(&[reason]).inc(),
        }
    }

    /// The dead-letter counter of `reason`, to keep and increment without a label lookup.
    pub fn discarded_counter(&self, reason: &str) -> IntCounter {
        find(&self.resolved.discarded, reason)
            .cloned()
            .unwrap_or_else(|| self.discarded.with_label_values(&[reason]))
    }

    /// An error in a stage; `code` is one of [`ERROR_CODES`] (checked in debug builds, so a
    /// new code cannot reach the label set without being listed there and in the README).
    pub fn error(&self, stage: &str, code: &str) {
        debug_assert!(
            ERROR_CODES.contains(&code),
            "error_code {code:?} is not in metrics::ERROR_CODES"
        );
        match self.find_error(stage, code) {
            Some(c) => c.inc(),
            None => self.errors.with_label_values(&[stage, code]).inc(),
        }
    }

    /// The error counter of (`stage`, `code`), to keep and increment without a label lookup.
    pub fn error_counter(&self, stage: &str, code: &str) -> IntCounter {
        debug_assert!(
            ERROR_CODES.contains(&code),
            "error_code {code:?} is not in metrics::ERROR_CODES"
        );
        self.find_error(stage, code)
            .cloned()
            .unwrap_or_else(|| self.errors.with_label_values(&[stage, code]))
    }

    fn find_error(&self, stage: &str, code: &str) -> Option<&IntCounter> {
        self.resolved
            .errors
            .iter()
            .find(|((s, c), _)| *s == stage && *c == code)
            .map(|(_, c)| c)
    }

    /// Counters for alert and pass, resolved once.
    pub fn decision_counters(&self) -> (IntCounter, IntCounter) {
        (
            self.decisions.with_label_values(&[DECISION_ALERT]),
            self.decisions.with_label_values(&[DECISION_PASS]),
        )
    }

    /// A scored event.
    pub fn scored(&self, score: f32, event_lag_s: f64, late: bool) {
        self.score.observe(score as f64);
        self.event_lag.observe(event_lag_s.max(0.0));
        if late {
            self.late.inc();
        }
    }

    /// A Kafka transaction ended with `outcome` ([`TXN_COMMITTED`] or [`TXN_ABORTED`]).
    pub fn transaction(&self, outcome: &str) {
        self.transactions.with_label_values(&[outcome]).inc();
    }

    /// A label consumed.
    pub fn label(&self, outcome: &str) {
        match find(&self.resolved.labels, outcome) {
            Some(c) => c.inc(),
            None => self.labels.with_label_values(&[outcome]).inc(),
        }
    }

    /// The labels counter of `outcome`, to keep and increment without a label lookup.
    pub fn label_counter(&self, outcome: &str) -> IntCounter {
        find(&self.resolved.labels, outcome)
            .cloned()
            .unwrap_or_else(|| self.labels.with_label_values(&[outcome]))
    }

    /// `n` changelog records written.
    pub fn changelog_written(&self, n: usize) {
        self.changelog_records
            .with_label_values(&[CHANGELOG_WRITTEN])
            .inc_by(n as u64);
    }

    /// A partition restored from the changelog: `records` read, `invalid` of them skipped.
    pub fn changelog_restored(&self, records: u64, invalid: u64, seconds: f64) {
        self.changelog_records
            .with_label_values(&[CHANGELOG_RESTORED])
            .inc_by(records);
        self.changelog_records
            .with_label_values(&[CHANGELOG_INVALID])
            .inc_by(invalid);
        self.changelog_restore.observe(seconds);
    }

    /// Events replayed into state by a warm-up.
    pub fn warmed_up(&self, n: u64, seconds: f64) {
        self.warmup.inc_by(n);
        self.warmup_duration.observe(seconds);
    }

    /// State size.
    pub fn set_window_entries(&self, n: u64) {
        self.window_entries.set(n as i64);
    }

    /// Consumer lag of one partition.
    pub fn set_consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    /// Labels not yet read on one partition of the labels topic.
    pub fn set_labels_lag(&self, partition: i32, lag: i64) {
        self.labels_lag
            .with_label_values(&[&partition.to_string()])
            .set(lag);
    }

    /// Removes the consumer lag of a partition this worker no longer holds, so that no frozen
    /// value stays behind for a partition another worker now consumes.
    pub fn remove_consumer_lag(&self, topic: &str, partition: i32) {
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// Build and model version (the previous model's series is removed).
    pub fn set_build_info(&self, model_version: &str) {
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), model_version])
            .set(1);
    }

    /// A model was loaded (at start or by a reload): its version, the threshold in use, the
    /// alert rate its threshold was chosen for (None or 0 when the file does not say) and the
    /// load time.
    pub fn model_loaded(&self, model_version: &str, threshold: f64, alert_budget: Option<f64>) {
        self.set_build_info(model_version);
        self.model_threshold.set(threshold);
        self.model_alert_budget.set(alert_budget.unwrap_or(0.0));
        self.model_last_reload
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }

    /// A rebalance assigned (`REBALANCE_ASSIGN`) or revoked (`REBALANCE_REVOKE`) partitions;
    /// `assigned` is the number held afterwards.
    pub fn rebalanced(&self, kind: &str, assigned: usize) {
        self.rebalances.with_label_values(&[kind]).inc();
        self.assigned_partitions.set(assigned as i64);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Process CPU, memory and file descriptors read from `/proc/self` at each scrape (the
/// Prometheus client's conventional `process_*` names). Reads nothing and reports nothing where
/// `/proc` is missing.
struct ProcessCollector {
    descs: Vec<Desc>,
    cpu: Counter,
    rss: IntGauge,
    vsize: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
}

/// Clock ticks per second of `/proc` CPU times (USER_HZ, 100 on every Linux ABI).
const CLOCK_TICKS: f64 = 100.0;

impl ProcessCollector {
    fn new() -> Result<ProcessCollector, prometheus::Error> {
        let c = ProcessCollector {
            descs: Vec::new(),
            cpu: Counter::new(
                "process_cpu_seconds_total",
                "User and system CPU time of the process, seconds.",
            )?,
            rss: IntGauge::new("process_resident_memory_bytes", "Resident memory, bytes.")?,
            vsize: IntGauge::new("process_virtual_memory_bytes", "Virtual memory, bytes.")?,
            open_fds: IntGauge::new("process_open_fds", "Open file descriptors.")?,
            max_fds: IntGauge::new("process_max_fds", "Limit of open file descriptors.")?,
            start_time: Gauge::new(
                "process_start_time_seconds",
                "Start of the process, Unix seconds.",
            )?,
            threads: IntGauge::new("process_threads", "Threads of the process.")?,
        };
        let mut descs = Vec::new();
        descs.extend(c.cpu.desc().into_iter().cloned());
        descs.extend(c.rss.desc().into_iter().cloned());
        descs.extend(c.vsize.desc().into_iter().cloned());
        descs.extend(c.open_fds.desc().into_iter().cloned());
        descs.extend(c.max_fds.desc().into_iter().cloned());
        descs.extend(c.start_time.desc().into_iter().cloned());
        descs.extend(c.threads.desc().into_iter().cloned());
        Ok(ProcessCollector { descs, ..c })
    }
}

/// What `/proc/self` says: (cpu seconds, vsize bytes, threads, start ticks after boot).
fn proc_stat(stat: &str) -> Option<(f64, i64, i64, f64)> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = (num(14)? + num(15)?) / CLOCK_TICKS;
    Some((cpu, num(23)? as i64, num(20)? as i64, num(22)?))
}

/// A `Name:   value kB` line of `/proc/self/status`, in bytes.
fn status_kb(status: &str, name: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: i64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if let Some((cpu, vsize, threads, start_ticks)) = proc_stat(&stat) {
            let past = self.cpu.get();
            if cpu > past {
                self.cpu.inc_by(cpu - past);
            }
            self.vsize.set(vsize);
            self.threads.set(threads);
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            });
            if let Some(boot) = boot {
                self.start_time.set(boot + start_ticks / CLOCK_TICKS);
            }
            out.extend(self.cpu.collect());
            out.extend(self.vsize.collect());
            out.extend(self.threads.collect());
            out.extend(self.start_time.collect());
        }
        if let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| status_kb(&s, "VmRSS:"))
        {
            self.rss.set(rss);
            out.extend(self.rss.collect());
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
            out.extend(self.open_fds.collect());
        }
        let max = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_ascii_whitespace().nth(3)?.parse::<i64>().ok())
            });
        if let Some(max) = max {
            self.max_fds.set(max);
            out.extend(self.max_fds.collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_renders_every_name() {
        let m = Metrics::new(Registry::new()).unwrap();
        m.received_counter("tx", 0).inc();
        m.set_consumer_lag("tx", 0, 5);
        m.set_build_info("v1");
        m.scored(0.5, 1.0, true);
        m.label("applied");
        m.processing.observe(0.001);
        m.inference.observe(0.0001);
        m.model_loaded("v1", 0.05, Some(0.005));
        m.rebalanced(REBALANCE_ASSIGN, 3);
        m.set_labels_lag(0, 7);
        let text = m.render();
        for name in [
            MESSAGES_RECEIVED,
            ERRORS,
            MESSAGES_DISCARDED,
            DECISIONS,
            LATE_EVENTS,
            LABELS,
            WARMUP_EVENTS,
            PROCESSING_DURATION,
            INFERENCE_DURATION,
            EVENT_LAG,
            MODEL_SCORE,
            WINDOW_ENTRIES,
            CONSUMER_LAG,
            BUILD_INFO,
            LABELS_LAG,
            ASSIGNED_PARTITIONS,
            REBALANCES,
            MODEL_THRESHOLD,
            MODEL_ALERT_BUDGET,
            MODEL_LAST_RELOAD,
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("fraud_model_threshold 0.05"), "{text}");
        assert!(
            text.contains("fraud_model_alert_budget_ratio 0.005"),
            "{text}"
        );
        assert!(text.contains("fraud_assigned_partitions 3"), "{text}");
        assert!(
            text.contains("fraud_rebalances_total{kind=\"assign\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fraud_rebalances_total{kind=\"revoke\"} 0"),
            "{text}"
        );
        assert!(text.contains("fraud_messages_discarded_total{reason=\"not_json\"} 0"));
        assert!(text.contains("model_version=\"v1\""));
    }

    /// Every code of the fixed set starts at 0 (dashboards show 0, not "no data"), and no
    /// other code does.
    #[test]
    fn every_error_code_starts_at_zero() {
        let m = Metrics::new(Registry::new()).unwrap();
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{ERRORS}{{")))
            .collect();
        assert_eq!(series.len(), ERROR_CODES.len(), "{series:?}");
        for code in ERROR_CODES {
            let needle = format!("error_code=\"{code}\"");
            assert!(
                series
                    .iter()
                    .any(|l| l.contains(&needle) && l.ends_with(" 0")),
                "{code}: {series:?}"
            );
        }
    }

    /// The pre-resolved counters are the registered series: counting through a handle, through
    /// the per-event method or through a label value nobody resolved all lands in the metric.
    #[test]
    fn handles_count_on_the_registered_series() {
        let m = Metrics::new(Registry::new()).unwrap();
        let value = |m: &Metrics, series: &str| -> f64 {
            let text = m.render();
            text.lines()
                .find(|l| l.starts_with(series))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{series} missing in {text}"))
        };
        let c = m.discarded_counter("not_json");
        c.inc();
        m.discarded("not_json");
        m.clone().discarded("not_json");
        assert_eq!(
            value(&m, "fraud_messages_discarded_total{reason=\"not_json\"}"),
            3.0
        );
        m.discarded("brand_new");
        assert_eq!(
            value(&m, "fraud_messages_discarded_total{reason=\"brand_new\"}"),
            1.0
        );
        let e = m.error_counter(STAGE_SENDING, "kafka_produce");
        e.inc_by(2);
        m.error(STAGE_SENDING, "kafka_produce");
        assert_eq!(
            value(
                &m,
                "fraud_errors_total{error_code=\"kafka_produce\",stage=\"sending\"}"
            ),
            3.0
        );
        // Same code, other stage: its own series.
        m.error(STAGE_PROCESSING, "kafka_produce");
        assert_eq!(
            value(
                &m,
                "fraud_errors_total{error_code=\"kafka_produce\",stage=\"processing\"}"
            ),
            1.0
        );
        for o in LABEL_OUTCOMES {
            assert_eq!(
                value(&m, &format!("fraud_labels_total{{outcome=\"{o}\"}}")),
                0.0
            );
        }
        m.label_counter("applied").inc();
        m.label("applied");
        m.label("genuine");
        assert_eq!(value(&m, "fraud_labels_total{outcome=\"applied\"}"), 2.0);
        assert_eq!(value(&m, "fraud_labels_total{outcome=\"genuine\"}"), 1.0);
    }

    /// A revoked partition's lag series disappears.
    #[test]
    fn revoked_partition_lag_is_removed() {
        let m = Metrics::new(Registry::new()).unwrap();
        m.set_consumer_lag("tx", 0, 96_942);
        m.set_consumer_lag("tx", 1, 5);
        m.remove_consumer_lag("tx", 0);
        let text = m.render();
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(
            text.contains("fraud_kafka_consumer_lag{partition=\"1\",topic=\"tx\"} 5"),
            "{text}"
        );
    }

    /// The process metrics come from /proc/self: CPU time grows, memory and fds are positive.
    #[test]
    fn process_metrics_from_proc() {
        let m = Metrics::new(Registry::new()).unwrap();
        let value = |text: &str, name: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing in {text}"))
        };
        let text = m.render();
        assert!(value(&text, "process_resident_memory_bytes") > 1_000_000.0);
        assert!(value(&text, "process_open_fds") >= 3.0);
        assert!(value(&text, "process_max_fds") >= value(&text, "process_open_fds"));
        let start = value(&text, "process_start_time_seconds");
        let now = chrono::Utc::now().timestamp() as f64;
        assert!(
            start > now - 86_400.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
        // Burn CPU until the counter follows (the machine may be shared: wait on the
        // condition, within 20 s, rather than on a fixed time).
        let cpu0 = value(&text, "process_cpu_seconds_total");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        let mut cpu = cpu0;
        while cpu < cpu0 + 0.1 && std::time::Instant::now() < deadline {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
            cpu = value(&m.render(), "process_cpu_seconds_total");
        }
        std::hint::black_box(x);
        assert!(cpu >= cpu0 + 0.1, "cpu {cpu0} -> {cpu}");
    }

    #[test]
    fn proc_stat_parses_a_name_with_spaces() {
        let line = "1234 (tokio rt) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 1000000 2000 18446744073709551615";
        let (cpu, vsize, threads, start) = proc_stat(line).expect("parses");
        assert!((cpu - 3.0).abs() < 1e-9);
        assert_eq!(vsize, 1_000_000);
        assert_eq!(threads, 7);
        assert_eq!(start, 12345.0);
    }
}

/// Merchant windows fed from every partition (`state.merchant_scope = "global"`).
pub const MERCHANT_TABLE_EVENTS: &str = "fraud_merchant_table_events_total";
/// How long decisions waited for the merchant windows.
pub const MERCHANT_SYNC_WAIT: &str = "fraud_merchant_sync_wait_seconds";
/// Decisions made without the merchant windows caught up (waited the maximum).
pub const MERCHANT_SYNC_TIMEOUTS: &str = "fraud_merchant_sync_timeouts_total";
/// Snapshots of the merchant table written, restored, or failed to write, by `op`.
pub const MERCHANT_SNAPSHOTS: &str = "fraud_merchant_snapshots_total";
/// Event time up to which the merchant windows have seen every partition.
pub const MERCHANT_TABLE_WATERMARK: &str = "fraud_merchant_table_watermark_seconds";

/// The metrics of the merchant table (see [`crate::pipeline`]).
#[derive(Clone)]
pub struct MerchantTableMetrics {
    /// Transactions applied to merchant windows.
    pub events: IntCounter,
    /// Wait of a decision for the merchant windows.
    pub wait: Histogram,
    /// Waits that reached `state.merchant_sync_max_wait_ms`.
    pub timeouts: IntCounter,
    /// Event time (Unix seconds) before which every partition's transactions are applied.
    pub watermark: Gauge,
    /// Snapshots by `op`: written, restored, failed (to write).
    pub snapshots: IntCounterVec,
}

impl MerchantTableMetrics {
    /// Registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<MerchantTableMetrics> {
        let m = MerchantTableMetrics {
            events: IntCounter::new(
                MERCHANT_TABLE_EVENTS,
                "Transactions of every partition applied to the merchant windows.",
            )?,
            wait: Histogram::with_opts(
                HistogramOpts::new(
                    MERCHANT_SYNC_WAIT,
                    "Seconds a decision waited for the merchant windows to reach its event time.",
                )
                .buckets(buckets_seconds()),
            )?,
            timeouts: IntCounter::new(
                MERCHANT_SYNC_TIMEOUTS,
                "Decisions made after waiting state.merchant_sync_max_wait_ms for the merchant windows.",
            )?,
            watermark: Gauge::new(
                MERCHANT_TABLE_WATERMARK,
                "Event time (Unix seconds) before which the merchant windows hold every partition's transactions.",
            )?,
            snapshots: IntCounterVec::new(
                Opts::new(
                    MERCHANT_SNAPSHOTS,
                    "Snapshots of the merchant table, by op: written, restored, failed (to write).",
                ),
                &["op"],
            )?,
        };
        for op in ["written", "restored", "failed"] {
            m.snapshots.with_label_values(&[op]);
        }
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.wait.clone()))?;
        registry.register(Box::new(m.timeouts.clone()))?;
        registry.register(Box::new(m.watermark.clone()))?;
        registry.register(Box::new(m.snapshots.clone()))?;
        Ok(m)
    }
}
