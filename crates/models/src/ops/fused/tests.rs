use super::*;

#[test]
fn fast_exp_is_within_one_ulp_over_the_normal_range() {
    let ulps = |a: f32, exact: f64| ((a as f64 - exact) / ((exact as f32).abs() * f32::EPSILON) as f64).abs();
    let (mut worst, mut at) = (0f64, 0f32);
    // Every 1e-3 over the range, plus each multiple of ln 2 / 2 and its neighbours, where
    // the reduction switches n.
    let mut xs: Vec<f32> = (-87_336..=88_376).map(|i| i as f32 * 1e-3).collect();
    xs.extend((-252..=254).flat_map(|k| {
        let c = k as f32 * std::f32::consts::LN_2 / 2.0;
        [c, f32::from_bits(c.to_bits() + 1), f32::from_bits(c.to_bits().wrapping_sub(1))]
    }));
    for x in xs.into_iter().filter(|x| (-87.3..=88.3).contains(x)) {
        let e = ulps(fast_exp(x), (x as f64).exp());
        if e > worst {
            (worst, at) = (e, x);
        }
    }
    assert!(worst <= 1.0, "worst {worst} ulp at x = {at}");
    assert_eq!((fast_exp(0.0), fast_exp(1.0)), (1.0, std::f32::consts::E));
    // Tails: 0 where libm is subnormal or 0 (every masked score), ∞ past the last decade.
    for x in [f32::NEG_INFINITY, f32::MIN, -1e9, -104.0, -87.4] {
        assert_eq!(fast_exp(x), 0.0, "x = {x}");
    }
    assert_eq!((fast_exp(89.0), fast_exp(f32::INFINITY)), (f32::INFINITY, f32::INFINITY));
    assert!(fast_exp(f32::NAN).is_nan() && Real::exp_(f32::NAN).is_nan());
    assert!(fast_exp(-87.3).is_normal() && ulps(fast_exp(-87.3), (-87.3f32 as f64).exp()) <= 2.0);
}

/// The serial, one-row-at-a-time kernels the grouped ones replace.
fn ln_fwd_serial(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
    let c = w.len();
    let mut y = vec![0f32; x.len()];
    for (y, x) in y.chunks_mut(c).zip(x.chunks(c)) {
        let n = c as f32;
        let mean = x.iter().fold(0.0, |a, &v| a + v) / n;
        let var = x.iter().fold(0.0, |a, &v| a + (v - mean) * (v - mean)) / n;
        let rstd = 1.0 / (var + eps as f32).sqrt();
        for i in 0..c {
            y[i] = (x[i] - mean) * rstd * w[i] + b[i];
        }
    }
    y
}

fn ln_bwd_serial(x: &[f32], w: &[f32], dy: &[f32], eps: f64) -> Vec<f32> {
    let c = w.len();
    let mut out = vec![0f32; x.len() + 2 * c];
    let (dx, dwb) = out.split_at_mut(x.len());
    let (dw, db) = dwb.split_at_mut(c);
    let n = c as f32;
    for ((dx, x), dy) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c)) {
        let mean = x.iter().fold(0.0, |a, &v| a + v) / n;
        let var = x.iter().fold(0.0, |a, &v| a + (v - mean) * (v - mean)) / n;
        let rstd = 1.0 / (var + eps as f32).sqrt();
        let xhat: Vec<f32> = x.iter().map(|&v| (v - mean) * rstd).collect();
        let (mut sg, mut sgx) = (0f32, 0f32);
        for i in 0..c {
            let g = dy[i] * w[i];
            sg += g;
            sgx += g * xhat[i];
            dw[i] += dy[i] * xhat[i];
            db[i] += dy[i];
        }
        for i in 0..c {
            dx[i] = rstd * (dy[i] * w[i] - sg / n - xhat[i] * (sgx / n));
        }
    }
    out
}

fn softmax_serial(row: &mut [f32]) {
    let max = row.iter().copied().fold(row[0], |a, v| if v > a { v } else { a });
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp_();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v *= 1.0 / sum);
}

fn wave(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 * k).sin() * 3.0 + (i % 7) as f32 * 0.1).powi(3)).collect()
}

/// Reducing rows four at a time (with a ragged last group) changes no bit: each row's
/// sums still run in index order, and dw/db still take the rows in order.
#[test]
fn grouped_rows_match_serial_rows_bit_for_bit() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let c = 48;
    // 4096 rows: several rayon tasks (a ragged group each); 7: one full group and a ragged one.
    for rows in [7usize, 4096] {
        let (x, dy) = (wave(rows * c, 0.37), wave(rows * c, 0.11));
        let (w, b) = (wave(c, 0.5), wave(c, 0.9));
        assert_eq!(bits(&ln_fwd(&x, &w, &b, 1e-5, None)), bits(&ln_fwd_serial(&x, &w, &b, 1e-5)), "{rows} rows");
        if rows == 7 {
            // (With several tasks the dw/db partials are added per task, in task order.)
            assert_eq!(bits(&ln_bwd(&x, &w, &dy, 1e-5, None)), bits(&ln_bwd_serial(&x, &w, &dy, 1e-5)));
        }
        // The statistics kept by the forward are those the backward computes.
        let mut stats = vec![0f32; 2 * rows];
        ln_fwd(&x, &w, &b, 1e-5, Some(&mut stats));
        assert_eq!(bits(&ln_bwd(&x, &w, &dy, 1e-5, Some(&stats))), bits(&ln_bwd(&x, &w, &dy, 1e-5, None)));
    }
    // Rows of 32 scores, a causal mask's −1e9 in the upper triangle, 7 rows (4 + 3).
    let (s, rows) = (32, 7);
    let mut p: Vec<f32> = wave(rows * s, 0.23);
    for (r, row) in p.chunks_mut(s).enumerate() {
        row[r + 1..].iter_mut().for_each(|v| *v = -1e9);
    }
    let mut want = p.clone();
    want.chunks_mut(s).for_each(softmax_serial);
    assert_eq!(bits(&softmax_rows(&p, s)), bits(&want));
    for g in p.chunks_mut(ROWS * s) {
        softmax_rows_in_place(g, s);
    }
    assert_eq!(bits(&p), bits(&want));
    // The gradient through it, as the serial `dx = y ⊙ (dy − Σ y ⊙ dy)` row by row.
    let dy = wave(rows * s, 0.71);
    let mut dx_want = vec![0f32; rows * s];
    for ((dx, y), g) in dx_want.chunks_mut(s).zip(p.chunks(s)).zip(dy.chunks(s)) {
        let dot = y.iter().zip(g).fold(0f32, |a, (&y, &g)| a + y * g);
        for i in 0..s {
            dx[i] = y[i] * (g[i] - dot);
        }
    }
    assert_eq!(bits(&softmax_bwd_rows(&p, &dy, s)), bits(&dx_want));
}
