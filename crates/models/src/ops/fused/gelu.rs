//! GELU (tanh approximation) and its derivative, elementwise.

use super::*;

pub(super) const K: f64 = 0.797_884_560_802_865_4; // √(2/π)
pub(super) const C: f64 = 0.044_715;

/// `tanh u` with `u = √(2/π) (x + 0.044715 x³)`: the one transcendental of GELU and of its
/// derivative, which a caller that has it already passes to [`gelu_from`] / [`gelu_grad_from`].
#[inline(always)]
pub(crate) fn gelu_tanh<T: Real>(x: T) -> T {
    let u = T::from_f64(K) * (x + T::from_f64(C) * x * x * x);
    u.tanh_()
}

/// `½ x (1 + tanh u)`, given `th = tanh u` ([`gelu_tanh`]).
#[inline(always)]
pub(crate) fn gelu_from<T: Real>(x: T, th: T) -> T {
    let (half, one) = (T::from_f64(0.5), T::from_f64(1.0));
    half * x * (one + th)
}

/// `½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3·0.044715 x²)`, given `th = tanh u`.
#[inline(always)]
pub(crate) fn gelu_grad_from<T: Real>(x: T, th: T) -> T {
    let (half, one) = (T::from_f64(0.5), T::from_f64(1.0));
    half * (one + th) + half * x * (one - th * th) * T::from_f64(K) * (one + T::from_f64(3.0 * C) * x * x)
}

#[inline(always)]
pub(super) fn gelu_fwd<T: Real>(x: T) -> T {
    gelu_from(x, gelu_tanh(x))
}

#[inline(always)]
pub(super) fn gelu_grad<T: Real>(x: T) -> T {
    gelu_grad_from(x, gelu_tanh(x))
}

pub(super) fn map1<T: Real>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(16_384).zip(x.par_chunks(16_384)).with_min_len(min_len()).for_each(|(y, x)| {
            for (y, &x) in y.iter_mut().zip(x) {
                y.write(f(x));
            }
        })
    };
    // SAFETY: the chunks cover y, and every element is written.
    unsafe { written(x.len(), fill) }
}

pub(super) fn map2<T: Real>(x: &[T], g: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let fill = |y: &mut [MaybeUninit<T>]| {
        let chunks = y.par_chunks_mut(16_384).zip(x.par_chunks(16_384).zip(g.par_chunks(16_384)));
        chunks.with_min_len(min_len()).for_each(|(y, (x, g))| {
            for ((y, &x), &g) in y.iter_mut().zip(x).zip(g) {
                y.write(f(x, g));
            }
        })
    };
    // SAFETY: the chunks cover y, and every element is written.
    unsafe { written(x.len(), fill) }
}

pub struct Gelu;
pub(super) struct GeluBwd;

custom_op! {
    CustomOp1 for Gelu, "fused-gelu",
    fn cpu_fwd(&self, s, l) {
        let out = by_dtype!(self.name(), s, |T| map1(slice::<T>(s, l, self.name())?, gelu_fwd));
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluBwd)?))
    }
}

custom_op! {
    CustomOp2 for GeluBwd, "fused-gelu-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2) {
        let n = self.name();
        let out = by_dtype!(n, s1, |T| map2(slice::<T>(s1, l1, n)?, slice::<T>(s2, l2, n)?, |x, g| g * gelu_grad(x)));
        Ok((out, l1.shape().clone()))
    }
}
