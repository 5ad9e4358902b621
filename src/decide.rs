//! Score + threshold → [`Decision`], and the alert message an analyst reads.

use serde::Serialize;

use crate::decode::{format_ts, Transaction};
use crate::features::FeatureVector;

/// Reasons listed on each alert.
pub const REASONS_PER_ALERT: usize = 3;

/// The verdict on one transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Features the model saw.
    pub features: FeatureVector,
    /// Score in [0, 1].
    pub score: f32,
    /// score >= threshold.
    pub alert: bool,
    /// Beyond the allowed lateness (scored, not applied to state).
    pub late: bool,
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
    /// The features that pushed the score up most, in words.
    pub reasons: Vec<String>,
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
    model_version: &str,
    reasons: Vec<String>,
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
        model_version,
        reasons,
        transaction,
    };
    serde_json::to_vec(&alert)
}
