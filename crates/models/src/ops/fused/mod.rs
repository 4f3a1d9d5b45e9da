//! Fused CPU kernels with hand-written backward passes, used for training on CPU. Each is
//! checked against its composed counterpart (forward and gradients) in `tests`.

use super::Strided;
use crate::backprop::sink_weight_grad;
use candle_core::{bail, CpuStorage, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The kernels' one dtype dispatch: `$body` with the type alias `$T` set to the element type
/// of `$s` (f32 or f64), its `Vec` wrapped back into a `CpuStorage` of that type. Other
/// inputs read with `slice::<$T>` fail with candle's dtype error when they differ.
macro_rules! by_dtype {
    ($op:expr, $s:expr, |$T:ident| $body:expr) => {
        match $s {
            CpuStorage::F32(_) => {
                type $T = f32;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(_) => {
                type $T = f64;
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!("{}: only f32/f64", $op),
        }
    };
}
pub(crate) use by_dtype;

/// The one shape of every fused op's `CustomOp1/2/3` impl: its name, a CPU forward over
/// (storage, layout) pairs written once instead of candle's full signature, and whatever else
/// the impl holds (a backward) as is:
///
/// ```ignore
/// custom_op! {
///     CustomOp2 for GeluBwd, "fused-gelu-bwd",
///     fn cpu_fwd(&self, s1, l1, s2, l2) { ... }
///     fn bwd(...) -> ... { ... }
/// }
/// ```
macro_rules! custom_op {
    ($op:ident for $ty:ty, $name:literal,
     fn cpu_fwd(&$this:tt, $($s:ident, $l:ident),+) $fwd:block
     $($rest:tt)*) => {
        impl candle_core::$op for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn cpu_fwd(
                &$this,
                $($s: &candle_core::CpuStorage, $l: &candle_core::Layout),+
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> $fwd
            $($rest)*
        }
    };
}
pub(crate) use custom_op;

mod attention;
mod gelu;
mod layer_norm;
mod linear;
mod real;
mod rows;
mod softmax;
#[cfg(test)]
mod tests;

pub use attention::*;
pub use gelu::*;
pub use layer_norm::*;
pub use linear::*;
pub use real::*;
pub(crate) use rows::*;
pub use softmax::*;
