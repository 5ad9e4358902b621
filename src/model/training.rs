//! What every kind's training shares: the scaler, the provenance of a model ([`TrainMeta`],
//! [`version_of`]) and the masking of windowed features for attribute-only data sets.

use super::{transform, Scaler};
use crate::features::{FeatureVector, MAX_DIM};

/// Scaler over all rows (after the transforms), for the first `dim` inputs. Missing values
/// (non-finite) are left out of the mean and deviation.
pub fn fit_scaler(rows: &[FeatureVector], dim: usize) -> Scaler {
    let dim = dim.min(MAX_DIM);
    let mut n = vec![0.0f64; dim];
    let mut mean = vec![0.0f64; dim];
    let mut sq = vec![0.0f64; dim];
    for r in rows {
        for i in 0..dim {
            let v = transform(i, r[i]) as f64;
            if v.is_finite() {
                n[i] += 1.0;
                mean[i] += v;
                sq[i] += v * v;
            }
        }
    }
    let mut m = vec![0.0f32; dim];
    let mut s = vec![0.0f32; dim];
    for i in 0..dim {
        let c = n[i].max(1.0);
        let mu = mean[i] / c;
        m[i] = mu as f32;
        s[i] = ((sq[i] / c - mu * mu).max(0.0).sqrt() as f32).max(1e-3);
    }
    Scaler { mean: m, std: s }
}

/// What a trained model was trained on, for its body.
#[derive(Debug, Clone)]
pub struct TrainMeta<'a> {
    /// Attribute names after the windowed features.
    pub attributes: &'a [String],
    /// Range start, RFC 3339.
    pub from: &'a str,
    /// Range end, RFC 3339.
    pub to: &'a str,
    /// Alert budget the threshold is for.
    pub alert_rate: f64,
    /// RNG seed.
    pub seed: u64,
    /// Use only the amount and the attributes (for data sets without accounts or merchants):
    /// the windowed features get a scale so large that their standardised value is 0.
    pub attributes_only: bool,
    /// Label delay of the matured fraud rates, days; stored in the model.
    pub feedback_delay_days: i64,
}

/// Scale given to masked inputs: their standardised value is 0 whatever the input.
pub const MASKED_STD: f32 = 1e30;

/// Applies `meta.attributes_only` to a fitted scaler.
pub fn mask(scaler: &mut Scaler, meta: &TrainMeta<'_>) {
    if meta.attributes_only {
        for i in 1..crate::features::N_FEATURES.min(scaler.std.len()) {
            scaler.std[i] = MASKED_STD;
        }
    }
}

/// A version string: kind, time of training, and a hash of what it was trained on.
pub fn version_of(kind: &str, meta: &TrainMeta<'_>, rows: usize) -> (String, String) {
    let created = chrono::Utc::now();
    let version = format!(
        "{kind}-{}-{:08x}",
        created.format("%Y%m%dT%H%M%S"),
        (crate::state::key_of(&format!(
            "{}{}{}{rows}{}",
            meta.from,
            meta.to,
            meta.seed,
            meta.attributes.join(",")
        )) as u32)
    );
    (version, created.to_rfc3339())
}
