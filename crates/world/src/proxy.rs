//! Proxy reward models of the world: a copy of the start policy's GPT as backbone plus a
//! scalar head on the hidden state of the last token (`<eos>`, appended to every completion),
//! trained in-process on annotator-labelled pairs with the Bradley-Terry loss
//! `L = −log σ(r(x, y_c) − r(x, y_r))` (Ouyang et al. 2022; `mismatch_reward::loss::bradley_terry`).
//!
//! Kinds (Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization"; Ramé et al.
//! 2024, "WARM"):
//! - `single`: member 0 alone;
//! - `mean`, `wco`, `uwo`: K members (seeds `seed..seed+K`: head initialisation and data order),
//!   combined by `mismatch_reward::ensemble::aggregate` — mean, min, mean − λ·var;
//! - `warm`: one model whose weights are the element-wise mean of the K members' weights; all
//!   members start from the same pre-trained backbone, the condition WARM needs.
//!
//! Scores are standardised per member on the start policy's samples (the RM's own training
//! responses), `r ← (r − μ)/σ`, so that one KL coefficient means the same for every RM, and
//! the start policy scores about 0, as Gao et al. centre their scores.

use crate::world::World;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarBuilder;
use mismatch_models::optim::AdamW;
use mismatch_models::{CausalLm, Error, Gpt, Positions, Result};
use mismatch_reward::ensemble::{aggregate, Aggregate};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// One labelled comparison: the annotators preferred `chosen`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelledPair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmTrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

impl Default for RmTrainConfig {
    fn default() -> Self {
        Self { epochs: 2, batch_size: 32, lr: 3e-4, weight_decay: 0.0 }
    }
}

/// One reward model: backbone + head, plus its standardisation.
pub struct Member {
    gpt: Gpt,
    w: Tensor,
    b: Tensor,
    shift: f32,
    scale: f32,
}

/// Encodes (prompt, completion) rows left-padded so that every row ends in its last token.
fn encode_rows(
    tok: &tokenizers::Tokenizer,
    prompts: &[&str],
    comps: &[&str],
    max_len: usize,
) -> Result<(Tensor, Positions)> {
    let enc = |s: String| -> Result<Vec<u32>> {
        Ok(tok.encode(s.as_str(), true).map_err(|e| Error::Usage(format!("tokenizing: {e}")))?.get_ids().to_vec())
    };
    let mut rows = Vec::with_capacity(prompts.len());
    for (p, c) in prompts.iter().zip(comps) {
        let mut ids = enc(format!("{p} {c} {}", crate::lang::EOS))?;
        if ids.len() > max_len {
            // Keep the end: the completion is what differs.
            ids.drain(1..ids.len() - max_len + 1);
        }
        rows.push(ids);
    }
    let t = rows.iter().map(Vec::len).max().unwrap_or(1);
    let mut flat = Vec::with_capacity(rows.len() * t);
    let mut mask = Vec::with_capacity(rows.len());
    for r in &rows {
        flat.extend(std::iter::repeat_n(0u32, t - r.len()).chain(r.iter().copied()));
        mask.push(std::iter::repeat_n(0u8, t - r.len()).chain(std::iter::repeat_n(1u8, r.len())).collect());
    }
    let dev = Device::Cpu;
    Ok((Tensor::from_vec(flat, (rows.len(), t), &dev)?, Positions::from_mask(&mask, t, &dev)?))
}

impl Member {
    /// `[b]` raw rewards (before standardisation), differentiable.
    fn raw(&self, tok: &tokenizers::Tokenizer, prompts: &[&str], comps: &[&str]) -> Result<Tensor> {
        let (ids, pos) = encode_rows(tok, prompts, comps, self.gpt.max_seq_len())?;
        let h = self.gpt.hidden(&ids, &pos, None)?;
        let t = h.dim(1)?;
        let last = h.narrow(1, t - 1, 1)?.squeeze(1)?;
        Ok(last.broadcast_mul(&self.w)?.sum(D::Minus1)?.broadcast_add(&self.b)?)
    }

    fn score(&self, tok: &tokenizers::Tokenizer, prompts: &[&str], comps: &[&str]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(prompts.len());
        for (p, c) in prompts.chunks(128).zip(comps.chunks(128)) {
            let r = self.raw(tok, p, c)?.detach().to_vec1::<f32>()?;
            out.extend(r.into_iter().map(|x| (x - self.shift) / self.scale));
        }
        Ok(out)
    }

    fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(Path::new("."), e))?;
        self.gpt.save(dir.path())?;
        let mut t = mismatch_models::checkpoint::load_safetensors(&dir.path().join("model.safetensors"), &Device::Cpu)?;
        t.insert("score.weight".into(), self.w.copy()?);
        t.insert("score.bias".into(), self.b.copy()?);
        Ok(t)
    }
}

/// Trains one member from `backbone` (a start-policy directory) on `pairs`.
pub fn train_member(
    backbone: &Path,
    pairs: &[LabelledPair],
    cfg: &RmTrainConfig,
    seed: u64,
    standardise_on: &[(String, String)],
) -> Result<(Member, Vec<f64>)> {
    let tok = crate::start::tokenizer()?;
    let dev = Device::Cpu;
    let (gpt, varmap) = Gpt::load(backbone, &dev, true)?;
    let varmap = varmap.expect("trainable");
    let c = gpt.config().n_embd;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xa11ce);
    let w0: Vec<f32> = (0..c).map(|_| (rng.random::<f32>() - 0.5) * 0.04).collect();
    let w = Var::from_tensor(&Tensor::from_vec(w0, c, &dev)?)?;
    let b = Var::from_tensor(&Tensor::zeros(1, DType::F32, &dev)?)?;
    let mut vars: Vec<(String, Var)> =
        varmap.data().lock().expect("varmap").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.push(("score.weight".into(), w.clone()));
    vars.push(("score.bias".into(), b.clone()));
    let mut opt = AdamW::new(vars, cfg.lr, cfg.weight_decay)?;
    let mut m = Member { gpt, w: w.as_tensor().clone(), b: b.as_tensor().clone(), shift: 0.0, scale: 1.0 };
    let mut losses = Vec::new();
    for _ in 0..cfg.epochs {
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        for batch in order.chunks(cfg.batch_size) {
            let prompts: Vec<&str> = batch.iter().flat_map(|&i| [pairs[i].prompt.as_str(); 2]).collect();
            let comps: Vec<&str> =
                batch.iter().flat_map(|&i| [pairs[i].chosen.as_str(), pairs[i].rejected.as_str()]).collect();
            let r = m.raw(&tok, &prompts, &comps)?.reshape((batch.len(), 2))?;
            let (rc, rr) = (r.narrow(1, 0, 1)?.squeeze(1)?, r.narrow(1, 1, 1)?.squeeze(1)?);
            let loss = mismatch_reward::loss::bradley_terry(&rc, &rr)?;
            let l = loss.to_scalar::<f32>()? as f64;
            if !l.is_finite() {
                return Err(Error::Usage(format!("reward-model loss is {l}: stopping")));
            }
            opt.step(&loss)?;
            sum += l * batch.len() as f64;
        }
        losses.push(sum / pairs.len().max(1) as f64);
    }
    m.w = w.as_tensor().clone();
    m.b = b.as_tensor().clone();
    standardise(&mut m, &tok, standardise_on)?;
    Ok((m, losses))
}

fn standardise(m: &mut Member, tok: &tokenizers::Tokenizer, on: &[(String, String)]) -> Result<()> {
    (m.shift, m.scale) = (0.0, 1.0);
    if on.len() < 2 {
        return Ok(());
    }
    let p: Vec<&str> = on.iter().map(|x| x.0.as_str()).collect();
    let c: Vec<&str> = on.iter().map(|x| x.1.as_str()).collect();
    let s = m.score(tok, &p, &c)?;
    let n = s.len() as f64;
    let mu = s.iter().map(|&x| x as f64).sum::<f64>() / n;
    let sd = (s.iter().map(|&x| (x as f64 - mu).powi(2)).sum::<f64>() / (n - 1.0)).sqrt().max(1e-6);
    (m.shift, m.scale) = (mu as f32, sd as f32);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RmKind {
    Single,
    Mean,
    Wco,
    Uwo,
    Warm,
}

impl RmKind {
    pub fn name(self) -> &'static str {
        match self {
            RmKind::Single => "single",
            RmKind::Mean => "mean",
            RmKind::Wco => "wco",
            RmKind::Uwo => "uwo",
            RmKind::Warm => "warm",
        }
    }
}

/// A proxy reward: one or several members and how to combine them.
pub struct Proxy {
    pub kind: RmKind,
    pub label: String,
    members: Vec<std::sync::Arc<Member>>,
    how: Aggregate,
    tok: tokenizers::Tokenizer,
}

impl Proxy {
    pub fn member_scores(&self, prompts: &[&str], comps: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.members.iter().map(|m| m.score(&self.tok, prompts, comps)).collect()
    }
}

impl mismatch_policy::Reward for Proxy {
    fn name(&self) -> String {
        format!("proxy:{}", self.label)
    }
    fn score(&self, prompts: &[&str], comps: &[&str]) -> Result<Vec<f32>> {
        if prompts.len() != comps.len() {
            return Err(Error::Usage(format!("{} prompts but {} completions", prompts.len(), comps.len())));
        }
        if prompts.is_empty() {
            return Ok(vec![]);
        }
        let per = self.member_scores(prompts, comps)?;
        if per.len() == 1 {
            return Ok(per.into_iter().next().expect("one member"));
        }
        Ok(aggregate(&Tensor::new(per, &Device::Cpu)?, self.how)?.to_vec1::<f32>()?)
    }
}

/// A trained ensemble, from which every [`RmKind`] is built.
pub struct Ensemble {
    pub members: Vec<std::sync::Arc<Member>>,
    pub warm: std::sync::Arc<Member>,
    pub losses: Vec<Vec<f64>>,
}

/// Trains `k` members (seeds `seed + i`) and their WARM average.
pub fn train_ensemble(
    backbone: &Path,
    pairs: &[LabelledPair],
    cfg: &RmTrainConfig,
    k: usize,
    seed: u64,
    standardise_on: &[(String, String)],
    bar: &indicatif::ProgressBar,
) -> Result<Ensemble> {
    let mut members = Vec::new();
    let mut losses = Vec::new();
    for i in 0..k.max(1) {
        let (m, l) = train_member(backbone, pairs, cfg, seed + i as u64, standardise_on)?;
        members.push(std::sync::Arc::new(m));
        losses.push(l);
        bar.inc(1);
    }
    // WARM: element-wise mean of every weight.
    let mut sum: HashMap<String, Tensor> = HashMap::new();
    for m in &members {
        for (k, v) in m.tensors()? {
            let s = match sum.remove(&k) {
                Some(acc) => (acc + v)?,
                None => v,
            };
            sum.insert(k, s);
        }
    }
    let kf = members.len() as f64;
    let mut avg: HashMap<String, Tensor> = HashMap::new();
    for (n, t) in sum {
        avg.insert(n, (t / kf)?);
    }
    let w = avg.remove("score.weight").expect("head");
    let b = avg.remove("score.bias").expect("head");
    let cfg_gpt = members[0].gpt.config().clone();
    let gpt = Gpt::new(&cfg_gpt, VarBuilder::from_tensors(avg, DType::F32, &Device::Cpu))?;
    let mut warm = Member { gpt, w, b, shift: 0.0, scale: 1.0 };
    standardise(&mut warm, &crate::start::tokenizer()?, standardise_on)?;
    Ok(Ensemble { members, warm: std::sync::Arc::new(warm), losses })
}

impl Ensemble {
    pub fn proxy(&self, kind: RmKind, uwo_lambda: f64, label: &str) -> Result<Proxy> {
        let (members, how) = match kind {
            RmKind::Single => (vec![self.members[0].clone()], Aggregate::Mean),
            RmKind::Mean => (self.members.clone(), Aggregate::Mean),
            RmKind::Wco => (self.members.clone(), Aggregate::WorstCase),
            RmKind::Uwo => (self.members.clone(), Aggregate::UncertaintyWeighted { lambda: uwo_lambda }),
            RmKind::Warm => (vec![self.warm.clone()], Aggregate::Mean),
        };
        Ok(Proxy { kind, label: label.to_string(), members, how, tok: crate::start::tokenizer()? })
    }
}

/// Labelled pairs: for each draw, a prompt from `prompts` (kinds balanced), two samples of the
/// start policy, and the annotators' choice. Identical responses are skipped.
pub fn label_pairs(world: &World, samples: &[(usize, String, String)], seed: u64) -> Vec<LabelledPair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    samples
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(i, a, b)| {
            let p = &world.prompts[*i];
            let a_wins = world.annotators.choose(&world.gold, p, a, b, &mut rng);
            let (c, r) = if a_wins { (a, b) } else { (b, a) };
            LabelledPair { prompt: p.text.clone(), chosen: c.clone(), rejected: r.clone() }
        })
        .collect()
}
