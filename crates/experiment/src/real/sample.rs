//! Sampling from a real policy and measuring it: the real-model counterparts of
//! [`crate::sample`] (which is tied to the world's tiny GPT and its parser).

use crate::sample::EvalPoint;
use mismatch_eval::text::TextReader;
use mismatch_eval::PromptKind;
use mismatch_models::Result;
use mismatch_policy::train::PolicyConfig;
use mismatch_policy::Reward;
use mismatch_policy::{derive_seed, rollout, Policy, Rollout};

/// Rows per generation batch: keeps the KV cache small on a CPU.
const CHUNK: usize = 16;

/// A reward model trained on rendered conversations (`User: …`, [`mismatch_data::Turns::render`])
/// scoring the policy's single-turn prompts: each prompt is rendered as one user turn first, so
/// the RM sees the same text shape it was trained on.
pub struct UserTurn<'a>(pub &'a dyn Reward);

/// `render` of a one-user-turn conversation.
pub fn as_user_turn(p: &str) -> String {
    mismatch_data::Turns::Chat(vec![mismatch_data::Message { role: mismatch_data::Role::User, content: p.to_string() }])
        .render()
}

impl Reward for UserTurn<'_> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>> {
        let rendered: Vec<String> = prompts.iter().map(|p| as_user_turn(p)).collect();
        let r: Vec<&str> = rendered.iter().map(String::as_str).collect();
        let mut out = Vec::with_capacity(r.len());
        for (p, c) in r.chunks(64).zip(completions.chunks(64)) {
            out.extend(self.0.score(p, c)?);
        }
        Ok(out)
    }
}

/// One completion per prompt at temperature 1 (the policy itself), in chunks with seeds
/// derived from `seed`.
pub fn sample(policy: &Policy, prompts: &[&str], max_new: usize, seed: u64) -> Result<Rollout> {
    sample_on(policy, prompts, max_new, seed, 1)
}

/// [`sample`] with its chunks spread over `threads` threads: each chunk's seed depends on its
/// index only, so the samples are the same whatever `threads` is.
pub fn sample_on(policy: &Policy, prompts: &[&str], max_new: usize, seed: u64, threads: usize) -> Result<Rollout> {
    let cfg = PolicyConfig { max_new_tokens: max_new, temperature: 1.0, top_k: None, ..PolicyConfig::default() };
    let chunks: Vec<&[&str]> = prompts.chunks(CHUNK).collect();
    let parts = crate::pipeline::parallel_map(threads, chunks.len(), |i| {
        rollout(policy, &cfg, chunks[i], derive_seed(seed, i as u64, 7))
    })?;
    let mut all = Rollout {
        prompts: vec![],
        prompt_ids: vec![],
        comp_ids: vec![],
        texts: vec![],
        finished: vec![],
        raw_logprob: vec![],
    };
    for r in parts {
        all.prompts.extend(r.prompts);
        all.prompt_ids.extend(r.prompt_ids);
        all.comp_ids.extend(r.comp_ids);
        all.texts.extend(r.texts);
        all.finished.extend(r.finished);
        all.raw_logprob.extend(r.raw_logprob);
    }
    Ok(all)
}

/// k1 sequence KL `Σ_t (log π(y_t) − log π_ref(y_t))` of each sample under `reference`
/// (Gao et al. 2022 measure KL(π ‖ π_start) this way, from the policy's own samples).
pub fn sequence_kl(reference: &Policy, s: &Rollout) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(s.comp_ids.len());
    for (i0, chunk) in s.prompt_ids.chunks(CHUNK).enumerate() {
        let toks = &s.comp_ids[i0 * CHUNK..i0 * CHUNK + chunk.len()];
        let r = reference.logprobs_detached(chunk, toks)?.to_vecs()?;
        for (j, rl) in r.iter().enumerate() {
            out.push(mismatch_eval::kl::sequence_kl_k1_total(s.raw_logprob[i0 * CHUNK + j], rl));
        }
    }
    Ok(out)
}

fn scores(reward: &dyn Reward, prompts: &[&str], comps: &[&str]) -> Result<Vec<f64>> {
    Ok(UserTurn(reward).score(prompts, comps)?.into_iter().map(|x| x as f64).collect())
}

/// The evaluation prompts with their kinds.
pub struct EvalSet {
    pub prompts: Vec<String>,
    pub kinds: Vec<PromptKind>,
    /// Known answers of the prompts (a verifiable task): the `correct` meter is then defined.
    pub answers: Option<Vec<i64>>,
}

/// Samples every evaluation prompt once (fixed `seed`) and measures KL to `reference`, proxy
/// and gold scores and the text meters. `gold` reads the prompts as they are (wrap a reward
/// model in [`UserTurn`]); the proxy is wrapped here.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    policy: &Policy,
    reference: &Policy,
    proxy: &dyn Reward,
    gold: &dyn Reward,
    set: &EvalSet,
    max_new: usize,
    seed: u64,
    step: usize,
) -> Result<EvalPoint> {
    let prompts: Vec<&str> = set.prompts.iter().map(String::as_str).collect();
    let s = sample(policy, &prompts, max_new, seed)?;
    let kl = sequence_kl(reference, &s)?;
    let comps: Vec<&str> = s.texts.iter().map(String::as_str).collect();
    let px = scores(proxy, &prompts, &comps)?;
    let golds = gold.score(&prompts, &comps)?.into_iter().map(f64::from).collect::<Vec<_>>();
    let reader = TextReader::new(set.prompts.iter().map(String::as_str).zip(set.kinds.iter().copied()));
    let (m, per_sample) = match &set.answers {
        Some(a) => mismatch_eval::meters::measure(
            &super::task::Graded::new(&reader, &set.prompts, a),
            &prompts,
            &comps,
            &golds,
        ),
        None => mismatch_eval::meters::measure(&reader, &prompts, &comps, &golds),
    }
    .unwrap_or_else(|e| match e {});
    Ok(EvalPoint::new(step, &kl, px, golds, m, per_sample))
}

/// Best-of-n pool: `n_max` start-policy samples per prompt, with gold scores.
pub fn pool(
    policy: &Policy,
    gold: &dyn Reward,
    prompts: &[&str],
    n_max: usize,
    max_new: usize,
    seed: u64,
) -> Result<crate::bon::Pool> {
    let rep: Vec<&str> = prompts.iter().flat_map(|p| std::iter::repeat_n(*p, n_max)).collect();
    let s = sample(policy, &rep, max_new, seed)?;
    scored_pool(gold, prompts, s.texts.chunks(n_max).map(|c| c.to_vec()).collect())
}

/// A pool of `texts[i]` for `prompts[i]`, scored by gold (which reads the prompts as they are).
fn scored_pool(gold: &dyn Reward, prompts: &[&str], texts: Vec<Vec<String>>) -> Result<crate::bon::Pool> {
    let rep: Vec<&str> = prompts.iter().zip(&texts).flat_map(|(p, t)| std::iter::repeat_n(*p, t.len())).collect();
    let comps: Vec<&str> = texts.iter().flatten().map(String::as_str).collect();
    let mut g = gold.score(&rep, &comps)?.into_iter().map(f64::from);
    let gold = texts.iter().map(|t| g.by_ref().take(t.len()).collect()).collect();
    Ok(crate::bon::Pool { prompts: prompts.iter().map(|s| s.to_string()).collect(), texts, gold })
}

/// The best-of-n pool sampled on an endpoint serving the start policy: one request per prompt
/// with `n = n_max` and a seed derived from `seed`; gold scores it here.
pub fn pool_on(
    client: &mismatch_openai::Client,
    chat: bool,
    gold: &dyn Reward,
    prompts: &[&str],
    n_max: usize,
    max_new: usize,
    seed: u64,
) -> Result<crate::bon::Pool> {
    let indexed: Vec<(usize, &str)> = prompts.iter().copied().enumerate().collect();
    let sampling = |j: usize| mismatch_openai::Sampling {
        chat,
        system: None,
        n: n_max,
        temperature: 1.0,
        top_p: 1.0,
        max_tokens: max_new,
        seed: derive_seed(seed, j as u64, 7),
    };
    let mut texts = Vec::with_capacity(prompts.len());
    for got in client.map(&indexed, |&(j, p)| client.samples(p, &sampling(j))) {
        let got = got.map_err(|e| mismatch_models::Error::Usage(format!("best-of-n pool: {e}")))?;
        texts.push(got.into_iter().map(|s| s.text).collect::<Vec<_>>());
    }
    scored_pool(gold, prompts, texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Reward for Echo {
        fn name(&self) -> String {
            "echo".into()
        }
        fn score(&self, p: &[&str], _: &[&str]) -> Result<Vec<f32>> {
            Ok(p.iter().map(|s| s.len() as f32).collect())
        }
    }

    #[test]
    fn rewards_see_prompts_as_rendered_user_turns() {
        assert_eq!(as_user_turn("Hi?"), "User: Hi?");
        // "User: ab" has 8 characters.
        assert_eq!(UserTurn(&Echo).score(&["ab"], &["x"]).unwrap(), vec![8.0]);
    }
}
