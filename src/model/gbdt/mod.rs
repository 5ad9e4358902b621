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

mod error;
pub use error::GbdtError;

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
    ) -> Result<Gbdt, GbdtError> {
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
    fn from_booster(booster: &GradientBooster, n_features: usize) -> Result<Gbdt, GbdtError> {
        let n_used = booster
            .prediction_iteration
            .unwrap_or(booster.trees.len())
            .min(booster.trees.len());
        let mut roots = Vec::with_capacity(n_used);
        let mut nodes: Vec<Node> = Vec::new();
        let too_big = |_| GbdtError::TooManyNodes;
        for (t, tree) in booster.trees[..n_used].iter().enumerate() {
            let bad = |problem: &'static str| GbdtError::Tree { tree: t, problem };
            let base = nodes.len();
            roots.push(u32::try_from(base).map_err(too_big)?);
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
                    left: u32::try_from(left).map_err(too_big)?,
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
    fn validate(&self) -> Result<(), GbdtError> {
        if self.n_features == 0 || self.n_features >= MISSING_LEFT as usize {
            return Err(GbdtError::Features {
                n_features: self.n_features,
            });
        }
        if !self.base_score.is_finite() {
            return Err(GbdtError::BaseScore {
                value: self.base_score,
            });
        }
        let len = self.nodes.len();
        for &r in &self.roots {
            if r as usize >= len {
                return Err(GbdtError::Root {
                    root: r,
                    nodes: len,
                });
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.value.is_finite() {
                return Err(GbdtError::NodeValue {
                    node: i,
                    value: n.value,
                });
            }
            if n.feature == LEAF {
                continue;
            }
            if n.split_feature() >= self.n_features {
                return Err(GbdtError::SplitFeature {
                    node: i,
                    feature: n.split_feature(),
                    n_features: self.n_features,
                });
            }
            if n.threshold.is_nan() {
                return Err(GbdtError::Threshold { node: i });
            }
            let l = n.left as usize;
            if l <= i || l + 1 >= len {
                return Err(GbdtError::Children {
                    node: i,
                    left: l,
                    nodes: len,
                });
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
) -> Result<GradientBooster, GbdtError> {
    let n_rows = y.len();
    if n_features == 0 {
        return Err(invalid("n_features", 0, "at least 1"));
    }
    if w.len() != n_rows || n_rows.checked_mul(n_features) != Some(x.len()) {
        return Err(GbdtError::LengthMismatch {
            values: x.len(),
            rows: n_rows,
            features: n_features,
            weights: w.len(),
        });
    }
    if n_rows == 0 {
        return Err(GbdtError::NoRows);
    }
    check_config(cfg)?;
    if let Some(i) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(GbdtError::BadWeight {
            index: i,
            value: w[i],
        });
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
        return Err(GbdtError::OneClass {
            positives: pos,
            negatives: neg,
        });
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
            .map_err(|e| GbdtError::Booster {
                detail: e.to_string(),
            })
    }));
    fitted.unwrap_or(Err(GbdtError::BoosterPanicked))
}

fn invalid(name: &'static str, value: impl ToString, expected: &'static str) -> GbdtError {
    GbdtError::InvalidParams {
        name,
        value: value.to_string(),
        expected,
    }
}

fn check_config(cfg: &GbdtConfig) -> Result<(), GbdtError> {
    if cfg.n_trees == 0 {
        return Err(invalid("n_trees", cfg.n_trees, "at least 1"));
    }
    if !(cfg.learning_rate > 0.0 && cfg.learning_rate <= 1.0) {
        return Err(invalid("learning_rate", cfg.learning_rate, "in (0, 1]"));
    }
    if !(1..=16).contains(&cfg.max_depth) {
        return Err(invalid("max_depth", cfg.max_depth, "in 1..=16"));
    }
    if !(cfg.min_child_weight.is_finite() && cfg.min_child_weight >= 0.0) {
        return Err(invalid(
            "min_child_weight",
            cfg.min_child_weight,
            "finite and >= 0",
        ));
    }
    if !(cfg.colsample > 0.0 && cfg.colsample <= 1.0) {
        return Err(invalid("colsample", cfg.colsample, "in (0, 1]"));
    }
    if !(cfg.subsample > 0.0 && cfg.subsample <= 1.0) {
        return Err(invalid("subsample", cfg.subsample, "in (0, 1]"));
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
    type Error = GbdtError;

    fn try_from(w: GbdtWire) -> Result<Self, GbdtError> {
        let len = w.feature.len();
        for (name, l) in [
            ("missing_left", w.missing_left.len()),
            ("threshold_bits", w.threshold_bits.len()),
            ("left", w.left.len()),
            ("value_bits", w.value_bits.len()),
        ] {
            if l != len {
                return Err(GbdtError::WireLength {
                    field: name,
                    len: l,
                    expected: len,
                });
            }
        }
        let mut nodes = Vec::with_capacity(len);
        for i in 0..len {
            let f = w.feature[i];
            if f != LEAF && f & MISSING_LEFT != 0 {
                return Err(GbdtError::WireFeature {
                    node: i,
                    feature: f,
                });
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
        m.validate().map_err(|e| GbdtError::Stored(Box::new(e)))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests;
