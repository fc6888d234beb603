//! Iris classifier: a multinomial logistic regression trained with smartcore at start-up.
//!
//! Training uses the Iris dataset bundled inside the `smartcore` crate (feature `datasets`),
//! so nothing is downloaded. The fitted coefficients are copied into plain arrays so that
//! scoring a row is a handful of multiply-adds plus a 3-way softmax (well under a microsecond).

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use smartcore::dataset::iris;
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

use crate::ModelError;

/// Number of input features per row (sepal length, sepal width, petal length, petal width; cm).
pub const NUM_FEATURES: usize = 4;

/// Class labels, indexed by class number.
pub const LABELS: [&str; 3] = ["setosa", "versicolor", "virginica"];

const NUM_CLASSES: usize = LABELS.len();

/// L2 regularisation strength (on standardised features); 1.0 matches scikit-learn's `C = 1`.
const ALPHA: f64 = 1.0;

/// Training accuracy below which start-up fails instead of serving a broken model.
const MIN_TRAINING_ACCURACY: f64 = 0.9;

type Fitted = LogisticRegression<f64, u32, DenseMatrix<f64>, Vec<u32>>;

/// One prediction for one input row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    /// Class index (0 = setosa, 1 = versicolor, 2 = virginica).
    pub class: usize,
    /// Class label, one of [`LABELS`].
    pub label: &'static str,
    /// Softmax probability of the predicted class, in (0, 1].
    pub probability: f64,
}

/// Multinomial logistic regression over standardised Iris features.
#[derive(Debug, Clone, PartialEq)]
pub struct IrisModel {
    mean: [f64; NUM_FEATURES],
    inv_std: [f64; NUM_FEATURES],
    weights: [[f64; NUM_FEATURES]; NUM_CLASSES],
    intercept: [f64; NUM_CLASSES],
    training_accuracy: f64,
}

/// Standardised training matrix plus the statistics used to build it.
struct TrainingSet {
    rows: Vec<[f64; NUM_FEATURES]>,
    targets: Vec<u32>,
    mean: [f64; NUM_FEATURES],
    inv_std: [f64; NUM_FEATURES],
    x: DenseMatrix<f64>,
}

impl IrisModel {
    /// Trains the model on the Iris dataset shipped inside `smartcore` (takes a few milliseconds).
    pub fn train() -> Result<IrisModel, ModelError> {
        let set = training_set()?;
        let fitted = fit(&set)?;
        Self::from_fitted(&set, &fitted)
    }

    /// The model trained once per process: every server and test of the process shares it.
    pub fn shared() -> Result<Arc<IrisModel>, ModelError> {
        static SHARED: OnceLock<Arc<IrisModel>> = OnceLock::new();
        if let Some(model) = SHARED.get() {
            return Ok(model.clone());
        }
        let trained = Arc::new(Self::train()?);
        Ok(SHARED.get_or_init(|| trained).clone())
    }

    /// Fraction of the 150 training rows the model classifies correctly.
    pub fn training_accuracy(&self) -> f64 {
        self.training_accuracy
    }

    /// Classifies each row (features in cm, in the Iris column order).
    pub fn predict(&self, rows: &[[f64; NUM_FEATURES]]) -> Vec<Prediction> {
        rows.iter().map(|row| self.predict_row(row)).collect()
    }

    /// Classifies a single row.
    pub fn predict_row(&self, row: &[f64; NUM_FEATURES]) -> Prediction {
        let mut z = [0.0_f64; NUM_FEATURES];
        for (j, zj) in z.iter_mut().enumerate() {
            *zj = (row[j] - self.mean[j]) * self.inv_std[j];
        }
        let mut logits = self.intercept;
        for (logit, w) in logits.iter_mut().zip(&self.weights) {
            *logit += w.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>();
        }
        let mut class = 0;
        for (k, &logit) in logits.iter().enumerate().skip(1) {
            if logit > logits[class] {
                class = k;
            }
        }
        let max = logits[class];
        let denom: f64 = logits.iter().map(|&l| (l - max).exp()).sum();
        Prediction {
            class,
            label: LABELS[class],
            probability: 1.0 / denom,
        }
    }

    fn from_fitted(set: &TrainingSet, fitted: &Fitted) -> Result<IrisModel, ModelError> {
        if fitted.classes().as_slice() != [0, 1, 2] {
            return Err(ModelError::Dataset(format!(
                "expected classes [0, 1, 2], found {:?}",
                fitted.classes()
            )));
        }
        let coef = fitted.coefficients();
        let icpt = fitted.intercept();
        if coef.shape() != (NUM_CLASSES, NUM_FEATURES) || icpt.shape() != (NUM_CLASSES, 1) {
            return Err(ModelError::Training(format!(
                "unexpected parameter shapes: coefficients {:?}, intercept {:?}",
                coef.shape(),
                icpt.shape()
            )));
        }
        let mut weights = [[0.0; NUM_FEATURES]; NUM_CLASSES];
        let mut intercept = [0.0; NUM_CLASSES];
        for (k, (w_k, b_k)) in weights.iter_mut().zip(&mut intercept).enumerate() {
            for (j, w) in w_k.iter_mut().enumerate() {
                *w = *coef.get((k, j));
            }
            *b_k = *icpt.get((k, 0));
        }
        if weights
            .iter()
            .flatten()
            .chain(&intercept)
            .any(|w| !w.is_finite())
        {
            return Err(ModelError::Training(
                "solver produced non-finite coefficients".to_owned(),
            ));
        }
        let mut model = IrisModel {
            mean: set.mean,
            inv_std: set.inv_std,
            weights,
            intercept,
            training_accuracy: 0.0,
        };
        let correct = set
            .rows
            .iter()
            .zip(&set.targets)
            .filter(|&(row, &t)| model.predict_row(row).class == t as usize)
            .count();
        model.training_accuracy = correct as f64 / set.rows.len() as f64;
        if model.training_accuracy < MIN_TRAINING_ACCURACY {
            return Err(ModelError::Underfit {
                accuracy: model.training_accuracy,
                minimum: MIN_TRAINING_ACCURACY,
            });
        }
        Ok(model)
    }
}

fn training_set() -> Result<TrainingSet, ModelError> {
    let ds = iris::load_dataset();
    if ds.num_features != NUM_FEATURES
        || ds.num_samples == 0
        || ds.data.len() != ds.num_samples * NUM_FEATURES
        || ds.target.len() != ds.num_samples
    {
        return Err(ModelError::Dataset(format!(
            "expected {NUM_FEATURES} features, got {} features x {} samples ({} values, {} targets)",
            ds.num_features,
            ds.num_samples,
            ds.data.len(),
            ds.target.len()
        )));
    }
    let rows: Vec<[f64; NUM_FEATURES]> = ds
        .data
        .chunks_exact(NUM_FEATURES)
        .map(|c| [c[0], c[1], c[2], c[3]].map(f64::from))
        .collect();
    let n = rows.len() as f64;
    let mut mean = [0.0; NUM_FEATURES];
    for row in &rows {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v / n;
        }
    }
    let mut inv_std = [0.0; NUM_FEATURES];
    for (j, s) in inv_std.iter_mut().enumerate() {
        let var = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
        if !(var.is_finite() && var > 0.0) {
            return Err(ModelError::Dataset(format!(
                "feature {j} has zero or non-finite variance"
            )));
        }
        *s = 1.0 / var.sqrt();
    }
    let flat: Vec<f64> = rows
        .iter()
        .flat_map(|r| (0..NUM_FEATURES).map(move |j| (r[j] - mean[j]) * inv_std[j]))
        .collect();
    let x = DenseMatrix::new(rows.len(), NUM_FEATURES, flat, false)
        .map_err(|e| ModelError::Dataset(e.to_string()))?;
    Ok(TrainingSet {
        rows,
        targets: ds.target,
        mean,
        inv_std,
        x,
    })
}

fn fit(set: &TrainingSet) -> Result<Fitted, ModelError> {
    let params = LogisticRegressionParameters::default().with_alpha(ALPHA);
    LogisticRegression::fit(&set.x, &set.targets, params)
        .map_err(|e| ModelError::Training(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn trained_model_classifies_training_set_above_90_percent() {
        let model = IrisModel::train().unwrap();
        let set = training_set().unwrap();
        let preds = model.predict(&set.rows);
        let correct = preds
            .iter()
            .zip(&set.targets)
            .filter(|&(p, &t)| p.class == t as usize)
            .count();
        let accuracy = correct as f64 / set.rows.len() as f64;
        assert!(accuracy > 0.9, "accuracy {accuracy}");
        assert_eq!(accuracy, model.training_accuracy());
        assert_eq!(set.rows.len(), 150);
    }

    #[test]
    fn fast_path_agrees_with_smartcore_predict() {
        let set = training_set().unwrap();
        let fitted = fit(&set).unwrap();
        let model = IrisModel::from_fitted(&set, &fitted).unwrap();
        let expected = fitted.predict(&set.x).unwrap();
        let ours: Vec<u32> = model
            .predict(&set.rows)
            .iter()
            .map(|p| p.class as u32)
            .collect();
        assert_eq!(ours, expected);
    }

    #[test]
    fn predictions_carry_label_and_probability() {
        let model = IrisModel::train().unwrap();
        let preds = model.predict(&[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]);
        assert_eq!(preds[0].class, 0);
        assert_eq!(preds[0].label, "setosa");
        assert_eq!(preds[1].label, "virginica");
        for p in &preds {
            assert!(p.probability > 1.0 / 3.0 && p.probability <= 1.0, "{p:?}");
        }
    }

    #[test]
    fn training_is_deterministic() {
        assert_eq!(IrisModel::train().unwrap(), IrisModel::train().unwrap());
    }

    #[test]
    fn empty_input_yields_no_predictions() {
        assert!(IrisModel::train().unwrap().predict(&[]).is_empty());
    }
}
