//! The changelog's record format: an account's state, and the marker that closes a flush.
//!
//! The changelog topic is compacted and keyed by entity; its partition `p` holds the accounts of
//! input partition `p`. Two kinds of record, told apart by their key:
//!
//! | key | value |
//! |---|---|
//! | 8 bytes: the account's key ([`crate::state::key_of`] of its id), big-endian | version `1` (u8), `through` (i64), then the account (below); no value (a tombstone) when the account left memory |
//! | [`MARKER_KEY`] | version `1` (u8), `through` (i64) |
//!
//! `through` is the input offset after the last event the record includes: an account record
//! holds every event of its account at an offset below it and none at or above. A marker is
//! written last in each flush, once every account changed since the previous flush has been
//! written: all events of the partition below its `through` are in the changelog.
//!
//! An account, little-endian: newest and oldest event time (i64 ms), the 5-minute, hourly and
//! daily rings ([`super::window::Ring::encode`]), the 16 recent-merchant fingerprints (u32),
//! the 4 recent countries (u16) and the next recent slot (u8). The confirmed-fraud count is not
//! in it: labels are applied again from the labels topic after a restore.

use super::feedback::Feedback;
use super::window::Count;
use super::{AccountState, MerchantState, Windows};

/// Version of the record format, the first byte of every value.
pub const VERSION: u8 = 1;

/// Key of the marker that closes a flush (not 8 bytes long, so no account's).
pub const MARKER_KEY: &[u8] = b"__flushed_through__";

/// Bytes of an encoded account record, version and `through` included.
pub const ACCOUNT_RECORD_BYTES: usize =
    1 + 8 + 16 + (8 + 12 * 12) + (8 + 24 * 12) + (8 + 30 * 16) + 64 + 8 + 1;

/// Appends a merchant's windows and daily transaction counts (no frauds) to `out`, for the
/// merchant table's snapshot (`pipeline::merchants`): newest and oldest event time (i64 ms),
/// the three rings, the feedback's head and 64 daily counts.
pub fn encode_merchant(m: &MerchantState, out: &mut Vec<u8>) {
    encode_windows(&m.w, out);
    m.feedback.encode_txs(out);
}

/// Reads what [`encode_merchant`] wrote from the front of `b`.
pub fn decode_merchant(b: &mut &[u8]) -> Option<MerchantState> {
    Some(MerchantState {
        w: decode_windows(b)?,
        feedback: Feedback::decode_txs(b)?,
    })
}

/// Appends an entity's windows: newest and oldest event time (i64 ms), then the three rings.
fn encode_windows<C: Count, const SQ: usize>(w: &Windows<C, SQ>, out: &mut Vec<u8>) {
    out.extend_from_slice(&w.max_ts_ms.to_le_bytes());
    out.extend_from_slice(&w.min_ts_ms.to_le_bytes());
    w.fine.encode(out);
    w.hour.encode(out);
    w.day.encode(out);
}

/// Reads what [`encode_windows`] wrote from the front of `b`.
fn decode_windows<C: Count, const SQ: usize>(b: &mut &[u8]) -> Option<Windows<C, SQ>> {
    let max_ts_ms = take_i64(b)?;
    let min_ts_ms = take_i64(b)?;
    Some(Windows {
        fine: super::window::Ring::decode(b)?,
        hour: super::window::Ring::decode(b)?,
        day: super::window::Ring::decode(b)?,
        max_ts_ms,
        min_ts_ms,
    })
}

/// A changelog record that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The value is shorter than its format.
    #[error("changelog record: value of {len} bytes is shorter than its format")]
    Truncated {
        /// Bytes of the value.
        len: usize,
    },
    /// The first byte names a format this build does not read.
    #[error("changelog record: format version {0}, this build reads {VERSION}")]
    Version(u8),
    /// A key neither 8 bytes (an account) nor the marker's.
    #[error("changelog record: key of {0} bytes is neither an account's (8) nor the marker's")]
    Key(usize),
}

/// What a changelog record holds.
#[derive(Debug, Clone)]
pub enum Record {
    /// An account's state through an offset (`None`: the account left memory).
    Account {
        /// [`crate::state::key_of`] of the account id.
        key: u64,
        /// The input offset after the last event included (0 for a tombstone).
        through: i64,
        /// The state; `None` for a tombstone.
        state: Option<Box<AccountState>>,
    },
    /// A flush is complete through this input offset.
    Marker {
        /// The input offset below which every event is in the changelog.
        through: i64,
    },
}

#[inline]
fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = b.split_first_chunk::<N>()?;
    *b = rest;
    Some(*head)
}

/// Reads an i64 (little-endian) from the front of `b`.
#[inline]
pub fn take_i64(b: &mut &[u8]) -> Option<i64> {
    take::<8>(b).map(i64::from_le_bytes)
}

/// Reads a u32 (little-endian) from the front of `b`.
#[inline]
pub fn take_u32(b: &mut &[u8]) -> Option<u32> {
    take::<4>(b).map(u32::from_le_bytes)
}

/// The changelog key of an account.
pub fn account_key(key: u64) -> [u8; 8] {
    key.to_be_bytes()
}

/// Appends the record of `a` through offset `through` to `out`.
pub fn encode_account(a: &AccountState, through: i64, out: &mut Vec<u8>) {
    out.reserve(ACCOUNT_RECORD_BYTES);
    out.push(VERSION);
    out.extend_from_slice(&through.to_le_bytes());
    encode_windows(&a.w, out);
    for m in &a.merchants {
        out.extend_from_slice(&m.to_le_bytes());
    }
    for c in &a.countries {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.push(a.recent_next);
}

/// The value of a marker through offset `through`.
pub fn encode_marker(through: i64) -> [u8; 9] {
    let mut v = [0u8; 9];
    v[0] = VERSION;
    v[1..].copy_from_slice(&through.to_le_bytes());
    v
}

/// Reads one record of the changelog (`value` `None`: a tombstone).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Record, CodecError> {
    if key == MARKER_KEY {
        let v = value.unwrap_or_default();
        let mut b = version(v)?;
        let through = take_i64(&mut b).ok_or(CodecError::Truncated { len: v.len() })?;
        return Ok(Record::Marker { through });
    }
    let k: [u8; 8] = key.try_into().map_err(|_| CodecError::Key(key.len()))?;
    let key = u64::from_be_bytes(k);
    let Some(v) = value else {
        return Ok(Record::Account {
            key,
            through: 0,
            state: None,
        });
    };
    let truncated = CodecError::Truncated { len: v.len() };
    let mut b = version(v)?;
    let read = |b: &mut &[u8]| -> Option<(i64, AccountState)> {
        let through = take_i64(b)?;
        let mut a = AccountState {
            w: decode_windows(b)?,
            ..AccountState::default()
        };
        for m in a.merchants.iter_mut() {
            *m = take_u32(b)?;
        }
        for c in a.countries.iter_mut() {
            *c = u16::from_le_bytes(take::<2>(b)?);
        }
        a.recent_next = take::<1>(b)?[0] % super::RECENT_TX as u8;
        Some((through, a))
    };
    let (through, a) = read(&mut b).ok_or(truncated)?;
    Ok(Record::Account {
        key,
        through,
        state: Some(Box::new(a)),
    })
}

fn version(v: &[u8]) -> Result<&[u8], CodecError> {
    match v.split_first() {
        Some((&VERSION, rest)) => Ok(rest),
        Some((&other, _)) => Err(CodecError::Version(other)),
        None => Err(CodecError::Truncated { len: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{country_code, key_of};

    fn account() -> AccountState {
        let mut a = AccountState::default();
        let t0 = 1_700_000_000_000i64;
        for i in 0..300i64 {
            a.w.add(t0 + i * 3_700_000, 10.0 + i as f32 * 0.37);
            a.remember(key_of(&format!("m{}", i % 23)), country_code(Some("FR")));
        }
        a.remember(key_of("m-de"), country_code(Some("DE")));
        a.frauds_visible = 3;
        a
    }

    /// Every feature reads the same from a decoded account as from the original.
    #[test]
    fn an_account_round_trips_and_its_features_are_equal() {
        let a = account();
        let mut out = Vec::new();
        encode_account(&a, 12_345, &mut out);
        assert_eq!(out.len(), ACCOUNT_RECORD_BYTES);
        let Record::Account {
            key,
            through,
            state: Some(b),
        } = decode(&account_key(key_of("acct")), Some(&out)).expect("decodes")
        else {
            panic!("an account record");
        };
        assert_eq!((key, through), (key_of("acct"), 12_345));
        assert_eq!(
            b.frauds_visible, 0,
            "labels are applied again after a restore"
        );
        let mut again = Vec::new();
        encode_account(&b, 12_345, &mut again);
        assert_eq!(out, again, "byte for byte");
        let t = a.w.max_ts_ms + 1000;
        for n in [1usize, 2, 6, 12] {
            assert_eq!(a.w.fine.window(t / 1000, n), b.w.fine.window(t / 1000, n));
        }
        for n in [1usize, 24] {
            assert_eq!(a.w.hour.window(t / 1000, n), b.w.hour.window(t / 1000, n));
        }
        for n in [7usize, 30] {
            assert_eq!(a.w.day.window(t / 1000, n), b.w.day.window(t / 1000, n));
        }
        assert_eq!(a.merchants, b.merchants);
        assert_eq!(a.countries, b.countries);
        assert_eq!(a.recent_next, b.recent_next);
        assert_eq!(
            (a.w.min_ts_ms, a.w.max_ts_ms),
            (b.w.min_ts_ms, b.w.max_ts_ms)
        );
    }

    #[test]
    fn a_merchant_round_trips_without_its_frauds() {
        let mut m = MerchantState::default();
        let t0 = 1_700_000_000_000i64;
        for i in 0..500i64 {
            m.w.add(t0 + i * 1_900_000, 3.0 + i as f32);
            m.feedback.add_tx((t0 + i * 1_900_000) / 1000);
        }
        m.feedback.add_fraud(t0 / 1000 + 86_400);
        let mut out = Vec::new();
        encode_merchant(&m, &mut out);
        let mut b = &out[..];
        let d = decode_merchant(&mut b).expect("decodes");
        assert!(b.is_empty(), "read to its end");
        let now = (t0 + 500 * 1_900_000) / 1000;
        assert_eq!(m.w.day.window(now, 30), d.w.day.window(now, 30));
        assert_eq!(m.w.fine.window(now, 12), d.w.fine.window(now, 12));
        assert_eq!(
            m.feedback.matured(now, 1, 7).0,
            d.feedback.matured(now, 1, 7).0
        );
        assert_eq!(
            d.feedback.matured(now, 1, 30).1,
            0,
            "frauds come from the labels topic"
        );
        let mut again = Vec::new();
        encode_merchant(&d, &mut again);
        assert_eq!(out, again);
        assert!(decode_merchant(&mut &out[..out.len() - 1]).is_none());
    }

    #[test]
    fn markers_tombstones_and_bad_records() {
        assert!(matches!(
            decode(MARKER_KEY, Some(&encode_marker(77))),
            Ok(Record::Marker { through: 77 })
        ));
        assert!(matches!(
            decode(&account_key(5), None),
            Ok(Record::Account {
                key: 5,
                state: None,
                ..
            })
        ));
        let mut out = Vec::new();
        encode_account(&account(), 1, &mut out);
        for cut in [0, 1, 9, 100, out.len() - 1] {
            assert!(
                matches!(
                    decode(&account_key(5), Some(&out[..cut])),
                    Err(CodecError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        out[0] = 9;
        assert_eq!(
            decode(&account_key(5), Some(&out)).unwrap_err(),
            CodecError::Version(9)
        );
        assert_eq!(decode(b"abc", Some(&out)).unwrap_err(), CodecError::Key(3));
    }
}
