//! Sampling helpers: distributions and weighted choice on the seeded ChaCha8 generator.
//!
//! Still hand-written (Box–Muller normal, Knuth Poisson, a cumulative table for weighted choice):
//! `rand_distr` and `WeightedIndex` draw differently from the same generator, so moving to them
//! changes every generated stream, and the rates measured in `docs/generator.md` and the tests
//! built on generated data would need re-measuring. Left for a change of its own.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub(super) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 - u lies in (0, 1] so the logarithm is finite.
    let u1: f64 = 1.0 - rng.gen::<f64>();
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub(super) fn lognormal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    (mu + sigma * normal(rng)).exp()
}

pub(super) fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -(1.0 - rng.gen::<f64>()).ln() * mean
}

pub(super) fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        let x = lambda + lambda.sqrt() * normal(rng);
        return x.round().max(0.0) as u32;
    }
    // Knuth's multiplication method.
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p: f64 = rng.gen();
    while p > limit {
        k += 1;
        p *= rng.gen::<f64>();
    }
    k
}

pub(super) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.gen::<f64>()
}

/// Index drawn from a cumulative weight table (empty table gives 0).
pub(super) fn pick_cdf(rng: &mut ChaCha8Rng, cdf: &[f64]) -> usize {
    let total = cdf.last().copied().unwrap_or(0.0);
    let x = rng.gen::<f64>() * total;
    cdf.partition_point(|&c| c <= x)
        .min(cdf.len().saturating_sub(1))
}

pub(super) fn cumulative(weights: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .into_iter()
        .map(|w| {
            acc += w.max(0.0);
            acc
        })
        .collect()
}

/// A weighted set of ids.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) ids: Vec<u32>,
    pub(super) cdf: Vec<f64>,
}

impl Pool {
    pub(super) fn push(&mut self, id: u32, weight: f64) {
        let last = self.cdf.last().copied().unwrap_or(0.0);
        self.ids.push(id);
        self.cdf.push(last + weight.max(1e-9));
    }

    pub(super) fn sample(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        if self.ids.is_empty() {
            return None;
        }
        self.ids.get(pick_cdf(rng, &self.cdf)).copied()
    }
}
