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

/// Serialises an alert into a new buffer: [`write_alert`]. `raw` is the original message text
/// (already decoded successfully, so it is valid JSON).
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
    let text: usize = reasons.iter().map(|r| 2 * r.text.len() + 96).sum();
    let mut out = Vec::with_capacity(320 + raw.len() + text);
    write_alert(
        &mut out,
        tx,
        raw,
        d,
        threshold,
        model,
        reasons,
        src,
        detected_at_ms,
    )?;
    Ok(out)
}

/// Appends the alert's JSON to `out` (a buffer the caller may reuse: `out.clear()` between
/// alerts), byte for byte what serialising [`Alert`] gives, without building the struct: no
/// `String` per field, timestamps and numbers written in place. `raw` is the original message
/// text; it is checked to be one JSON value (the transaction decoded, so it is) and copied
/// as it is. On error `out` may hold a partial alert.
#[allow(clippy::too_many_arguments)]
pub fn write_alert(
    out: &mut Vec<u8>,
    tx: &Transaction<'_>,
    raw: &str,
    d: &Decision,
    threshold: f32,
    model: &Model,
    reasons: &[Reason],
    src: SourcePos<'_>,
    detected_at_ms: i64,
) -> Result<(), serde_json::Error> {
    use std::io::Write as _;
    let transaction: &serde_json::value::RawValue = serde_json::from_str(raw.trim())?;
    out.extend_from_slice(b"{\"alert_id\":");
    if src.topic.bytes().all(is_plain_json_byte) {
        // Kafka topic names are [a-zA-Z0-9._-]: nothing to escape.
        let _ = write!(out, "\"{}/{}/{}\"", src.topic, src.partition, src.offset);
    } else {
        serde_json::to_writer(&mut *out, &src.alert_id())?;
    }
    out.extend_from_slice(b",\"tx_id\":");
    write_str(out, &tx.tx_id)?;
    out.extend_from_slice(b",\"account_id\":");
    write_str(out, &tx.account_id)?;
    out.extend_from_slice(b",\"merchant_id\":");
    write_str(out, &tx.merchant_id)?;
    out.extend_from_slice(b",\"ts\":");
    write_ts(out, tx.ts);
    out.extend_from_slice(b",\"detected_at\":");
    write_ts(out, detected_at_ms);
    out.extend_from_slice(b",\"score\":");
    serde_json::to_writer(&mut *out, &d.score)?;
    out.extend_from_slice(b",\"threshold\":");
    serde_json::to_writer(&mut *out, &threshold)?;
    out.extend_from_slice(b",\"model_version\":");
    write_str(out, model.version())?;
    out.extend_from_slice(match risk_band(model, d.score) {
        RiskBand::Low => b",\"risk\":\"low\",\"reasons\":[",
        RiskBand::Medium => b",\"risk\":\"medium\",\"reasons\":[",
        RiskBand::High => b",\"risk\":\"high\",\"reasons\":[",
    });
    for (i, r) in reasons.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, &r.text)?;
    }
    out.extend_from_slice(b"],\"reason_details\":[");
    for (i, r) in reasons.iter().enumerate() {
        out.extend_from_slice(if i > 0 {
            b",{\"feature\":"
        } else {
            b"{\"feature\":"
        });
        write_str(out, &r.feature)?;
        out.extend_from_slice(b",\"value\":");
        serde_json::to_writer(&mut *out, &r.value)?;
        out.extend_from_slice(b",\"typical\":");
        serde_json::to_writer(&mut *out, &r.typical)?;
        out.extend_from_slice(b",\"typical_of\":");
        match r.typical_of {
            Some(w) => write_str(out, w)?,
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"contribution\":");
        serde_json::to_writer(&mut *out, &r.contribution)?;
        out.extend_from_slice(b",\"text\":");
        write_str(out, &r.text)?;
        out.push(b'}');
    }
    out.push(b']');
    out.extend_from_slice(b",\"transaction\":");
    out.extend_from_slice(transaction.get().as_bytes());
    out.push(b'}');
    Ok(())
}

/// Writes `s` as a JSON string: copied as it is when nothing needs escaping (the common case:
/// ids and sentences), else through serde_json's escaping.
fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), serde_json::Error> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        // Non-ASCII UTF-8 stands for itself in JSON too (serde_json does not escape it).
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s)
    }
}

/// A byte that stands for itself inside a JSON string (printable ASCII but `"` and `\\`).
fn is_plain_json_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Writes `ms` as [`format_ts`] does, quoted, without allocating (years 0 to 9999; others
/// through [`format_ts`]).
fn write_ts(out: &mut Vec<u8>, ms: i64) {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) if (0..=9999).contains(&t.year()) => {
            let y = t.year() as u32;
            let d = |v: u32| b'0' + (v % 10) as u8;
            out.extend_from_slice(&[
                b'"',
                d(y / 1000),
                d(y / 100),
                d(y / 10),
                d(y),
                b'-',
                d(t.month() / 10),
                d(t.month()),
                b'-',
                d(t.day() / 10),
                d(t.day()),
                b'T',
                d(t.hour() / 10),
                d(t.hour()),
                b':',
                d(t.minute() / 10),
                d(t.minute()),
                b':',
                d(t.second() / 10),
                d(t.second()),
            ]);
            if ms % 1000 != 0 {
                let f = ms.rem_euclid(1000) as u32;
                out.extend_from_slice(&[b'.', d(f / 100), d(f / 10), d(f)]);
            }
            out.extend_from_slice(b"Z\"");
        }
        _ => {
            // Cannot fail: a String serialises.
            let _ = serde_json::to_writer(&mut *out, &format_ts(ms));
        }
    }
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

    /// What serialising the [`Alert`] struct gives: the format `write_alert` reproduces.
    #[allow(clippy::too_many_arguments)]
    fn via_struct(
        tx: &Transaction<'_>,
        raw: &str,
        d: &Decision,
        threshold: f32,
        model: &Model,
        reasons: &[Reason],
        src: SourcePos<'_>,
        detected_at_ms: i64,
    ) -> Vec<u8> {
        let transaction: &serde_json::value::RawValue =
            serde_json::from_str(raw.trim()).expect("raw JSON");
        serde_json::to_vec(&Alert {
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
        })
        .expect("serialises")
    }

    /// The hand-written alert is byte for byte the serialised struct: escapes in ids and
    /// texts, timestamps with and without milliseconds, out-of-range times, NaN and extreme
    /// scores, a topic name needing escapes, no reasons, and a reused buffer.
    #[test]
    fn write_alert_is_byte_for_byte_the_struct() {
        let m = default_model();
        let input = crate::config::InputConfig::default();
        let raws = [
            r#"{"tx_id":"t1","ts":"2018-05-01T00:00:00Z","account_id":"c1","merchant_id":"m1","amount":142.0,"currency":"EUR"}"#,
            "  {\"tx_id\":\"t\\\"q\\u00e9\\n\",\"ts\":\"2018-05-01T00:00:00.123Z\",\"account_id\":\"c\\\\é☃\",\"merchant_id\":\"m\\t1\",\"amount\":0.01,\"currency\":\"EUR\"}\n",
            r#"{"tx_id":"t3","ts":1525132800007,"account_id":"c3","merchant_id":"m3","amount":999999.99,"currency":"USD","extra":{"a":[1,2,{"b":null}]}}"#,
        ];
        let reasons = vec![
            Reason {
                feature: "amount".into(),
                value: 142.0,
                typical: Some(15.2),
                typical_of: Some("account"),
                contribution: 0.4,
                text: "amount 142.00 EUR is 9.3x the \"usual\" 15.20 EUR\n".into(),
            },
            Reason {
                feature: "tx_hour".into(),
                value: 3.0,
                typical: None,
                typical_of: None,
                contribution: 1e-9,
                text: "at 03:00 ☾".into(),
            },
        ];
        let mut buf = Vec::new();
        let mut cases = 0;
        for raw in raws {
            let tx =
                crate::decode::decode(raw.as_bytes(), &input, 1_600_000_000_000).expect("decodes");
            for (score, thr) in [
                (1.0f32, m.threshold()),
                (0.123_456_79, 0.0),
                (f32::NAN, 1e-30),
            ] {
                for topic in ["tx", "odd\"topic\\é"] {
                    for detected in [0i64, 1_600_000_000_123, -1, 300_000_000_000_000, i64::MIN] {
                        for rs in [&reasons[..], &reasons[..0]] {
                            let d = Decision {
                                features: [0.0; crate::features::MAX_DIM],
                                score,
                                alert: true,
                                late: false,
                            };
                            let src = SourcePos {
                                topic,
                                partition: 3,
                                offset: 9_007_199_254_740_993,
                            };
                            let want = via_struct(&tx, raw, &d, thr, &m, rs, src, detected);
                            let got =
                                alert_json(&tx, raw, &d, thr, &m, rs, src, detected).expect("json");
                            assert_eq!(
                                String::from_utf8_lossy(&got),
                                String::from_utf8_lossy(&want)
                            );
                            buf.clear();
                            write_alert(&mut buf, &tx, raw, &d, thr, &m, rs, src, detected)
                                .expect("json");
                            assert_eq!(buf, want);
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 3 * 3 * 2 * 5 * 2);
        assert!(
            alert_json(
                &crate::decode::decode(raws[0].as_bytes(), &input, 1_600_000_000_000)
                    .expect("decodes"),
                "{not json",
                &Decision {
                    features: [0.0; crate::features::MAX_DIM],
                    score: 1.0,
                    alert: true,
                    late: false,
                },
                0.5,
                &m,
                &reasons,
                SourcePos {
                    topic: "tx",
                    partition: 0,
                    offset: 0
                },
                0
            )
            .is_err(),
            "a raw text that is not JSON is an error, not a broken alert"
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
