//! The model file and scoring.
//!
//! # File format (`fraudstream.model.v1`)
//! One JSON object: `{"format":"fraudstream.model.v1","checksum":"sha256:<hex>","model":{...}}`
//! where the checksum is the SHA-256 of the exact bytes of the `model` value. The body holds the
//! version, the kind, the feature names (checked against [`crate::features::FEATURES`] at
//! load), the alert threshold, the scaler and the kind's parameters. See [`ModelBody`].
//!
//! # Scores
//! Every model scores in [0, 1], higher is more suspicious. The unsupervised k-means model's
//! score is the share of training transactions lying closer to their nearest centroid than this
//! one (an empirical CDF of the anomaly distance), so a threshold of `1 - r` alerts on about a
//! share `r` of traffic like the training data. Supervised models score the probability of
//! fraud (under the class weighting used in training); their threshold is chosen on held-out
//! data for an alert budget or a precision.
//!
//! # Kinds
//! `kmeans` (unsupervised, linfa-clustering), `logistic` (linfa-logistic), `forest` (random
//! forest, linfa-ensemble + linfa-trees) and `trees` (gradient-boosted trees, [`gbdt`]).

mod error;
pub mod gbdt;
pub mod iforest;
pub mod kmeans;
pub mod supervised;
pub mod training;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::features::{
    FeatureSpec, FeatureVector, Transform, DEFAULT_FEEDBACK_DELAY_DAYS, FEATURES, MAX_ATTRIBUTES,
    MAX_DIM, N_FEATURES,
};
use crate::state::feedback::MAX_DELAY_DAYS;
pub use error::{FitError, ParamsError};

/// The format tag of model files.
pub const FORMAT: &str = "fraudstream.model.v1";

/// z-scores are clipped to this magnitude so one extreme feature cannot swamp the rest.
pub const Z_CLIP: f32 = 20.0;

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// File unreadable.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a model file.
    #[error("model file {path} is not a {FORMAT} file: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Checksum mismatch: the file was changed or truncated.
    #[error("model file {path}: checksum {found} does not match its content ({computed})")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Stored.
        found: String,
        /// Computed.
        computed: String,
    },
    /// Trained on another feature list.
    #[error("model file {path} was trained on other features: {detail}; retrain it with `fraudstream train`")]
    Features {
        /// The file.
        path: PathBuf,
        /// First difference.
        detail: String,
    },
    /// Parameters that cannot score.
    #[error("model file {path} is not a {FORMAT} file: {source}")]
    Params {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ParamsError,
    },
    /// Training impossible.
    #[error("cannot train: {0}")]
    Train(#[from] FitError),
}

/// Per-feature standardisation after the transform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scaler {
    /// Means of the transformed features.
    pub mean: Vec<f32>,
    /// Standard deviations (floored at 1e-6).
    pub std: Vec<f32>,
}

/// What the model was trained on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainInfo {
    /// Start of the training range (inclusive), RFC 3339.
    pub from: String,
    /// End of the training range (exclusive), RFC 3339.
    pub to: String,
    /// Rows used.
    pub rows: u64,
    /// Alert rate the threshold was chosen for.
    pub alert_rate: f64,
    /// When it was trained.
    pub created_at: String,
}

/// Parameters by model kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Params {
    /// Unsupervised: distance to the nearest k-means centroid (linfa-clustering).
    Kmeans(kmeans::KMeansParams),
    /// Unsupervised: isolation forest (short average path = outlier).
    Iforest(iforest::IForestParams),
    /// Logistic regression (linfa-logistic) on the standardised features.
    Logistic(supervised::LogisticParams),
    /// Random forest (linfa-ensemble of linfa-trees), share of trees voting fraud.
    Forest(supervised::ForestParams),
    /// Gradient-boosted trees.
    Trees(supervised::TreesParams),
}

impl Params {
    /// The kind's name, as `train --model` takes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Params::Kmeans(_) => "kmeans",
            Params::Iforest(_) => "iforest",
            Params::Logistic(_) => "logistic",
            Params::Forest(_) => "forest",
            Params::Trees(_) => "trees",
        }
    }
}

/// The model file's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelBody {
    /// Version, e.g. `kmeans-20180401-1a2b3c4d`; in every alert and in `fraud_build_info`.
    pub version: String,
    /// Feature names, in order: the windowed features, then `attr.<name>` for each attribute.
    pub feature_names: Vec<String>,
    /// Names of the input attributes used after the windowed features (may be empty).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Transform of each windowed feature ("log1p" or "identity"); attributes are used as is.
    pub transforms: Vec<String>,
    /// Alert when score >= threshold.
    pub threshold: f32,
    /// Label delay in days: the merchant fraud rates read only transactions at least this old
    /// (their labels are known). Files without it: 7.
    #[serde(default = "default_delay_days")]
    pub feedback_delay_days: i64,
    /// Standardisation.
    pub scaler: Scaler,
    /// Kind-specific parameters.
    pub params: Params,
    /// Provenance.
    pub trained: TrainInfo,
    /// Quality measured on the held-out part of the training range, if supervised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<serde_json::Value>,
}

impl ModelBody {
    /// Number of model inputs.
    pub fn dim(&self) -> usize {
        N_FEATURES + self.attributes.len()
    }

    /// The names stored in `feature_names` for this build and these attributes.
    pub fn expected_names(attributes: &[String]) -> Vec<String> {
        FEATURES
            .iter()
            .map(|d| d.name.to_string())
            .chain(attributes.iter().map(|a| format!("attr.{a}")))
            .collect()
    }
}

fn default_delay_days() -> i64 {
    DEFAULT_FEEDBACK_DELAY_DAYS
}

#[derive(Deserialize)]
struct FileRef<'a> {
    format: String,
    checksum: String,
    #[serde(borrow)]
    model: &'a serde_json::value::RawValue,
}

/// Ready-to-score form of each kind.
#[derive(Debug, Clone)]
enum Scorer {
    Kmeans(kmeans::Scorer),
    Iforest(iforest::IForest),
    Logistic(supervised::Logistic),
    Forest(supervised::Forest),
    Trees(Box<gbdt::Gbdt>),
}

/// A loaded, checked model.
#[derive(Debug, Clone)]
pub struct Model {
    body: ModelBody,
    scorer: Scorer,
    dim: usize,
    spec: FeatureSpec,
}

/// What a model says about one transaction.
pub trait Predict: Send + Sync {
    /// Score in [0, 1].
    fn score(&self, x: &FeatureVector) -> f32;
    /// The features that pushed the score up most, strongest first, with their share.
    fn explain(&self, x: &FeatureVector, k: usize) -> Vec<(usize, f32)>;
}

fn transform_name(t: Transform) -> &'static str {
    match t {
        Transform::Log1p => "log1p",
        Transform::Identity => "identity",
    }
}

/// The transform of input `i` (attributes: identity).
#[inline]
pub fn transform(i: usize, v: f32) -> f32 {
    match FEATURES.get(i).map(|d| d.transform) {
        Some(Transform::Log1p) => v.max(0.0).ln_1p(),
        _ => v,
    }
}

/// Applies each feature's transform and the scaler to the first `scaler.mean.len()` inputs,
/// clipping to ±[`Z_CLIP`]; non-finite values (a missing attribute) become 0, the mean.
#[inline]
pub fn standardise(x: &FeatureVector, scaler: &Scaler, out: &mut FeatureVector) {
    let dim = scaler.mean.len().min(MAX_DIM);
    for i in 0..dim {
        let v = transform(i, x[i]);
        let z = (v - scaler.mean[i]) / scaler.std[i];
        out[i] = if z.is_finite() {
            z.clamp(-Z_CLIP, Z_CLIP)
        } else {
            0.0
        };
    }
}

/// [`standardise`] for the inputs `only` (the others are left as they are): for models that
/// read few of the inputs.
#[inline]
pub fn standardise_only(x: &FeatureVector, scaler: &Scaler, only: &[u32], out: &mut FeatureVector) {
    for &i in only {
        let i = i as usize;
        if let (Some(m), Some(sd), Some(v)) = (scaler.mean.get(i), scaler.std.get(i), x.get(i)) {
            let z = (transform(i, *v) - m) / sd;
            out[i] = if z.is_finite() {
                z.clamp(-Z_CLIP, Z_CLIP)
            } else {
                0.0
            };
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Model {
    /// Checks a body against the feature list and builds the scorer.
    pub fn from_body(body: ModelBody, path: &Path) -> Result<Model, ModelError> {
        if body.attributes.len() > MAX_ATTRIBUTES {
            return Err(ModelError::Features {
                path: path.to_path_buf(),
                detail: format!(
                    "{} attributes, at most {MAX_ATTRIBUTES}",
                    body.attributes.len()
                ),
            });
        }
        let expected = ModelBody::expected_names(&body.attributes);
        if body.feature_names.len() != expected.len()
            || body
                .feature_names
                .iter()
                .zip(&expected)
                .any(|(a, b)| a != b)
        {
            let detail = match body
                .feature_names
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
            {
                Some(i) => format!(
                    "feature {i} is {:?} in the file, {:?} in this build",
                    body.feature_names[i], expected[i]
                ),
                None => format!(
                    "{} features in the file, {} in this build",
                    body.feature_names.len(),
                    expected.len()
                ),
            };
            return Err(ModelError::Features {
                path: path.to_path_buf(),
                detail,
            });
        }
        for (i, (t, d)) in body.transforms.iter().zip(FEATURES.iter()).enumerate() {
            if t != transform_name(d.transform) {
                return Err(ModelError::Features {
                    path: path.to_path_buf(),
                    detail: format!("feature {i} {} has transform {t:?}", d.name),
                });
            }
        }
        let bad = |detail: String| ModelError::Format {
            path: path.to_path_buf(),
            detail,
        };
        let dim = body.dim();
        if body.scaler.mean.len() != dim || body.scaler.std.len() != dim {
            return Err(bad(format!("scaler must have {dim} means and stds")));
        }
        if !(0..=MAX_DELAY_DAYS).contains(&body.feedback_delay_days) {
            return Err(bad(format!(
                "feedback_delay_days {} is outside 0..={MAX_DELAY_DAYS}",
                body.feedback_delay_days
            )));
        }
        if !(0.0..=1.0).contains(&body.threshold) {
            return Err(bad(format!(
                "threshold {} is outside [0, 1]",
                body.threshold
            )));
        }
        let params = |source: ParamsError| ModelError::Params {
            path: path.to_path_buf(),
            source,
        };
        let scorer = match &body.params {
            Params::Kmeans(p) => {
                Scorer::Kmeans(kmeans::Scorer::new(p, &body.scaler).map_err(params)?)
            }
            Params::Iforest(p) => Scorer::Iforest(iforest::IForest::new(p, dim).map_err(params)?),
            Params::Logistic(p) => {
                Scorer::Logistic(supervised::Logistic::new(p, dim).map_err(params)?)
            }
            Params::Forest(p) => Scorer::Forest(supervised::Forest::new(p, dim).map_err(params)?),
            Params::Trees(p) => Scorer::Trees(Box::new(p.model.clone())),
        };
        if let Scorer::Trees(t) = &scorer {
            if t.n_features() != dim {
                return Err(bad(format!(
                    "trees take {} inputs, the model has {dim}",
                    t.n_features()
                )));
            }
        }
        let spec = FeatureSpec {
            attributes: body.attributes.clone(),
            feedback_delay_days: body.feedback_delay_days,
        };
        Ok(Model {
            body,
            scorer,
            dim,
            spec,
        })
    }

    /// Reads, verifies and checks a model file.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses model file text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Model, ModelError> {
        let bad = |detail: String| ModelError::Format {
            path: path.to_path_buf(),
            detail,
        };
        let file: FileRef<'_> = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if file.format != FORMAT {
            return Err(bad(format!("format is {:?}", file.format)));
        }
        let computed = format!("sha256:{}", sha256_hex(file.model.get().as_bytes()));
        if computed != file.checksum {
            return Err(ModelError::Checksum {
                path: path.to_path_buf(),
                found: file.checksum,
                computed,
            });
        }
        let body: ModelBody =
            serde_json::from_str(file.model.get()).map_err(|e| bad(e.to_string()))?;
        Self::from_body(body, path)
    }

    /// The file text of a body, with its checksum.
    pub fn to_file_text(body: &ModelBody) -> Result<String, serde_json::Error> {
        let model = serde_json::to_string_pretty(body)?;
        let checksum = format!("sha256:{}", sha256_hex(model.as_bytes()));
        Ok(format!(
            "{{\"format\":\"{FORMAT}\",\"checksum\":\"{checksum}\",\"model\":{model}}}\n"
        ))
    }

    /// Writes a body atomically (temporary file, then rename).
    pub fn save(body: &ModelBody, path: &Path) -> Result<(), ModelError> {
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = Self::to_file_text(body).map_err(|e| ModelError::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// The body.
    pub fn body(&self) -> &ModelBody {
        &self.body
    }

    /// Version string.
    pub fn version(&self) -> &str {
        &self.body.version
    }

    /// Stored threshold.
    pub fn threshold(&self) -> f32 {
        self.body.threshold
    }

    /// Attribute names the model reads from transactions.
    pub fn attributes(&self) -> &[String] {
        &self.body.attributes
    }

    /// What the model's inputs depend on besides the state (attributes, label delay).
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Number of inputs.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The name of input `i`.
    pub fn input_name(&self, i: usize) -> &str {
        self.body.feature_names.get(i).map_or("?", String::as_str)
    }

    /// A typical value of feature `i` in the training data (the inverse transform of the
    /// scaler's mean), for reason texts.
    pub fn typical(&self, i: usize) -> f32 {
        let m = self.body.scaler.mean.get(i).copied().unwrap_or(0.0);
        match FEATURES.get(i).map(|d| d.transform) {
            Some(Transform::Log1p) => m.exp_m1(),
            _ => m,
        }
    }

    /// The transforms of this build, for new bodies.
    pub fn transform_names() -> Vec<String> {
        FEATURES
            .iter()
            .map(|d| transform_name(d.transform).to_string())
            .collect()
    }
}

impl Predict for Model {
    #[inline]
    fn score(&self, x: &FeatureVector) -> f32 {
        let mut z = [0.0f32; MAX_DIM];
        if let Scorer::Iforest(m) = &self.scorer {
            // It splits on a few inputs only: standardise just those.
            standardise_only(x, &self.body.scaler, m.inputs(), &mut z);
            let s = m.score(&z[..self.dim]);
            return if s.is_finite() {
                s.clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        standardise(x, &self.body.scaler, &mut z);
        let z = &z[..self.dim];
        let s = match &self.scorer {
            Scorer::Kmeans(m) => m.score_z(z),
            Scorer::Iforest(m) => m.score(z),
            Scorer::Logistic(m) => m.predict(z),
            Scorer::Forest(m) => m.predict(z),
            Scorer::Trees(m) => m.predict(z),
        };
        if s.is_finite() {
            s.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    fn explain(&self, x: &FeatureVector, k: usize) -> Vec<(usize, f32)> {
        let mut z = [0.0f32; MAX_DIM];
        standardise(x, &self.body.scaler, &mut z);
        let z = &z[..self.dim];
        match &self.scorer {
            Scorer::Kmeans(m) => m.explain_z(z, k),
            Scorer::Iforest(m) => m.explain(z, k),
            Scorer::Logistic(m) => m.explain(z, k),
            Scorer::Forest(m) => m.explain(z, k),
            Scorer::Trees(m) => m.explain(z, k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> training::TrainMeta<'static> {
        training::TrainMeta {
            attributes: &[],
            from: "2018-04-01",
            to: "2018-04-08",
            alert_rate: 0.01,
            seed: 1,
            attributes_only: false,
            feedback_delay_days: 7,
        }
    }

    fn tiny_rows() -> Vec<FeatureVector> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        (0..2000)
            .map(|_| {
                let mut r = [0.0f32; MAX_DIM];
                for v in r.iter_mut().take(N_FEATURES) {
                    *v = rng.gen_range(0.0..10.0);
                }
                r
            })
            .collect()
    }

    #[test]
    fn round_trip_and_checksum() {
        let body = kmeans::train(&tiny_rows(), 4, &meta()).unwrap();
        let text = Model::to_file_text(&body).unwrap();
        let m = Model::parse(&text, Path::new("m.json")).expect("loads");
        assert_eq!(m.body().version, body.version);
        assert_eq!(m.body().scaler, body.scaler);
        let x = tiny_rows()[3];
        let s = m.score(&x);
        assert!((0.0..=1.0).contains(&s));
        // Tampering is caught.
        let tampered = text.replacen("\"rows\": 2000", "\"rows\": 2001", 1);
        assert_ne!(tampered, text);
        assert!(matches!(
            Model::parse(&tampered, Path::new("m.json")),
            Err(ModelError::Checksum { .. })
        ));
    }

    #[test]
    fn feature_mismatch_is_clear() {
        let mut body = kmeans::train(&tiny_rows(), 4, &meta()).unwrap();
        body.feature_names[2] = "something_else".into();
        let text = Model::to_file_text(&body).unwrap();
        let e = Model::parse(&text, Path::new("m.json")).unwrap_err();
        assert!(
            e.to_string().contains("feature 2 is \"something_else\""),
            "{e}"
        );
    }

    #[test]
    fn damaged_parameters_name_the_field_and_value() {
        let mut body = kmeans::train(&tiny_rows(), 4, &meta()).unwrap();
        let Params::Kmeans(p) = &mut body.params else {
            panic!("kmeans")
        };
        p.distance_quantiles.truncate(10);
        let e = Model::from_body(body.clone(), Path::new("m.json")).unwrap_err();
        assert!(
            matches!(
                &e,
                ModelError::Params {
                    source: ParamsError::Quantiles { len: 10, .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "model file m.json is not a fraudstream.model.v1 file: kmeans needs 1001 ascending \
             distance quantiles: distance_quantiles has 10 values"
        );
        let dim = body.dim();
        body.params = Params::Logistic(supervised::LogisticParams {
            weights: vec![0.0; 3],
            intercept: 0.0,
            alpha: 1.0,
        });
        let e = Model::from_body(body, Path::new("m.json")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(&format!("logistic has 3 weights, the model {dim} inputs")),
            "{e}"
        );
    }

    #[test]
    fn outliers_score_high() {
        let rows = tiny_rows();
        let body = kmeans::train(&rows, 4, &meta()).unwrap();
        let m = Model::from_body(body, Path::new("m")).unwrap();
        let mut odd = rows[0];
        odd[0] = 1e6;
        odd[18] = 500.0;
        assert!(m.score(&odd) > 0.99, "{}", m.score(&odd));
        let top = m.explain(&odd, 2);
        assert!(top.iter().any(|(i, _)| *i == 0 || *i == 18), "{top:?}");
        // About 1% of the training rows reach the threshold.
        let alerts = rows.iter().filter(|r| m.score(r) >= m.threshold()).count();
        assert!((5..=60).contains(&alerts), "{alerts}");
    }
}
