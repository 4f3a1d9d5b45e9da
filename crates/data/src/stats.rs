//! `data check`: what is in a preference file (shape, lengths, duplicates, degenerate pairs).

use crate::types::*;
use std::collections::HashSet;
use std::fmt;

/// Summary statistics of a list of lengths (`median` is the mean of the two middle values for even counts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LenStats {
    pub min: usize,
    pub mean: f64,
    pub median: f64,
    pub max: usize,
}

impl LenStats {
    pub fn of(mut xs: Vec<usize>) -> LenStats {
        if xs.is_empty() {
            return LenStats { min: 0, mean: 0.0, median: 0.0, max: 0 };
        }
        xs.sort_unstable();
        let n = xs.len();
        let median = if n % 2 == 1 { xs[n / 2] as f64 } else { (xs[n / 2 - 1] + xs[n / 2]) as f64 / 2.0 };
        LenStats { min: xs[0], mean: xs.iter().sum::<usize>() as f64 / n as f64, median, max: xs[n - 1] }
    }
}

/// Length of one text field over all records, in Unicode scalar values and in whitespace-separated words.
#[derive(Debug, Clone)]
pub struct FieldStats {
    pub name: &'static str,
    pub chars: LenStats,
    pub words: LenStats,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub path: String,
    pub format: Format,
    pub gzip: bool,
    pub rows: usize,
    /// Whether prompts are message lists (conversational) rather than plain strings.
    pub conversational: bool,
    pub fields: Vec<FieldStats>,
    pub distinct_prompts: usize,
    /// Records identical (all texts, margin and labels aside) to an earlier record.
    pub duplicates: usize,
    /// Records whose two sides are the same text (chosen = rejected; for rankings, any repeated completion):
    /// they carry no preference signal and make a Bradley–Terry loss constant at log 2.
    pub identical_pairs: usize,
    pub with_margin: usize,
    pub hh_diverging: Vec<usize>,
    /// Format-specific lines (label distribution, ranking sizes).
    pub notes: Vec<String>,
}

fn field(name: &'static str, texts: impl Iterator<Item = String>) -> FieldStats {
    let (c, w): (Vec<_>, Vec<_>) = texts.map(|t| (t.chars().count(), t.split_whitespace().count())).unzip();
    FieldStats { name, chars: LenStats::of(c), words: LenStats::of(w) }
}

pub fn summarize(ds: &Dataset) -> Summary {
    let rows = ds.records.len();
    let distinct_prompts = (0..rows).map(|i| ds.records.prompt(i).key()).collect::<HashSet<_>>().len();
    let conversational = rows > 0 && ds.records.prompt(0).is_chat();
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    let mut notes = Vec::new();
    let (fields, duplicates, identical_pairs, with_margin) = match &ds.records {
        Records::Pairs(v) => {
            let dup = v.iter().filter(|p| !seen.insert(vec![p.prompt.key(), p.chosen.key(), p.rejected.key()])).count();
            let fields = vec![
                field("prompt", v.iter().map(|p| p.prompt.text())),
                field("chosen", v.iter().map(|p| p.chosen.text())),
                field("rejected", v.iter().map(|p| p.rejected.text())),
            ];
            (
                fields,
                dup,
                v.iter().filter(|p| p.chosen == p.rejected).count(),
                v.iter().filter(|p| p.margin.is_some()).count(),
            )
        }
        Records::Rankings(v) => {
            let dup = v
                .iter()
                .filter(|r| {
                    !seen.insert(std::iter::once(r.prompt.key()).chain(r.completions.iter().map(Turns::key)).collect())
                })
                .count();
            let ident = v
                .iter()
                .filter(|r| r.completions.iter().map(Turns::key).collect::<HashSet<_>>().len() < r.completions.len())
                .count();
            let k = LenStats::of(v.iter().map(|r| r.completions.len()).collect());
            notes.push(format!(
                "completions per prompt: min {} / mean {:.1} / max {}; {} implied pairs",
                k.min,
                k.mean,
                k.max,
                v.iter().map(|r| r.completions.len() * (r.completions.len() - 1) / 2).sum::<usize>()
            ));
            let fields = vec![
                field("prompt", v.iter().map(|r| r.prompt.text())),
                field("completion", v.iter().flat_map(|r| r.completions.iter().map(Turns::text))),
            ];
            (fields, dup, ident, 0)
        }
        Records::Judgements(v) => {
            let dup =
                v.iter().filter(|j| !seen.insert(vec![j.prompt.key(), j.response1.key(), j.response2.key()])).count();
            let mut labels = [0usize; 3];
            let mut majority = [0usize; 4];
            for j in v {
                for &l in &j.labels {
                    labels[l as usize] += 1;
                }
                majority[j.majority().map_or(3, usize::from)] += 1;
            }
            let n = v.first().map_or(0, |j| j.labels.len());
            notes.push(format!(
                "{n} annotators; labels: {} tie, {} response1, {} response2",
                labels[0], labels[1], labels[2]
            ));
            notes.push(format!(
                "majority label: {} response1, {} response2, {} tie, {} no majority",
                majority[1], majority[2], majority[0], majority[3]
            ));
            let fields = vec![
                field("prompt", v.iter().map(|j| j.prompt.text())),
                field("response1", v.iter().map(|j| j.response1.text())),
                field("response2", v.iter().map(|j| j.response2.text())),
            ];
            (fields, dup, v.iter().filter(|j| j.response1 == j.response2).count(), 0)
        }
    };
    Summary {
        path: ds.path.display().to_string(),
        format: ds.format,
        gzip: ds.gzip,
        rows,
        conversational,
        fields,
        distinct_prompts,
        duplicates,
        identical_pairs,
        with_margin,
        hh_diverging: ds.hh_diverging.clone(),
        notes,
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = if self.conversational { "conversational" } else { "plain text" };
        let gz = if self.gzip { ", gzip" } else { "" };
        writeln!(f, "{}: OK", self.path)?;
        writeln!(f, "format:           {} ({shape}{gz})", self.format)?;
        writeln!(f, "rows:             {}", self.rows)?;
        writeln!(f, "distinct prompts: {}", self.distinct_prompts)?;
        writeln!(f, "duplicate rows:   {}", self.duplicates)?;
        writeln!(f, "identical pairs:  {} (both sides the same text: no preference signal)", self.identical_pairs)?;
        if self.with_margin > 0 {
            writeln!(f, "with margin:      {}", self.with_margin)?;
        }
        for n in &self.notes {
            writeln!(f, "{n}")?;
        }
        if !self.hh_diverging.is_empty() {
            let lines: Vec<_> = self.hh_diverging.iter().map(|l| l.to_string()).collect();
            writeln!(
                f,
                "note: {} transcripts diverge before their final assistant turn (lines {}); their prompt is the \
                 common turns up to the last shared human turn and the completions span several turns (--strict rejects them)",
                lines.len(),
                lines.join(", ")
            )?;
        }
        writeln!(f, "length            chars min / median / mean / max        words min / median / mean / max")?;
        for s in &self.fields {
            writeln!(
                f,
                "  {:<14} {:>6} / {:>7.1} / {:>8.1} / {:>7}     {:>6} / {:>7.1} / {:>8.1} / {:>7}",
                s.name,
                s.chars.min,
                s.chars.median,
                s.chars.mean,
                s.chars.max,
                s.words.min,
                s.words.median,
                s.words.mean,
                s.words.max
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_stats_median_odd_and_even() {
        assert_eq!(LenStats::of(vec![5, 1, 3]), LenStats { min: 1, mean: 3.0, median: 3.0, max: 5 });
        assert_eq!(LenStats::of(vec![4, 1, 3, 10]), LenStats { min: 1, mean: 4.5, median: 3.5, max: 10 });
    }

    #[test]
    fn ranking_and_judgement_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.jsonl");
        std::fs::write(
            &f,
            "{\"prompt\": \"q\", \"completions\": [\"a b\", \"c\", \"a b\"], \"ranking\": [1, 0, 2]}\n\
             {\"prompt\": \"q\", \"completions\": [\"a b\", \"c\", \"a b\"], \"ranking\": [0, 1, 2]}\n\
             {\"prompt\": \"z\", \"completions\": [\"x\", \"y\"], \"ranking\": [0, 1]}\n",
        )
        .unwrap();
        let s = summarize(&crate::read_dataset(&f, Default::default()).unwrap());
        assert_eq!((s.rows, s.distinct_prompts, s.duplicates, s.identical_pairs), (3, 2, 1, 2));
        assert_eq!(s.notes, vec!["completions per prompt: min 2 / mean 2.7 / max 3; 7 implied pairs".to_string()]);
        assert_eq!(s.fields[1].words, LenStats { min: 1, mean: 12.0 / 8.0, median: 1.5, max: 2 });

        let f = dir.path().join("p.json");
        std::fs::write(
            &f,
            r#"[{"instruction": "i", "input": "", "response1": "a", "response2": "a", "annotator1": 0, "annotator2": 1, "annotator3": 2}]"#,
        )
        .unwrap();
        let s = summarize(&crate::read_dataset(&f, Default::default()).unwrap());
        assert_eq!(s.identical_pairs, 1);
        assert_eq!(s.notes[1], "majority label: 0 response1, 0 response2, 0 tie, 1 no majority");
    }
}
