//! The per-event hot path: decode → state update → features → score, on generated traffic
//! (seeded). Prints events per second per core and the bytes of state per account.
//!
//! `cargo bench --bench hot_path`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fraudstream::config::{InputConfig, StateConfig};
use fraudstream::decode::decode;
use fraudstream::engine::Engine;
use fraudstream::model::{Model, Predict};
use fraudstream::state::{key_of, lock};

fn traffic() -> Vec<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("fraudstream-bench-{}", std::process::id()));
    let opts = fraudstream::generate::GenerateOptions {
        accounts: 20_000,
        merchants: 2_000,
        days: 14,
        seed: 1,
        ..Default::default()
    };
    fraudstream::generate::generate(&opts, &dir).expect("generate");
    let text = std::fs::read_to_string(dir.join("transactions.jsonl")).expect("read");
    let _ = std::fs::remove_dir_all(&dir);
    text.lines().map(|l| l.as_bytes().to_vec()).collect()
}

fn engine() -> Engine {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = Model::load(&root.join("models/default.json")).expect("models/default.json");
    Engine::new(model, None, &StateConfig::default())
}

fn bench(c: &mut Criterion) {
    let lines = traffic();
    let input = InputConfig::default();
    let now = chrono::Utc::now().timestamp_millis();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));

    g.bench_function("decode", |b| {
        let mut i = 0;
        b.iter(|| {
            let l = &lines[i % lines.len()];
            i += 1;
            black_box(decode(black_box(l), &input, now).is_ok())
        })
    });

    // In event-time order from an empty state, so every event updates the state (replaying the
    // same lines again would make them late and skip the update). Past the end of the traffic
    // the lines repeat, shifted forward by the traffic's span.
    let span_ms = 15 * 86_400_000i64;
    g.bench_function("decode_state_features_score", |b| {
        b.iter_custom(|iters| {
            let e = engine();
            let start = std::time::Instant::now();
            for k in 0..iters as usize {
                let l = &lines[k % lines.len()];
                if let Ok(mut tx) = decode(black_box(l), &input, now) {
                    tx.ts += (k / lines.len()) as i64 * span_ms;
                    black_box(e.process(&tx).score);
                }
            }
            start.elapsed()
        })
    });

    let e = engine();
    for l in &lines {
        if let Ok(tx) = decode(l, &input, now) {
            e.process(&tx);
        }
    }
    let tx = decode(&lines[lines.len() / 2], &input, now).expect("valid");
    let fv = fraudstream::engine::observe(&e.state, &tx, &Default::default()).features;
    g.bench_function("score_only", |b| {
        b.iter(|| black_box(e.model().score(black_box(&fv))))
    });
    g.finish();

    let acc = e.state.account(key_of(&tx.account_id));
    let bytes = lock(&acc).heap_bytes();
    let merch = e.state.merchant(key_of(&tx.merchant_id));
    let mbytes = lock(&merch).heap_bytes();
    println!(
        "state: {bytes} bytes per account, {mbytes} bytes per merchant (before cache overhead); {} entities after {} events",
        e.state.entries(),
        lines.len()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
