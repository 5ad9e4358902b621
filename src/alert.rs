//! The alert message an analyst reads: the [`Alert`] JSON (README "Data formats"), its
//! [`RiskBand`] and its reasons ([`crate::reasons`]).

use serde::Serialize;

use crate::decode::{format_ts, Transaction};
use crate::engine::Decision;
use crate::model::kmeans::threshold_for_rate;
use crate::model::Model;
use crate::reasons::Reason;

/// Reasons listed on each alert.
pub const REASONS_PER_ALERT: usize = 3;

/// Key of the supervised models' `validation` object holding the score above which a tenth of
/// the alert budget falls (a quantile of the final model's scores over its training range).
pub const HIGH_RISK_KEY: &str = "high_risk_threshold";

/// How risky an alerted transaction is, comparable across models: the bands come from the
/// model's alert budget (the share of transactions it was trained to alert on), not from raw
/// scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskBand {
    /// Below the model's own threshold: alerted only because the configured `model.threshold`
    /// is lower than the model's.
    Low,
    /// At or above the model's own threshold (within its alert budget).
    Medium,
    /// Among the top tenth of the alert budget.
    High,
}

/// The score above which a tenth of `model`'s alert budget falls: for the unsupervised kinds,
/// whose scores are the training population's CDF, the budget quantile itself; for the
/// supervised ones, the quantile of the final model's scores stored at training (`validation.`
/// [`HIGH_RISK_KEY`]). None for a model file without it (then no alert is `high`).
pub fn high_risk_threshold(model: &Model) -> Option<f32> {
    let b = model.body();
    match b.params.kind() {
        "iforest" | "kmeans" if b.trained.alert_rate > 0.0 => {
            Some(threshold_for_rate(b.trained.alert_rate / 10.0))
        }
        _ => b
            .validation
            .as_ref()
            .and_then(|v| v.get(HIGH_RISK_KEY))
            .and_then(serde_json::Value::as_f64)
            .map(|t| t as f32),
    }
}

/// The band of `score` for `model` (rule in [`RiskBand`]).
pub fn risk_band(model: &Model, score: f32) -> RiskBand {
    let own = model.threshold();
    match high_risk_threshold(model) {
        Some(h) if score >= h.max(own) => RiskBand::High,
        _ if score >= own => RiskBand::Medium,
        _ => RiskBand::Low,
    }
}

/// Where a transaction came from: alert ids derive from it, so a replay gives the same id.
#[derive(Debug, Clone, Copy)]
pub struct SourcePos<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl SourcePos<'_> {
    /// `topic/partition/offset`.
    pub fn alert_id(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// The alert message (JSON on the alerts topic, key = account_id).
#[derive(Debug, Serialize)]
pub struct Alert<'a> {
    /// `topic/partition/offset` of the transaction.
    pub alert_id: String,
    /// Transaction id.
    pub tx_id: &'a str,
    /// Account.
    pub account_id: &'a str,
    /// Merchant.
    pub merchant_id: &'a str,
    /// Event time, RFC 3339.
    pub ts: String,
    /// When the worker decided, RFC 3339.
    pub detected_at: String,
    /// Score in [0, 1].
    pub score: f32,
    /// Threshold in use.
    pub threshold: f32,
    /// Model version.
    pub model_version: &'a str,
    /// `low`, `medium` or `high`: see [`RiskBand`].
    pub risk: RiskBand,
    /// The features that pushed the score up most, in words.
    pub reasons: Vec<&'a str>,
    /// The same reasons, structured.
    pub reason_details: &'a [Reason],
    /// The input transaction, as received.
    pub transaction: &'a serde_json::value::RawValue,
}

/// Serialises an alert. `raw` is the original message text (already decoded successfully, so it
/// is valid JSON).
#[allow(clippy::too_many_arguments)]
pub fn alert_json(
    tx: &Transaction<'_>,
    raw: &str,
    d: &Decision,
    threshold: f32,
    model: &Model,
    reasons: &[Reason],
    src: SourcePos<'_>,
    detected_at_ms: i64,
) -> Result<Vec<u8>, serde_json::Error> {
    let transaction: &serde_json::value::RawValue = serde_json::from_str(raw.trim())?;
    let alert = Alert {
        alert_id: src.alert_id(),
        tx_id: &tx.tx_id,
        account_id: &tx.account_id,
        merchant_id: &tx.merchant_id,
        ts: format_ts(tx.ts),
        detected_at: format_ts(detected_at_ms),
        score: d.score,
        threshold,
        model_version: model.version(),
        risk: risk_band(model, d.score),
        reasons: reasons.iter().map(|r| r.text.as_str()).collect(),
        reason_details: reasons,
        transaction,
    };
    serde_json::to_vec(&alert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_model() -> Model {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.json");
        Model::load(&path).expect("models/default.json loads")
    }

    /// The bands of the (unsupervised) default model: medium from its own threshold, high from
    /// the quantile of a tenth of its alert budget, low below its threshold (a lower configured
    /// threshold).
    #[test]
    fn bands_come_from_the_alert_budget() {
        let m = default_model();
        let rate = m.body().trained.alert_rate;
        assert!(rate > 0.0);
        let own = m.threshold();
        let high = high_risk_threshold(&m).expect("unsupervised models have one");
        assert_eq!(high, threshold_for_rate(rate / 10.0));
        assert!(high > own, "high {high} above the threshold {own}");
        assert_eq!(risk_band(&m, own - 0.01), RiskBand::Low);
        assert_eq!(risk_band(&m, own), RiskBand::Medium);
        assert_eq!(risk_band(&m, (own + high) / 2.0), RiskBand::Medium);
        assert_eq!(risk_band(&m, high), RiskBand::High);
        assert_eq!(risk_band(&m, 1.0), RiskBand::High);
        assert_eq!(
            serde_json::to_string(&RiskBand::Medium).unwrap(),
            "\"medium\""
        );
    }

    /// The alert carries `risk`, the sentences and the structured reasons, beside the fields
    /// it always had.
    #[test]
    fn alert_json_has_risk_and_reason_details() {
        let m = default_model();
        let raw = r#"{"tx_id":"t1","ts":"2018-05-01T00:00:00Z","account_id":"c1","merchant_id":"m1","amount":142.0,"currency":"EUR"}"#;
        let tx = crate::decode::decode(
            raw.as_bytes(),
            &crate::config::InputConfig::default(),
            1_600_000_000_000,
        )
        .expect("decodes");
        let d = Decision {
            features: [0.0; crate::features::MAX_DIM],
            score: 1.0,
            alert: true,
            late: false,
        };
        let reasons = vec![Reason {
            feature: "amount".into(),
            value: 142.0,
            typical: Some(15.2),
            typical_of: Some("account"),
            contribution: 0.4,
            text: "amount 142.00 EUR is 9.3x the account's 30-day mean of 15.20 EUR".into(),
        }];
        let src = SourcePos {
            topic: "tx",
            partition: 0,
            offset: 7,
        };
        let body = alert_json(&tx, raw, &d, m.threshold(), &m, &reasons, src, 0).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(v["risk"], "high");
        assert_eq!(v["reasons"][0], reasons[0].text);
        let r = &v["reason_details"][0];
        assert_eq!(r["feature"], "amount");
        assert_eq!(r["typical_of"], "account");
        assert_eq!(r["text"], reasons[0].text);
        for k in ["value", "typical", "contribution"] {
            assert!(r[k].is_number(), "{k}: {r}");
        }
        for k in [
            "alert_id",
            "tx_id",
            "score",
            "threshold",
            "model_version",
            "transaction",
        ] {
            assert!(!v[k].is_null(), "{k} kept");
        }
    }
}
