//! A judge as gold: the evaluation signal of the real setting when `real.judge` names an LLM
//! judge instead of training a gold RM.
//!
//! The gold score of a completion `y` to prompt `x` is the judge's **swap-averaged preference
//! for `y` over the start policy's completion `y₀(x)`** to the same prompt, in [0, 1]
//! (`mismatch_judge::pairwise`: both orders, un-swapped and averaged), so the mean gold of an
//! evaluation is the policy's win rate against the start policy, ties as half — the quantity
//! AlpacaEval reports against its baseline (Dubois et al. 2024), here with the start policy as
//! the baseline. With a label template (`alpaca_eval_clf_gpt4_turbo`) it is AlpacaEval 2's
//! weighted preference, P(label of y) / (P(m) + P(M)) from the first token's log-probs, averaged
//! over both orders; with a verdict template (`pair-v2`) the verdicts' preference (A → 1, B → 0,
//! tie → ½ for the side in position A).
//!
//! `y₀(x)` is the start policy's sample at the evaluation seed, so the start policy's own
//! evaluation scores exactly ½: a completion equal to its reference is a tie by definition and
//! is not sent to the judge. A pair whose verdict cannot be read in either order scores ½ and is
//! counted ([`JudgeCounts`]), never dropped silently.
//!
//! On the held-out human pairs the judge's preference for the chosen response stands in for the
//! gold RM's score difference, so `annotators_acc_gold` is the judge's agreement with the human
//! labels there, and every proxy's `acc_gold` its agreement with the judge.

use mismatch_judge::{judge_pairs, Backend, JudgeOptions, PairItem, PairJudgement, Template, Verdict};
use mismatch_models::{Error, Result};
use mismatch_policy::Reward;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// What a judge did: how many pairs it saw and how reliably it read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeCounts {
    /// Pairs judged in both orders.
    pub judged: usize,
    /// Completions equal to their reference: ties without a call.
    pub identical: usize,
    /// Pairs scored again from an earlier judgement of the same prompt and completion (the
    /// best-of-n gold curve re-reads the pool; identical samples recur): no call.
    #[serde(default)]
    pub repeated: usize,
    /// Verdicts that could not be read, with answer 1 (the reference) in position A, and swapped.
    pub unparsed_1_first: usize,
    pub unparsed_2_first: usize,
    /// Pairs with both verdicts read, and of those the position-consistent ones.
    pub both: usize,
    pub consistent: usize,
    /// Read verdicts, and of those the ones naming position A.
    pub verdicts: usize,
    pub picks_a: usize,
    /// Pairs scored by the log-prob (weighted) preference.
    pub weighted: usize,
    /// Pairs whose preference could be read neither from log-probs nor from both verdicts:
    /// scored ½.
    pub unscored: usize,
}

impl JudgeCounts {
    fn add(&mut self, j: &PairJudgement) {
        self.judged += 1;
        self.unparsed_1_first += j.verdict_1_first.is_unparsed() as usize;
        self.unparsed_2_first += j.verdict_2_first.is_unparsed() as usize;
        if let Some(c) = j.consistent {
            self.both += 1;
            self.consistent += c as usize;
        }
        for v in [&j.verdict_1_first, &j.verdict_2_first] {
            if !v.is_unparsed() {
                self.verdicts += 1;
                self.picks_a += (*v == Verdict::A) as usize;
            }
        }
        self.weighted += j.weighted_preference.is_some() as usize;
        self.unscored += (j.weighted_preference.is_none() && j.preference.is_none()) as usize;
    }

    pub fn merge(&mut self, o: &JudgeCounts) {
        self.judged += o.judged;
        self.identical += o.identical;
        self.repeated += o.repeated;
        self.unparsed_1_first += o.unparsed_1_first;
        self.unparsed_2_first += o.unparsed_2_first;
        self.both += o.both;
        self.consistent += o.consistent;
        self.verdicts += o.verdicts;
        self.picks_a += o.picks_a;
        self.weighted += o.weighted;
        self.unscored += o.unscored;
    }
}

/// One seed's record of its judge, in `seed.json` and the summary's `judge` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeRecord {
    /// The judge's spec and template.
    pub name: String,
    /// Policy completions against the start policy's (every evaluation and the best-of-n pool).
    pub vs_start: JudgeCounts,
    /// The held-out human pairs (chosen against rejected); the same in every seed.
    pub human_pairs: JudgeCounts,
    /// Of those pairs, the ones where the judge prefers the human-chosen response (> ½), and
    /// how many there are: its agreement with the humans, with a CI over pairs.
    pub agrees_with_humans: usize,
    pub held_out_pairs: usize,
}

/// The judge of a run: a backend and a pairwise template.
pub struct Judge {
    backend: Box<dyn Backend>,
    template: Template,
    seed: u64,
}

impl Judge {
    pub fn new(backend: Box<dyn Backend>, template: Template, seed: u64) -> Self {
        Judge { backend, template, seed }
    }

    pub fn name(&self) -> String {
        format!("{} ({})", self.backend.name(), self.template.name)
    }

    /// The swap-averaged preference for `answers[i]` over `references[i]` to `questions[i]`
    /// (module doc), with the counts of what was judged added to `counts`.
    pub fn prefer(
        &self,
        questions: &[&str],
        answers: &[&str],
        references: &[&str],
        counts: &mut JudgeCounts,
    ) -> Result<Vec<f64>> {
        let mut out = vec![0.5; questions.len()];
        let mut items = Vec::new();
        let mut at = Vec::new();
        for (i, ((q, a), r)) in questions.iter().zip(answers).zip(references).enumerate() {
            if a == r {
                counts.identical += 1;
                continue;
            }
            items.push(PairItem {
                id: i.to_string(),
                question: q.to_string(),
                answer_1: r.to_string(),
                answer_2: a.to_string(),
                ref_answer: None,
            });
            at.push(i);
        }
        if items.is_empty() {
            return Ok(out);
        }
        let opts = JudgeOptions { max_tokens: None, seed: self.seed };
        let report = judge_pairs(self.backend.as_ref(), &self.template, &items, &opts)
            .map_err(|e| Error::Usage(format!("judge {}: {e}", self.name())))?;
        for (i, j) in at.into_iter().zip(&report.items) {
            counts.add(j);
            if let Some(p) = j.weighted_preference.or(j.preference) {
                out[i] = p;
            }
        }
        Ok(out)
    }
}

/// The judge against one seed's start-policy references, as a [`Reward`] (gold for best-of-n
/// and every evaluation of the seed). Prompts are the policy's raw prompts.
pub struct AgainstStart<'a> {
    pub judge: &'a Judge,
    /// Prompt → the start policy's completion at the evaluation seed.
    pub references: HashMap<String, String>,
    pub counts: Mutex<JudgeCounts>,
    /// (prompt, completion) → preference: a pair is judged once per seed.
    pub seen: Mutex<HashMap<(String, String), f64>>,
}

impl<'a> AgainstStart<'a> {
    pub fn new(judge: &'a Judge, references: HashMap<String, String>) -> Self {
        AgainstStart { judge, references, counts: Mutex::default(), seen: Mutex::default() }
    }
}

impl Reward for AgainstStart<'_> {
    fn name(&self) -> String {
        format!("judge {} vs the start policy", self.judge.name())
    }

    fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>> {
        let refs = prompts
            .iter()
            .map(|p| {
                self.references
                    .get(*p)
                    .map(String::as_str)
                    .ok_or_else(|| Error::Usage(format!("judge gold: no start-policy reference for the prompt {p:?}")))
            })
            .collect::<Result<Vec<&str>>>()?;
        // Each pair not judged before in this seed (once, however often it recurs) goes to the judge.
        let keys: Vec<(String, String)> =
            prompts.iter().zip(completions).map(|(p, c)| (p.to_string(), c.to_string())).collect();
        let mut todo: Vec<usize> = Vec::new();
        {
            let seen = self.seen.lock().expect("judge cache");
            let mut asked = std::collections::HashSet::new();
            todo.extend((0..keys.len()).filter(|&i| !seen.contains_key(&keys[i]) && asked.insert(&keys[i])));
        }
        fn pick<'s>(xs: &[&'s str], at: &[usize]) -> Vec<&'s str> {
            at.iter().map(|&i| xs[i]).collect()
        }
        let mut counts = JudgeCounts { repeated: keys.len() - todo.len(), ..JudgeCounts::default() };
        let (q, a, r) = (pick(prompts, &todo), pick(completions, &todo), pick(&refs, &todo));
        let got = self.judge.prefer(&q, &a, &r, &mut counts)?;
        let mut seen = self.seen.lock().expect("judge cache");
        for (&i, x) in todo.iter().zip(got) {
            seen.insert(keys[i].clone(), x);
        }
        let out: Vec<f32> = keys.iter().map(|k| seen[k] as f32).collect();
        self.counts.lock().expect("judge counts").merge(&counts);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mismatch_judge::{JudgeReply, JudgeRequest};

    /// Names position A whenever the first answer shown is longer, else B; never ties.
    struct Longer;
    impl Backend for Longer {
        fn name(&self) -> &str {
            "longer"
        }
        fn complete(&self, requests: &[JudgeRequest]) -> mismatch_judge::Result<Vec<JudgeReply>> {
            Ok(requests
                .iter()
                .map(|r| {
                    let text = &r.messages.last().unwrap().content;
                    let a =
                        between(text, "[The Start of Assistant A's Answer]\n", "\n[The End of Assistant A's Answer]");
                    let b =
                        between(text, "[The Start of Assistant B's Answer]\n", "\n[The End of Assistant B's Answer]");
                    let v = if a.len() > b.len() { "[[A]]" } else { "[[B]]" };
                    JudgeReply { text: v.into(), first_token: vec![], candidates: vec![] }
                })
                .collect())
        }
    }

    fn between<'t>(t: &'t str, a: &str, b: &str) -> &'t str {
        let s = t.find(a).unwrap() + a.len();
        &t[s..s + t[s..].find(b).unwrap()]
    }

    #[test]
    fn preference_is_for_the_answer_over_its_reference_and_identical_pairs_are_ties() {
        let judge = Judge::new(Box::new(Longer), Template::builtin("pair-v2").unwrap(), 0);
        let mut c = JudgeCounts::default();
        let p = judge
            .prefer(&["q1", "q2", "q3"], &["a much longer answer", "x", "same"], &["short", "longer", "same"], &mut c)
            .unwrap();
        // Longer answer wins in both orders → 1; shorter loses in both → 0; identical → ½ without a call.
        assert_eq!(p, vec![1.0, 0.0, 0.5]);
        assert_eq!(
            c,
            JudgeCounts {
                judged: 2,
                identical: 1,
                both: 2,
                consistent: 2,
                verdicts: 4,
                picks_a: 2,
                ..Default::default()
            }
        );
        assert_eq!(c.unscored, 0);
    }

    #[test]
    fn against_start_needs_a_reference_for_every_prompt() {
        let judge = Judge::new(Box::new(Longer), Template::builtin("pair-v2").unwrap(), 0);
        let g = AgainstStart::new(&judge, HashMap::from([("q".to_string(), "ref".to_string())]));
        assert_eq!(g.score(&["q"], &["a longer one"]).unwrap(), vec![1.0]);
        assert_eq!(g.counts.lock().unwrap().judged, 1);
        // The same pair again, twice in one call and once more: judged once, read back after.
        assert_eq!(g.score(&["q", "q", "q"], &["a longer one", "x", "x"]).unwrap(), vec![1.0, 0.0, 0.0]);
        let c = *g.counts.lock().unwrap();
        assert_eq!((c.judged, c.repeated), (2, 2));
        let e = g.score(&["other"], &["x"]).unwrap_err().to_string();
        assert!(e.contains("no start-policy reference"), "{e}");
    }
}
