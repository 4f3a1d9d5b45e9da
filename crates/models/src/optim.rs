//! Optimisers whose state can be checkpointed by parameter name, so that a resumed run
//! continues bit-identically.

use crate::error::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Storage, Tensor, Var};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Adam (Kingma & Ba 2015) with decoupled weight decay (AdamW, Loshchilov & Hutter 2019),
/// as `torch.optim.AdamW`: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `θ ← θ − lr·(m/(1−β₁ᵗ)) / (sqrt(v/(1−β₂ᵗ)) + ε) − lr·λ·θ`. Written out (not
/// `candle_nn::AdamW`) because resuming needs the moments saved by parameter name.
pub struct AdamW {
    params: Vec<(String, Var)>,
    moments: Vec<Moments>,
    pub t: u64,
    pub lr: f64,
    wd: f64,
}

/// First and second moments of one parameter. F32 parameters on the CPU keep them in host
/// vectors and are updated by one fused in-place pass ([`FusedStep`]); anything else (other
/// dtypes, other devices) goes through tensor ops with the same arithmetic.
enum Moments {
    Host { m: Vec<f32>, v: Vec<f32> },
    Tensors { m: Tensor, v: Tensor },
}

fn is_host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, lr: f64, wd: f64) -> Result<Self> {
        let moments = params
            .iter()
            .map(|(_, p)| {
                let t = p.as_tensor();
                Ok(if is_host_f32(t) {
                    Moments::Host { m: vec![0.0; t.elem_count()], v: vec![0.0; t.elem_count()] }
                } else {
                    Moments::Tensors { m: t.zeros_like()?, v: t.zeros_like()? }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { moments, params, t: 0, lr, wd })
    }

    /// The same optimiser with every moment kept as tensors (the non-fused path), so that tests
    /// can check the fused CPU path against it.
    #[doc(hidden)]
    pub fn new_unfused(params: Vec<(String, Var)>, lr: f64, wd: f64) -> Result<Self> {
        let moments = params
            .iter()
            .map(|(_, p)| Ok(Moments::Tensors { m: p.as_tensor().zeros_like()?, v: p.as_tensor().zeros_like()? }))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { moments, params, t: 0, lr, wd })
    }

    /// Back-propagates `loss` and applies one update.
    pub fn step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = crate::backprop::backward(loss)?;
        self.apply(&grads, 1.0)
    }

    /// Back-propagates `loss`, rescales the gradients so that their global L2 norm is at most
    /// `max_norm` (`torch.nn.utils.clip_grad_norm_`: g ← g·min(1, max_norm/(‖g‖₂ + 1e-6))) and
    /// applies one update. Returns the norm before clipping. A non-finite norm is an error and
    /// leaves parameters and moments untouched, so a NaN never reaches the weights.
    pub fn step_clipped(&mut self, loss: &Tensor, max_norm: f64) -> Result<f64> {
        self.step_clipped_grads(&crate::backprop::backward(loss)?, max_norm)
    }

    /// [`Self::step_clipped`] with gradients already computed (entries for other tensors are
    /// ignored).
    pub fn step_clipped_grads(&mut self, grads: &GradStore, max_norm: f64) -> Result<f64> {
        // Each tensor's Σ g² is one serial chain, so tensors run side by side and their sums
        // are added in parameter order: the same bits as one loop over the parameters.
        let present: Vec<&Tensor> = self.params.iter().filter_map(|(_, p)| grads.get(p)).collect();
        let sums = present.par_iter().with_min_len(crate::ops::fused::min_len()).map(|g| sum_of_squares(g));
        let sums = sums.collect::<Result<Vec<f64>>>()?;
        let norm = sums.iter().fold(0f64, |sq, s| sq + s).sqrt();
        if !norm.is_finite() {
            return Err(Error::Usage(format!("gradient norm is {norm}")));
        }
        let scale = if max_norm > 0.0 { (max_norm / (norm + 1e-6)).min(1.0) } else { 1.0 };
        self.apply(grads, scale)?;
        Ok(norm)
    }

    /// One AdamW update from `grads` multiplied by `scale`.
    fn apply(&mut self, grads: &GradStore, scale: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let c1 = 1.0 - b1.powi(self.t as i32);
        let c2 = 1.0 - b2.powi(self.t as i32);
        let (lr, wd) = (self.lr, self.wd);
        for ((_, p), moments) in self.params.iter().zip(self.moments.iter_mut()) {
            let Some(g) = grads.get(p) else { continue };
            match moments {
                Moments::Host { m, v } => {
                    // Gradients of F32 CPU parameters are F32 CPU tensors; `contiguous` is a
                    // no-op for the usual contiguous ones.
                    let g = g.contiguous()?;
                    let op = FusedStep {
                        moments: std::cell::RefCell::new((m.as_mut_slice(), v.as_mut_slice())),
                        scale: (scale != 1.0).then_some(scale as f32),
                        b1: b1 as f32,
                        one_minus_b1: (1.0 - b1) as f32,
                        b2: b2 as f32,
                        one_minus_b2: (1.0 - b2) as f32,
                        inv_c1: (1.0 / c1) as f32,
                        inv_c2: (1.0 / c2) as f32,
                        eps: eps as f32,
                        lr: lr as f32,
                        lr_wd: (lr * wd) as f32,
                    };
                    p.as_tensor().inplace_op2(&g, &op)?;
                }
                Moments::Tensors { m, v } => tensor_step(p, g, m, v, scale, (c1, c2), (lr, wd))?,
            }
        }
        Ok(())
    }
}

/// The update with tensor ops (one allocation per op); the fused pass does the same arithmetic
/// on f32 in the same order.
fn tensor_step(
    p: &Var,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    scale: f64,
    c: (f64, f64),
    lr: (f64, f64),
) -> Result<()> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let ((c1, c2), (lr, wd)) = (c, lr);
    let g = if scale == 1.0 { g.clone() } else { (g * scale)? };
    let g = &g;
    *m = ((&*m * b1)? + (g * (1.0 - b1))?)?;
    *v = ((&*v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
    let upd = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + eps)?)?;
    let theta = p.as_tensor();
    let new = ((theta - (theta * (lr * wd))?)? - (upd * lr)?)?;
    p.set(&new)?;
    Ok(())
}

impl AdamW {
    /// The moments by parameter name (`m.NAME`, `v.NAME`), for checkpoints.
    pub fn state(&self) -> Result<HashMap<String, Tensor>> {
        let mut s = HashMap::new();
        for ((n, p), moments) in self.params.iter().zip(&self.moments) {
            let (m, v) = match moments {
                Moments::Host { m, v } => {
                    let (shape, dev) = (p.as_tensor().shape(), p.as_tensor().device());
                    (Tensor::from_slice(m, shape, dev)?, Tensor::from_slice(v, shape, dev)?)
                }
                Moments::Tensors { m, v } => (m.clone(), v.clone()),
            };
            s.insert(format!("m.{n}"), m);
            s.insert(format!("v.{n}"), v);
        }
        Ok(s)
    }

    /// Restores moments saved by [`AdamW::state`] and the step count `t`.
    pub fn restore(&mut self, path: &Path, state: &HashMap<String, Tensor>, t: u64) -> Result<()> {
        for ((n, p), moments) in self.params.iter().zip(self.moments.iter_mut()) {
            let get = |k: String| {
                let x = state.get(&k).ok_or_else(|| Error::invalid(path, format!("missing tensor {k}")))?;
                if x.shape() != p.as_tensor().shape() {
                    return Err(Error::invalid(
                        path,
                        format!("tensor {k} has shape {:?}, the parameter {:?}", x.shape(), p.as_tensor().shape()),
                    ));
                }
                Ok(x.clone())
            };
            let (m, v) = (get(format!("m.{n}"))?, get(format!("v.{n}"))?);
            *moments = match moments {
                Moments::Host { .. } => Moments::Host {
                    m: m.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                    v: v.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
                },
                Moments::Tensors { .. } => Moments::Tensors { m, v },
            };
        }
        self.t = t;
        Ok(())
    }
}

/// Σ g² in f64, read in place for F32 CPU tensors (no copy), else through tensor ops.
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if is_host_f32(g) {
        let (storage, layout) = g.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(data)), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(data[a..b].iter().map(|&x| (x as f64) * (x as f64)).sum());
        }
    }
    Ok(g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?)
}

/// One AdamW step for one F32 CPU parameter in a single pass over θ, g, m and v, with no
/// allocation: per element, in f32 and in the order of [`AdamW::tensor_step`],
/// `g ← s·g; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; u ← (m/c₁) / (sqrt(v/c₂) + ε);
/// θ ← (θ − lr·λ·θ) − lr·u`.
struct FusedStep<'a> {
    moments: std::cell::RefCell<(&'a mut [f32], &'a mut [f32])>,
    scale: Option<f32>,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_c1: f32,
    inv_c2: f32,
    eps: f32,
    lr: f32,
    lr_wd: f32,
}

impl InplaceOp2 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "fused-adamw"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(theta), CpuStorage::F32(grad)) = (dst, src) else {
            candle_core::bail!("fused-adamw: expected f32 parameter and gradient")
        };
        let (Some((ta, tb)), Some((ga, gb))) = (dst_l.contiguous_offsets(), src_l.contiguous_offsets()) else {
            candle_core::bail!("fused-adamw: expected contiguous parameter and gradient")
        };
        let mut guard = self.moments.borrow_mut();
        let (m, v) = &mut *guard;
        let (theta, grad) = (&mut theta[ta..tb], &grad[ga..gb]);
        if theta.len() != grad.len() || m.len() != theta.len() || v.len() != theta.len() {
            candle_core::bail!("fused-adamw: parameter, gradient and moments differ in size")
        }
        // Element-wise, so any split gives the same bits; chunks keep both cores on the
        // memory-bound pass over large parameters.
        const CHUNK: usize = 1 << 16;
        let (scale, b1, one_minus_b1, b2, one_minus_b2) =
            (self.scale, self.b1, self.one_minus_b1, self.b2, self.one_minus_b2);
        let (inv_c1, inv_c2, eps, lr, lr_wd) = (self.inv_c1, self.inv_c2, self.eps, self.lr, self.lr_wd);
        let chunks = theta.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK));
        chunks.zip(v.par_chunks_mut(CHUNK)).with_min_len(crate::ops::fused::min_len()).for_each(
            |(((theta, grad), m), v)| {
                // Multiplying by 1 changes no bit, and one loop with no branch in it is one LLVM
                // vectorises: 8-wide sqrt and division are as exact as the scalar ones, and the
                // scalar loop was bound by them (0.27 s a step for SmolLM2's 135 M parameters).
                let s = scale.unwrap_or(1.0);
                let n = theta.len();
                let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
                for j in 0..n {
                    let g = grad[j] * s;
                    let mi = m[j] * b1 + g * one_minus_b1;
                    let vi = v[j] * b2 + (g * g) * one_minus_b2;
                    m[j] = mi;
                    v[j] = vi;
                    let u = (mi * inv_c1) / ((vi * inv_c2).sqrt() + eps);
                    theta[j] = (theta[j] - theta[j] * lr_wd) - u * lr;
                }
            },
        );
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
        for m in opt.state().unwrap()["m.x"].to_vec1::<f32>().unwrap() {
            assert!((m - 0.05).abs() < 1e-6, "{m}");
        }
    }
}

#[cfg(test)]
mod fused_tests {
    use super::*;
    use candle_core::Device;

    /// The fused CPU pass and the tensor-op path give bit-identical parameters and moments over
    /// several steps, with weight decay and with clipping.
    #[test]
    fn fused_step_matches_tensor_ops_bit_for_bit() {
        let dev = Device::Cpu;
        let init: Vec<f32> = (0..257).map(|i| ((i as f32) * 0.37).sin() * 2.0).collect();
        let run = |fused: bool| {
            let x = Var::from_tensor(&Tensor::from_vec(init.clone(), (257,), &dev).unwrap()).unwrap();
            let y = Var::from_tensor(&Tensor::from_vec(init[..12].to_vec(), (3, 4), &dev).unwrap()).unwrap();
            let params = vec![("x".to_string(), x.clone()), ("y".to_string(), y.clone())];
            let mut opt =
                if fused { AdamW::new(params, 0.01, 0.1) } else { AdamW::new_unfused(params, 0.01, 0.1) }.unwrap();
            for step in 0..6 {
                let w = Tensor::arange(0f32, 257., &dev).unwrap().affine(0.01, -1.0).unwrap();
                let loss = ((x.as_tensor() * &w).unwrap().sqr().unwrap().sum_all().unwrap()
                    + y.as_tensor().powf(3.0).unwrap().sum_all().unwrap())
                .unwrap();
                if step % 2 == 0 {
                    opt.step(&loss).unwrap();
                } else {
                    opt.step_clipped(&loss, 0.5).unwrap();
                }
            }
            let st = opt.state().unwrap();
            let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (v(x.as_tensor()), v(y.as_tensor()), v(&st["m.x"]), v(&st["v.y"]))
        };
        let (a, b) = (run(true), run(false));
        assert_eq!(a, b);
        assert_ne!(a.0, init, "the parameters moved");
    }

    /// Moments saved by `state` and restored into a fresh optimiser continue identically.
    #[test]
    fn state_roundtrip_continues_identically() {
        let dev = Device::Cpu;
        let mk = || Var::from_tensor(&Tensor::new(&[0.5f32, -1.0, 2.0], &dev).unwrap()).unwrap();
        let loss = |x: &Var| x.as_tensor().sqr().unwrap().sum_all().unwrap();
        let (x1, x2) = (mk(), mk());
        let mut a = AdamW::new(vec![("x".into(), x1.clone())], 0.1, 0.0).unwrap();
        for _ in 0..3 {
            a.step(&loss(&x1)).unwrap();
        }
        x2.set(x1.as_tensor()).unwrap();
        let mut b = AdamW::new(vec![("x".into(), x2.clone())], 0.1, 0.0).unwrap();
        b.restore(Path::new("opt.safetensors"), &a.state().unwrap(), a.t).unwrap();
        a.step(&loss(&x1)).unwrap();
        b.step(&loss(&x2)).unwrap();
        assert_eq!(x1.as_tensor().to_vec1::<f32>().unwrap(), x2.as_tensor().to_vec1::<f32>().unwrap());
        let bad = HashMap::from([("m.x".to_string(), Tensor::zeros(2, DType::F32, &dev).unwrap())]);
        let err = b.restore(Path::new("opt.safetensors"), &bad, 1).unwrap_err().to_string();
        assert!(err.contains("opt.safetensors") && err.contains("shape"), "{err}");
    }
}
