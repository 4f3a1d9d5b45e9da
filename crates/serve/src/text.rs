//! Tokens back to text as a client sees it: incremental detokenisation that never splits a
//! UTF-8 character, and stop strings that are cut off and never streamed, even in part.

use mismatch_models::{Result, Tok};

/// The text of one completion as its tokens arrive.
pub struct Detok {
    ids: Vec<u32>,
    /// Bytes of `text` already handed out.
    sent: usize,
    text: String,
    stops: Vec<String>,
    /// A stop string was found; `text` ends before it.
    pub stopped: bool,
}

impl Detok {
    pub fn new(stops: Vec<String>) -> Self {
        Self { ids: vec![], sent: 0, text: String::new(), stops, stopped: false }
    }

    /// Adds a token (`last`: the completion ends here) and returns the text that may now be
    /// shown. Special tokens (the end-of-sequence token) are not shown.
    pub fn push(&mut self, tok: &Tok, id: u32, last: bool) -> Result<String> {
        if self.stopped {
            return Ok(String::new());
        }
        self.ids.push(id);
        let full = tok.decode(&self.ids, true)?;
        let from = self.sent.saturating_sub(self.stops.iter().map(|s| s.len()).max().unwrap_or(0));
        let from = (0..=from).rev().find(|&i| full.is_char_boundary(i)).unwrap_or(0);
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| full[from..].find(s.as_str()).map(|i| from + i))
            .min();
        let end = match hit {
            Some(cut) => {
                self.stopped = true;
                cut
            }
            None if last => full.len(),
            None => full.len() - self.held(&full),
        };
        let end = end.max(self.sent.min(full.len()));
        let delta = full.get(self.sent..end).unwrap_or_default().to_string();
        self.sent = end;
        self.text = full[..end].to_string();
        Ok(delta)
    }

    /// Bytes at the end of `full` to hold back: a partial character (the replacement character
    /// a split UTF-8 sequence decodes to), or the start of a stop string.
    fn held(&self, full: &str) -> usize {
        if full.ends_with('\u{FFFD}') {
            return full.len()
                - full
                    .rfind(|c| c != '\u{FFFD}')
                    .map_or(0, |i| i + full[i..].chars().next().map_or(0, char::len_utf8));
        }
        self.stops
            .iter()
            .flat_map(|s| (1..s.len()).rev().filter(|&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
            .filter(|p| full.ends_with(*p))
            .map(|p| p.len())
            .max()
            .unwrap_or(0)
    }

    /// The completion's text so far (all of it once the last token is in).
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// A token as text on its own (OpenAI's `token` field) and its bytes.
pub fn token_text(tok: &Tok, id: u32) -> (String, Vec<u8>) {
    let s = tok.decode(&[id], false).unwrap_or_default();
    let bytes = s.as_bytes().to_vec();
    (s, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer with one token per character, decoded by concatenation.
    fn tok() -> Tok {
        let vocab: serde_json::Map<String, serde_json::Value> =
            "abcdefghijklmnopqrstuvwxyz .!".chars().enumerate().map(|(i, c)| (c.to_string(), i.into())).collect();
        let json = serde_json::json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": null, "post_processor": null, "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "!"}});
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
        Tok::from_hf_dir(dir.path()).unwrap()
    }

    fn run(stops: &[&str], text: &str) -> (Vec<String>, String, bool) {
        let t = tok();
        let mut d = Detok::new(stops.iter().map(|s| s.to_string()).collect());
        let ids: Vec<u32> = text.chars().map(|c| t.token_to_id(&c.to_string()).unwrap()).collect();
        let mut deltas = vec![];
        for (i, &id) in ids.iter().enumerate() {
            deltas.push(d.push(&t, id, i + 1 == ids.len()).unwrap());
        }
        (deltas, d.text().to_string(), d.stopped)
    }

    #[test]
    fn stop_strings_are_cut_and_never_streamed_in_part() {
        let (deltas, text, stopped) = run(&["end."], "the end. more");
        assert_eq!((text.as_str(), stopped), ("the ", true));
        assert_eq!(deltas.concat(), "the ");
        // "e", "en", "end" are held back while they can still become the stop string.
        assert_eq!(deltas[..8], ["t", "h", "", "e ", "", "", "", ""]);
        assert!(deltas[8..].iter().all(String::is_empty));
        let (deltas, text, stopped) = run(&["end."], "the endless");
        assert_eq!((text.as_str(), stopped), ("the endless", false));
        assert_eq!(deltas.concat(), "the endless");
    }

    #[test]
    fn without_stops_every_token_shows_at_once() {
        let (deltas, text, _) = run(&[], "abc");
        assert_eq!(deltas, ["a", "b", "c"]);
        assert_eq!(text, "abc");
    }
}
