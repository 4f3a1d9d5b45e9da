//! `mismatch generate`: sample completions from any causal LM, with per-token log-probs.

use anyhow::{bail, Result};
use clap::Args;
use mismatch_models::{generate, load_causal_lm, ChatMessage, SamplingParams};
use mismatch_openai::{Client, EndpointArgs, Sampling};
use mismatch_policy::guided::{guided_generate, Guide, GuideParams, Prompts};

#[derive(Args)]
pub struct GenerateArgs {
    /// Short name (smollm2-135m), a .gguf file, an HF checkpoint directory, or an
    /// OpenAI-compatible endpoint `openai:URL#MODEL` (key from MISMATCH_API_KEY / OPENAI_API_KEY).
    #[arg(long)]
    model: String,
    /// Prompt text; repeat the flag for a batch (rows are left-padded and decoded together).
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Wrap each prompt as a user turn in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Optional system message for --chat (default: whatever the template supplies).
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// 0 = greedy decoding.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object per prompt (text, tokens, log-probs) instead of plain text.
    #[arg(long)]
    json: bool,
    /// `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    endpoint: EndpointArgs,
    #[command(flatten)]
    guide: GuideArgs,
}

/// Value-guided decoding (`mismatch_policy::guided`).
#[derive(Args)]
pub struct GuideArgs {
    /// Steer decoding with a scorer of (prompt, reply so far): `rm:DIR`, `value:DIR` (a PPO
    /// checkpoint's value head) or a rule reward (`rule:length`, ...).
    #[arg(long)]
    guide: Option<String>,
    /// `rad`: reward-augmented decoding (Deng & Raffel 2023), every token chosen among the top-k
    /// by logit + β·reward; `block`: blockwise controlled decoding (Mudgal et al. 2024), the
    /// best-scored of K sampled blocks, block after block.
    #[arg(long, value_enum, default_value = "rad", requires = "guide")]
    guide_method: GuideMethod,
    /// RAD's β: weight of the reward (per reward unit) against the logits.
    #[arg(long, default_value_t = 1.0, requires = "guide")]
    guide_beta: f64,
    /// RAD's candidates per step (scored: k reward calls per token).
    #[arg(long, default_value_t = 20, requires = "guide")]
    guide_top_k: usize,
    /// Blockwise: tokens per block.
    #[arg(long, default_value_t = 8, requires = "guide")]
    guide_block: usize,
    /// Blockwise: blocks sampled per step (K).
    #[arg(long, default_value_t = 4, requires = "guide")]
    guide_candidates: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GuideMethod {
    Rad,
    Block,
}

impl GuideArgs {
    fn guide(&self) -> Guide {
        match self.guide_method {
            GuideMethod::Rad => Guide::Rad { top_k: self.guide_top_k, beta: self.guide_beta },
            GuideMethod::Block => Guide::Block { block: self.guide_block, candidates: self.guide_candidates },
        }
    }
}

pub fn run(a: GenerateArgs) -> Result<()> {
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!("--temperature must be a finite number ≥ 0 (got {})", a.temperature);
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1] (got {})", a.top_p);
    }
    if let Some(client) = a.endpoint.client(&a.model) {
        if a.guide.guide.is_some() {
            bail!("--guide steers a local model's next-token choices; an openai: endpoint does not expose them");
        }
        return remote(&client?, &a);
    }
    let lm = load_causal_lm(&a.model, &mismatch_models::device(&a.device)?, false)?;
    let mut prompts = Vec::with_capacity(a.prompt.len());
    for p in &a.prompt {
        let text = if a.chat {
            let mut msgs = Vec::new();
            if let Some(s) = &a.system {
                msgs.push(ChatMessage::new("system", s));
            }
            msgs.push(ChatMessage::new("user", p));
            lm.tok.apply_chat_template(&msgs, true)?
        } else {
            p.clone()
        };
        // The chat template already carries its special tokens.
        prompts.push(lm.tok.encode(&text, !a.chat)?);
    }
    let params = SamplingParams {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_k: Some(a.top_k).filter(|&k| k > 0),
        top_p: Some(a.top_p).filter(|&p| p < 1.0),
        stop_tokens: lm.tok.eos_ids.clone(),
        seed: a.seed,
    };
    if let Some(spec) = &a.guide.guide {
        return guided(&lm, spec, &a, &prompts);
    }
    let g = generate(&lm.model, &prompts, &params, lm.tok.pad_id)?;
    for i in 0..prompts.len() {
        let text = lm.tok.decode(&g.tokens[i], true)?;
        if a.json {
            let row = serde_json::json!({
                "prompt": a.prompt[i],
                "completion": text,
                "tokens": g.tokens[i],
                "logprobs": g.raw_logprobs[i],
                "sampling_logprobs": g.sampling_logprobs[i],
                "finished": g.finished[i],
            });
            println!("{row}");
        } else {
            println!("{text}");
        }
    }
    Ok(())
}

/// Guided decoding of the encoded `prompts`; the scorer reads each prompt as given on the
/// command line and the reply so far.
fn guided(lm: &mismatch_models::LoadedLm, spec: &str, a: &GenerateArgs, prompts: &[Vec<u32>]) -> Result<()> {
    if a.top_k > 0 || a.top_p < 1.0 {
        bail!("--top-k and --top-p do not combine with --guide (RAD has its own --guide-top-k)");
    }
    let reward = mismatch_policy::parse_reward(spec)?;
    let texts: Vec<&str> = a.prompt.iter().map(String::as_str).collect();
    let p = GuideParams {
        guide: a.guide.guide(),
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        stop_tokens: lm.tok.eos_ids.clone(),
        seed: a.seed,
    };
    let decode = |ids: &[u32]| lm.tok.decode(ids, true);
    let g = guided_generate(
        &lm.model,
        &Prompts { ids: prompts, texts: &texts },
        &decode,
        reward.as_ref(),
        &p,
        lm.tok.pad_id,
    )?;
    let replies: Vec<String> =
        g.tokens.iter().map(|t| lm.tok.decode(t, true)).collect::<mismatch_models::Result<_>>()?;
    let comps: Vec<&str> = replies.iter().map(String::as_str).collect();
    let scores = reward.score(&texts, &comps)?;
    for i in 0..prompts.len() {
        if a.json {
            let kl = if g.kl_is_bound { "kl_bound" } else { "kl" };
            let row = serde_json::json!({
                "prompt": a.prompt[i],
                "completion": replies[i],
                "tokens": g.tokens[i],
                "logprobs": g.raw_logprobs[i],
                "finished": g.finished[i],
                "guide_score": scores[i],
                kl: g.kl[i],
            });
            println!("{row}");
        } else {
            println!("{}", replies[i]);
        }
    }
    eprintln!("{}: {} scorer calls", reward.name(), g.reward_calls);
    Ok(())
}

/// The same command against an endpoint: one request per prompt (so a seed gives each prompt
/// what it gets alone), chat or text completions, log-probs as the endpoint reports them.
fn remote(client: &Client, a: &GenerateArgs) -> Result<()> {
    if a.top_k > 0 {
        bail!("--top-k is not part of the OpenAI API; leave it at 0 with an openai: model");
    }
    let sampling = Sampling {
        chat: a.chat,
        system: a.system.clone(),
        n: 1,
        temperature: a.temperature,
        top_p: a.top_p,
        max_tokens: a.max_new_tokens,
        seed: a.seed,
    };
    let rows = client.map(&a.prompt, |p| client.samples(p, &sampling));
    for (p, row) in a.prompt.iter().zip(rows) {
        let s = row?.remove(0);
        if a.json {
            println!(
                "{}",
                serde_json::json!({"prompt": p, "completion": s.text, "logprobs": s.logprobs, "finished": s.finished})
            );
        } else {
            println!("{}", s.text);
        }
    }
    let (sent, cached) = client.counts();
    eprintln!("{}: {sent} requests sent, {cached} answered from the cache", client.endpoint.base);
    Ok(())
}

/// How [`complete`] samples.
pub struct ChatSampling {
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub seed: u64,
    /// Conversations decoded together by a local model.
    pub batch: usize,
}

/// The assistant's next reply to each conversation (messages through the chat template, ending
/// with a user turn), from a local model (in batches) or an `openai:` endpoint (in parallel,
/// cached), with a progress bar; replies in conversation order.
pub fn complete(
    spec: &str,
    endpoint: &EndpointArgs,
    conversations: &[Vec<ChatMessage>],
    s: &ChatSampling,
) -> Result<Vec<String>> {
    let bar = indicatif::ProgressBar::new(conversations.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("generating {bar:30} {pos}/{len} replies, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    if let Some(client) = endpoint.client(spec) {
        let client = client?;
        let rows = client.map(conversations, |conv| {
            let req = mismatch_openai::api::ChatRequest {
                model: client.endpoint.model.clone(),
                messages: conv.iter().map(|m| mismatch_openai::api::Message::new(&m.role, &m.content)).collect(),
                params: mismatch_openai::api::Params {
                    temperature: Some(s.temperature),
                    max_tokens: Some(s.max_new_tokens),
                    seed: Some(s.seed),
                    ..Default::default()
                },
                ..Default::default()
            };
            let reply = client.chat(&req).map(|r| r.choices.into_iter().next().map(|c| c.message.content.text()));
            bar.inc(1);
            reply
        });
        bar.finish_and_clear();
        let base = &client.endpoint.base;
        return rows
            .into_iter()
            .map(|r| match r? {
                Some(Ok(text)) => Ok(text),
                Some(Err(e)) => bail!("{base}: a reply that is not text: {e}"),
                None => bail!("{base}: a reply without choices"),
            })
            .collect();
    }
    let lm = load_causal_lm(spec, &candle_core::Device::Cpu, false)?;
    let mut out = Vec::with_capacity(conversations.len());
    for (k, chunk) in conversations.chunks(s.batch.max(1)).enumerate() {
        let mut ids = Vec::with_capacity(chunk.len());
        for conv in chunk {
            ids.push(lm.tok.encode(&lm.tok.apply_chat_template(conv, true)?, false)?);
        }
        let params = SamplingParams {
            max_new_tokens: s.max_new_tokens,
            temperature: s.temperature,
            top_k: None,
            top_p: None,
            stop_tokens: lm.tok.eos_ids.clone(),
            // One stream per batch, so a seed fixes every reply whatever the batch count.
            seed: s.seed.wrapping_add(k as u64),
        };
        let g = generate(&lm.model, &ids, &params, lm.tok.pad_id)?;
        for t in &g.tokens {
            out.push(lm.tok.decode(t, true)?);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}
