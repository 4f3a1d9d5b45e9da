//! The start policy: a tiny GPT pre-trained on the demonstration corpus ([`crate::corpus`]),
//! written as a normal mismatch-gpt HF checkpoint (`config.json`, `model.safetensors`,
//! `tokenizer.json`, `tokenizer_config.json`) and cached under
//! `$MISMATCH_HOME/worlds/<hash>/policy`, the hash covering the corpus mixture, the prompt
//! split, the model and training config and the seed; a cached policy is reused, a missing one is built in a
//! staging directory and renamed into place (atomic).

use crate::config::{StartConfig, WorldConfig};
use crate::world::World;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use indicatif::ProgressBar;
use mismatch_models::optim::AdamW;
use mismatch_models::{Error, Gpt, GptConfig, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Bump when the training procedure or the kernels' arithmetic changes, so old caches are not
/// reused (2: the polynomial f32 `exp` of `mismatch_models::ops`).
const VERSION: u32 = 2;

/// `$MISMATCH_HOME`, else `<user cache>/mismatch`.
pub fn home() -> Result<PathBuf> {
    Ok(mismatch_models::hub::Hub::from_env()?.root)
}

/// Hash of what the start policy depends on: the corpus mixture, the prompt split, the model
/// and training config, and the seed (not the gold weights or the annotators).
pub fn cache_key(world: &WorldConfig, start: &StartConfig, seed: u64) -> String {
    let w = serde_json::json!({"corpus": world.corpus, "heldout_fraction": world.heldout_fraction, "split_seed": world.split_seed});
    let j = serde_json::json!({"version": VERSION, "world": w, "start": start, "seed": seed});
    let h = Sha256::digest(j.to_string().as_bytes());
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Returns the start-policy directory for (`world`, `cfg`, `seed`), training it if it is not
/// cached; `bar` (length `cfg.steps`) shows the training.
pub fn start_policy(world: &World, cfg: &StartConfig, seed: u64, root: &Path, bar: &ProgressBar) -> Result<PathBuf> {
    let key = cache_key(&world.config, cfg, seed);
    let dir = root.join("worlds").join(&key);
    let policy = dir.join("policy");
    if policy.join("model.safetensors").exists() && policy.join("tokenizer.json").exists() {
        bar.finish_and_clear();
        return Ok(policy);
    }
    let parent = root.join("worlds");
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let stage = tempfile::Builder::new().prefix(".world-").tempdir_in(&parent).map_err(|e| Error::io(&parent, e))?;
    let (gpt, corpus, losses) = train(world, cfg, seed, bar)?;
    let p = stage.path().join("policy");
    gpt.save(&p)?;
    let put = |name: &str, bytes: Vec<u8>| -> Result<()> {
        let f = p.join(name);
        std::fs::write(&f, bytes).map_err(|e| Error::io(&f, e))
    };
    put("tokenizer.json", serde_json::to_vec_pretty(&World::tokenizer_json()).expect("json"))?;
    put("tokenizer_config.json", serde_json::to_vec_pretty(&World::tokenizer_config()).expect("json"))?;
    let lines: String = corpus
        .iter()
        .map(|(i, r)| serde_json::json!({"prompt": world.prompts[*i].text, "completion": r}).to_string() + "\n")
        .collect();
    let meta = serde_json::json!({"key": key, "world": world.config, "start": cfg, "seed": seed, "loss": losses});
    let s = stage.path();
    std::fs::write(s.join("corpus.jsonl"), lines).map_err(|e| Error::io(s, e))?;
    std::fs::write(s.join("meta.json"), serde_json::to_vec_pretty(&meta).expect("json"))
        .map_err(|e| Error::io(s, e))?;
    // Another process may have finished the same world meanwhile: then keep theirs.
    if policy.join("model.safetensors").exists() {
        return Ok(policy);
    }
    mismatch_models::checkpoint::replace_dir(&stage.keep(), &dir)?;
    Ok(policy)
}

/// Pre-trains the start policy: next-token cross-entropy on rows that each begin at a
/// demonstration's `<bos>` and run on through the following demonstrations (packing, so no
/// padding is needed), AdamW, constant learning rate. Returns the model, the corpus and the
/// loss every 50 steps.
pub fn train(
    world: &World,
    cfg: &StartConfig,
    seed: u64,
    bar: &ProgressBar,
) -> Result<(Gpt, Vec<(usize, String)>, Vec<f64>)> {
    let dev = Device::Cpu;
    let tok = tokenizer()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de);
    let (corpus, stream, starts) = packed(world, cfg, &tok, &mut rng)?;
    if starts.is_empty() {
        return Err(Error::Usage(format!("start.demos = {}: {}", cfg.demos, too_short(cfg, &stream))));
    }
    let t = cfg.block_size;
    let gcfg = GptConfig::new(tok.get_vocab_size(true), cfg.n_layer, cfg.n_head, cfg.n_embd, t);
    let varmap = VarMap::new();
    let gpt = Gpt::init(&gcfg, &varmap, seed, DType::F32, &dev)?;
    let mut vars: Vec<(String, candle_core::Var)> =
        varmap.data().lock().expect("varmap").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(vars, cfg.lr, cfg.weight_decay)?;
    let mut losses = Vec::new();
    for step in 0..cfg.steps {
        let (mut x, mut y): (Vec<u32>, Vec<u32>) =
            (Vec::with_capacity(cfg.batch_size * t), Vec::with_capacity(cfg.batch_size * t));
        for _ in 0..cfg.batch_size {
            let s = starts[rng.random_range(0..starts.len())];
            x.extend(&stream[s..s + t]);
            y.extend(&stream[s + 1..s + t + 1]);
        }
        let x = Tensor::from_vec(x, (cfg.batch_size, t), &dev)?;
        let y = Tensor::from_vec(y, (cfg.batch_size, t), &dev)?;
        let loss = gpt.loss(&x, &y)?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            return Err(Error::Usage(format!("start-policy loss is {l} at step {step}: stopping")));
        }
        opt.step(&loss)?;
        if step % 50 == 0 || step + 1 == cfg.steps {
            losses.push(l);
        }
        bar.set_message(format!("loss {l:.3}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((gpt, corpus, losses))
}

/// The demonstration corpus of (`cfg`, the seeded `rng`), packed into one token stream, and the
/// positions a training row of `block_size + 1` tokens can start at.
#[allow(clippy::type_complexity)]
fn packed(
    world: &World,
    cfg: &StartConfig,
    tok: &tokenizers::Tokenizer,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<(usize, String)>, Vec<u32>, Vec<usize>)> {
    let corpus = world.config.corpus.corpus(&world.prompts, &world.train, cfg.demos, rng);
    let mut stream: Vec<u32> = Vec::new();
    let mut starts = Vec::new();
    let eos = tok.token_to_id(crate::lang::EOS).expect("eos");
    for (i, r) in &corpus {
        starts.push(stream.len());
        let ids = tok
            .encode(format!("{} {}", world.prompts[*i].text, r).as_str(), true)
            .map_err(|e| Error::Usage(format!("tokenizing the corpus: {e}")))?;
        stream.extend(ids.get_ids());
        stream.push(eos);
    }
    let t = cfg.block_size;
    let starts: Vec<usize> = starts.into_iter().filter(|&s| s + t < stream.len()).collect();
    Ok((corpus, stream, starts))
}

fn too_short(cfg: &StartConfig, stream: &[u32]) -> String {
    format!(
        "the demonstration corpus has {} tokens, too few for one training row of start.block_size + 1 = {} \
         tokens; raise start.demos or lower start.block_size",
        stream.len(),
        cfg.block_size + 1
    )
}

/// Checks, without training, that the start policy of `seed` has a corpus to train on; the
/// message says what is wrong (for a config error on `start.demos`).
pub fn check_corpus(world: &World, cfg: &StartConfig, seed: u64) -> std::result::Result<(), String> {
    let tok = tokenizer().map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c0de);
    let (_, stream, starts) = packed(world, cfg, &tok, &mut rng).map_err(|e| e.to_string())?;
    if starts.is_empty() {
        return Err(too_short(cfg, &stream));
    }
    Ok(())
}

/// The world's tokenizer as a `tokenizers::Tokenizer`.
pub fn tokenizer() -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_bytes(World::tokenizer_json().to_string())
        .map_err(|e| Error::Usage(format!("building the world tokenizer: {e}")))
}
