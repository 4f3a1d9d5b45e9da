//! One Llama layer as a single autograd node that keeps only its input (see
//! [`super::Llama::with_recompute`]).
//!
//! Forward: the layer runs on a copy of its input `x` that carries no graph, so every
//! intermediate activation is freed as soon as the output exists. Backward, with the output
//! gradient `dy`: the layer runs again on `x` as a fresh variable, this time with its graph,
//! and [`crate::backprop::backward`] of `Σ y ⊙ dy` gives `dx` (returned to candle's walk) and
//! the layer's weight gradients (handed to the outer walk's sink, since they are not arguments
//! of this node). Both runs take the same kernels on the same values — the weights are
//! variables in both, so every op sees a tracked input and picks its training path — hence
//! the recomputed layer equals the forward one exactly.
//!
//! Rows of a batch never meet inside a layer, so both runs go over the batch a few rows at a
//! time (at most `chunk_tokens` tokens per run): the memory of one layer's activations is
//! then that of a chunk, whatever the batch. With more than one chunk the weight gradients
//! are sums over chunks, equal to the whole batch's up to floating-point rounding.

use super::{Block, Rope};
use crate::attention::Positions;
use crate::backprop::{backward, sink_var_grad};
use crate::ops::fused::slice;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor, Var};

pub(super) struct Recompute {
    block: Block,
    pos: Positions,
    rope: Rope,
    eps: f64,
    chunk_tokens: usize,
}

impl Recompute {
    pub(super) fn new(block: &Block, pos: &Positions, rope: &Rope, eps: f64, chunk_tokens: usize) -> Self {
        Self { block: block.clone(), pos: pos.clone(), rope: rope.clone(), eps, chunk_tokens }
    }

    /// `(first row, rows)` of each chunk of a `[b, t, ·]` input.
    fn chunks(&self, x: &Tensor) -> Result<Vec<(usize, usize)>> {
        let (b, t, _) = x.dims3()?;
        let rows = (self.chunk_tokens / t.max(1)).clamp(1, b.max(1));
        Ok((0..b).step_by(rows).map(|r| (r, rows.min(b - r))).collect())
    }

    /// The layer on rows `r..r + n` of the batch (`x` holds just those rows).
    fn run(&self, x: &Tensor, (r, n): (usize, usize)) -> Result<Tensor> {
        if n == self.pos.positions.dim(0)? {
            return self.block.forward(x, &self.pos, &self.rope, None, self.eps);
        }
        let pos = Positions { positions: self.pos.positions.narrow(0, r, n)?, bias: self.pos.bias.narrow(0, r, n)? };
        let rope = Rope {
            rotary: self.rope.rotary.clone(),
            cos: self.rope.cos.narrow(0, r, n)?,
            sin: self.rope.sin.narrow(0, r, n)?,
        };
        self.block.forward(x, &pos, &rope, None, self.eps)
    }
}

impl CustomOp1 for Recompute {
    fn name(&self) -> &'static str {
        "llama-layer-recompute"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = match s {
            CpuStorage::F32(_) => Tensor::from_slice(slice::<f32>(s, l, self.name())?, l.shape(), &Device::Cpu)?,
            CpuStorage::F64(_) => Tensor::from_slice(slice::<f64>(s, l, self.name())?, l.shape(), &Device::Cpu)?,
            _ => candle_core::bail!("{}: only f32/f64", self.name()),
        };
        let mut ys = Vec::new();
        for c in self.chunks(&x)? {
            ys.push(self.run(&x.narrow(0, c.0, c.1)?, c)?.detach());
        }
        let y = Tensor::cat(&ys, 0)?;
        let shape = y.shape().clone();
        let flat = y.flatten_all()?;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(flat.to_vec1::<f32>()?),
            _ => CpuStorage::F64(flat.to_vec1::<f64>()?),
        };
        Ok((out, shape))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let weights = self.block.weights();
        let mut dw: Vec<Option<Tensor>> = vec![None; weights.len()];
        let mut dx = Vec::new();
        for c in self.chunks(x)? {
            let xv = Var::from_tensor(&x.narrow(0, c.0, c.1)?.detach())?;
            let y = self.run(xv.as_tensor(), c)?;
            let grads = backward(&(y * dy.narrow(0, c.0, c.1)?.detach())?.sum_all()?)?;
            for (acc, w) in dw.iter_mut().zip(&weights) {
                if let Some(g) = grads.get(w) {
                    *acc = Some(match acc.take() {
                        Some(a) => (a + g)?,
                        None => g.clone(),
                    });
                }
            }
            match grads.get(xv.as_tensor()) {
                Some(g) => dx.push(g.clone()),
                None => dx.push(xv.as_tensor().zeros_like()?),
            }
        }
        for (w, g) in weights.iter().zip(dw) {
            if let Some(g) = g {
                sink_var_grad(w, g)?;
            }
        }
        Ok(Some(Tensor::cat(&dx, 0)?))
    }
}
