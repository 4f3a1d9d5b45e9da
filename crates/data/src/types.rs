//! The one normalised in-memory representation every reader produces.
//!
//! Whatever the source format, a file becomes a [`Dataset`] holding one of three kinds of record:
//! - [`Preference`]: a prompt and a chosen/rejected pair (TRL, HH-RLHF, OpenAI DPO, ShareGPT),
//! - [`Ranking`]: a prompt and K completions ordered best first (K-wise comparisons, as in InstructGPT),
//! - [`Judgement`]: a pair of responses labelled by several annotators (PandaLM).
//!
//! Texts keep their shape: a plain string stays [`Turns::Text`], a list of role/content messages stays
//! [`Turns::Chat`], so converting back to TRL-style JSONL loses nothing.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// Accepts the role names of the supported formats: OpenAI/TRL (`system`, `user`, `assistant`,
    /// `developer` = OpenAI's newer name for system) and ShareGPT (`human`, `gpt`).
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "system" | "developer" => Some(Role::System),
            "user" | "human" => Some(Role::User),
            "assistant" | "gpt" => Some(Role::Assistant),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// A prompt or a completion: plain text or a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Turns {
    Text(String),
    Chat(Vec<Message>),
}

impl Turns {
    /// The text a human would read, for length statistics: message contents joined by newlines.
    pub fn text(&self) -> String {
        match self {
            Turns::Text(s) => s.clone(),
            Turns::Chat(m) => m.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n"),
        }
    }
    /// The text a model is shown for a prompt: plain text as is, a conversation as `Role: content`
    /// blocks joined by blank lines (so the backbone sees who said what). Reward-model training
    /// and `mismatch policy train` render prompts this way; completions use [`Turns::text`].
    pub fn render(&self) -> String {
        match self {
            Turns::Text(s) => s.clone(),
            Turns::Chat(m) => m
                .iter()
                .map(|m| {
                    let role = match m.role {
                        Role::System => "System",
                        Role::User => "User",
                        Role::Assistant => "Assistant",
                    };
                    format!("{role}: {}", m.content)
                })
                .collect::<Vec<_>>()
                .join("\n\n"),
        }
    }
    /// A canonical key, equal for equal prompts whatever their shape; used for de-duplication and splits.
    pub fn key(&self) -> String {
        serde_json::to_string(self).expect("Turns serialises")
    }
    pub fn is_chat(&self) -> bool {
        matches!(self, Turns::Chat(_))
    }
}

/// One pairwise preference: `chosen` ≻ `rejected` given `prompt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preference {
    pub prompt: Turns,
    pub chosen: Turns,
    pub rejected: Turns,
    /// Preference strength, as in Llama 2's margin loss −log σ(r_c − r_r − m) (Touvron et al. 2023, §3.2.2);
    /// from an optional `margin` field; always finite.
    pub margin: Option<f64>,
    /// 1-based line where the record starts in the (decompressed) file.
    pub line: usize,
}

/// A K-wise ranking: `order` lists indices into `completions`, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub prompt: Turns,
    pub completions: Vec<Turns>,
    pub order: Vec<usize>,
    pub line: usize,
}

impl Ranking {
    /// The K(K−1)/2 implied pairs, as InstructGPT trains on them (Ouyang et al. 2022, eq. 1).
    pub fn pairs(&self) -> Vec<Preference> {
        let mut out = Vec::new();
        for (a, &better) in self.order.iter().enumerate() {
            for &worse in &self.order[a + 1..] {
                out.push(Preference {
                    prompt: self.prompt.clone(),
                    chosen: self.completions[better].clone(),
                    rejected: self.completions[worse].clone(),
                    margin: None,
                    line: self.line,
                });
            }
        }
        out
    }
}

/// A pair judged by several annotators; each label is 0 (tie), 1 (`response1` better) or 2 (`response2` better).
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub prompt: Turns,
    pub response1: Turns,
    pub response2: Turns,
    pub labels: Vec<u8>,
    pub line: usize,
}

impl Judgement {
    /// The label held by a strict majority (more than half) of the annotators, if any; it may be 0 (tie).
    pub fn majority(&self) -> Option<u8> {
        strict_majority(&self.labels)
    }
    /// The majority-label pair, or `None` when the majority is a tie or there is no majority.
    pub fn to_preference(&self) -> Option<Preference> {
        let (chosen, rejected) = match self.majority()? {
            1 => (&self.response1, &self.response2),
            2 => (&self.response2, &self.response1),
            _ => return None,
        };
        Some(Preference {
            prompt: self.prompt.clone(),
            chosen: chosen.clone(),
            rejected: rejected.clone(),
            margin: None,
            line: self.line,
        })
    }
}

/// The label held by more than half of `labels`.
pub fn strict_majority(labels: &[u8]) -> Option<u8> {
    let mut counts = [0usize; 3];
    for &l in labels.iter().filter(|&&l| l < 3) {
        counts[l as usize] += 1;
    }
    (0..3u8).find(|&l| 2 * counts[l as usize] > labels.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TRL `prompt/chosen/rejected` (strings or message lists; `prompt` may be absent with message lists).
    Trl,
    /// Anthropic HH-RLHF `chosen/rejected` full transcripts.
    Hh,
    /// OpenAI fine-tuning DPO: `input.messages`, `preferred_output`, `non_preferred_output`.
    OpenAi,
    /// ShareGPT (LLaMA-Factory): `conversations`, `chosen`, `rejected` with `from/value` messages.
    ShareGpt,
    /// PandaLM: `instruction`, `input`, `response1`, `response2`, `annotator1..N`.
    PandaLm,
    /// K-wise: `prompt`, `completions[]`, `ranking[]` (indices, best first).
    Ranking,
}

impl Format {
    pub const ALL: [Format; 6] =
        [Format::Trl, Format::Hh, Format::OpenAi, Format::ShareGpt, Format::PandaLm, Format::Ranking];
    pub fn name(self) -> &'static str {
        match self {
            Format::Trl => "trl",
            Format::Hh => "hh",
            Format::OpenAi => "openai",
            Format::ShareGpt => "sharegpt",
            Format::PandaLm => "pandalm",
            Format::Ranking => "ranking",
        }
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
            format!("unknown format `{s}` (expected one of {})", names.join(", "))
        })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Records {
    Pairs(Vec<Preference>),
    Rankings(Vec<Ranking>),
    Judgements(Vec<Judgement>),
}

impl Records {
    pub fn len(&self) -> usize {
        match self {
            Records::Pairs(v) => v.len(),
            Records::Rankings(v) => v.len(),
            Records::Judgements(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The prompt of record `i` (splits group by it).
    pub fn prompt(&self, i: usize) -> &Turns {
        match self {
            Records::Pairs(v) => &v[i].prompt,
            Records::Rankings(v) => &v[i].prompt,
            Records::Judgements(v) => &v[i].prompt,
        }
    }
    /// Every record as pairwise preferences: rankings expand to all implied pairs, judgements become their
    /// majority pair (ties and no-majority items are dropped; the second value counts them).
    pub fn to_pairs(&self) -> (Vec<Preference>, usize) {
        match self {
            Records::Pairs(v) => (v.clone(), 0),
            Records::Rankings(v) => (v.iter().flat_map(Ranking::pairs).collect(), 0),
            Records::Judgements(v) => {
                let pairs: Vec<_> = v.iter().filter_map(Judgement::to_preference).collect();
                let dropped = v.len() - pairs.len();
                (pairs, dropped)
            }
        }
    }
}

/// A parsed file: its records, the original JSON of each record (so `split` can write records unchanged),
/// and notes about lenient parsing (e.g. HH transcripts whose prompts diverge before the last turn).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: std::path::PathBuf,
    pub format: Format,
    pub records: Records,
    /// `raw[i]` is the JSON of `records` item `i`, with the line where it starts.
    pub raw: Vec<(usize, serde_json::Value)>,
    /// Lines of HH records whose chosen and rejected transcripts diverge before their final assistant turn.
    pub hh_diverging: Vec<usize>,
    pub gzip: bool,
}
