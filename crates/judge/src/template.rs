//! Judge prompts: what the judge is shown for one question and its answer(s).
//!
//! Built-ins are the originals' text, shipped in `templates/` (see `templates/NOTICE.md`):
//!
//! | name | source | reply read as |
//! |---|---|---|
//! | `pair-v2` | MT-Bench (FastChat `judge_prompts.jsonl`) | `[[A]]` / `[[B]]` / `[[C]]` |
//! | `pair-math-v1` | MT-Bench, with a reference answer | `[[A]]` / `[[B]]` / `[[C]]` |
//! | `single-v1` | MT-Bench | `Rating: [[x]]` |
//! | `single-math-v1` | MT-Bench, with a reference answer | `Rating: [[x]]` |
//! | `single-v1-multi-turn` | MT-Bench, the second turn of a two-turn conversation | `Rating: [[x]]` |
//! | `single-math-v1-multi-turn` | MT-Bench, the second turn, with both turns' references | `Rating: [[x]]` |
//! | `alpaca_eval_clf_gpt4_turbo` | AlpacaEval 2.0 (`alpaca_eval_clf.txt`) | `m` (A) / `M` (B) |
//!
//! MT-Bench prompts become a system message (`system_prompt`) and a user message
//! (`prompt_template` filled as FastChat's `str.format` fills it, `run_judge_pair` /
//! `run_judge_single` in `fastchat/llm_judge/common.py`). The AlpacaEval prompt is ChatML text;
//! it is cut into messages as AlpacaEval's `prompt_to_chatml` does (split on `<|im_start|>`, the
//! first line is the role, the rest up to `<|im_end|>` stripped is the content), but before it is
//! filled, so that an answer containing ChatML markers cannot add a turn. Placeholders are filled
//! in one left-to-right pass, so an answer that contains `{answer_b}` stays as it is.
//!
//! A user template is a Jinja file, rendered by minijinja with strict undefined behaviour. Its
//! variables: `question` (the user question; `instruction` is the same text under AlpacaEval's
//! name), `answer_a` and `answer_b` (the answers in positions A and B, pairwise), `answer`
//! (single grading), `ref_answer` (a reference answer, when the template shows one). Using
//! `answer_a`/`answer_b` makes the template pairwise, `answer` makes it single-answer; any other
//! variable is refused when the file is read, naming the file and the variable. If the rendered
//! text starts with `<|im_start|>` it is cut into ChatML messages as above, else it is one user
//! message.

use crate::{Error, Result};
use mismatch_models::ChatMessage;
use serde::Serialize;
use std::path::Path;

const MT_BENCH: &str = include_str!("../templates/mt_bench_judge_prompts.jsonl");
const ALPACA_EVAL_CLF: &str = include_str!("../templates/alpaca_eval_clf_gpt4_turbo.txt");

/// Whether the judge compares two answers or grades one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Pairwise,
    Single,
}

/// How the judge's reply is read ([`crate::verdict::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// MT-Bench pairwise: `[[A]]`, `[[B]]`, `[[C]]` (tie).
    Markers,
    /// MT-Bench single: `Rating: [[x]]`.
    Rating,
    /// The reply is one identifier: `a` names position A, `b` position B (AlpacaEval: `m`, `M`).
    Labels { a: String, b: String },
}

/// A judge prompt, ready to be filled with one item.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub kind: Kind,
    pub output: Output,
    /// The template shows a reference answer; [`Template::render`] needs `ref_answer`.
    pub needs_reference: bool,
    /// The reply length the original allows its judge (FastChat 2048, AlpacaEval's classifier 1).
    pub max_tokens: usize,
    /// The template shows a two-turn conversation (MT-Bench's `*-multi-turn`); [`Template::render`]
    /// needs [`Fill::first`].
    pub multi_turn: bool,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    /// (role, text with `{name}` placeholders).
    Placeholders(Vec<(String, String)>),
    /// (file it came from, Jinja source).
    Jinja(String, String),
}

/// The values a template is filled with. Positions A and B are what the judge sees; which
/// answer goes where is the caller's choice ([`crate::pairwise`] shows both orders).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fill<'a> {
    pub question: &'a str,
    pub answer_a: Option<&'a str>,
    pub answer_b: Option<&'a str>,
    pub answer: Option<&'a str>,
    pub ref_answer: Option<&'a str>,
    /// The first turn of a two-turn conversation; `question`, `answer` and `ref_answer` are then
    /// the second turn's.
    pub first: Option<FirstTurn<'a>>,
}

/// The first turn of an MT-Bench conversation (`question_1`, `answer_1`, `ref_answer_1`).
#[derive(Debug, Clone, Copy)]
pub struct FirstTurn<'a> {
    pub question: &'a str,
    pub answer: &'a str,
    pub ref_answer: Option<&'a str>,
}

impl<'a> Fill<'a> {
    pub fn pair(question: &'a str, answer_a: &'a str, answer_b: &'a str) -> Self {
        Fill { question, answer_a: Some(answer_a), answer_b: Some(answer_b), ..Fill::default() }
    }
    pub fn single(question: &'a str, answer: &'a str) -> Self {
        Fill { question, answer: Some(answer), ..Fill::default() }
    }
    pub fn with_reference(self, ref_answer: Option<&'a str>) -> Self {
        Fill { ref_answer, ..self }
    }
    pub fn with_first_turn(self, first: FirstTurn<'a>) -> Self {
        Fill { first: Some(first), ..self }
    }
}

/// Variables a user template may use.
pub const VARIABLES: [&str; 6] = ["question", "instruction", "answer_a", "answer_b", "answer", "ref_answer"];

/// Functions minijinja defines globally, which `undeclared_variables` reports as variables.
const JINJA_GLOBALS: [&str; 7] = ["range", "dict", "namespace", "debug", "lipsum", "cycler", "joiner"];

impl Template {
    /// Names of the built-in templates.
    pub const BUILTIN: [&'static str; 7] = [
        "pair-v2",
        "pair-math-v1",
        "single-v1",
        "single-math-v1",
        "single-v1-multi-turn",
        "single-math-v1-multi-turn",
        "alpaca_eval_clf_gpt4_turbo",
    ];

    /// A built-in template by name (see the module table).
    pub fn builtin(name: &str) -> Result<Template> {
        if name == "alpaca_eval_clf_gpt4_turbo" {
            let messages = chatml(ALPACA_EVAL_CLF)
                .ok_or_else(|| Error::invalid("templates/alpaca_eval_clf_gpt4_turbo.txt", "not ChatML text"))?;
            return Ok(Template {
                name: name.into(),
                kind: Kind::Pairwise,
                output: Output::Labels { a: "m".into(), b: "M".into() },
                needs_reference: false,
                // `max_tokens: 1` in alpaca_eval_clf_gpt4_turbo/configs.yaml.
                max_tokens: 1,
                multi_turn: false,
                body: Body::Placeholders(messages.into_iter().map(|m| (m.role, m.content)).collect()),
            });
        }
        if !Self::BUILTIN.contains(&name) {
            return Err(Error::Usage(format!(
                "no built-in judge template '{name}' (built-in: {}); a path to a Jinja file also works",
                Self::BUILTIN.join(", ")
            )));
        }
        for (i, line) in MT_BENCH.lines().enumerate() {
            let at = || format!("templates/mt_bench_judge_prompts.jsonl:{}", i + 1);
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::invalid(at(), e.to_string()))?;
            if v["name"] != name {
                continue;
            }
            let field = |f: &str| {
                v[f].as_str().map(str::to_string).ok_or_else(|| Error::invalid(at(), format!("field '{f}' missing")))
            };
            let (system, body) = (field("system_prompt")?, field("prompt_template")?);
            let kind = if field("type")? == "pairwise" { Kind::Pairwise } else { Kind::Single };
            return Ok(Template {
                name: name.into(),
                kind,
                output: if kind == Kind::Pairwise { Output::Markers } else { Output::Rating },
                needs_reference: body.contains("{ref_answer_1}"),
                // FastChat's `chat_completion_openai(..., max_tokens=2048)`.
                max_tokens: 2048,
                multi_turn: body.contains("{question_2}"),
                body: Body::Placeholders(vec![("system".into(), system), ("user".into(), body)]),
            });
        }
        Err(Error::invalid("templates/mt_bench_judge_prompts.jsonl", format!("no template named '{name}'")))
    }

    /// A built-in name, else a Jinja file.
    pub fn load(name_or_path: &str) -> Result<Template> {
        match Self::BUILTIN.contains(&name_or_path) {
            true => Self::builtin(name_or_path),
            false => Self::from_file(Path::new(name_or_path)),
        }
    }

    /// A user's Jinja template (see the module documentation for its variables). Pairwise
    /// templates are read with [`Output::Markers`], single ones with [`Output::Rating`];
    /// [`Template::with_output`] changes that.
    pub fn from_file(path: &Path) -> Result<Template> {
        let source = std::fs::read_to_string(path).map_err(|err| Error::Io { path: path.into(), err })?;
        let file = path.display().to_string();
        let env = environment();
        let tpl = env.template_from_str(&source).map_err(|e| jinja_error(&file, &e))?;
        let vars = tpl.undeclared_variables(false);
        let mut unknown: Vec<&String> =
            vars.iter().filter(|v| !VARIABLES.contains(&v.as_str()) && !JINJA_GLOBALS.contains(&v.as_str())).collect();
        unknown.sort();
        if let Some(v) = unknown.first() {
            return Err(Error::invalid(
                file,
                format!("the template uses the variable '{v}'; a judge template knows {}", VARIABLES.join(", ")),
            ));
        }
        let uses = |v: &str| vars.contains(v);
        let kind = match (uses("answer_a") || uses("answer_b"), uses("answer")) {
            (true, false) if uses("answer_a") && uses("answer_b") => Kind::Pairwise,
            (true, false) => {
                return Err(Error::invalid(file, "a pairwise template needs both answer_a and answer_b"));
            }
            (false, true) => Kind::Single,
            (true, true) => {
                return Err(Error::invalid(file, "the template uses answer_a/answer_b and answer; use one kind"));
            }
            (false, false) => {
                return Err(Error::invalid(file, "the template shows no answer (answer_a and answer_b, or answer)"));
            }
        };
        let name = path.file_stem().map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned());
        Ok(Template {
            name,
            kind,
            output: if kind == Kind::Pairwise { Output::Markers } else { Output::Rating },
            needs_reference: uses("ref_answer"),
            max_tokens: 2048,
            multi_turn: false,
            body: Body::Jinja(file, source),
        })
    }

    /// Whether it compares two answers and names a side (what [`crate::judge_pairs`] needs): a
    /// pairwise prompt whose reply is not read as a rating.
    pub fn judges_pairs(&self) -> bool {
        self.kind == Kind::Pairwise && self.output != Output::Rating
    }

    /// The same template with its reply read as `output`.
    pub fn with_output(self, output: Output) -> Template {
        Template { output, ..self }
    }

    /// The messages the judge is sent for `fill`.
    pub fn render(&self, fill: &Fill) -> Result<Vec<ChatMessage>> {
        let missing = |what: &str| Error::Usage(format!("judge template '{}' needs {what}", self.name));
        match self.kind {
            Kind::Pairwise if fill.answer_a.is_none() || fill.answer_b.is_none() => {
                return Err(missing("two answers (answer_a, answer_b)"))
            }
            Kind::Single if fill.answer.is_none() => return Err(missing("an answer")),
            _ => {}
        }
        if self.needs_reference && fill.ref_answer.is_none() {
            return Err(missing("a reference answer (ref_answer)"));
        }
        if self.multi_turn {
            match fill.first {
                None => return Err(missing("the conversation's first turn")),
                Some(f) if self.needs_reference && f.ref_answer.is_none() => {
                    return Err(missing("a reference answer for the first turn (ref_answer_1)"))
                }
                _ => {}
            }
        }
        match &self.body {
            Body::Placeholders(parts) => {
                Ok(parts.iter().map(|(role, text)| ChatMessage::new(role, fill_in(text, fill))).collect())
            }
            Body::Jinja(file, source) => {
                let env = environment();
                let tpl = env.template_from_str(source).map_err(|e| jinja_error(file, &e))?;
                let ctx = minijinja::context! {
                    question => fill.question,
                    instruction => fill.question,
                    answer_a => fill.answer_a,
                    answer_b => fill.answer_b,
                    answer => fill.answer,
                    ref_answer => fill.ref_answer,
                };
                let text = tpl.render(ctx).map_err(|e| jinja_error(file, &e))?;
                Ok(chatml(&text).unwrap_or_else(|| vec![ChatMessage::new("user", text)]))
            }
        }
    }
}

/// Strict undefined: a misspelt variable or attribute fails the render instead of printing
/// nothing into the judge's prompt.
fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

fn jinja_error(file: &str, e: &minijinja::Error) -> Error {
    let at = match e.line() {
        Some(l) => format!("{file}:{l}"),
        None => file.to_string(),
    };
    let detail = e.detail().map_or_else(String::new, |d| format!(": {d}"));
    Error::invalid(at, format!("judge template: {}{detail}", e.kind()))
}

/// The value of placeholder `name` (FastChat's and AlpacaEval's names), `None` if it is not one.
fn value<'a>(name: &str, fill: &Fill<'a>) -> Option<&'a str> {
    // MT-Bench's multi-turn names: turn 1 from `first`, turn 2 from the fill itself.
    if let Some(f) = &fill.first {
        match name {
            "question_1" => return Some(f.question),
            "answer_1" => return Some(f.answer),
            "ref_answer_1" => return f.ref_answer,
            "question_2" => return Some(fill.question),
            "answer_2" => return fill.answer,
            "ref_answer_2" => return fill.ref_answer,
            _ => {}
        }
    }
    match name {
        "question" | "instruction" => Some(fill.question),
        "answer_a" | "output_1" => fill.answer_a,
        "answer_b" | "output_2" => fill.answer_b,
        "answer" => fill.answer,
        "ref_answer_1" | "ref_answer" => fill.ref_answer,
        _ => None,
    }
}

/// Replaces each `{name}` that names a value, in one pass; every other brace is literal (the
/// AlpacaEval prompt is full of JSON-like braces).
fn fill_in(text: &str, fill: &Fill) -> String {
    let mut out = String::with_capacity(text.len() + 1024);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let hit = after.find('}').and_then(|close| value(&after[..close], fill).map(|v| (close, v)));
        match hit {
            Some((close, v)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// ChatML text as messages (AlpacaEval's `prompt_to_chatml`); `None` if it is not ChatML.
fn chatml(text: &str) -> Option<Vec<ChatMessage>> {
    let text = text.trim();
    if !text.starts_with("<|im_start|>") {
        return None;
    }
    let messages = text
        .split("<|im_start|>")
        .skip(1)
        .map(|turn| {
            let (role, content) = turn.split_once('\n').unwrap_or((turn, ""));
            let content = content.split("<|im_end|>").next().unwrap_or("");
            ChatMessage::new(role.trim(), content.trim())
        })
        .collect();
    Some(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt_bench_pair_v2_is_fastchats_prompt_filled() {
        let t = Template::builtin("pair-v2").unwrap();
        assert_eq!((t.kind, &t.output, t.needs_reference), (Kind::Pairwise, &Output::Markers, false));
        let m = t.render(&Fill::pair("Q?", "first {answer_b}", "second")).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.starts_with("Please act as an impartial judge"));
        assert!(m[0].content.ends_with("and \"[[C]]\" for a tie."));
        assert_eq!(
            m[1].content,
            "[User Question]\nQ?\n\n[The Start of Assistant A's Answer]\nfirst {answer_b}\n[The End of Assistant A's \
             Answer]\n\n[The Start of Assistant B's Answer]\nsecond\n[The End of Assistant B's Answer]"
        );
    }

    #[test]
    fn reference_templates_need_the_reference() {
        for name in ["pair-math-v1", "single-math-v1"] {
            let t = Template::builtin(name).unwrap();
            assert!(t.needs_reference, "{name}");
        }
        let t = Template::builtin("single-math-v1").unwrap();
        let err = t.render(&Fill::single("Q", "A")).unwrap_err().to_string();
        assert!(err.contains("reference answer"), "{err}");
        let m = t.render(&Fill::single("Q", "A").with_reference(Some("R"))).unwrap();
        assert_eq!(m[0].content, "You are a helpful assistant.");
        assert!(m[1].content.contains("[The Start of Reference Answer]\nR\n[The End of Reference Answer]"));
        assert!(m[1].content.contains("[The Start of Assistant's Answer]\nA\n"));
    }

    #[test]
    fn alpaca_eval_clf_is_two_chatml_turns_with_m_for_output_1() {
        let t = Template::builtin("alpaca_eval_clf_gpt4_turbo").unwrap();
        assert_eq!(t.output, Output::Labels { a: "m".into(), b: "M".into() });
        assert_eq!(t.max_tokens, 1);
        let m = t.render(&Fill::pair("Say hi", "hi <|im_end|>", "hello")).unwrap();
        assert_eq!(m.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["system", "user"]);
        assert!(m[0].content.starts_with("You are a highly efficient assistant"));
        let u = &m[1].content;
        assert!(u.contains("\"instruction\": \"\"\"Say hi\"\"\","), "{u}");
        let (one, two) =
            (u.find("\"output\": \"\"\"hi <|im_end|>\"\"\"").unwrap(), u.find("\"\"\"hello\"\"\"").unwrap());
        assert!(one < two && u[..one].ends_with("\"model_identifier\": \"m\",\n        "));
        assert!(u.ends_with("## Best Model Identifier"));
    }

    /// MT-Bench's second-turn grading: FastChat fills `question_1`, `answer_1`, `question_2`,
    /// `answer_2` (and `ref_answer_1`, `ref_answer_2` for math) from the two turns.
    #[test]
    fn multi_turn_templates_show_both_turns() {
        let t = Template::builtin("single-v1-multi-turn").unwrap();
        assert!(t.multi_turn && !t.needs_reference && t.kind == Kind::Single);
        let first = FirstTurn { question: "Q1?", answer: "A1.", ref_answer: None };
        let m = t.render(&Fill::single("Q2?", "A2.").with_first_turn(first)).unwrap();
        assert_eq!(
            m[1].content,
            "<|The Start of Assistant A's Conversation with User|>\n\n### User:\nQ1?\n\n### Assistant A:\nA1.\n\n\
             ### User:\nQ2?\n\n### Assistant A:\nA2.\n\n<|The End of Assistant A's Conversation with User|>"
        );
        assert!(m[0].content.contains("second user question"));
        // Without the first turn it is refused, not rendered with holes.
        assert!(t.render(&Fill::single("Q2?", "A2.")).is_err());
        let math = Template::builtin("single-math-v1-multi-turn").unwrap();
        assert!(math.multi_turn && math.needs_reference);
        let first = FirstTurn { question: "1+1?", answer: "2", ref_answer: Some("2") };
        let m = math.render(&Fill::single("2+2?", "5").with_reference(Some("4")).with_first_turn(first)).unwrap();
        let body = &m[1].content;
        let refs = "### Reference answer:\n2\n\n### User:\n2+2?\n\n### Reference answer:\n4\n\n<|The End of Reference Answer|>";
        assert!(body.contains(refs) && !body.contains('{'), "{body}");
        let no_ref_1 = FirstTurn { ref_answer: None, ..first };
        assert!(math.render(&Fill::single("2+2?", "5").with_reference(Some("4")).with_first_turn(no_ref_1)).is_err());
    }

    #[test]
    fn unknown_builtin_names_list_the_builtins() {
        let e = Template::builtin("pair-v3").unwrap_err().to_string();
        assert!(e.contains("pair-v3") && e.contains("single-math-v1"), "{e}");
    }

    #[test]
    fn jinja_templates_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ok = write("mine.jinja", "<|im_start|>system\nBe fair.<|im_end|>\n<|im_start|>user\n{{ instruction }}\n{% if ref_answer %}Ref: {{ ref_answer }}\n{% endif %}A: {{ answer_a }}\nB: {{ answer_b }}<|im_end|>");
        let t = Template::from_file(&ok).unwrap();
        assert_eq!((t.kind, t.name.as_str(), t.needs_reference), (Kind::Pairwise, "mine", true));
        let m = t.render(&Fill::pair("Q", "x", "y").with_reference(Some("r"))).unwrap();
        assert_eq!(m[0], ChatMessage::new("system", "Be fair."));
        assert_eq!(m[1], ChatMessage::new("user", "Q\nRef: r\nA: x\nB: y"));

        let typo = write("typo.jinja", "Q: {{ question }}\nA: {{ answr }}");
        let e = Template::from_file(&typo).unwrap_err().to_string();
        assert!(e.contains("typo.jinja") && e.contains("'answr'"), "{e}");

        let broken = write("broken.jinja", "Q: {{ question }}\n{% if answer %}\nA: {{ answer }}");
        let e = Template::from_file(&broken).unwrap_err().to_string();
        assert!(e.contains("broken.jinja:3"), "{e}");

        let single = write("single.jinja", "{{ question }} / {{ answer | upper }}");
        let t = Template::from_file(&single).unwrap();
        assert_eq!((t.kind, &t.output), (Kind::Single, &Output::Rating));
        assert_eq!(t.render(&Fill::single("q", "a")).unwrap(), [ChatMessage::new("user", "q / A")]);
        let e = t.render(&Fill::pair("q", "a", "b")).unwrap_err().to_string();
        assert!(e.contains("needs an answer"), "{e}");

        let half = write("half.jinja", "{{ answer_a }}");
        assert!(Template::from_file(&half).unwrap_err().to_string().contains("both answer_a and answer_b"));
        let e = Template::from_file(&dir.path().join("absent.jinja")).unwrap_err().to_string();
        assert!(e.contains("absent.jinja"), "{e}");
    }

    #[test]
    fn strict_undefined_catches_attributes_that_do_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("attr.jinja");
        std::fs::write(&p, "{{ question }}\n{{ answer.text }}").unwrap();
        let t = Template::from_file(&p).unwrap();
        let e = t.render(&Fill::single("q", "a")).unwrap_err().to_string();
        assert!(e.contains("attr.jinja:2"), "{e}");
    }
}
