//! State memory at scale: creates 1,000,000 accounts (and 20,000 merchants) through the real
//! engine, one transaction each, and prints the growth of the process's resident memory
//! (`VmRSS` of /proc/self/status) per account: with the label lookup off (the entities alone),
//! then with the default lookup on top (bounded by `state.label_lookup_entries`, not by
//! accounts).
//!
//! `cargo bench --bench state_memory` (Linux).

use std::borrow::Cow;
use std::path::Path;

use fraudstream::config::StateConfig;
use fraudstream::decode::Transaction;
use fraudstream::engine::Engine;
use fraudstream::model::Model;

const ACCOUNTS: usize = 1_000_000;
const MERCHANTS: usize = 20_000;

/// Resident memory of this process, bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

fn run(label_lookup_entries: u64) -> (u64, u64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(&root.join("models/default.json")).expect("models/default.json");
    let cfg = StateConfig {
        label_lookup_entries,
        ..StateConfig::default()
    };
    let before = rss_bytes();
    let e = Engine::new(model, None, &cfg);
    let t0 = 1_700_000_000_000i64;
    let mut ids = String::new();
    for i in 0..ACCOUNTS {
        ids.clear();
        use std::fmt::Write;
        let _ = write!(ids, "c{i}");
        let tx = Transaction {
            tx_id: Cow::Owned(format!("t{i}")),
            ts: t0 + (i as i64) * 2_000,
            account_id: Cow::Borrowed(ids.as_str()),
            merchant_id: Cow::Owned(format!("m{}", i % MERCHANTS)),
            amount: 10.0 + (i % 97) as f64,
            currency: Cow::Borrowed("EUR"),
            card_id: None,
            mcc: None,
            country: Some(Cow::Borrowed("FR")),
            channel: None,
            device_id: None,
            lat: None,
            lon: None,
            attributes: None,
        };
        std::hint::black_box(e.process(&tx).score);
    }
    let entries = e.state.entries();
    let after = rss_bytes();
    drop(e);
    (after.saturating_sub(before), entries)
}

/// Each measurement runs in a fresh process (this binary again), so that memory freed by one
/// does not hide the growth of the next.
const CHILD: &str = "FRAUDSTREAM_STATE_MEMORY_LOOKUP";

fn main() {
    if let Ok(v) = std::env::var(CHILD) {
        let lookup: u64 = v.parse().expect("lookup entries");
        let (bytes, entries) = run(lookup);
        println!(
            "label_lookup_entries = {lookup}: {entries} entities, RSS +{:.1} MB = {:.0} bytes per account",
            bytes as f64 / 1e6,
            bytes as f64 / ACCOUNTS as f64
        );
        return;
    }
    let me = std::env::current_exe().expect("current_exe");
    for lookup in [0, StateConfig::default().label_lookup_entries] {
        let out = std::process::Command::new(&me)
            .env(CHILD, lookup.to_string())
            .output()
            .expect("run the measurement");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
