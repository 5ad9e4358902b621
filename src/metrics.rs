//! Every metric name and its registration. Telemetry stays out of stage logic: stages call the
//! methods of [`Metrics`], one per event, which count (and the callers log).
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
//! | `fraud_processing_duration_seconds` | histogram | |
//! | `fraud_model_inference_duration_seconds` | histogram | |
//! | `fraud_event_lag_seconds` | histogram | |
//! | `fraud_model_score` | histogram (0–1) | |
//! | `fraud_window_entries` | gauge | |
//! | `fraud_kafka_consumer_lag` | gauge | topic, partition |
//! | `fraud_build_info` | gauge = 1 | version, model_version |

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::decode::DecodeError;

/// Messages received.
pub const MESSAGES_RECEIVED: &str = "fraud_messages_received_total";
/// Errors by stage and code.
pub const ERRORS: &str = "fraud_errors_total";
/// Messages sent to the dead-letter topic, by reason.
pub const MESSAGES_DISCARDED: &str = "fraud_messages_discarded_total";
/// Decisions (alert or pass).
pub const DECISIONS: &str = "fraud_decisions_total";
/// Events beyond the allowed lateness.
pub const LATE_EVENTS: &str = "fraud_late_events_total";
/// Labels consumed, by outcome.
pub const LABELS: &str = "fraud_labels_total";
/// Events applied to state from a partition's history before its first decision.
pub const WARMUP_EVENTS: &str = "fraud_state_warmup_events_total";
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

/// All metrics of one worker, registered on one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry (a fresh one per worker and per test).
    pub registry: Registry,
    received: IntCounterVec,
    errors: IntCounterVec,
    discarded: IntCounterVec,
    decisions: IntCounterVec,
    late: IntCounter,
    labels: IntCounterVec,
    warmup: IntCounter,
    /// Processing time.
    pub processing: Histogram,
    /// Inference time.
    pub inference: Histogram,
    event_lag: Histogram,
    score: Histogram,
    window_entries: IntGauge,
    consumer_lag: IntGaugeVec,
    build_info: IntGaugeVec,
}

fn buckets_seconds() -> Vec<f64> {
    vec![
        0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01,
        0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
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
            "Events older than the allowed lateness: scored, not applied to state.",
        )?;
        let labels = IntCounterVec::new(
            Opts::new(LABELS, "Fraud labels consumed, by what applying them did."),
            &[L_OUTCOME],
        )?;
        let warmup = IntCounter::new(
            WARMUP_EVENTS,
            "Events applied to state from partition history before the first decision.",
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
            HistogramOpts::new(EVENT_LAG, "Wall clock minus event time, seconds.").buckets(vec![
                0.01,
                0.05,
                0.1,
                0.5,
                1.0,
                5.0,
                10.0,
                30.0,
                60.0,
                300.0,
                3600.0,
                86400.0,
                604800.0,
                2_592_000.0,
                31_536_000.0,
            ]),
        )?;
        let score = Histogram::with_opts(
            HistogramOpts::new(MODEL_SCORE, "Model scores (0 to 1).").buckets(vec![
                0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0,
            ]),
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
        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(discarded.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(late.clone()))?;
        registry.register(Box::new(labels.clone()))?;
        registry.register(Box::new(warmup.clone()))?;
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
        for (stage, code) in [
            (STAGE_RECEIVING, "kafka_consume"),
            (STAGE_PROCESSING, "bad_label"),
            (STAGE_PROCESSING, "model_reload"),
            (STAGE_SENDING, "kafka_produce"),
            (STAGE_SENDING, "offset_store"),
            (STAGE_SENDING, "serialize"),
            (STAGE_SENDING, DEAD_LETTER_TRUNCATED),
            (STAGE_SENDING, DEAD_LETTER_REFUSED),
            (STAGE_SENDING, ALERT_REFUSED),
        ] {
            errors.with_label_values(&[stage, code]);
        }
        Ok(Metrics {
            registry,
            received,
            errors,
            discarded,
            decisions,
            late,
            labels,
            warmup,
            processing,
            inference,
            event_lag,
            score,
            window_entries,
            consumer_lag,
            build_info,
        })
    }

    /// The per-partition received counter, resolved once per partition task.
    pub fn received_counter(&self, topic: &str, partition: i32) -> IntCounter {
        self.received
            .with_label_values(&[topic, &partition.to_string()])
    }

    /// A message went to the dead-letter topic.
    pub fn discarded(&self, reason: &str) {
        self.discarded.with_label_values(&[reason]).inc();
    }

    /// An error in a stage.
    pub fn error(&self, stage: &str, code: &str) {
        self.errors.with_label_values(&[stage, code]).inc();
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

    /// A label consumed.
    pub fn label(&self, outcome: &str) {
        self.labels.with_label_values(&[outcome]).inc();
    }

    /// Events replayed into state by a warm-up.
    pub fn warmed_up(&self, n: u64) {
        self.warmup.inc_by(n);
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

    /// Build and model version (the previous model's series is removed).
    pub fn set_build_info(&self, model_version: &str) {
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), model_version])
            .set(1);
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
        ] {
            assert!(text.contains(name), "{name} missing");
        }
        assert!(text.contains("fraud_messages_discarded_total{reason=\"not_json\"} 0"));
        assert!(text.contains("model_version=\"v1\""));
    }
}
