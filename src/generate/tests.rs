//! Tests of the generator.
use super::output::*;
use super::sampling::*;
use super::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("fraudstream-gen-{name}-{}", std::process::id()))
}

fn opts(accounts: usize, merchants: usize, days: u32, seed: u64) -> GenerateOptions {
    GenerateOptions {
        accounts,
        merchants,
        days,
        seed,
        ..GenerateOptions::default()
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .expect("read output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line is JSON"))
        .collect()
}

fn ts_of(v: &serde_json::Value, field: &str) -> DateTime<Utc> {
    let s = v[field].as_str().expect("timestamp string");
    assert!(s.len() == 20 && s.ends_with('Z'), "bad timestamp {s}");
    DateTime::parse_from_rfc3339(s)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[test]
fn rejects_invalid_options() {
    let dir = tmp("invalid");
    for (o, field) in [
        (opts(0, 10, 5, 1), "accounts"),
        (opts(10, 0, 5, 1), "merchants"),
        (opts(10, 10, 0, 1), "days"),
    ] {
        match generate(&o, &dir) {
            Err(GenerateError::InvalidOption { name, value, .. }) => {
                assert_eq!(name, field);
                assert_eq!(value, "0");
            }
            other => panic!("expected InvalidOption for {field}, got {other:?}"),
        }
    }
    assert!(!dir.exists(), "nothing is written for invalid options");
}

#[test]
fn deterministic_for_a_seed() {
    let (a, b, c) = (tmp("det-a"), tmp("det-b"), tmp("det-c"));
    let sa = generate(&opts(300, 60, 20, 7), &a).expect("run a");
    let sb = generate(&opts(300, 60, 20, 7), &b).expect("run b");
    generate(&opts(300, 60, 20, 8), &c).expect("run c");
    assert_eq!(sa, sb);
    for f in ["transactions.jsonl", "labels.jsonl"] {
        let x = fs::read(a.join(f)).expect("read a");
        assert_eq!(x, fs::read(b.join(f)).expect("read b"), "{f} differs");
    }
    assert_ne!(
        fs::read(a.join("transactions.jsonl")).expect("read a"),
        fs::read(c.join("transactions.jsonl")).expect("read c")
    );
    for d in [a, b, c] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn transactions_are_ordered_and_complete() {
    let dir = tmp("lines");
    let summary = generate(&opts(400, 80, 21, 3), &dir).expect("run");
    let txs = read_lines(&dir.join("transactions.jsonl"));
    assert_eq!(txs.len() as u64, summary.transactions);
    assert!(summary.transactions > 5_000, "{summary:?}");
    let start = GenerateOptions::default().start;
    let end = start + chrono::Duration::days(21);
    let mut prev = start;
    for (i, t) in txs.iter().enumerate() {
        assert_eq!(t["tx_id"], format!("t{:09}", i + 1));
        let ts = ts_of(t, "ts");
        assert!(ts >= prev && ts < end, "ts {ts} out of order at line {i}");
        prev = ts;
        for (field, prefix) in [
            ("account_id", 'c'),
            ("merchant_id", 'm'),
            ("card_id", 'k'),
            ("device_id", 'd'),
        ] {
            let s = t[field].as_str().expect(field);
            assert!(
                s.starts_with(prefix) && s[1..].parse::<u64>().is_ok(),
                "{s}"
            );
        }
        assert_eq!(
            t["account_id"].as_str().map(|s| &s[1..]),
            t["card_id"].as_str().map(|s| &s[1..])
        );
        let amount = t["amount"].as_f64().expect("amount");
        assert!(amount > 0.0 && ((amount * 100.0).round() - amount * 100.0).abs() < 1e-6);
        assert_eq!(t["currency"], "EUR");
        assert!(["pos", "ecom", "atm"].contains(&t["channel"].as_str().expect("channel")));
        assert_eq!(t["mcc"].as_str().expect("mcc").len(), 4);
        assert_eq!(t["country"].as_str().expect("country").len(), 2);
        let (lat, lon) = (
            t["lat"].as_f64().expect("lat"),
            t["lon"].as_f64().expect("lon"),
        );
        assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
    }
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn labels_point_to_earlier_fraud_transactions() {
    let dir = tmp("labels");
    let summary = generate(&opts(1_500, 150, 45, 11), &dir).expect("run");
    let txs = read_lines(&dir.join("transactions.jsonl"));
    let labels = read_lines(&dir.join("labels.jsonl"));
    assert_eq!(labels.len() as u64, summary.labels);
    assert_eq!(summary.labels, summary.frauds);
    assert!(summary.frauds > 0);
    let by_id: HashMap<&str, &serde_json::Value> = txs
        .iter()
        .map(|t| (t["tx_id"].as_str().expect("tx_id"), t))
        .collect();
    let mut prev_tx_ts = None;
    for l in &labels {
        let tx = by_id[l["tx_id"].as_str().expect("tx_id")];
        assert_eq!(l["account_id"], tx["account_id"]);
        assert_eq!(l["fraud"], true);
        let (ts, reported) = (ts_of(tx, "ts"), ts_of(l, "reported_at"));
        let delay = reported - ts;
        assert!(delay >= chrono::Duration::days(2), "{delay}");
        assert!(delay <= chrono::Duration::days(43), "{delay}");
        assert!(prev_tx_ts.is_none_or(|p| p <= ts), "labels sorted by tx ts");
        prev_tx_ts = Some(ts);
    }
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn fraud_rate_within_band_and_all_patterns_present() {
    for seed in [1, 2, 3] {
        let dir = tmp(&format!("rate-{seed}"));
        let stats = run(
            &opts(2_000, 200, 60, seed),
            &dir,
            &crate::progress::Progress::hidden(),
        )
        .expect("run");
        let frauds: u64 = stats.frauds.iter().sum();
        let rate = frauds as f64 / stats.transactions as f64;
        assert!(
            (0.002..=0.01).contains(&rate),
            "seed {seed}: rate {rate} {stats:?}"
        );
        assert!(
            stats.frauds.iter().all(|&n| n > 0),
            "seed {seed}: {stats:?}"
        );
        let _ = fs::remove_dir_all(dir);
    }
}

#[test]
fn tiny_worlds_work() {
    for (accounts, merchants, days) in [(1, 1, 3), (3, 2, 40), (50, 1, 10)] {
        let dir = tmp(&format!("tiny-{accounts}-{merchants}"));
        let s = generate(&opts(accounts, merchants, days, 9), &dir).expect("run");
        assert!(s.transactions > 0, "{s:?}");
        let _ = fs::remove_dir_all(dir);
    }
}

#[test]
fn timestamps_match_chrono() {
    for secs in [0, 1_522_540_831, 951_782_400, 4_107_542_399, -86_401] {
        let expected = Utc
            .timestamp_opt(secs, 0)
            .single()
            .expect("valid")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        assert_eq!(Rfc3339(secs).to_string(), expected);
    }
}

#[test]
fn sampling_helpers_have_expected_means() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let n = 20_000;
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let p = mean((0..n).map(|_| f64::from(poisson(&mut rng, 3.0))).collect());
    assert!((p - 3.0).abs() < 0.1, "{p}");
    let p = mean((0..n).map(|_| f64::from(poisson(&mut rng, 50.0))).collect());
    assert!((p - 50.0).abs() < 0.5, "{p}");
    let e = mean((0..n).map(|_| exponential(&mut rng, 2.0)).collect());
    assert!((e - 2.0).abs() < 0.1, "{e}");
    let z = mean((0..n).map(|_| normal(&mut rng)).collect());
    assert!(z.abs() < 0.05, "{z}");
}

/// Measures the documented large run:
/// `cargo test --release -- --ignored --nocapture measure_large_run`.
#[test]
#[ignore]
fn measure_large_run() {
    let dir = tmp("large");
    let o = opts(10_000, 1_000, 150, 42);
    let t0 = std::time::Instant::now();
    let stats = run(&o, &dir, &crate::progress::Progress::hidden()).expect("run");
    let secs = t0.elapsed().as_secs_f64();
    let mb = |f: &str| fs::metadata(dir.join(f)).map_or(0, |m| m.len()) as f64 / 1e6;
    let frauds: u64 = stats.frauds.iter().sum();
    println!(
        "transactions {} frauds {} ({:.3}%) {:?} episodes {:?} tx {:.0} MB labels {:.2} MB in {:.2} s",
        stats.transactions,
        frauds,
        100.0 * frauds as f64 / stats.transactions as f64,
        stats.frauds,
        stats.episodes,
        mb("transactions.jsonl"),
        mb("labels.jsonl"),
        secs
    );
    for (name, n) in [
        "card_testing",
        "account_takeover",
        "compromised_merchant",
        "stolen_card",
    ]
    .iter()
    .zip(stats.frauds)
    {
        println!(
            "  {name}: {n} ({:.3}%)",
            100.0 * n as f64 / stats.transactions as f64
        );
    }
    let _ = fs::remove_dir_all(dir);
}

/// Every line written through serde decodes with the worker's own decoders, amounts to the cent
/// and coordinates to four decimals.
#[test]
fn lines_decode_as_the_worker_reads_them() {
    let dir = tmp("decode");
    generate(&opts(200, 20, 10, 3), &dir).expect("generate");
    let input = crate::config::InputConfig::default();
    let text = fs::read_to_string(dir.join("transactions.jsonl")).expect("read");
    let now = Utc::now().timestamp_millis();
    for line in text.lines() {
        let tx = crate::decode::decode(line.as_bytes(), &input, now).expect("decodes");
        assert_eq!((tx.amount * 100.0).round() / 100.0, tx.amount, "{line}");
        let lat = tx.lat.expect("lat");
        assert_eq!((lat * 1e4).round() / 1e4, lat, "{line}");
    }
    let labels = fs::read_to_string(dir.join("labels.jsonl")).expect("read");
    assert!(!labels.is_empty());
    for line in labels.lines() {
        let l = crate::decode::decode_label(line.as_bytes()).expect("decodes");
        assert!(l.fraud && l.reported_at.is_some(), "{line}");
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn progress_counts_simulated_days() {
    let dir = tmp("progress");
    let p = crate::progress::Progress::plain("generate", Some(6), "days", std::time::Duration::MAX);
    generate_with(&opts(50, 10, 6, 1), &dir, &p).expect("run");
    let line = p.line();
    assert!(line.starts_with("generate: 6/6 days (100%), "), "{line}");
    assert!(line.contains("ETA 0s"), "{line}");
    let _ = fs::remove_dir_all(dir);
}
