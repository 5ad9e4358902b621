//! Bytes → [`Transaction`], or a [`DecodeError`] whose reason names the dead-letter cause.
//!
//! Decoding borrows from the message: ids are `Cow<str>` that only allocate when the JSON string
//! holds escapes. Content never panics; every failure names the field and the value.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::config::InputConfig;

/// 2000-01-01T00:00:00Z in epoch milliseconds: older timestamps are taken as a unit mistake.
pub const MIN_TS_MS: i64 = 946_684_800_000;

/// Longest id accepted (tx_id, account_id, merchant_id and the optional ids), in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// One transaction event, borrowed from its message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Transaction<'a> {
    /// Unique id of the transaction.
    #[serde(borrow)]
    pub tx_id: Cow<'a, str>,
    /// Event time, epoch milliseconds (input: RFC 3339 or epoch milliseconds).
    #[serde(deserialize_with = "de_ts")]
    pub ts: i64,
    /// Account (customer) id; the Kafka key.
    #[serde(borrow)]
    pub account_id: Cow<'a, str>,
    /// Merchant (terminal) id.
    #[serde(borrow)]
    pub merchant_id: Cow<'a, str>,
    /// Amount in `currency`.
    pub amount: f64,
    /// ISO 4217 code.
    #[serde(borrow)]
    pub currency: Cow<'a, str>,
    /// Card id, optional.
    #[serde(borrow, default)]
    pub card_id: Option<Cow<'a, str>>,
    /// Merchant category code, optional.
    #[serde(borrow, default)]
    pub mcc: Option<Cow<'a, str>>,
    /// Country of the transaction, optional (ISO 3166 alpha-2).
    #[serde(borrow, default)]
    pub country: Option<Cow<'a, str>>,
    /// pos, ecom, atm..., optional.
    #[serde(borrow, default)]
    pub channel: Option<Cow<'a, str>>,
    /// Device id, optional.
    #[serde(borrow, default)]
    pub device_id: Option<Cow<'a, str>>,
    /// Latitude, optional.
    #[serde(default)]
    pub lat: Option<f64>,
    /// Longitude, optional.
    #[serde(default)]
    pub lon: Option<f64>,
    /// Named numbers, optional (e.g. a data set's anonymised columns); models may use them.
    #[serde(borrow, default, deserialize_with = "de_attributes")]
    pub attributes: Option<Attributes<'a>>,
}

/// Most entries in `attributes`.
pub const MAX_ATTRIBUTES_IN: usize = 256;

/// Named numbers, borrowed from the message where possible.
pub type Attributes<'a> = Vec<(Cow<'a, str>, f64)>;

fn de_attributes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Attributes<'de>>, D::Error> {
    struct AttrVisitor;
    impl<'de> Visitor<'de> for AttrVisitor {
        type Value = Option<Attributes<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of named numbers")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<M: de::MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8).min(64));
            #[derive(Deserialize)]
            struct Key<'a>(#[serde(borrow)] Cow<'a, str>);
            while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
                let v: f64 = m.next_value()?;
                if !v.is_finite() {
                    return Err(de::Error::custom(format!("{k} is not a finite number")));
                }
                if out.len() >= MAX_ATTRIBUTES_IN {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_ATTRIBUTES_IN} attributes"
                    )));
                }
                out.push((k, v));
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(AttrVisitor)
}

/// A confirmed fraud (or a confirmation of genuineness) from the labels file or topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Label {
    /// The labelled transaction.
    pub tx_id: String,
    /// Its account.
    pub account_id: String,
    /// True for a confirmed fraud.
    pub fraud: bool,
    /// When the label became known, epoch milliseconds; optional.
    #[serde(default, deserialize_with = "de_opt_ts")]
    pub reported_at: Option<i64>,
    /// The labelled transaction's merchant; optional (chargeback records carry it). With
    /// `ts`, the label reaches its merchant without a lookup.
    #[serde(default)]
    pub merchant_id: Option<String>,
    /// The labelled transaction's time, epoch milliseconds; optional.
    #[serde(default, deserialize_with = "de_opt_ts")]
    pub ts: Option<i64>,
}

/// Why a message went to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than `input.max_message_bytes`.
    #[error("message of {bytes} bytes exceeds input.max_message_bytes {max}")]
    Oversized {
        /// Size of the message.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8.
    #[error("message is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// First invalid byte.
        offset: usize,
    },
    /// Not a JSON object.
    #[error("message is not a JSON object: {detail}")]
    NotJson {
        /// The parser's words.
        detail: String,
    },
    /// A required field is absent.
    #[error("missing field {field}")]
    MissingField {
        /// The field.
        field: String,
    },
    /// A field has the wrong type or an invalid value.
    #[error("invalid field {field}: {detail}")]
    InvalidField {
        /// The field.
        field: String,
        /// What is wrong, with the value.
        detail: String,
    },
    /// Amount negative, not finite or above `input.max_amount`.
    #[error("invalid field amount: {value} is {why}")]
    InvalidAmount {
        /// The amount as given.
        value: f64,
        /// "negative", "above input.max_amount 1000000"...
        why: String,
    },
    /// Timestamp further ahead of the wall clock than `input.max_future_secs`.
    #[error("invalid field ts: {ts} is {ahead_secs} s ahead of now, more than input.max_future_secs {max}")]
    FutureTimestamp {
        /// The timestamp, RFC 3339.
        ts: String,
        /// Seconds ahead of now.
        ahead_secs: i64,
        /// The limit.
        max: i64,
    },
}

impl DecodeError {
    /// The dead-letter reason code: a label value of `fraud_messages_discarded_total` and the
    /// `fraud.error.code` header. A fixed set.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::NotUtf8 { .. } => "not_utf8",
            DecodeError::NotJson { .. } => "not_json",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::InvalidAmount { .. } => "invalid_amount",
            DecodeError::FutureTimestamp { .. } => "future_timestamp",
        }
    }

    /// Every reason code, for documentation and tests.
    pub const REASONS: [&'static str; 7] = [
        "oversized",
        "not_utf8",
        "not_json",
        "missing_field",
        "invalid_field",
        "invalid_amount",
        "future_timestamp",
    ];
}

/// Decodes and checks one transaction message. `now_ms` is the wall clock, injected for tests.
pub fn decode<'a>(
    bytes: &'a [u8],
    limits: &InputConfig,
    now_ms: i64,
) -> Result<Transaction<'a>, DecodeError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(DecodeError::Oversized {
            bytes: bytes.len(),
            max: limits.max_message_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::NotJson {
            detail: format!(
                "starts with {:?}",
                text.trim_start().chars().next().unwrap_or(' ')
            ),
        });
    }
    let tx: Transaction<'a> = match serde_json::from_str(text) {
        Ok(tx) => tx,
        Err(e) => return Err(classify(text, e)),
    };
    validate(&tx, limits, now_ms)?;
    Ok(tx)
}

/// Decodes one label message.
pub fn decode_label(bytes: &[u8]) -> Result<Label, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let label: Label = serde_json::from_str(text).map_err(|e| classify_label(text, e))?;
    if label.tx_id.is_empty() {
        return Err(invalid("tx_id", "is empty".into()));
    }
    if label.account_id.is_empty() {
        return Err(invalid("account_id", "is empty".into()));
    }
    if label.merchant_id.as_deref().is_some_and(str::is_empty) {
        return Err(invalid("merchant_id", "is empty".into()));
    }
    if let Some(ts) = label.ts {
        if ts < MIN_TS_MS {
            return Err(invalid(
                "ts",
                format!("{} is before 2000-01-01", format_ts(ts)),
            ));
        }
    }
    Ok(label)
}

fn invalid(field: &str, detail: String) -> DecodeError {
    DecodeError::InvalidField {
        field: field.to_string(),
        detail,
    }
}

/// Turns a serde error into a reason; on the (cold) error path, parses again with
/// `serde_path_to_error` to name the field.
fn classify_as<'de, T: Deserialize<'de>>(text: &'de str, e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => DecodeError::NotJson {
            detail: e.to_string(),
        },
        Category::Data => {
            let mut de = serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(pe) => data_error(pe.path().to_string(), pe.inner().to_string()),
                Ok(_) => DecodeError::NotJson {
                    detail: e.to_string(),
                },
            }
        }
    }
}

fn classify(text: &str, e: serde_json::Error) -> DecodeError {
    classify_as::<Transaction<'_>>(text, e)
}

fn classify_label(text: &str, e: serde_json::Error) -> DecodeError {
    classify_as::<Label>(text, e)
}

fn data_error(path: String, msg: String) -> DecodeError {
    // serde: "missing field `tx_id` at line 1 column 20"
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("").to_string();
        return DecodeError::MissingField { field };
    }
    if path == "." || path.is_empty() {
        return DecodeError::NotJson { detail: msg };
    }
    let detail = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    DecodeError::InvalidField {
        field: path,
        detail,
    }
}

fn check_id(field: &str, v: &str) -> Result<(), DecodeError> {
    if v.trim().is_empty() {
        return Err(invalid(field, format!("{v:?} is empty")));
    }
    if v.len() > MAX_ID_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, more than {MAX_ID_BYTES}", v.len()),
        ));
    }
    Ok(())
}

fn validate(tx: &Transaction<'_>, limits: &InputConfig, now_ms: i64) -> Result<(), DecodeError> {
    check_id("tx_id", &tx.tx_id)?;
    check_id("account_id", &tx.account_id)?;
    check_id("merchant_id", &tx.merchant_id)?;
    for (field, v) in [
        ("card_id", &tx.card_id),
        ("mcc", &tx.mcc),
        ("country", &tx.country),
        ("channel", &tx.channel),
        ("device_id", &tx.device_id),
    ] {
        if let Some(v) = v {
            if v.len() > MAX_ID_BYTES {
                return Err(invalid(
                    field,
                    format!("is {} bytes, more than {MAX_ID_BYTES}", v.len()),
                ));
            }
        }
    }
    let a = tx.amount;
    let why = if !a.is_finite() {
        Some("not finite".to_string())
    } else if a < 0.0 {
        Some("negative".to_string())
    } else if a > limits.max_amount {
        Some(format!("above input.max_amount {}", limits.max_amount))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(DecodeError::InvalidAmount { value: a, why });
    }
    let c = tx.currency.as_bytes();
    if c.len() != 3 || !c.iter().all(u8::is_ascii_uppercase) {
        return Err(invalid(
            "currency",
            format!("{:?} is not a 3-letter ISO 4217 code", tx.currency),
        ));
    }
    if tx.ts < MIN_TS_MS {
        return Err(invalid(
            "ts",
            format!(
                "{} is before 2000-01-01 (epoch seconds instead of milliseconds?)",
                tx.ts
            ),
        ));
    }
    let ahead_ms = tx.ts.saturating_sub(now_ms);
    if ahead_ms > limits.max_future_secs.saturating_mul(1000) {
        return Err(DecodeError::FutureTimestamp {
            ts: format_ts(tx.ts),
            ahead_secs: ahead_ms / 1000,
            max: limits.max_future_secs,
        });
    }
    if let Some(lat) = tx.lat {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(invalid("lat", format!("{lat} is outside [-90, 90]")));
        }
    }
    if let Some(lon) = tx.lon {
        if !(-180.0..=180.0).contains(&lon) {
            return Err(invalid("lon", format!("{lon} is outside [-180, 180]")));
        }
    }
    Ok(())
}

/// Epoch milliseconds → RFC 3339 with milliseconds only when non-zero.
pub fn format_ts(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) if ms % 1000 == 0 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Parses RFC 3339, a date (`2018-04-01`, midnight UTC) or epoch milliseconds.
pub fn parse_ts(s: &str) -> Result<i64, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    Err(format!(
        "{s:?} is neither RFC 3339, a date (YYYY-MM-DD) nor epoch milliseconds"
    ))
}

struct TsVisitor;

impl Visitor<'_> for TsVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp or epoch milliseconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        DateTime::parse_from_rfc3339(v)
            .map(|t| t.timestamp_millis())
            .map_err(|_| E::custom(format!("{v:?} is not an RFC 3339 timestamp")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15 {
            Ok(v as i64)
        } else {
            Err(E::custom(format!("{v} is not whole epoch milliseconds")))
        }
    }
}

fn de_ts<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    d.deserialize_any(TsVisitor)
}

pub(crate) fn de_opt_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct OptTs;
    impl<'de> Visitor<'de> for OptTs {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null, an RFC 3339 timestamp or epoch milliseconds")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            de_ts(d).map(Some)
        }
    }
    d.deserialize_option(OptTs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn dec(s: &str) -> Result<Transaction<'_>, DecodeError> {
        decode(s.as_bytes(), &InputConfig::default(), NOW)
    }

    #[test]
    fn decodes_the_documented_example() {
        let tx = dec(r#"{"tx_id":"t1","ts":"2018-04-01T00:00:31Z","account_id":"c42","merchant_id":"m7","amount":57.16,"currency":"EUR"}"#).expect("valid");
        assert_eq!(tx.tx_id, "t1");
        assert_eq!(tx.ts, 1_522_540_831_000);
        assert_eq!(tx.amount, 57.16);
        assert!(matches!(tx.account_id, Cow::Borrowed(_)));
        let ms = dec(r#"{"tx_id":"t1","ts":1522540831000,"account_id":"c42","merchant_id":"m7","amount":1,"currency":"EUR","country":"FR","lat":1.5,"lon":2}"#).expect("valid");
        assert_eq!(ms.ts, tx.ts);
        assert_eq!(ms.country.as_deref(), Some("FR"));
    }

    #[test]
    fn bad_messages_name_field_and_value() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"\xff\xfe", "not_utf8", "offset 0"),
            (b"not json", "not_json", "starts with 'n'"),
            (b"{\"tx_id\": ", "not_json", "EOF"),
            (b"[1,2]", "not_json", "'['"),
            (br#"{"ts":"2018-04-01T00:00:31Z","account_id":"c","merchant_id":"m","amount":1,"currency":"EUR"}"#, "missing_field", "tx_id"),
            (br#"{"tx_id":"t","ts":"yesterday","account_id":"c","merchant_id":"m","amount":1,"currency":"EUR"}"#, "invalid_field", "\"yesterday\""),
            (br#"{"tx_id":"t","ts":"2018-04-01T00:00:31Z","account_id":"c","merchant_id":"m","amount":"NaN","currency":"EUR"}"#, "invalid_field", "amount"),
            (br#"{"tx_id":"t","ts":"2018-04-01T00:00:31Z","account_id":"c","merchant_id":"m","amount":-5,"currency":"EUR"}"#, "invalid_amount", "-5 is negative"),
            (br#"{"tx_id":"t","ts":"2018-04-01T00:00:31Z","account_id":"c","merchant_id":"m","amount":1e12,"currency":"EUR"}"#, "invalid_amount", "above input.max_amount"),
            (br#"{"tx_id":"t","ts":"2099-04-01T00:00:31Z","account_id":"c","merchant_id":"m","amount":1,"currency":"EUR"}"#, "future_timestamp", "2099-04-01T00:00:31Z"),
            (br#"{"tx_id":"t","ts":1522540831,"account_id":"c","merchant_id":"m","amount":1,"currency":"EUR"}"#, "invalid_field", "before 2000"),
            (br#"{"tx_id":"","ts":1522540831000,"account_id":"c","merchant_id":"m","amount":1,"currency":"EUR"}"#, "invalid_field", "tx_id"),
            (br#"{"tx_id":"t","ts":1522540831000,"account_id":"c","merchant_id":"m","amount":1,"currency":"euro"}"#, "invalid_field", "\"euro\""),
            (br#"{"tx_id":"t","ts":1522540831000,"account_id":"c","merchant_id":"m","amount":1,"currency":"EUR","lat":91}"#, "invalid_field", "lat"),
        ];
        for (bytes, reason, needle) in cases {
            let e = decode(bytes, &InputConfig::default(), NOW).expect_err("bad");
            assert_eq!(e.reason(), *reason, "{e}");
            assert!(
                e.to_string().contains(needle),
                "{e} should contain {needle}"
            );
        }
        let big = vec![b' '; 70_000];
        assert_eq!(
            decode(&big, &InputConfig::default(), NOW)
                .unwrap_err()
                .reason(),
            "oversized"
        );
    }

    #[test]
    fn labels_decode() {
        let l = decode_label(br#"{"tx_id":"t9","account_id":"c42","fraud":true}"#).expect("ok");
        assert!(l.fraud && l.reported_at.is_none());
        let l = decode_label(
            br#"{"tx_id":"t9","account_id":"c42","fraud":true,"reported_at":"2018-04-09T00:00:00Z"}"#,
        )
        .expect("ok");
        assert_eq!(l.reported_at, Some(1_523_232_000_000));
        assert_eq!(
            decode_label(br#"{"tx_id":"t9","fraud":true}"#)
                .unwrap_err()
                .reason(),
            "missing_field"
        );
    }

    #[test]
    fn parse_ts_forms() {
        assert_eq!(parse_ts("2018-04-01").unwrap(), 1_522_540_800_000);
        assert_eq!(parse_ts("2018-04-01T00:00:31Z").unwrap(), 1_522_540_831_000);
        assert!(parse_ts("soon").is_err());
        assert_eq!(format_ts(1_522_540_831_000), "2018-04-01T00:00:31Z");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode(&bytes, &InputConfig::default(), NOW);
            let _ = decode_label(&bytes);
        }
    }
}
