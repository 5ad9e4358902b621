//! Gradient-boosted decision trees for supervised fraud scoring.
//!
//! Training is delegated to the [`forust_ml`] crate (an XGBoost-style histogram booster with
//! logistic loss, sample weights, row subsampling, minimum child weight and L2 regularisation).
//! The fitted ensemble is then copied into a compact, flat representation owned by this module,
//! which is what gets serialised and scored. This keeps the model file independent of the
//! crate's internal serde layout, and makes [`Gbdt::predict`] a plain walk over one contiguous
//! node array with no allocation.
//!
//! Missing values: `NaN` is "missing" and follows the branch learnt for missing values; `±inf`
//! is clamped to `±f32::MAX` at training and compares naturally at scoring. A row shorter than
//! [`Gbdt::n_features`] is scored as if the absent features were missing.
//!
//! Explanations ([`Gbdt::explain`]) are path attributions in log-odds space (Saabas / XGBoost
//! `approx_contribs`): each split on a row's path credits its feature with the change in the
//! cover-weighted mean leaf value between the node and the child the row went to.

use forust_ml::gradientbooster::GradientBooster;
use forust_ml::sampler::SampleMethod;
use forust_ml::Matrix;
use serde::{Deserialize, Serialize};

/// Marks a leaf in [`Node::feature`].
const LEAF: u32 = u32::MAX;
/// Flag bit in [`Node::feature`]: missing values take the left branch.
const MISSING_LEFT: u32 = 1 << 31;
/// Trees walked side by side in [`Gbdt::predict`], so their memory loads overlap.
const LANES: usize = 8;

/// Training parameters of [`Gbdt::fit`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct GbdtConfig {
    /// Number of boosting rounds (trees). At least 1.
    pub n_trees: usize,
    /// Shrinkage applied to every tree's leaf values, in (0, 1].
    pub learning_rate: f32,
    /// Maximum tree depth, 1 to 16.
    pub max_depth: usize,
    /// Minimum sum of hessians (weighted `p(1-p)`) in a child for a split to be kept.
    pub min_child_weight: f32,
    /// Share of rows sampled (without replacement) for each tree, in (0, 1].
    pub subsample: f32,
    /// Seed of the row sampling.
    pub seed: u64,
    /// Share of the inputs sampled for each tree, in (0, 1] (files without it: 1).
    #[serde(default = "one")]
    pub colsample: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for GbdtConfig {
    /// 300 trees of depth 5, shrinkage 0.1, 80% row sampling: about 15 s to fit 300k rows x 50
    /// features on 2 cores, 25 s for 500k, and about 2 us to score a row (see `docs/gbdt.md`).
    fn default() -> Self {
        GbdtConfig {
            n_trees: 300,
            learning_rate: 0.1,
            max_depth: 5,
            min_child_weight: 1.0,
            subsample: 0.8,
            seed: 42,
            colsample: 1.0,
        }
    }
}

/// One node of the flattened ensemble (16 bytes, so a 300-tree model stays within L2 cache).
///
/// Trees are laid out breadth-first; a split's two children are adjacent (`left`, `left + 1`)
/// and always after it, so every walk moves forward and terminates.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Node {
    /// [`LEAF`], or the split feature, with [`MISSING_LEFT`] set when missing values go left.
    feature: u32,
    /// A row goes left when `value < threshold` (exact for `f32` inputs, see
    /// [`f32_ceil_of`]); right otherwise.
    threshold: f32,
    /// Absolute index of the left child; the right child is `left + 1`.
    left: u32,
    /// Leaf: the leaf value (log-odds, shrinkage applied). Split: the cover-weighted mean of the
    /// leaf values below it, used by [`Gbdt::explain`].
    value: f32,
}

/// A fitted gradient-boosted tree ensemble for binary classification.
///
/// Serialises as plain arrays (one entry per node); floats are stored as their IEEE-754 bit
/// patterns so a JSON round trip reproduces predictions bit for bit. Deserialisation checks the
/// structure, so a damaged model is rejected at load instead of misbehaving at scoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "GbdtWire", into = "GbdtWire")]
pub struct Gbdt {
    n_features: usize,
    /// Initial log-odds.
    base_score: f64,
    /// Index of each tree's root in `nodes`.
    roots: Vec<u32>,
    nodes: Vec<Node>,
}

impl Gbdt {
    /// Fit a model.
    ///
    /// `x` is row-major `n_rows x n_features`; `y` the labels (`true` = fraud); `w` the sample
    /// weights (same length as `y`, finite and non-negative). Both classes need positive weight.
    /// `NaN` in `x` is treated as missing, `±inf` as `±f32::MAX`.
    pub fn fit(
        x: &[f32],
        n_features: usize,
        y: &[bool],
        w: &[f32],
        cfg: &GbdtConfig,
    ) -> Result<Gbdt, String> {
        let booster = train_booster(x, n_features, y, w, cfg)?;
        Gbdt::from_booster(&booster, n_features)
    }

    /// Fraud probability in [0, 1] for one row (`n_features` values). Does not allocate.
    pub fn predict(&self, row: &[f32]) -> f32 {
        let margin = self.margin(row);
        let p = 1.0 / (1.0 + (-margin).exp());
        if p.is_nan() {
            0.0
        } else {
            p as f32
        }
    }

    /// The (at most) `k` features that pushed this row's score up most, as
    /// `(feature index, contribution in log-odds)`, largest first. Features with a zero or
    /// negative contribution are left out.
    pub fn explain(&self, row: &[f32], k: usize) -> Vec<(usize, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let (contrib, _) = self.contributions(row);
        let mut top: Vec<(usize, f32)> = contrib
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_finite() && **c > 0.0)
            .map(|(f, c)| (f, *c as f32))
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(k);
        top
    }

    /// Initial log-odds.
    pub fn base_score(&self) -> f64 {
        self.base_score
    }

    /// Log-odds added by tree `t` for one row (0 for a tree that does not exist).
    pub fn tree_margin(&self, t: usize, row: &[f32]) -> f64 {
        let Some(&root) = self.roots.get(t) else {
            return 0.0;
        };
        let mut i = root as usize;
        while let Some(node) = self.nodes.get(i) {
            if node.feature == LEAF {
                return f64::from(node.value);
            }
            i = node.child(row);
        }
        0.0
    }

    /// Keeps the first `k` trees (early stopping).
    pub fn truncate(&mut self, k: usize) {
        if k >= 1 && k < self.roots.len() {
            let end = self.roots[k] as usize;
            self.roots.truncate(k);
            self.nodes.truncate(end);
        }
    }

    /// Number of features a row must have.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Number of trees in the ensemble.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Per-feature path contributions (log-odds) of one row, and the bias (the sum of the trees'
    /// mean values). `bias + contributions.sum()` equals the row's log-odds.
    fn contributions(&self, row: &[f32]) -> (Vec<f64>, f64) {
        let mut contrib = vec![0.0f64; self.n_features];
        let mut bias = self.base_score;
        for &root in &self.roots {
            let mut i = root as usize;
            if let Some(node) = self.nodes.get(i) {
                bias += f64::from(node.value);
            }
            while let Some(node) = self.nodes.get(i) {
                if node.feature == LEAF {
                    break;
                }
                let next = node.child(row);
                if let (Some(c), Some(child)) =
                    (contrib.get_mut(node.split_feature()), self.nodes.get(next))
                {
                    *c += f64::from(child.value) - f64::from(node.value);
                }
                i = next;
            }
        }
        (contrib, bias)
    }

    /// Raw log-odds score of one row.
    ///
    /// Walks [`LANES`] trees in lockstep: each walk is a chain of dependent loads, and
    /// interleaving independent chains lets the CPU overlap their cache misses.
    fn margin(&self, row: &[f32]) -> f64 {
        let mut sum = self.base_score;
        let mut chunks = self.roots.chunks_exact(LANES);
        for roots in &mut chunks {
            let mut at = [0usize; LANES];
            for (a, r) in at.iter_mut().zip(roots) {
                *a = *r as usize;
            }
            loop {
                let mut moved = false;
                for a in &mut at {
                    // Structure was validated at construction; `get` keeps this panic-free
                    // regardless, a missing node ending the walk.
                    if let Some(node) = self.nodes.get(*a) {
                        if node.feature != LEAF {
                            *a = node.child(row);
                            moved = true;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
            for a in at {
                sum += self.nodes.get(a).map_or(0.0, |n| f64::from(n.value));
            }
        }
        for &root in chunks.remainder() {
            let mut i = root as usize;
            while let Some(node) = self.nodes.get(i) {
                if node.feature == LEAF {
                    sum += f64::from(node.value);
                    break;
                }
                i = node.child(row);
            }
        }
        sum
    }

    /// Flatten a fitted forust booster: re-lay each tree breadth-first with adjacent children
    /// and compute every split's cover-weighted mean value.
    fn from_booster(booster: &GradientBooster, n_features: usize) -> Result<Gbdt, String> {
        let n_used = booster
            .prediction_iteration
            .unwrap_or(booster.trees.len())
            .min(booster.trees.len());
        let mut roots = Vec::with_capacity(n_used);
        let mut nodes: Vec<Node> = Vec::new();
        let too_big = || "model has too many nodes".to_string();
        for (t, tree) in booster.trees[..n_used].iter().enumerate() {
            let bad = |what: &str| format!("tree {t}: {what}");
            let base = nodes.len();
            roots.push(u32::try_from(base).map_err(|_| too_big())?);
            // Hessian sum (cover) of each new node, indexed from `base`.
            let mut cover = vec![0.0f64];
            let placeholder = Node {
                feature: LEAF,
                threshold: 0.0,
                left: 0,
                value: 0.0,
            };
            nodes.push(placeholder);
            let mut queue = std::collections::VecDeque::from([(0usize, base)]);
            while let Some((old, new)) = queue.pop_front() {
                let n = tree.nodes.get(old).ok_or_else(|| bad("dangling child"))?;
                cover[new - base] = f64::from(n.hessian_sum).max(0.0);
                if n.is_leaf {
                    nodes[new].value = n.weight_value;
                    continue;
                }
                if nodes.len() - base + 2 > tree.nodes.len() {
                    return Err(bad("cycle in tree"));
                }
                let missing_left = if n.missing_node == n.left_child {
                    MISSING_LEFT
                } else if n.missing_node == n.right_child {
                    0
                } else {
                    return Err(bad("separate missing branches are not supported"));
                };
                let feature = u32::try_from(n.split_feature)
                    .ok()
                    .filter(|f| (*f as usize) < n_features)
                    .ok_or_else(|| bad("split feature out of range"))?;
                let left = nodes.len();
                nodes[new] = Node {
                    feature: feature | missing_left,
                    threshold: f32_ceil_of(n.split_value),
                    left: u32::try_from(left).map_err(|_| too_big())?,
                    value: 0.0,
                };
                nodes.extend([placeholder; 2]);
                cover.extend([0.0; 2]);
                queue.push_back((n.left_child, left));
                queue.push_back((n.right_child, left + 1));
            }
            // Children come after their parent, so a reverse pass sees them first.
            for i in (base..nodes.len()).rev() {
                if nodes[i].feature == LEAF {
                    continue;
                }
                let l = nodes[i].left as usize;
                let (cl, cr) = (cover[l - base], cover[l + 1 - base]);
                let (vl, vr) = (f64::from(nodes[l].value), f64::from(nodes[l + 1].value));
                nodes[i].value = if cl + cr > 0.0 {
                    ((cl * vl + cr * vr) / (cl + cr)) as f32
                } else {
                    ((vl + vr) / 2.0) as f32
                };
            }
        }
        let model = Gbdt {
            n_features,
            base_score: booster.base_score,
            roots,
            nodes,
        };
        model.validate()?;
        Ok(model)
    }

    /// Check the structure: every walk moves forward inside `nodes` and ends on a leaf,
    /// features are in range and values are finite.
    fn validate(&self) -> Result<(), String> {
        if self.n_features == 0 || self.n_features >= MISSING_LEFT as usize {
            return Err(format!("model has {} features", self.n_features));
        }
        if !self.base_score.is_finite() {
            return Err("model base score is not finite".into());
        }
        let len = self.nodes.len();
        for &r in &self.roots {
            if r as usize >= len {
                return Err(format!("tree root {r} outside the {len} nodes"));
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.value.is_finite() {
                return Err(format!("node {i} has a non-finite value"));
            }
            if n.feature == LEAF {
                continue;
            }
            if n.split_feature() >= self.n_features {
                return Err(format!(
                    "node {i} splits on feature {} of {}",
                    n.split_feature(),
                    self.n_features
                ));
            }
            if n.threshold.is_nan() {
                return Err(format!("node {i} has a NaN threshold"));
            }
            let l = n.left as usize;
            if l <= i || l + 1 >= len {
                return Err(format!("node {i} has invalid children at {l}"));
            }
        }
        Ok(())
    }
}

impl Node {
    /// The feature a split node tests.
    #[inline]
    fn split_feature(&self) -> usize {
        (self.feature & !MISSING_LEFT) as usize
    }

    /// Index of the child a row goes to from this split node. A feature absent from the row
    /// counts as missing.
    #[inline]
    fn child(&self, row: &[f32]) -> usize {
        let left = self.left as usize;
        match row.get(self.split_feature()) {
            Some(v) if !v.is_nan() => left + usize::from(*v >= self.threshold),
            _ => left + usize::from(self.feature & MISSING_LEFT == 0),
        }
    }
}

/// The smallest `f32` that is `>= t`. For every `f32` value `v`, `v < f32_ceil_of(t)` exactly
/// when `(v as f64) < t`, so the `f64` thresholds learnt by forust can be stored as `f32`
/// without changing any decision.
fn f32_ceil_of(t: f64) -> f32 {
    let c = t as f32;
    if f64::from(c) < t {
        c.next_up()
    } else {
        c
    }
}

/// Validate inputs, copy them column-major as forust expects, and train.
fn train_booster(
    x: &[f32],
    n_features: usize,
    y: &[bool],
    w: &[f32],
    cfg: &GbdtConfig,
) -> Result<GradientBooster, String> {
    let n_rows = y.len();
    if n_features == 0 {
        return Err("n_features must be at least 1".into());
    }
    if w.len() != n_rows || n_rows.checked_mul(n_features) != Some(x.len()) {
        return Err(format!(
            "length mismatch: x has {} values ({} rows x {} features expected from y), \
             y has {} labels, w has {} weights",
            x.len(),
            n_rows,
            n_features,
            n_rows,
            w.len()
        ));
    }
    if n_rows == 0 {
        return Err("no training rows".into());
    }
    check_config(cfg)?;
    if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(format!("weight w[{i}] = {} is not finite and >= 0", w[i]));
    }
    let (mut pos, mut neg) = (0.0f64, 0.0f64);
    for (yi, wi) in y.iter().zip(w) {
        if *yi {
            pos += f64::from(*wi);
        } else {
            neg += f64::from(*wi);
        }
    }
    if pos <= 0.0 || neg <= 0.0 {
        return Err(format!(
            "both classes need positive total weight (positives {pos}, negatives {neg})"
        ));
    }

    let mut cols = vec![0.0f64; x.len()];
    for (r, row) in x.chunks_exact(n_features).enumerate() {
        for (f, v) in row.iter().enumerate() {
            cols[f * n_rows + r] = f64::from(v.clamp(f32::MIN, f32::MAX));
        }
    }
    let matrix = Matrix::new(&cols, n_rows, n_features);
    let yf: Vec<f64> = y.iter().map(|b| f64::from(u8::from(*b))).collect();
    let wf: Vec<f64> = w.iter().map(|v| f64::from(*v)).collect();

    let mut booster = GradientBooster::default()
        .set_iterations(cfg.n_trees)
        .set_learning_rate(cfg.learning_rate)
        .set_max_depth(cfg.max_depth)
        .set_min_leaf_weight(cfg.min_child_weight)
        .set_l2(1.0)
        .set_nbins(256)
        .set_parallel(true)
        .set_seed(cfg.seed)
        .set_colsample_bytree(f64::from(cfg.colsample))
        .set_initialize_base_score(true);
    if cfg.subsample < 1.0 {
        booster = booster
            .set_sample_method(SampleMethod::Random)
            .set_subsample(cfg.subsample);
    }
    // forust reports bad input as errors; a panic deep inside it is turned into one too.
    let fitted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        booster
            .fit(&matrix, &yf, &wf, None)
            .map(|()| booster)
            .map_err(|e| format!("training failed: {e}"))
    }));
    fitted.unwrap_or_else(|_| Err("training failed: the booster panicked".into()))
}

fn check_config(cfg: &GbdtConfig) -> Result<(), String> {
    if cfg.n_trees == 0 {
        return Err("n_trees must be at least 1".into());
    }
    if !(cfg.learning_rate > 0.0 && cfg.learning_rate <= 1.0) {
        return Err(format!(
            "learning_rate {} is not in (0, 1]",
            cfg.learning_rate
        ));
    }
    if !(1..=16).contains(&cfg.max_depth) {
        return Err(format!("max_depth {} is not in 1..=16", cfg.max_depth));
    }
    if !(cfg.min_child_weight.is_finite() && cfg.min_child_weight >= 0.0) {
        return Err(format!(
            "min_child_weight {} is not finite and >= 0",
            cfg.min_child_weight
        ));
    }
    if !(cfg.colsample > 0.0 && cfg.colsample <= 1.0) {
        return Err(format!("colsample {} is not in (0, 1]", cfg.colsample));
    }
    if !(cfg.subsample > 0.0 && cfg.subsample <= 1.0) {
        return Err(format!("subsample {} is not in (0, 1]", cfg.subsample));
    }
    Ok(())
}

/// Serialised form of [`Gbdt`]: one array per node field; floats as IEEE-754 bit patterns.
#[derive(Serialize, Deserialize)]
struct GbdtWire {
    n_features: usize,
    base_score_bits: u64,
    /// Index of each tree's root.
    roots: Vec<u32>,
    /// Split feature, or `u32::MAX` for a leaf.
    feature: Vec<u32>,
    /// 1 where missing values go left.
    missing_left: Vec<u8>,
    threshold_bits: Vec<u32>,
    /// Left child; the right child follows it.
    left: Vec<u32>,
    value_bits: Vec<u32>,
}

impl From<Gbdt> for GbdtWire {
    fn from(m: Gbdt) -> Self {
        let col = |f: fn(&Node) -> u32| m.nodes.iter().map(f).collect::<Vec<u32>>();
        GbdtWire {
            n_features: m.n_features,
            base_score_bits: m.base_score.to_bits(),
            feature: col(|n| match n.feature {
                LEAF => LEAF,
                f => f & !MISSING_LEFT,
            }),
            missing_left: m
                .nodes
                .iter()
                .map(|n| u8::from(n.feature != LEAF && n.feature & MISSING_LEFT != 0))
                .collect(),
            threshold_bits: col(|n| n.threshold.to_bits()),
            left: col(|n| n.left),
            value_bits: col(|n| n.value.to_bits()),
            roots: m.roots,
        }
    }
}

impl TryFrom<GbdtWire> for Gbdt {
    type Error = String;

    fn try_from(w: GbdtWire) -> Result<Self, String> {
        let len = w.feature.len();
        for (name, l) in [
            ("missing_left", w.missing_left.len()),
            ("threshold_bits", w.threshold_bits.len()),
            ("left", w.left.len()),
            ("value_bits", w.value_bits.len()),
        ] {
            if l != len {
                return Err(format!("gbdt: {name} has {l} entries, feature has {len}"));
            }
        }
        let mut nodes = Vec::with_capacity(len);
        for i in 0..len {
            let f = w.feature[i];
            if f != LEAF && f & MISSING_LEFT != 0 {
                return Err(format!("gbdt: node {i} has feature {f}"));
            }
            nodes.push(Node {
                feature: if f != LEAF && w.missing_left[i] != 0 {
                    f | MISSING_LEFT
                } else {
                    f
                },
                threshold: f32::from_bits(w.threshold_bits[i]),
                left: w.left[i],
                value: f32::from_bits(w.value_bits[i]),
            });
        }
        let m = Gbdt {
            n_features: w.n_features,
            base_score: f64::from_bits(w.base_score_bits),
            roots: w.roots,
            nodes,
        };
        m.validate().map_err(|e| format!("gbdt: {e}"))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn average_precision(scores: &[f32], y: &[bool]) -> f64 {
        let mut idx: Vec<usize> = (0..y.len()).collect();
        idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        let n_pos = y.iter().filter(|v| **v).count();
        let (mut tp, mut ap) = (0usize, 0.0f64);
        for (rank, i) in idx.iter().enumerate() {
            if y[*i] {
                tp += 1;
                ap += tp as f64 / (rank + 1) as f64;
            }
        }
        ap / n_pos.max(1) as f64
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
        let dot = |beta: &[f64; NF], z: &[f64; NF]| -> f64 {
            beta.iter().zip(z).map(|(b, v)| b * v).sum()
        };
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
        let e = Gbdt::fit(&x[..x.len() - 1], NF, &y, &w, &cfg).unwrap_err();
        assert!(e.contains("x has 9999") && e.contains("y has 1000"), "{e}");
        let e = Gbdt::fit(&x, NF, &y, &w[1..], &cfg).unwrap_err();
        assert!(e.contains("w has 999"), "{e}");
        let e = Gbdt::fit(&x, NF, &y[1..], &w, &cfg).unwrap_err();
        assert!(e.contains("y has 999"), "{e}");
        let all_neg = vec![false; y.len()];
        assert!(Gbdt::fit(&x, NF, &all_neg, &w, &cfg).is_err());
        let mut bad_w = w.clone();
        bad_w[5] = f32::NAN;
        assert!(Gbdt::fit(&x, NF, &y, &bad_w, &cfg)
            .unwrap_err()
            .contains("w[5]"));
        let bad_cfg = GbdtConfig {
            subsample: 0.0,
            ..cfg
        };
        assert!(Gbdt::fit(&x, NF, &y, &w, &bad_cfg).is_err());
        assert!(Gbdt::fit(&x, 0, &y, &w, &small_cfg()).is_err());
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
}
