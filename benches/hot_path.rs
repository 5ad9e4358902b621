//! The per-event hot path: decode → state update → features → score, on generated traffic
//! (seeded), in the steady state: the engine is first warmed with the events of 120,000
//! accounts over five days, then measured on the days that follow (looped, shifted forward
//! in time, so every measured event finds its account and merchant in memory and updates them
//! in event-time order). Two models: the shipped default (isolation forest) and a small
//! gradient-boosted trees model (the recommended supervised kind) trained in-process on the
//! first days of the same traffic. Prints the state size and the entity count.
//!
//! Times are this thread's time on the CPU (`CLOCK_THREAD_CPUTIME_ID`), not wall time, so that other work sharing the core does not count: they are per-core costs.
//!
//! `cargo bench --bench hot_path` (`taskset -c 1` on a shared machine; Linux).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fraudstream::config::{InputConfig, StateConfig};
use fraudstream::decode::decode;
use fraudstream::engine::Engine;
use fraudstream::model::supervised::{Kind, ThresholdTarget};
use fraudstream::model::{Model, Predict};
use fraudstream::train::{self, ModelKind, TrainOptions};

/// Accounts of the generated traffic (the warm state holds all of them).
const ACCOUNTS: usize = 120_000;
/// Days generated: the first `WARM_DAYS` warm the state, the rest are measured.
const DAYS: u32 = 7;
const WARM_DAYS: i64 = 5;
const DAY_MS: i64 = 86_400_000;

/// This thread's time on the CPU so far (`CLOCK_THREAD_CPUTIME_ID`).
fn on_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Runs `f` `iters` times; returns the time on the CPU.
fn cpu_iters(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = on_cpu();
    for _ in 0..iters {
        f();
    }
    on_cpu().saturating_sub(start)
}

struct Traffic {
    dir: PathBuf,
    lines: Vec<Vec<u8>>,
    /// First line of the measured days.
    split: usize,
    start_ms: i64,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn traffic(input: &InputConfig, now: i64) -> Traffic {
    let dir = std::env::temp_dir().join(format!("fraudstream-bench-{}", std::process::id()));
    let opts = fraudstream::generate::GenerateOptions {
        accounts: ACCOUNTS,
        merchants: 3_000,
        days: DAYS,
        seed: 1,
        ..Default::default()
    };
    let start_ms = opts.start.timestamp_millis();
    fraudstream::generate::generate(&opts, &dir).expect("generate");
    let text = std::fs::read_to_string(dir.join("transactions.jsonl")).expect("read");
    let lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let warm_end = start_ms + WARM_DAYS * DAY_MS;
    let split = lines
        .iter()
        .position(|l| decode(l, input, now).is_ok_and(|t| t.ts >= warm_end))
        .expect("measured days");
    Traffic {
        dir,
        lines,
        split,
        start_ms,
    }
}

/// A small trees model validated on days 3 and 4 of the traffic, fitted on days 1 and 2
/// (label delay 0).
fn trees_model(t: &Traffic, state: &StateConfig, input: &InputConfig) -> Model {
    let o = TrainOptions {
        transactions: t.dir.join("transactions.jsonl"),
        labels: Some(t.dir.join("labels.jsonl")),
        label_delay_ms: 0,
        from_ms: t.start_ms + 3 * DAY_MS,
        to_ms: t.start_ms + 5 * DAY_MS,
        test: None,
        kind: ModelKind::Supervised(Kind::Trees),
        target: ThresholdTarget::AlertRate(0.005),
        attributes_only: false,
        clusters: 8,
        anomaly_inputs: None,
        seed: 1,
    };
    let r = train::train(&o, state, input).expect("train trees");
    Model::from_body(r.body, Path::new("trees-bench")).expect("trees model")
}

/// An engine holding the warm-up days.
fn warm(model: Model, t: &Traffic, input: &InputConfig, now: i64) -> Engine {
    let e = Engine::new(model, None, &StateConfig::default());
    for l in &t.lines[..t.split] {
        if let Ok(tx) = decode(l, input, now) {
            e.process(&tx);
        }
    }
    e
}

fn bench(c: &mut Criterion) {
    let input = InputConfig::default();
    let state_cfg = StateConfig::default();
    let now = chrono::Utc::now().timestamp_millis();
    let t = traffic(&input, now);
    let measured = &t.lines[t.split..];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = || Model::load(&root.join("models/default.json")).expect("models/default.json");
    let models = [
        ("iforest", default()),
        ("trees", trees_model(&t, &state_cfg, &input)),
    ];

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(1));

    g.bench_function("decode", |b| {
        let mut i = 0;
        b.iter_custom(|iters| {
            cpu_iters(iters, || {
                let l = &measured[i % measured.len()];
                i += 1;
                black_box(decode(black_box(l), &input, now).is_ok());
            })
        })
    });

    // Past the end of the measured days the lines repeat, shifted forward by the traffic's
    // span, so events stay in event-time order and keep updating the warm state.
    let span_ms = i64::from(DAYS) * DAY_MS;
    for (name, model) in models {
        let fv = {
            let e = warm(model, &t, &input, now);
            let mut k = 0usize;
            g.bench_function(format!("decode_state_features_score_{name}"), |b| {
                b.iter_custom(|iters| {
                    cpu_iters(iters, || {
                        let l = &measured[k % measured.len()];
                        let lap = (k / measured.len()) as i64 + 1;
                        k += 1;
                        if let Ok(mut tx) = decode(black_box(l), &input, now) {
                            tx.ts += lap * span_ms;
                            black_box(e.process(&tx).score);
                        }
                    })
                })
            });
            let m = e.model();
            let tx = decode(&measured[0], &input, now).expect("valid");
            let fv = e.process(&tx).features;
            println!(
                "{name}: {} entities in state after warm-up and {k} measured events",
                e.state.entries()
            );
            (m, fv)
        };
        let (m, fv) = fv;
        g.bench_function(format!("score_only_{name}"), |b| {
            b.iter_custom(|iters| {
                cpu_iters(iters, || {
                    black_box(m.score(black_box(&fv)));
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
