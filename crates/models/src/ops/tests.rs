use super::*;
use candle_core::{Device, Var};

fn close(a: &Tensor, b: &Tensor, tol: f32) {
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    let d = d.to_scalar::<f32>().unwrap();
    assert!(d <= tol, "max abs diff {d} > {tol}");
}

/// Cutting m or n into per-thread blocks gives the bits of one single-threaded call, for
/// row-major and transposed operands, with and without accumulation, with blocks that do
/// not divide the dimension, and where a block would fall on another of gemm's kernels
/// (`2×200`: a `2×88` block is a dot-product kernel's shape).
#[test]
fn gemm_blocks_match_one_call_bit_for_bit() {
    let val = |i: usize| ((i * 7919 % 1009) as f32 - 504.0) / 97.0;
    for (m, n, k) in [(70, 33, 41), (200, 70, 700), (3, 600, 600), (2, 200, 50), (20, 90, 17), (130, 130, 1)] {
        let a: Vec<f32> = (0..m * k).map(val).collect();
        let b: Vec<f32> = (0..k * n).map(|i| val(i + 13)).collect();
        let init: Vec<f32> = (0..m * n).map(|i| val(i + 29)).collect();
        // lhs row-major [m, k] or the transpose of a row-major [k, m]; rhs likewise.
        for (lt, rt) in [(false, false), (true, false), (false, true), (true, true)] {
            let lhs = match lt {
                false => Strided { ptr: a.as_ptr(), rs: k as isize, cs: 1 },
                true => Strided { ptr: a.as_ptr(), rs: 1, cs: m as isize },
            };
            let rhs = match rt {
                false => Strided { ptr: b.as_ptr(), rs: n as isize, cs: 1 },
                true => Strided { ptr: b.as_ptr(), rs: 1, cs: k as isize },
            };
            for read_dst in [false, true] {
                let run = |threads: usize| {
                    let mut c = init.clone();
                    unsafe { gemm_blocks(threads, m, n, k, c.as_mut_ptr(), n as isize, read_dst, lhs, rhs) };
                    c
                };
                let one = run(1);
                // The plain product, to make sure the blocks computed something.
                let (i, j) = (m - 1, n / 2);
                let mut want = if read_dst { init[i * n + j] } else { 0.0 };
                let dot: f32 = (0..k)
                    .map(|p| unsafe {
                        *lhs.ptr.offset(i as isize * lhs.rs + p as isize * lhs.cs)
                            * *rhs.ptr.offset(p as isize * rhs.rs + j as isize * rhs.cs)
                    })
                    .sum();
                want += dot;
                assert!(
                    (one[i * n + j] - want).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{m}x{n}x{k}: {} vs {want}",
                    one[i * n + j]
                );
                for threads in [2, 3, 8] {
                    assert!(
                        run(threads) == one,
                        "{m}x{n}x{k} lt {lt} rt {rt} read {read_dst}: {threads} blocks differ"
                    );
                }
            }
        }
    }
}

#[test]
fn fused_and_differentiable_paths_agree() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap();
    let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
    let b = Tensor::randn(0f32, 0.1, 8, &dev).unwrap();
    let wv = Var::from_tensor(&w).unwrap();
    let bv = Var::from_tensor(&b).unwrap();
    close(&rms_norm(&x, &w, 1e-5).unwrap(), &rms_norm(&x, wv.as_tensor(), 1e-5).unwrap(), 1e-5);
    close(&layer_norm(&x, &w, &b, 1e-5).unwrap(), &layer_norm(&x, wv.as_tensor(), bv.as_tensor(), 1e-5).unwrap(), 1e-5);
    let xv = Var::from_tensor(&x).unwrap();
    close(&softmax_last_dim(&x).unwrap(), &softmax_last_dim(xv.as_tensor()).unwrap(), 1e-6);
    let ls = log_softmax_last_dim(&x).unwrap().exp().unwrap();
    close(&ls, &softmax_last_dim(&x).unwrap(), 1e-6);
}

#[test]
fn hand_computed_values() {
    let dev = Device::Cpu;
    // rms of [3, 4] is sqrt(12.5); y = x / sqrt(12.5)
    let x = Tensor::new(&[[3f32, 4.0]], &dev).unwrap();
    let w = Tensor::new(&[1f32, 2.0], &dev).unwrap();
    let y = rms_norm(&x, &w, 0.0).unwrap().to_vec2::<f32>().unwrap();
    let r = 12.5f32.sqrt();
    assert!((y[0][0] - 3.0 / r).abs() < 1e-6 && (y[0][1] - 8.0 / r).abs() < 1e-6);
    // layer norm of [1, 3]: mean 2, var 1 -> [-1, 1]
    let x = Tensor::new(&[[1f32, 3.0]], &dev).unwrap();
    let b = Tensor::new(&[0.5f32, 0.5], &dev).unwrap();
    let y = layer_norm(&x, &w, &b, 0.0).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(y, vec![vec![-0.5, 2.5]]);
}

#[test]
fn rotary_position_zero_is_identity_and_rotation_preserves_norm() {
    let dev = Device::Cpu;
    let rot = Rotary::new(4, 16, 10_000.0, &dev).unwrap();
    let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev).unwrap().reshape((1, 1, 1, 4)).unwrap();
    let p0 = Tensor::new(&[[0u32]], &dev).unwrap();
    close(&rot.apply(&x, &p0).unwrap(), &x, 0.0);
    // position 1, pair (x0, x2) rotated by 1 rad, pair (x1, x3) by 1e-2 rad
    let p1 = Tensor::new(&[[1u32]], &dev).unwrap();
    let y = rot.apply(&x, &p1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let (c, s) = (1f32.cos(), 1f32.sin());
    let (c2, s2) = (0.01f32.cos(), 0.01f32.sin());
    let want = [1.0 * c - 3.0 * s, 2.0 * c2 - 4.0 * s2, 3.0 * c + 1.0 * s, 4.0 * c2 + 2.0 * s2];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{y:?} vs {want:?}");
    }
}

/// Forward values and gradients (of a random linear functional of the output) of
/// `fused` and `composed` on the same inputs; returns max abs differences.
fn compare_grads(
    inputs: &[Tensor],
    fused: impl Fn(&[Tensor]) -> Result<Tensor>,
    composed: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> (f64, f64) {
    let run = |f: &dyn Fn(&[Tensor]) -> Result<Tensor>| {
        let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts).unwrap();
        // A fixed, non-uniform cotangent so that no gradient term cancels by symmetry.
        let n = y.elem_count();
        let r: Vec<f64> = (0..n).map(|i| ((i * 7919 % 101) as f64 / 50.0) - 1.0).collect();
        let r = Tensor::from_vec(r, y.shape(), y.device()).unwrap().to_dtype(y.dtype()).unwrap();
        let loss = (&y * &r).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        let grads: Vec<Tensor> = vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
        (y, grads)
    };
    let (yf, gf) = run(&fused);
    let (yc, gc) = run(&composed);
    let maxdiff = |a: &Tensor, b: &Tensor| {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    };
    let gmax = gf.iter().zip(&gc).map(|(a, b)| maxdiff(a, b)).fold(0.0, f64::max);
    (maxdiff(&yf, &yc), gmax)
}

fn randn(shape: &[usize], dtype: DType, mean: f64, std: f64) -> Tensor {
    Tensor::randn(mean, std, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

#[test]
fn fused_linear_gelu_matches_composed_forward_and_backward() {
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
        let x = randn(&[3, 37, 24], dtype, 0.0, 1.0);
        let w = randn(&[40, 24], dtype, 0.0, 0.5);
        let b = randn(&[40], dtype, 0.0, 0.5);
        let composed = |t: &[Tensor]| gelu_composed(&linear_composed(&t[0], &t[1], &t[2])?);
        let (fwd, bwd) = compare_grads(&[x, w, b], |t| linear_gelu_fused(&t[0], &t[1], &t[2]), composed);
        assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
    }
    // Bit for bit the two fused ops it replaces.
    let x = randn(&[5, 7, 24], DType::F32, 0.0, 1.0);
    let (w, b) = (randn(&[40, 24], DType::F32, 0.0, 0.5), randn(&[40], DType::F32, 0.0, 0.5));
    let separate = |t: &[Tensor]| gelu(&linear_fused(&t[0], &t[1], &t[2])?);
    let diff = compare_grads(&[x, w, b], |t| linear_gelu_fused(&t[0], &t[1], &t[2]), separate);
    assert_eq!(diff, (0.0, 0.0));
}

#[test]
fn fused_linear_matches_composed_forward_and_backward() {
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
        let x = randn(&[3, 37, 24], dtype, 0.0, 1.0);
        let w = randn(&[40, 24], dtype, 0.0, 0.5);
        let b = randn(&[40], dtype, 0.0, 0.5);
        let (fwd, bwd) =
            compare_grads(&[x, w, b], |t| linear(&t[0], &t[1], &t[2]), |t| linear_composed(&t[0], &t[1], &t[2]));
        assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
    }
}

#[test]
fn fused_attention_matches_composed_forward_and_backward() {
    // Row 0 left-padded by 3 (fully masked query rows included), row 1 unpadded.
    let mask = vec![[vec![0u8; 3], vec![1u8; 6]].concat(), vec![1u8; 9]];
    let pos = crate::attention::Positions::from_mask(&mask, 9, &Device::Cpu).unwrap();
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
        let qkv = randn(&[2, 9, 3 * 12], dtype, 0.0, 1.5);
        let bias = pos.bias.clone();
        let (fwd, bwd) = compare_grads(
            &[qkv],
            |t| attention_qkv_fused(&t[0], &bias, 3),
            |t| attention_qkv_composed(&t[0], &bias, 3),
        );
        assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
    }
}

/// The cached kernel attends from the newest rows of a larger packed buffer: a prefill
/// (`past = 0`) is the training kernel bit for bit, and later rows (one at a time, after 5
/// cached ones) equal the full attention's rows, left padding included.
#[test]
fn cached_attention_matches_the_full_kernel() {
    let mask = vec![[vec![0u8; 3], vec![1u8; 6]].concat(), vec![1u8; 9]];
    let dev = Device::Cpu;
    for (dtype, tol) in [(DType::F64, 1e-13), (DType::F32, 1e-6)] {
        let qkv = randn(&[2, 9, 3 * 12], dtype, 0.0, 1.5);
        let full = attention_qkv_fused(&qkv, &crate::attention::Positions::from_mask(&mask, 9, &dev).unwrap().bias, 3)
            .unwrap();
        // A buffer with room to spare (capacity 12), filled up to row 9.
        let buf = Tensor::zeros((2, 12, 36), dtype, &dev).unwrap();
        buf.slice_set(&qkv, 1, 0).unwrap();
        let prefill =
            attention_cached(&buf, &crate::attention::Positions::from_mask(&mask, 9, &dev).unwrap().bias, 3, 0, 9)
                .unwrap();
        let bits = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(bits(&prefill), bits(&full), "{dtype:?}: prefill");
        for past in 5..9 {
            let m: Vec<Vec<u8>> = mask.iter().map(|r| r[..past + 1].to_vec()).collect();
            let bias = crate::attention::Positions::from_mask(&m, 1, &dev).unwrap().bias;
            let got = attention_cached(&buf, &bias, 3, past, 1).unwrap();
            close(
                &got.to_dtype(DType::F32).unwrap(),
                &full.narrow(1, past, 1).unwrap().to_dtype(DType::F32).unwrap(),
                tol,
            );
        }
    }
    // A cache too small for the rows asked for is an error, not a read past the end.
    let buf = Tensor::zeros((1, 4, 6), DType::F32, &dev).unwrap();
    let bias = Tensor::zeros((1, 1, 1, 5), DType::F32, &dev).unwrap();
    assert!(attention_cached(&buf, &bias, 1, 4, 1).is_err());
}

#[test]
fn fused_gelu_matches_composed_forward_and_backward() {
    // f32: |x| reaches ~15 where one ulp is ~1e-6, so 1e-5 is a few ulp.
    for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
        // Wide range: exercises the tanh clamp and both tails.
        let x = (randn(&[3, 7, 65], dtype, 0.0, 4.0) + 0.0).unwrap();
        let (fwd, bwd) = compare_grads(&[x], |t| gelu(&t[0]), |t| gelu_composed(&t[0]));
        assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
    }
}

#[test]
fn fast_tanh_is_within_a_few_ulp_of_libm() {
    let mut worst = 0f32;
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4;
        worst = worst.max((fused::fast_tanh(x) - x.tanh()).abs());
    }
    assert!(worst < 5e-7, "max abs error {worst}");
    assert_eq!(fused::fast_tanh(100.0), 1.0);
    assert_eq!(fused::fast_tanh(-100.0), -1.0);
}

#[test]
fn fused_layer_norm_matches_composed_forward_and_backward() {
    for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 2e-5)] {
        // 300 rows: several rayon tasks, so the partial dw/db reduction is exercised.
        let x = randn(&[3, 100, 48], dtype, 0.5, 2.0);
        let w = randn(&[48], dtype, 1.0, 0.3);
        let b = randn(&[48], dtype, 0.0, 0.3);
        let (fwd, bwd) = compare_grads(
            &[x, w, b],
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
            |t| layer_norm_composed(&t[0], &t[1], &t[2], 1e-5),
        );
        assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
    }
}

#[test]
fn fused_softmax_matches_composed_forward_and_backward() {
    for (dtype, tol) in [(DType::F64, 1e-13), (DType::F32, 1e-6)] {
        let x = randn(&[2, 3, 40, 33], dtype, 0.0, 3.0);
        // Masked entries as attention uses them: a fully masked row must stay finite.
        let mask = Tensor::from_vec(
            (0..40 * 33).map(|i| if i % 33 > i / 33 { attention_masked() } else { 0.0 }).collect::<Vec<f64>>(),
            (40, 33),
            &Device::Cpu,
        )
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
        let (fwd, bwd) = compare_grads(
            &[x],
            |t| softmax_last_dim(&t[0].broadcast_add(&mask)?),
            |t| softmax_composed(&t[0].broadcast_add(&mask)?),
        );
        assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
    }
}

fn attention_masked() -> f64 {
    crate::attention::MASKED as f64
}

#[test]
fn cross_entropy_of_uniform_logits_is_log_vocab() {
    let logits = Tensor::zeros((5, 13), DType::F32, &Device::Cpu).unwrap();
    let targets = Tensor::new(&[0u32, 3, 12, 7, 7], &Device::Cpu).unwrap();
    let l = cross_entropy(&logits, &targets).unwrap().to_scalar::<f32>().unwrap();
    assert!((l - 13f32.ln()).abs() < 1e-6, "{l}");
}
