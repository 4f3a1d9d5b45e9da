//! The reward head on a backbone feature vector `h` (MiniLM's sentence embedding or a
//! decoder's last-token hidden state).
//!
//! - `scalar`: `r = w·h + b` (the head of Christiano et al. 2017 / Ouyang et al. 2022);
//! - `probabilistic`: `(μ, log σ²) = W h + b` with `W` of shape `[2, h]`: the reward is
//!   the mean `μ`, and `σ²` is the model's own uncertainty about it, trained with the
//!   Gaussian Bradley-Terry (Thurstone) likelihood of [`crate::loss::gaussian_bt`].
//!
//! Stored as `score.weight` `[out, h]` / `score.bias` `[out]` (the name transformers'
//! `*ForSequenceClassification` uses) next to the backbone weights.

use candle_core::{DType, Device, Tensor, Var};
use mismatch_models::{Error, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    #[default]
    Scalar,
    Probabilistic,
}

impl HeadKind {
    pub fn outputs(self) -> usize {
        match self {
            HeadKind::Scalar => 1,
            HeadKind::Probabilistic => 2,
        }
    }
}

/// A linear head whose parameters are [`Var`]s (trainable).
#[derive(Debug, Clone)]
pub struct Head {
    pub kind: HeadKind,
    pub w: Var,
    pub b: Var,
}

impl Head {
    /// Initialised like `torch.nn.Linear` (`U(−1/√h, 1/√h)` for weight and bias) from a
    /// ChaCha8 stream seeded with `seed` (candle's CPU RNG cannot be seeded). The
    /// log-variance row starts at zero weight and bias (σ² = 1 for every input), so a
    /// probabilistic head starts as the scalar one with unit noise.
    pub fn init(kind: HeadKind, hidden: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let bound = 1.0 / (hidden as f32).sqrt();
        let mut w: Vec<f32> = (0..hidden).map(|_| rng.random_range(-bound..bound)).collect();
        let mut b = vec![rng.random_range(-bound..bound)];
        if kind == HeadKind::Probabilistic {
            w.extend(std::iter::repeat_n(0.0, hidden));
            b.push(0.0);
        }
        let out = kind.outputs();
        Self::from_tensors(kind, Tensor::from_vec(w, (out, hidden), device)?, Tensor::from_vec(b, out, device)?)
    }

    pub fn from_tensors(kind: HeadKind, w: Tensor, b: Tensor) -> Result<Self> {
        Ok(Self {
            kind,
            w: Var::from_tensor(&w.to_dtype(DType::F32)?)?,
            b: Var::from_tensor(&b.to_dtype(DType::F32)?)?,
        })
    }

    /// Takes `score.weight`/`score.bias` out of `tensors` (checked against `kind` and `hidden`).
    pub fn take(kind: HeadKind, hidden: usize, tensors: &mut HashMap<String, Tensor>, path: &Path) -> Result<Self> {
        let out = kind.outputs();
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.remove(name).ok_or_else(|| {
                Error::invalid(path, format!("missing tensor {name} (not a reward-model checkpoint)"))
            })?;
            if t.dims() != shape {
                return Err(Error::invalid(
                    path,
                    format!("tensor {name} has shape {:?}, expected {shape:?} for a {kind:?} head", t.dims()),
                ));
            }
            Ok(t)
        };
        let w = take("score.weight", &[out, hidden])?;
        let b = take("score.bias", &[out])?;
        Self::from_tensors(kind, w, b)
    }

    /// `[n, h]` → `[n, out]` (column 0 is the reward, column 1 the log-variance if any).
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let h = h.to_dtype(DType::F32)?;
        Ok(h.matmul(&self.w.as_tensor().t()?)?.broadcast_add(self.b.as_tensor())?)
    }

    /// Parameters by checkpoint name (copies: safe to serialise while training goes on).
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        Ok(HashMap::from([
            ("score.weight".to_string(), self.w.as_tensor().copy()?),
            ("score.bias".to_string(), self.b.as_tensor().copy()?),
        ]))
    }

    pub fn vars(&self) -> Vec<(String, Var)> {
        vec![("score.bias".into(), self.b.clone()), ("score.weight".into(), self.w.clone())]
    }
}

/// Column 0 of a head output `[n, out]`: the reward `[n]`.
pub fn reward_of(out: &Tensor) -> Result<Tensor> {
    Ok(out.narrow(1, 0, 1)?.squeeze(1)?)
}
