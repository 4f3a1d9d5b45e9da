use candle_core::{DType, Result, Tensor, D};

/// InstructGPT K-wise ranking loss (Ouyang et al. 2022, eq. 1): every one of the
/// `C(K,2)` pairs from a ranking of K completions is a BT comparison, and the pairs of one
/// prompt are weighted `1/C(K,2)` so prompts with many completions do not dominate:
///
/// `L = mean_prompts −1/C(K,2) Σ_{w ranked above l} log σ(r_w − r_l)`
///
/// `rewards`: `[n, K]` with each row ordered best first (column 0 is ranked highest).
pub fn kwise(rewards: &Tensor) -> Result<Tensor> {
    let (_, k) = rewards.dims2()?;
    if k < 2 {
        candle_core::bail!("kwise loss needs at least 2 completions per prompt, got {k}");
    }
    // d[n, i, j] = r_i − r_j; pairs (i < j) are exactly the "i ranked above j" comparisons.
    let d = rewards.unsqueeze(2)?.broadcast_sub(&rewards.unsqueeze(1)?)?;
    let mask: Vec<f32> = (0..k * k).map(|ij| if ij / k < ij % k { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, (1, k, k), rewards.device())?.to_dtype(rewards.dtype())?;
    let per_pair = super::softplus(&d.neg()?)?.broadcast_mul(&mask)?;
    let pairs = (k * (k - 1) / 2) as f64;
    (per_pair.sum((1, 2))? / pairs)?.mean_all()
}

/// Best-of-K softmax loss (Ziegler et al. 2019, "Fine-tuning LMs from human preferences",
/// §2.2, K = 4): the labeller picks the best of K samples and the reward model is trained
/// as a K-way classifier over its rewards:
///
/// `L = mean_i −log( e^{r_{i,b_i}} / Σ_k e^{r_{i,k}} )`
///
/// `rewards`: `[n, K]`; `best`: `[n]` u32 index of the chosen completion in each row.
/// With K = 2 this is exactly the Bradley-Terry loss.
pub fn best_of_k(rewards: &Tensor, best: &Tensor) -> Result<Tensor> {
    let logp = mismatch_models::ops::log_softmax_last_dim(rewards)?;
    let picked = logp.gather(&best.to_dtype(DType::U32)?.unsqueeze(1)?, D::Minus1)?;
    picked.neg()?.mean_all()
}

/// Full Plackett-Luce ranking likelihood (Plackett 1975; Luce 1959): the ranking is a
/// sequence of best-of-the-rest choices,
///
/// `L = mean_i Σ_{k=0}^{K−2} ( log Σ_{j≥k} e^{r_{i,j}} − r_{i,k} )`
///
/// `rewards`: `[n, K]` ordered best first. The last term (a choice among one) is zero.
/// With K = 2 it equals Bradley-Terry; its first term alone is `best_of_k` with best = 0.
pub fn plackett_luce(rewards: &Tensor) -> Result<Tensor> {
    let (_, k) = rewards.dims2()?;
    if k < 2 {
        candle_core::bail!("Plackett-Luce loss needs at least 2 completions per prompt, got {k}");
    }
    let mut total: Option<Tensor> = None;
    for pos in 0..k - 1 {
        let rest = rewards.narrow(1, pos, k - pos)?;
        // logsumexp with the max subtracted (detached: it cancels analytically).
        let m = rest.max_keepdim(1)?.detach();
        let lse = (rest.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + &m)?;
        let term = (lse - rewards.narrow(1, pos, 1)?)?;
        total = Some(match total {
            None => term,
            Some(t) => (t + term)?,
        });
    }
    total.expect("k >= 2").mean_all()
}
