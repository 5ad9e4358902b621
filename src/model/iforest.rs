//! Isolation forest (Liu, Ting and Zhou, ICDM 2008): the unsupervised default.
//!
//! Each tree splits a random sample of 256 training rows on a random input at a random value
//! between the node's minimum and maximum, until a row is alone or the depth reaches
//! ⌈log₂ 256⌉ = 8. An outlier is isolated in few splits: the anomaly score is
//! `2^(−E[h(x)] / c(256))` where `h` is the path length (plus `c(n)` for a leaf still holding
//! `n` rows) and `c(n)` the average path length of an unsuccessful search in a binary search
//! tree of `n` keys. The model's score is the empirical CDF of that anomaly score over the
//! training transactions, like k-means' (so `1 − r` alerts on about a share `r` of traffic like
//! the training data), and 0.999 to 1 beyond the most anomalous training row.
//!
//! Inputs: a subset of the features chosen for anomaly detection (the amount, the amount
//! relative to the account's and the merchant's history, velocity, new merchant or country,
//! matured merchant fraud rates) plus the attributes, standardised. History-length inputs
//! (seconds since the previous transaction, days known) are left out on purpose: a new account
//! is unusual but not suspicious, and isolating it would storm alerts at every cold start.
//! No crate on crates.io offers a maintained isolation forest over `f32` slices with the
//! flat, allocation-free scoring the worker needs, so it is written here (about 200 lines).

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::kmeans::{cdf_score, quantiles, threshold_for_rate, QUANTILES};
use super::training::{fit_scaler, mask, version_of, TrainMeta};
use super::{standardise, FitError, ModelBody, ModelError, Params, ParamsError, TrainInfo};
use crate::features::{FeatureVector, FEATURES, MAX_DIM, N_FEATURES};

/// Windowed features an isolation forest reads (by name), besides the attributes.
pub const ANOMALY_INPUTS: [&str; 13] = [
    "amount",
    "acct_amount_ratio_7d",
    "acct_amount_ratio_30d",
    "acct_amount_zscore_30d",
    "acct_velocity_10m",
    "acct_count_1d",
    "acct_new_merchant",
    "acct_new_country",
    "merch_amount_ratio_30d",
    "merch_fraud_rate_1d",
    "merch_fraud_rate_7d",
    "merch_fraud_rate_30d",
    "acct_frauds_visible",
];

/// Rows per tree.
pub const SAMPLE: usize = 256;
/// Trees.
pub const TREES: usize = 100;

const LEAF: u32 = u32::MAX;

/// One node: a split (`x[feature] < value` goes to `left`, else `left + 1`) or a leaf whose
/// `value` is its depth plus `c(rows left)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct INode {
    /// Input index, or `u32::MAX` for a leaf.
    pub feature: u32,
    /// Split value, or the leaf's path length.
    pub value: f32,
    /// Index of the left child (the right one follows it).
    pub left: u32,
}

/// Stored isolation forest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IForestParams {
    /// Trees, each a node array whose root is node 0.
    pub trees: Vec<Vec<INode>>,
    /// Rows per tree.
    pub sample_size: usize,
    /// Inputs the trees split on.
    pub inputs: Vec<u32>,
    /// Ascending quantiles of the training rows' anomaly scores ([`QUANTILES`] of them).
    pub score_quantiles: Vec<f32>,
}

/// Average path length of an unsuccessful search in a BST of `n` keys.
pub fn c_of(n: usize) -> f32 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f32;
            2.0 * ((n - 1.0).ln() + 0.577_215_7) - 2.0 * (n - 1.0) / n
        }
    }
}

/// Deepest tree scored with the dense layout.
const DENSE_MAX_DEPTH: usize = 10;

/// Ready-to-score isolation forest.
///
/// Scoring uses a dense layout: every tree padded to a complete binary tree of the forest's
/// depth `d` (node `i` has children `2i+1` and `2i+2`; a leaf above the last level becomes
/// splits that always go left, its value stored at its leftmost descendant), so a row's walk
/// is exactly `d` branch-free steps per tree and the trees' walks are independent, which lets
/// the CPU overlap them. About 1 µs for 100 trees of depth 8.
#[derive(Debug, Clone)]
pub struct IForest {
    trees: Vec<Vec<INode>>,
    norm: f32,
    q: Vec<f32>,
    depth: usize,
    /// Per tree, `2^depth − 1` split inputs.
    feat: Vec<u8>,
    /// Per tree, `2^depth − 1` split values (+∞: always left).
    thr: Vec<f32>,
    /// Per tree, `2^depth` leaf path lengths.
    leaf: Vec<f32>,
    /// Inputs the trees split on.
    inputs: Vec<u32>,
}

/// Depth of a tree (a single leaf: 0).
fn depth_of(tree: &[INode], i: usize, guard: usize) -> usize {
    match tree.get(i) {
        Some(n) if n.feature != LEAF && guard > 0 => {
            1 + depth_of(tree, n.left as usize, guard - 1).max(depth_of(
                tree,
                n.left as usize + 1,
                guard - 1,
            ))
        }
        _ => 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn densify(
    tree: &[INode],
    i: usize,
    slot: usize,
    level: usize,
    depth: usize,
    feat: &mut [u8],
    thr: &mut [f32],
    leaf: &mut [f32],
) {
    let n = tree.get(i).copied().unwrap_or(INode {
        feature: LEAF,
        value: 0.0,
        left: 0,
    });
    if level == depth {
        leaf[slot - ((1 << depth) - 1)] = n.value;
        return;
    }
    if n.feature == LEAF {
        feat[slot] = 0;
        thr[slot] = f32::INFINITY;
        densify(tree, i, 2 * slot + 1, level + 1, depth, feat, thr, leaf);
    } else {
        feat[slot] = n.feature as u8;
        thr[slot] = n.value;
        let l = n.left as usize;
        densify(tree, l, 2 * slot + 1, level + 1, depth, feat, thr, leaf);
        densify(tree, l + 1, 2 * slot + 2, level + 1, depth, feat, thr, leaf);
    }
}

impl IForest {
    /// Checks every reference.
    pub fn new(p: &IForestParams, dim: usize) -> Result<IForest, ParamsError> {
        if p.trees.is_empty() {
            return Err(ParamsError::NoTrees {
                model: "isolation forest",
            });
        }
        let ascending = !p.score_quantiles.windows(2).any(|w| w[0] > w[1]);
        if p.score_quantiles.len() != QUANTILES || !ascending {
            return Err(ParamsError::Quantiles {
                model: "isolation forest",
                what: "score",
                field: "score_quantiles",
                len: p.score_quantiles.len(),
                expected: QUANTILES,
                ascending,
            });
        }
        for (t, tree) in p.trees.iter().enumerate() {
            for (i, n) in tree.iter().enumerate() {
                if n.feature != LEAF
                    && (n.feature as usize >= dim
                        || n.left as usize <= i
                        || n.left as usize + 1 >= tree.len())
                {
                    return Err(ParamsError::NodeOutOfRange {
                        model: "isolation",
                        tree: t,
                        node: i,
                        feature: n.feature,
                        left: n.left,
                        right: n.left.saturating_add(1),
                        nodes: tree.len(),
                        inputs: dim,
                    });
                }
            }
        }
        let depth = p
            .trees
            .iter()
            .map(|t| depth_of(t, 0, DENSE_MAX_DEPTH + 1))
            .max()
            .unwrap_or(0);
        if depth > DENSE_MAX_DEPTH || dim > usize::from(u8::MAX) {
            return Err(ParamsError::TooDeep {
                max_depth: DENSE_MAX_DEPTH,
                depth,
                inputs: dim,
            });
        }
        let (inner, leaves) = ((1usize << depth) - 1, 1usize << depth);
        let mut feat = vec![0u8; inner * p.trees.len()];
        let mut thr = vec![f32::INFINITY; inner * p.trees.len()];
        let mut leaf = vec![0.0f32; leaves * p.trees.len()];
        for (t, tree) in p.trees.iter().enumerate() {
            densify(
                tree,
                0,
                0,
                0,
                depth,
                &mut feat[t * inner..(t + 1) * inner],
                &mut thr[t * inner..(t + 1) * inner],
                &mut leaf[t * leaves..(t + 1) * leaves],
            );
        }
        Ok(IForest {
            trees: p.trees.clone(),
            norm: c_of(p.sample_size.max(2)),
            q: p.score_quantiles.clone(),
            depth,
            feat,
            thr,
            leaf,
            inputs: p.inputs.clone(),
        })
    }

    /// Inputs the trees split on (the others need not be computed).
    pub fn inputs(&self) -> &[u32] {
        &self.inputs
    }

    #[inline]
    fn path(tree: &[INode], z: &[f32], mut visit: impl FnMut(u32)) -> f32 {
        let mut i = 0usize;
        // Children are always after their parent, so this ends within tree.len() steps.
        while let Some(n) = tree.get(i) {
            if n.feature == LEAF {
                return n.value;
            }
            visit(n.feature);
            let v = z.get(n.feature as usize).copied().unwrap_or(0.0);
            i = n.left as usize + usize::from(v >= n.value);
        }
        0.0
    }

    /// Raw anomaly score `2^(−E[h]/c(ψ))` in (0, 1].
    #[inline]
    pub fn anomaly(&self, z: &[f32]) -> f32 {
        const LANES: usize = 4;
        let inner = (1usize << self.depth) - 1;
        let leaves = inner + 1;
        let n = self.trees.len();
        let at = |f: u8| z.get(f as usize).copied().unwrap_or(0.0);
        let mut h = 0.0f32;
        let mut t = 0;
        // Four trees walked side by side: their chains of loads are independent.
        while t + LANES <= n {
            let mut i = [0usize; LANES];
            for _ in 0..self.depth {
                for (l, il) in i.iter_mut().enumerate() {
                    let base = (t + l) * inner;
                    let (f, th) = (self.feat[base + *il], self.thr[base + *il]);
                    *il = 2 * *il + 1 + usize::from(at(f) >= th);
                }
            }
            for (l, il) in i.iter().enumerate() {
                h += self.leaf[(t + l) * leaves + il - inner];
            }
            t += LANES;
        }
        while t < n {
            let base = t * inner;
            let mut i = 0usize;
            for _ in 0..self.depth {
                let (f, th) = (self.feat[base + i], self.thr[base + i]);
                i = 2 * i + 1 + usize::from(at(f) >= th);
            }
            h += self.leaf[t * leaves + i - inner];
            t += 1;
        }
        (-h / (n as f32 * self.norm)).exp2()
    }

    /// [`IForest::anomaly`] by walking the stored trees (the reference the dense layout must
    /// match).
    pub fn anomaly_by_walk(&self, z: &[f32]) -> f32 {
        let h: f32 = self
            .trees
            .iter()
            .map(|t| Self::path(t, z, |_| ()))
            .sum::<f32>()
            / self.trees.len() as f32;
        (-h / self.norm).exp2()
    }

    /// Score in [0, 1]: the CDF of the anomaly score over the training rows.
    #[inline]
    pub fn score(&self, z: &[f32]) -> f32 {
        cdf_score(&self.q, self.anomaly(z))
    }

    /// Inputs that isolated the row: each split on its path credits its input with
    /// 1 / path length (short paths, the outliers', weigh most).
    pub fn explain(&self, z: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut credit = [0.0f32; MAX_DIM];
        for t in &self.trees {
            let mut used = [0u32; 16];
            let mut n = 0usize;
            let h = Self::path(t, z, |f| {
                if n < used.len() {
                    used[n] = f;
                    n += 1;
                }
            });
            let w = 1.0 / h.max(1.0);
            for f in &used[..n] {
                if let Some(c) = credit.get_mut(*f as usize) {
                    *c += w;
                }
            }
        }
        let mut v: Vec<(usize, f32)> = credit
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, c)| *c > 0.0)
            .collect();
        let total: f32 = v.iter().map(|(_, c)| c).sum::<f32>().max(1e-9);
        v.iter_mut().for_each(|(_, c)| *c /= total);
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(k);
        v
    }
}

/// The inputs an isolation forest uses for `dim` inputs: the windowed features named in
/// `names` (default [`ANOMALY_INPUTS`]; only the amount when `attributes_only`) and every
/// attribute. An unknown name is an error naming it.
pub fn inputs_for(
    dim: usize,
    attributes_only: bool,
    names: Option<&[String]>,
) -> Result<Vec<u32>, ModelError> {
    let default: Vec<String> = ANOMALY_INPUTS.iter().map(|s| s.to_string()).collect();
    let names = match (attributes_only, names) {
        (true, _) => vec!["amount".to_string()],
        (false, Some(n)) => n.to_vec(),
        (false, None) => default,
    };
    let mut v = Vec::with_capacity(names.len() + dim.saturating_sub(N_FEATURES));
    for n in &names {
        let i = FEATURES
            .iter()
            .position(|d| d.name == n)
            .ok_or_else(|| FitError::UnknownInput { name: n.clone() })?;
        v.push(i as u32);
    }
    v.extend((N_FEATURES..dim).map(|i| i as u32));
    Ok(v)
}

fn build(
    rows: &[&[f32]],
    inputs: &[u32],
    depth: usize,
    limit: usize,
    rng: &mut impl Rng,
    out: &mut Vec<INode>,
    me: usize,
) {
    let leaf = |out: &mut Vec<INode>| {
        out[me] = INode {
            feature: LEAF,
            value: depth as f32 + c_of(rows.len()),
            left: 0,
        };
    };
    if rows.len() <= 1 || depth >= limit {
        return leaf(out);
    }
    // A random input that still varies among these rows (a few tries, then give up).
    for _ in 0..inputs.len().max(1) * 2 {
        let f = inputs[rng.gen_range(0..inputs.len())] as usize;
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for r in rows {
            lo = lo.min(r[f]);
            hi = hi.max(r[f]);
        }
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let split = lo + rng.gen::<f32>() * (hi - lo);
        let split = if split <= lo { hi } else { split };
        let (l, r): (Vec<&[f32]>, Vec<&[f32]>) = rows.iter().partition(|x| x[f] < split);
        let left = out.len();
        out.push(INode {
            feature: LEAF,
            value: 0.0,
            left: 0,
        });
        out.push(INode {
            feature: LEAF,
            value: 0.0,
            left: 0,
        });
        out[me] = INode {
            feature: f as u32,
            value: split,
            left: left as u32,
        };
        build(&l, inputs, depth + 1, limit, rng, out, left);
        build(&r, inputs, depth + 1, limit, rng, out, left + 1);
        return;
    }
    leaf(out)
}

/// Fits an isolation forest on `rows` (features of the transactions in [from, to)) over the
/// windowed features `inputs` (default [`ANOMALY_INPUTS`]) and the attributes.
pub fn train(
    rows: &[FeatureVector],
    meta: &TrainMeta<'_>,
    inputs: Option<&[String]>,
) -> Result<ModelBody, ModelError> {
    let dim = N_FEATURES + meta.attributes.len();
    let alert_rate = meta.alert_rate;
    if !(0.0..1.0).contains(&alert_rate) || alert_rate == 0.0 {
        return Err(FitError::AlertRate { value: alert_rate }.into());
    }
    if rows.len() < SAMPLE {
        return Err(FitError::TooFewRows {
            rows: rows.len(),
            need: SAMPLE,
            model: "an isolation forest".to_string(),
        }
        .into());
    }
    let mut scaler = fit_scaler(rows, dim);
    mask(&mut scaler, meta);
    let inputs = inputs_for(dim, meta.attributes_only, inputs)?;
    let mut z = vec![0.0f32; rows.len() * dim];
    let mut buf = [0.0f32; MAX_DIM];
    for (i, r) in rows.iter().enumerate() {
        standardise(r, &scaler, &mut buf);
        z[i * dim..(i + 1) * dim].copy_from_slice(&buf[..dim]);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(meta.seed);
    let limit = (SAMPLE as f32).log2().ceil() as usize;
    let mut trees = Vec::with_capacity(TREES);
    for _ in 0..TREES {
        let sample: Vec<&[f32]> = rand::seq::index::sample(&mut rng, rows.len(), SAMPLE)
            .into_iter()
            .map(|i| &z[i * dim..(i + 1) * dim])
            .collect();
        let mut nodes = vec![INode {
            feature: LEAF,
            value: 0.0,
            left: 0,
        }];
        build(&sample, &inputs, 0, limit, &mut rng, &mut nodes, 0);
        trees.push(nodes);
    }
    let provisional = IForestParams {
        trees,
        sample_size: SAMPLE,
        inputs,
        score_quantiles: vec![0.0; QUANTILES],
    };
    let f = IForest::new(&provisional, dim).map_err(FitError::from)?;
    let q = quantiles(
        (0..rows.len())
            .map(|i| f.anomaly(&z[i * dim..(i + 1) * dim]))
            .collect(),
    );
    let (version, created_at) = version_of("iforest", meta, rows.len());
    Ok(ModelBody {
        version,
        feature_names: ModelBody::expected_names(meta.attributes),
        attributes: meta.attributes.to_vec(),
        transforms: super::Model::transform_names(),
        threshold: threshold_for_rate(alert_rate),
        feedback_delay_days: meta.feedback_delay_days,
        scaler,
        params: Params::Iforest(IForestParams {
            score_quantiles: q,
            ..provisional
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
    use crate::model::{Model, Predict};

    fn meta() -> TrainMeta<'static> {
        TrainMeta {
            attributes: &[],
            from: "a",
            to: "b",
            alert_rate: 0.01,
            seed: 5,
            attributes_only: false,
            feedback_delay_days: 7,
        }
    }

    #[test]
    fn c_matches_the_paper() {
        assert_eq!(c_of(1), 0.0);
        assert_eq!(c_of(2), 1.0);
        // c(256) = 2 H(255) - 2*255/256 ≈ 10.24
        approx::assert_abs_diff_eq!(c_of(256), 10.24, epsilon = 0.01);
    }

    #[test]
    fn outliers_score_high_and_round_trip() {
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let amount = FEATURES.iter().position(|d| d.name == "amount").unwrap();
        let ratio = FEATURES
            .iter()
            .position(|d| d.name == "acct_amount_ratio_30d")
            .unwrap();
        let rows: Vec<FeatureVector> = (0..5000)
            .map(|_| {
                let mut r = [0.0f32; MAX_DIM];
                r[amount] = rng.gen_range(20.0..80.0);
                r[ratio] = rng.gen_range(0.7..1.4);
                r
            })
            .collect();
        let body = train(&rows, &meta(), None).expect("train");
        let text = Model::to_file_text(&body).expect("json");
        let m = Model::parse(&text, std::path::Path::new("m")).expect("loads");
        let mut odd = rows[0];
        odd[amount] = 500.0;
        odd[ratio] = 10.0;
        let s_odd = m.score(&odd);
        // Rows in the middle of the distribution score below it.
        let central: Vec<f32> = rows
            .iter()
            .filter(|r| (35.0..65.0).contains(&r[amount]) && (0.85..1.25).contains(&r[ratio]))
            .map(|r| m.score(r))
            .collect();
        assert!(central.len() > 500);
        assert!(
            central.iter().all(|s| *s < s_odd),
            "outlier {s_odd} vs central max {:?}",
            central.iter().copied().fold(0.0, f32::max)
        );
        assert!(
            s_odd >= body.threshold,
            "outlier {s_odd} alerts at {}",
            body.threshold
        );
        let why = m.explain(&odd, 2);
        assert!(
            why.iter().any(|(i, _)| *i == amount || *i == ratio),
            "{why:?}"
        );
    }
}
