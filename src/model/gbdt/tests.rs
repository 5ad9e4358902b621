//! Tests of the parent module.
use super::*;
use crate::ranking::average_precision;

/// splitmix64: a tiny deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

const NF: usize = 10;
/// Features 0..=4 carry the signal, 5..=9 are noise.
const INFORMATIVE: [usize; 5] = [0, 1, 2, 3, 4];

/// ~1% positives from a nonlinear rule (an interaction, a two-sided tail and a product)
/// with label noise.
fn synth(n: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
    let mut rng = Rng(seed);
    let mut x = Vec::with_capacity(n * NF);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let r: Vec<f64> = (0..NF).map(|_| rng.normal()).collect();
        let z = -7.0
            + 5.0 * f64::from(u8::from(r[0] > 1.0 && r[1] > 1.0))
            + 3.5 * f64::from(u8::from(r[2].abs() > 2.0))
            + 1.2 * (r[3] * r[4]).max(0.0);
        let p = 1.0 / (1.0 + (-z).exp());
        y.push(rng.uniform() < p);
        x.extend(r.iter().map(|v| *v as f32));
    }
    (x, y)
}

/// Weighted logistic regression by full-batch gradient descent on standardised features.
fn linear_scores(x: &[f32], y: &[bool], w: &[f32], test: &[f32]) -> Vec<f32> {
    let n = y.len() as f64;
    let mut mean = [0.0f64; NF];
    let mut sd = [0.0f64; NF];
    for row in x.chunks_exact(NF) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / n;
        }
    }
    for row in x.chunks_exact(NF) {
        for ((s, m), v) in sd.iter_mut().zip(&mean).zip(row) {
            *s += (f64::from(*v) - m).powi(2) / n;
        }
    }
    let standardise = |data: &[f32]| -> Vec<[f64; NF]> {
        data.chunks_exact(NF)
            .map(|row| {
                let mut z = [0.0f64; NF];
                for (((z, v), m), s) in z.iter_mut().zip(row).zip(&mean).zip(&sd) {
                    *z = (f64::from(*v) - m) / s.sqrt().max(1e-9);
                }
                z
            })
            .collect()
    };
    let dot =
        |beta: &[f64; NF], z: &[f64; NF]| -> f64 { beta.iter().zip(z).map(|(b, v)| b * v).sum() };
    let zx = standardise(x);
    let wsum: f64 = w.iter().map(|v| f64::from(*v)).sum();
    let (mut beta, mut b0) = ([0.0f64; NF], 0.0f64);
    for _ in 0..300 {
        let mut g = [0.0f64; NF];
        let mut g0 = 0.0;
        for ((z, yi), wi) in zx.iter().zip(y).zip(w) {
            let m = b0 + dot(&beta, z);
            let r = f64::from(*wi) * (1.0 / (1.0 + (-m).exp()) - f64::from(u8::from(*yi)));
            g0 += r;
            for (gf, zf) in g.iter_mut().zip(z) {
                *gf += r * zf;
            }
        }
        b0 -= 2.0 * g0 / wsum;
        for (b, gf) in beta.iter_mut().zip(&g) {
            *b -= 2.0 * gf / wsum;
        }
    }
    standardise(test)
        .iter()
        .map(|z| (b0 + dot(&beta, z)) as f32)
        .collect()
}

fn small_cfg() -> GbdtConfig {
    GbdtConfig {
        n_trees: 100,
        learning_rate: 0.1,
        max_depth: 4,
        ..GbdtConfig::default()
    }
}

struct Fixture {
    model: Gbdt,
    booster: GradientBooster,
    test_x: Vec<f32>,
    test_y: Vec<bool>,
    train: (Vec<f32>, Vec<bool>, Vec<f32>),
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let (x, y) = synth(20_000, 1);
        let w = vec![1.0f32; y.len()];
        let booster = train_booster(&x, NF, &y, &w, &small_cfg()).expect("fit");
        let model = Gbdt::from_booster(&booster, NF).expect("flatten");
        let (test_x, test_y) = synth(20_000, 2);
        Fixture {
            model,
            booster,
            test_x,
            test_y,
            train: (x, y, w),
        }
    })
}

#[test]
fn beats_linear_baseline_on_nonlinear_imbalanced_data() {
    let f = fixture();
    let rate = f.test_y.iter().filter(|v| **v).count() as f64 / f.test_y.len() as f64;
    assert!((0.004..0.03).contains(&rate), "positive rate {rate}");
    let gb: Vec<f32> = f
        .test_x
        .chunks_exact(NF)
        .map(|r| f.model.predict(r))
        .collect();
    assert!(gb.iter().all(|p| (0.0..=1.0).contains(p)));
    let (x, y, w) = &f.train;
    let lin = linear_scores(x, y, w, &f.test_x);
    let ap_gb = average_precision(&gb, &f.test_y);
    let ap_lin = average_precision(&lin, &f.test_y);
    eprintln!("AP gbdt {ap_gb:.3}, linear {ap_lin:.3}, positive rate {rate:.4}");
    assert!(ap_gb > ap_lin + 0.1, "gbdt AP {ap_gb} vs linear {ap_lin}");
}

#[test]
fn flat_model_matches_forust() {
    let f = fixture();
    let mut cols = vec![0.0f64; f.test_x.len()];
    let n = f.test_y.len();
    for (r, row) in f.test_x.chunks_exact(NF).enumerate() {
        for (c, v) in row.iter().enumerate() {
            cols[c * n + r] = f64::from(*v);
        }
    }
    let theirs = f.booster.predict(&Matrix::new(&cols, n, NF), false);
    for (row, t) in f.test_x.chunks_exact(NF).zip(theirs) {
        let ours = f.model.margin(row);
        assert!((ours - t).abs() < 1e-9, "{ours} vs {t}");
    }
}

#[test]
fn serde_round_trip_gives_identical_predictions() {
    let f = fixture();
    let json = serde_json::to_string(&f.model).expect("serialise");
    let back: Gbdt = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back.n_features(), NF);
    for row in f.test_x.chunks_exact(NF) {
        assert_eq!(f.model.predict(row).to_bits(), back.predict(row).to_bits());
    }
    assert_eq!(json, serde_json::to_string(&back).expect("serialise again"));
}

#[test]
fn damaged_model_is_rejected() {
    let f = fixture();
    let v: serde_json::Value = serde_json::to_value(&f.model).expect("serialise");
    let mut cyclic = v.clone();
    cyclic["left"][0] = serde_json::json!(0);
    assert!(serde_json::from_value::<Gbdt>(cyclic).is_err());
    let mut bad_feature = v.clone();
    bad_feature["feature"][0] = serde_json::json!(NF);
    assert!(serde_json::from_value::<Gbdt>(bad_feature).is_err());
    let mut short = v;
    short["value_bits"] = serde_json::json!([]);
    assert!(serde_json::from_value::<Gbdt>(short).is_err());
}

#[test]
fn explain_ranks_informative_features_first() {
    let f = fixture();
    let mut rows: Vec<&[f32]> = f.test_x.chunks_exact(NF).collect();
    rows.sort_by(|a, b| f.model.predict(b).total_cmp(&f.model.predict(a)));
    for row in &rows[..50] {
        let top = f.model.explain(row, 3);
        assert!(!top.is_empty() && top.len() <= 3);
        assert!(top.windows(2).all(|p| p[0].1 >= p[1].1));
        assert!(top.iter().all(|(_, c)| *c > 0.0));
        assert!(
            INFORMATIVE.contains(&top[0].0),
            "top feature {top:?} for row {row:?}"
        );
    }
    assert!(f.model.explain(rows[0], 0).is_empty());
    // Contributions plus the bias add up to the log-odds.
    for row in rows.iter().step_by(997) {
        let (c, bias) = f.model.contributions(row);
        let total = bias + c.iter().sum::<f64>();
        assert!((total - f.model.margin(row)).abs() < 1e-4, "{total}");
    }
}

#[test]
fn non_finite_and_short_rows_do_not_panic() {
    let f = fixture();
    let m = &f.model;
    for row in [
        vec![f32::NAN; NF],
        vec![f32::INFINITY; NF],
        vec![f32::NEG_INFINITY; NF],
        vec![f32::MAX; NF],
        vec![1.0; 3],
        vec![],
        vec![0.5; NF + 5],
    ] {
        let p = m.predict(&row);
        assert!((0.0..=1.0).contains(&p), "{p} for {row:?}");
        let _ = m.explain(&row, 5);
    }
    // Training data with NaN and inf trains and scores.
    let (mut x, y) = synth(3_000, 7);
    for i in (0..x.len()).step_by(7) {
        x[i] = f32::NAN;
    }
    for i in (3..x.len()).step_by(11) {
        x[i] = if i % 2 == 0 {
            f32::INFINITY
        } else {
            f32::NEG_INFINITY
        };
    }
    let w = vec![1.0; y.len()];
    let cfg = GbdtConfig {
        n_trees: 20,
        ..small_cfg()
    };
    let model = Gbdt::fit(&x, NF, &y, &w, &cfg).expect("fit with NaN/inf");
    for row in x.chunks_exact(NF) {
        assert!((0.0..=1.0).contains(&model.predict(row)));
    }
}

#[test]
fn fit_rejects_bad_input() {
    let (x, y) = synth(1_000, 3);
    let w = vec![1.0; y.len()];
    let cfg = small_cfg();
    let e = Gbdt::fit(&x[..x.len() - 1], NF, &y, &w, &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x has 9999") && e.contains("y has 1000"), "{e}");
    let e = Gbdt::fit(&x, NF, &y, &w[1..], &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("w has 999"), "{e}");
    let e = Gbdt::fit(&x, NF, &y[1..], &w, &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("y has 999"), "{e}");
    let all_neg = vec![false; y.len()];
    assert!(matches!(
        Gbdt::fit(&x, NF, &all_neg, &w, &cfg),
        Err(GbdtError::OneClass { positives, .. }) if positives == 0.0
    ));
    let mut bad_w = w.clone();
    bad_w[5] = f32::NAN;
    let e = Gbdt::fit(&x, NF, &y, &bad_w, &cfg).unwrap_err();
    assert!(
        matches!(e, GbdtError::BadWeight { index: 5, value } if value.is_nan()),
        "{e}"
    );
    assert_eq!(e.to_string(), "weight w[5] = NaN is not finite and >= 0");
    let bad_cfg = GbdtConfig {
        subsample: 0.0,
        ..cfg
    };
    assert_eq!(
        Gbdt::fit(&x, NF, &y, &w, &bad_cfg).unwrap_err().to_string(),
        "subsample 0 is not in (0, 1]"
    );
    assert_eq!(
        Gbdt::fit(&x, 0, &y, &w, &small_cfg())
            .unwrap_err()
            .to_string(),
        "n_features 0 is not at least 1"
    );
}

#[test]
fn ceil_threshold_preserves_decisions() {
    let mut rng = Rng(9);
    for _ in 0..10_000 {
        let t = rng.normal() * 10.0;
        let c = f32_ceil_of(t);
        let below = c.next_down();
        assert!(f64::from(c) >= t && f64::from(below) < t);
    }
    assert_eq!(f32_ceil_of(1.0), 1.0);
    assert_eq!(f32_ceil_of(1e300), f32::INFINITY);
}
