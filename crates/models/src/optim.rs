//! Optimisers whose state can be checkpointed by parameter name, so that a resumed run
//! continues bit-identically.

use crate::error::{Error, Result};
use candle_core::{Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// Adam (Kingma & Ba 2015) with decoupled weight decay (AdamW, Loshchilov & Hutter 2019),
/// as `torch.optim.AdamW`: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − lr·(m/(1−β₁ᵗ)) / (sqrt(v/(1−β₂ᵗ)) + ε) − lr·λ·θ`. Written out (not
/// `candle_nn::AdamW`) because resuming needs the moments saved by parameter name.
pub struct AdamW {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub t: u64,
    pub lr: f64,
    wd: f64,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, lr: f64, wd: f64) -> Result<Self> {
        let m = params.iter().map(|(_, p)| p.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { v: m.clone(), m, params, t: 0, lr, wd })
    }

    /// Back-propagates `loss` and applies one update.
    pub fn step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.apply(&grads, 1.0)
    }

    /// Back-propagates `loss`, rescales the gradients so that their global L2 norm is at most
    /// `max_norm` (`torch.nn.utils.clip_grad_norm_`: g ← g·min(1, max_norm/(‖g‖₂ + 1e-6))) and
    /// applies one update. Returns the norm before clipping. A non-finite norm is an error and
    /// leaves parameters and moments untouched, so a NaN never reaches the weights.
    pub fn step_clipped(&mut self, loss: &Tensor, max_norm: f64) -> Result<f64> {
        let grads = loss.backward()?;
        let mut sq = 0f64;
        for (_, p) in &self.params {
            if let Some(g) = grads.get(p) {
                sq += g.to_dtype(candle_core::DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
            }
        }
        let norm = sq.sqrt();
        if !norm.is_finite() {
            return Err(Error::Usage(format!("gradient norm is {norm}")));
        }
        let scale = if max_norm > 0.0 { (max_norm / (norm + 1e-6)).min(1.0) } else { 1.0 };
        self.apply(&grads, scale)?;
        Ok(norm)
    }

    /// One AdamW update from `grads` multiplied by `scale`.
    fn apply(&mut self, grads: &candle_core::backprop::GradStore, scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        for (i, (_, p)) in self.params.iter().enumerate() {
            let Some(g) = grads.get(p) else { continue };
            let g = if scale == 1.0 { g.clone() } else { (g * scale)? };
            let g = &g;
            self.m[i] = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let upd = ((&self.m[i] / c1)? / ((&self.v[i] / c2)?.sqrt()? + eps)?)?;
            let theta = p.as_tensor();
            let new = ((theta - (theta * (self.lr * self.wd))?)? - (upd * self.lr)?)?;
            p.set(&new)?;
        }
        Ok(())
    }

    /// The moments by parameter name (`m.NAME`, `v.NAME`), for checkpoints.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut s = HashMap::new();
        for (i, (n, _)) in self.params.iter().enumerate() {
            s.insert(format!("m.{n}"), self.m[i].clone());
            s.insert(format!("v.{n}"), self.v[i].clone());
        }
        s
    }

    /// Restores moments saved by [`AdamW::state`] and the step count `t`.
    pub fn restore(&mut self, path: &Path, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for (i, (n, _)) in self.params.iter().enumerate() {
            let get =
                |k: String| state.get(&k).cloned().ok_or_else(|| Error::invalid(path, format!("missing tensor {k}")));
            self.m[i] = get(format!("m.{n}"))?;
            self.v[i] = get(format!("v.{n}"))?;
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod clip_tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn step_clipped_reports_the_norm_and_refuses_nan() {
        let x = Var::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![("x".into(), x.clone())], 0.1, 0.0).unwrap();
        // ∂(Σ 3x)/∂x = 3 per element: ‖g‖ = 3·√4 = 6.
        let norm = opt.step_clipped(&(x.as_tensor() * 3.0).unwrap().sum_all().unwrap(), 1.0).unwrap();
        assert!((norm - 6.0).abs() < 1e-9);
        assert_eq!(opt.t, 1);
        let before = x.as_tensor().to_vec1::<f32>().unwrap();
        let nan = (x.as_tensor() * f64::NAN).unwrap().sum_all().unwrap();
        assert!(opt.step_clipped(&nan, 1.0).unwrap_err().to_string().contains("gradient norm"));
        assert_eq!(x.as_tensor().to_vec1::<f32>().unwrap(), before);
        assert_eq!(opt.t, 1);
        // The first moment holds (1 − β₁)·g of the *clipped* gradient: 0.1 · 3 · 1/(6 + 1e-6) ≈ 0.05.
        for m in opt.state()["m.x"].to_vec1::<f32>().unwrap() {
            assert!((m - 0.05).abs() < 1e-6, "{m}");
        }
    }
}
