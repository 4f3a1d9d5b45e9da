//! RewardBench section weighting against hand-computed values.

use mismatch_eval::subsets::subset_report;

#[test]
fn sections_weight_subsets_by_rewardbench_counts() {
    // alpacaeval-easy (count 100): 4/4 right; mt-bench-easy (28): 1/2; both Chat.
    // math-prm (984): 2/2; hep-go (164): 0/2; both Reasoning. my-subset: no section.
    let mut correct = Vec::new();
    let mut subset = Vec::new();
    let mut add = |s: &str, c: &[bool]| {
        for &x in c {
            correct.push(x);
            subset.push(s.to_string());
        }
    };
    add("alpacaeval-easy", &[true; 4]);
    add("mt-bench-easy", &[true, false]);
    add("math-prm", &[true, true]);
    add("hep-go", &[false, false]);
    add("my-subset", &[true, false, false]);
    let r = subset_report(&correct, &subset, 0);
    assert_eq!(r.subsets.len(), 5);
    let mine = r.subsets.iter().find(|s| s.subset == "my-subset").unwrap();
    assert!(mine.section.is_none() && (mine.accuracy.accuracy - 1.0 / 3.0).abs() < 1e-12);
    let chat = (100.0 * 1.0 + 28.0 * 0.5) / 128.0; // 0.890625
    let reasoning = (984.0 * 1.0 + 164.0 * 0.0) / 1148.0; // 0.857142…
    assert_eq!(r.sections.len(), 2);
    assert_eq!(r.sections[0].name, "Chat");
    assert!((r.sections[0].score - chat).abs() < 1e-12);
    assert_eq!(r.sections[1].name, "Reasoning");
    assert!((r.sections[1].score - reasoning).abs() < 1e-12);
    let head = r.rewardbench.unwrap();
    assert!((head.score - (chat + reasoning) / 2.0).abs() < 1e-12);
    assert!(head.ci_low <= head.score && head.score <= head.ci_high);
    // math-prm and hep-go are each constant, so resampling cannot move Reasoning: its CI is the point.
    assert!((r.sections[1].ci_low - reasoning).abs() < 1e-12 && (r.sections[1].ci_high - reasoning).abs() < 1e-12);
}
