//! Unsupervised anomaly model: k-means (linfa-clustering) on the standardised features; the
//! anomaly distance is the Euclidean distance to the nearest centroid, and the score its
//! empirical CDF over the training rows (see [`super`]).

use linfa::prelude::*;
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::training::{fit_scaler, mask, version_of, TrainMeta};
use super::{standardise, FitError, ModelBody, ModelError, Params, ParamsError, Scaler, TrainInfo};
use crate::features::{FeatureVector, MAX_DIM};

/// Quantiles of the training distances kept in the file (0, 0.1%, ..., 100%).
pub const QUANTILES: usize = 1001;

/// Most rows k-means is fitted on (a seeded sample above it); the scaler and the quantiles use
/// every row.
pub const MAX_FIT_ROWS: usize = 200_000;

/// Stored parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KMeansParams {
    /// Centroids in standardised space.
    pub centroids: Vec<Vec<f32>>,
    /// Training distance quantiles, ascending.
    pub distance_quantiles: Vec<f32>,
}

/// Ready-to-score form: flat centroids.
#[derive(Debug, Clone)]
pub struct Scorer {
    centroids: Vec<f32>,
    k: usize,
    dim: usize,
    q: Vec<f32>,
}

impl Scorer {
    /// Checks the shapes.
    pub fn new(p: &KMeansParams, scaler: &Scaler) -> Result<Scorer, ParamsError> {
        let dim = scaler.mean.len();
        let bad = p
            .centroids
            .iter()
            .enumerate()
            .find(|(_, c)| c.len() != dim)
            .map(|(i, c)| (i, c.len()));
        if p.centroids.is_empty() || bad.is_some() {
            return Err(ParamsError::Centroids {
                inputs: dim,
                centroids: p.centroids.len(),
                bad,
            });
        }
        let ascending = !p.distance_quantiles.windows(2).any(|w| w[0] > w[1]);
        if p.distance_quantiles.len() != QUANTILES || !ascending {
            return Err(ParamsError::Quantiles {
                model: "kmeans",
                what: "distance",
                field: "distance_quantiles",
                len: p.distance_quantiles.len(),
                expected: QUANTILES,
                ascending,
            });
        }
        Ok(Scorer {
            centroids: p.centroids.iter().flatten().copied().collect(),
            k: p.centroids.len(),
            dim,
            q: p.distance_quantiles.clone(),
        })
    }

    /// (nearest centroid, squared distance) of a standardised row.
    #[inline]
    fn nearest(&self, z: &[f32]) -> (usize, f32) {
        let mut best = (0, f32::INFINITY);
        for (c, cen) in self.centroids.chunks_exact(self.dim).enumerate() {
            let d: f32 = z.iter().zip(cen).map(|(a, b)| (a - b) * (a - b)).sum();
            if d < best.1 {
                best = (c, d);
            }
        }
        best
    }

    /// Anomaly distance of a standardised row.
    #[inline]
    pub fn distance_z(&self, z: &[f32]) -> f32 {
        self.nearest(z).1.sqrt()
    }

    /// Score in [0, 1] of a standardised row: see [`cdf_score`].
    #[inline]
    pub fn score_z(&self, z: &[f32]) -> f32 {
        cdf_score(&self.q, self.distance_z(z))
    }

    /// Inputs by their share of the squared distance to the nearest centroid.
    pub fn explain_z(&self, z: &[f32], k: usize) -> Vec<(usize, f32)> {
        let (c, d2) = self.nearest(z);
        let cen = &self.centroids[c * self.dim..(c + 1) * self.dim];
        let mut parts: Vec<(usize, f32)> = z
            .iter()
            .zip(cen)
            .enumerate()
            .map(|(i, (a, b))| {
                (
                    i,
                    if d2 > 0.0 {
                        (a - b) * (a - b) / d2
                    } else {
                        0.0
                    },
                )
            })
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        parts.truncate(k.min(self.k.max(k)));
        parts
    }

    /// Number of centroids.
    pub fn clusters(&self) -> usize {
        self.k
    }
}

/// Empirical CDF of `d` over the quantiles, scaled into [0, 0.999) below the largest training
/// distance and rising towards 1 beyond it, continuous and non-decreasing in `d`.
#[inline]
pub fn cdf_score(q: &[f32], d: f32) -> f32 {
    let n = q.len();
    if n < 2 || d.is_nan() {
        return 0.0;
    }
    let max = q[n - 1];
    if d >= max {
        return if d > 0.0 {
            0.999 + 0.001 * (1.0 - max / d)
        } else {
            0.999
        };
    }
    let j = q.partition_point(|&v| v <= d);
    if j == 0 {
        return 0.0;
    }
    let (lo, hi) = (q[j - 1], q[j]);
    let frac = if hi > lo { (d - lo) / (hi - lo) } else { 0.0 };
    0.999 * ((j - 1) as f32 + frac) / (n - 1) as f32
}

/// The [`QUANTILES`] ascending quantiles of non-empty `values`, as [`cdf_score`] reads them.
pub fn quantiles(mut values: Vec<f32>) -> Vec<f32> {
    values.sort_by(f32::total_cmp);
    (0..QUANTILES)
        .map(|j| values[(j * (values.len() - 1)) / (QUANTILES - 1)])
        .collect()
}

/// The threshold that alerts on a share `alert_rate` of rows like the training ones.
pub fn threshold_for_rate(alert_rate: f64) -> f32 {
    (0.999 * (1.0 - alert_rate.clamp(0.0, 1.0))) as f32
}

/// Fits the model on `rows` (features of the transactions in [from, to)).
pub fn train(
    rows: &[FeatureVector],
    k: usize,
    meta: &TrainMeta<'_>,
) -> Result<ModelBody, ModelError> {
    let alert_rate = meta.alert_rate;
    let seed = meta.seed;
    let dim = crate::features::N_FEATURES + meta.attributes.len();
    if rows.len() < k.max(2) * 10 {
        return Err(FitError::TooFewRows {
            rows: rows.len(),
            need: k.max(2) * 10,
            model: format!("{k} clusters"),
        }
        .into());
    }
    if !(0.0..1.0).contains(&alert_rate) || alert_rate == 0.0 {
        return Err(FitError::AlertRate { value: alert_rate }.into());
    }
    let mut scaler = fit_scaler(rows, dim);
    mask(&mut scaler, meta);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    if idx.len() > MAX_FIT_ROWS {
        idx.shuffle(&mut rng);
        idx.truncate(MAX_FIT_ROWS);
    }
    let mut data = Array2::<f64>::zeros((idx.len(), dim));
    let mut z = [0.0f32; MAX_DIM];
    for (r, &i) in idx.iter().enumerate() {
        standardise(&rows[i], &scaler, &mut z);
        for c in 0..dim {
            data[[r, c]] = z[c] as f64;
        }
    }
    let dataset = DatasetBase::from(data);
    let fitted = KMeans::params_with_rng(k, rng)
        .max_n_iterations(100)
        .tolerance(1e-4)
        .fit(&dataset)
        .map_err(|e| FitError::Linfa {
            model: "k-means",
            detail: e.to_string(),
        })?;
    let centroids: Vec<Vec<f32>> = fitted
        .centroids()
        .outer_iter()
        .map(|row| row.iter().map(|v| *v as f32).collect())
        .collect();
    let provisional = KMeansParams {
        centroids: centroids.clone(),
        distance_quantiles: vec![0.0; QUANTILES],
    };
    let scorer = Scorer::new(&provisional, &scaler).map_err(FitError::from)?;
    let d: Vec<f32> = rows
        .iter()
        .map(|r| {
            standardise(r, &scaler, &mut z);
            scorer.distance_z(&z[..dim])
        })
        .collect();
    let q = quantiles(d);
    let (version, created_at) = version_of("kmeans", meta, rows.len());
    Ok(ModelBody {
        version,
        feature_names: ModelBody::expected_names(meta.attributes),
        attributes: meta.attributes.to_vec(),
        transforms: super::Model::transform_names(),
        threshold: threshold_for_rate(alert_rate),
        feedback_delay_days: meta.feedback_delay_days,
        scaler,
        params: Params::Kmeans(KMeansParams {
            centroids,
            distance_quantiles: q,
        }),
        trained: TrainInfo {
            from: meta.from.to_string(),
            to: meta.to.to_string(),
            rows: rows.len() as u64,
            alert_rate,
            created_at,
        },
        validation: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_monotonic_and_bounded() {
        let q: Vec<f32> = (0..QUANTILES).map(|i| i as f32 / 100.0).collect();
        let mut prev = -1.0;
        for step in 0..3000 {
            let d = step as f32 / 200.0;
            let s = cdf_score(&q, d);
            assert!((0.0..=1.0).contains(&s));
            assert!(s >= prev, "{d}: {s} < {prev}");
            prev = s;
        }
        assert!((cdf_score(&q, 5.0) - 0.4995).abs() < 1e-4);
        assert!(cdf_score(&q, 1e9) > 0.9999);
        assert_eq!(cdf_score(&q, f32::NAN), 0.0);
    }

    #[test]
    fn too_few_rows_is_an_error() {
        let rows = vec![[0.0f32; MAX_DIM]; 10];
        let meta = TrainMeta {
            attributes: &[],
            from: "a",
            to: "b",
            alert_rate: 0.01,
            seed: 1,
            attributes_only: false,
            feedback_delay_days: 7,
        };
        assert!(matches!(
            train(&rows, 8, &meta),
            Err(ModelError::Train(FitError::TooFewRows {
                rows: 10,
                need: 80,
                ..
            }))
        ));
    }
}
