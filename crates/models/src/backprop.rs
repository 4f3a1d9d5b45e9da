//! Backpropagation that keeps the weights' gradients out of candle's gradient store.
//!
//! candle's `Tensor::backward` adds every gradient an op returns into a zero-filled tensor of
//! its argument's shape (`GradStore::or_insert`, then `add`): for a weight matrix that is a
//! memset, a full extra pass and a second weight-sized allocation, though a weight used once
//! needs none of them. [`backward`] runs candle's backward with a per-thread sink switched on:
//! the fused linear ops give the gradient of a trainable weight (a `Var`) to the sink instead of
//! returning it ([`sink_weight_grad`]), and once the walk is over each sunk gradient goes into
//! the store as it is, or is added to what the store already holds for that weight.
//!
//! The values are those of `Tensor::backward` bit for bit (tests/backprop.rs): `0 + g` is `g`,
//! and two sunk gradients of one weight are added in the order candle would add them. A weight
//! that candle's own ops also differentiate is not sunk: candle adds an embedding lookup's
//! gradient into the stored one in place, row by row, so a tied output head keeps its gradient
//! in the store ([`crate::llama_ops::linear_no_bias_shared`]).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use std::cell::RefCell;

thread_local! {
    static SINK: RefCell<Option<Vec<(Tensor, Tensor)>>> = const { RefCell::new(None) };
}

/// The gradients of `loss` with respect to every variable it depends on, as
/// `loss.backward()` computes them (see the module doc).
pub fn backward(loss: &Tensor) -> Result<GradStore> {
    let outer = SINK.with(|s| s.borrow_mut().replace(Vec::new()));
    let walked = loss.backward();
    let sunk = SINK.with(|s| std::mem::replace(&mut *s.borrow_mut(), outer)).unwrap_or_default();
    let mut grads = walked?;
    for (w, g) in sunk {
        let sum = match grads.get(&w) {
            Some(prev) => prev.add(&g)?,
            None => g,
        };
        grads.insert(&w, sum);
    }
    Ok(grads)
}

/// Called by an op's backward with the gradient `g` of its weight `w`: inside [`backward`], a
/// variable's gradient goes to the sink and `None` comes back (the op returns no gradient for
/// `w`); otherwise `Some(g)`, to be returned as usual.
pub(crate) fn sink_weight_grad(w: &Tensor, g: Tensor) -> Option<Tensor> {
    if !w.is_variable() {
        return Some(g);
    }
    SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sunk) => {
            sunk.push((w.clone(), g));
            None
        }
        None => Some(g),
    })
}

/// Hands the gradient `g` of variable `w` to the running [`backward`]'s sink, to be added to
/// the store with the others: for an op whose backward computes gradients of weights that are
/// not its arguments (layer recomputation, [`crate::Llama::with_recompute`]). Outside
/// [`backward`] there is nowhere to put it, which is an error rather than a lost gradient.
pub(crate) fn sink_var_grad(w: &Tensor, g: Tensor) -> Result<()> {
    SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sunk) => {
            sunk.push((w.clone(), g));
            Ok(())
        }
        None => candle_core::bail!(
            "this graph recomputes layers in its backward pass: take gradients with \
             mismatch_models::backprop::backward, not Tensor::backward"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{CpuStorage, CustomOp2, Device, Layout, Shape, Var};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// `y = x ⊙ w`, whose backward hands `dw` to the sink and counts the times it was taken.
    struct Scale(Arc<AtomicUsize>);

    impl CustomOp2 for Scale {
        fn name(&self) -> &'static str {
            "scale"
        }
        fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else { candle_core::bail!("f32 only") };
            Ok((CpuStorage::F32(x.iter().zip(w).map(|(a, b)| a * b).collect()), l1.shape().clone()))
        }
        fn bwd(&self, x: &Tensor, w: &Tensor, _: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
            let dw = sink_weight_grad(w, (dy * x.detach())?);
            if dw.is_none() {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
            Ok((Some((dy * w.detach())?), dw))
        }
    }

    /// Inside [`backward`] a variable's gradient goes through the sink (and a weight used twice
    /// gets the sum of both uses); outside it, and for a non-variable, the op returns it. Either
    /// way the gradients equal `Tensor::backward`'s bit for bit.
    #[test]
    fn sunk_gradients_equal_candles() {
        let dev = Device::Cpu;
        let taken = Arc::new(AtomicUsize::new(0));
        let w = Var::new(&[0.5f32, -1.25, 3.0], &dev).unwrap();
        let x = Var::new(&[1.5f32, 2.0, -0.75], &dev).unwrap();
        let loss = || {
            let a = x.as_tensor().apply_op2(w.as_tensor(), Scale(taken.clone())).unwrap();
            let b = (x.as_tensor() * 3.0).unwrap().apply_op2(w.as_tensor(), Scale(taken.clone())).unwrap();
            // w also gets a third gradient, through candle's own ops.
            ((a + b).unwrap().sqr().unwrap().sum_all().unwrap() + w.as_tensor().sqr().unwrap().sum_all().unwrap())
                .unwrap()
        };
        let plain = loss().backward().unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 0);
        let sunk = backward(&loss()).unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 2, "both uses of w went through the sink");
        for v in [&w, &x] {
            let (p, s) = (plain.get(v.as_tensor()).unwrap(), sunk.get(v.as_tensor()).unwrap());
            assert_eq!(p.to_vec1::<f32>().unwrap(), s.to_vec1::<f32>().unwrap());
        }
        // Hand-computed: L = Σ (4 x w)² + Σ w², ∂L/∂w = 32 x² w + 2w.
        let want: Vec<f32> =
            [(1.5f32, 0.5f32), (2.0, -1.25), (-0.75, 3.0)].iter().map(|&(x, w)| 32.0 * x * x * w + 2.0 * w).collect();
        let got = sunk.get(w.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-4), "{got:?} vs {want:?}");
        // A plain tensor as the weight: its gradient is returned, not sunk.
        let c = Tensor::new(&[1f32, 2.0, 3.0], &dev).unwrap();
        let l = x.as_tensor().apply_op2(&c, Scale(taken.clone())).unwrap().sum_all().unwrap();
        backward(&l).unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 2);
    }
}
