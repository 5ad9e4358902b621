//! Output: the JSON lines of transactions and labels.

use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use chrono::DateTime;
use serde::{Serialize, Serializer};

use super::patterns::Event;
use super::world::*;
use super::GenerateError;

/// Seconds since the epoch as RFC 3339 UTC with seconds precision (chrono).
pub(super) struct Rfc3339(pub(super) i64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match DateTime::from_timestamp(self.0, 0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%SZ")),
            None => Err(fmt::Error),
        }
    }
}

/// An id: a letter and a number (`c42`, `m7`, `k42`, `d1234`).
struct Id(char, u64);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

/// A transaction id, `t` and nine digits.
struct TxId(u64);

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{:09}", self.0)
    }
}

/// A JSON string written through `Display`, without an intermediate `String`.
struct Shown<T>(T);

impl<T: fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// One line of `transactions.jsonl` (the Transaction format of the README).
#[derive(Serialize)]
struct TxLine<'a> {
    tx_id: Shown<TxId>,
    ts: Shown<Rfc3339>,
    account_id: Shown<Id>,
    merchant_id: Shown<Id>,
    amount: f64,
    currency: &'a str,
    card_id: Shown<Id>,
    mcc: &'a str,
    country: &'a str,
    channel: &'a str,
    device_id: Shown<Id>,
    lat: f64,
    lon: f64,
}

/// One line of `labels.jsonl` (the Label format of the README).
#[derive(Serialize)]
struct LabelLine {
    tx_id: Shown<TxId>,
    account_id: Shown<Id>,
    fraud: bool,
    reported_at: Shown<Rfc3339>,
}

/// Coordinates to 4 decimals (about 10 m).
fn round4(v: f64) -> f64 {
    format!("{v:.4}").parse().unwrap_or(v)
}

fn write_line(w: &mut impl Write, line: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, line)?;
    w.write_all(b"\n")
}

pub(super) struct Out {
    pub(super) path: PathBuf,
    pub(super) w: BufWriter<File>,
}

impl Out {
    pub(super) fn create(path: PathBuf) -> Result<Out, GenerateError> {
        match File::create(&path) {
            Ok(f) => Ok(Out {
                w: BufWriter::with_capacity(1 << 20, f),
                path,
            }),
            Err(source) => Err(GenerateError::Io { path, source }),
        }
    }

    pub(super) fn err(&self, source: std::io::Error) -> GenerateError {
        GenerateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    pub(super) fn finish(mut self) -> Result<(), GenerateError> {
        self.w.flush().map_err(|e| self.err(e))?;
        self.w.get_ref().sync_all().map_err(|e| self.err(e))
    }
}

pub(super) fn write_tx(
    w: &mut impl Write,
    id: u64,
    e: &Event,
    world: &World,
) -> std::io::Result<()> {
    let account = u64::from(e.account) + 1;
    let line = TxLine {
        tx_id: Shown(TxId(id)),
        ts: Shown(Rfc3339(e.ts)),
        account_id: Shown(Id('c', account)),
        merchant_id: Shown(Id('m', u64::from(e.merchant) + 1)),
        amount: e.cents as f64 / 100.0,
        currency: "EUR",
        card_id: Shown(Id('k', account)),
        mcc: world.spec(e.merchant).code,
        country: COUNTRIES.get(e.country as usize).map_or("XX", |c| c.code),
        channel: e.channel.as_str(),
        device_id: Shown(Id('d', e.device)),
        lat: round4(e.lat),
        lon: round4(e.lon),
    };
    write_line(w, &line)
}

pub(super) fn write_label(
    w: &mut impl Write,
    id: u64,
    e: &Event,
    delay: i64,
) -> std::io::Result<()> {
    // Chargebacks are processed in hourly batches.
    let reported = (e.ts + delay).div_euclid(HOUR) * HOUR + HOUR;
    let line = LabelLine {
        tx_id: Shown(TxId(id)),
        account_id: Shown(Id('c', u64::from(e.account) + 1)),
        fraud: true,
        reported_at: Shown(Rfc3339(reported)),
    };
    write_line(w, &line)
}
