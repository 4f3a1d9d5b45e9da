//! `report.html` of `mismatch loop`, from its `summary.json` alone.

use crate::report::{ci_or_dash, f};
use mismatch_report::html::Page;
use mismatch_report::svg::{LinePlot, Series};
use serde_json::Value;

/// `get(round)` of every round, after the start point `start` when given: x = r + 1 is the policy
/// round r produced (x = 0 the start policy). Without `start`, x = r: the policy whose samples
/// round r measured the RMs on.
fn series(name: &str, s: &Value, start: Option<&Value>, get: impl Fn(&Value) -> &Value, dashed: bool) -> Series {
    let rounds = s["rounds"].as_array().cloned().unwrap_or_default();
    let shift = start.is_some() as usize;
    let mut pts: Vec<(f64, &Value)> = start.map(|v| (0.0, v)).into_iter().collect();
    pts.extend(rounds.iter().enumerate().map(|(r, row)| ((r + shift) as f64, get(row))));
    let xs = pts.iter().map(|p| p.0).collect();
    let ys = pts.iter().map(|p| f(&p.1["mean"])).collect();
    let band = Some((pts.iter().map(|p| f(&p.1["lo"])).collect(), pts.iter().map(|p| f(&p.1["hi"])).collect()));
    Series { name: name.into(), xs, ys, band, dashed, points: true }
}

pub fn render(s: &Value) -> String {
    let mut page = Page::new("mismatch: the outer loop of RLHF in the embedded world");
    let rounds = s["rounds"].as_array().cloned().unwrap_or_default();
    let last = rounds.last().cloned().unwrap_or(Value::Null);
    let mut items: Vec<(String, String)> = vec![
        ("gold of the start policy".into(), ci_or_dash(&s["start"]["gold"], 3)),
        (
            "gold after round 1".into(),
            ci_or_dash(&rounds.first().map_or(Value::Null, |r| r["policy"]["gold"].clone()), 3),
        ),
        (format!("gold after round {}", rounds.len()), ci_or_dash(&last["policy"]["gold"], 3)),
        ("gold change, first to last round".into(), ci_or_dash(&s["gold_change_first_to_last"], 3)),
        ("finding".into(), s["finding"].as_str().unwrap_or("").to_string()),
    ];
    if last["rm_gain_vs_round0"].is_object() {
        items.push((
            "last RM vs the first round's RM on the last policy's pairs".into(),
            format!("{} accuracy", ci_or_dash(&last["rm_gain_vs_round0"], 3)),
        ));
    }
    page.headline(&items);

    page.section("What was run");
    page.paragraph(format!(
        "Seeds {}. Each round samples the current policy on fresh training prompts, has the simulated annotators \
         (with their biases) label {} pairs, retrains the reward model on {} labels, and optimises the policy again \
         from where it stands with {}. KL is reported to the original start policy. Intervals: Student-t 95% across \
         seeds; differences are paired, with a two-stage bootstrap over seeds and then pairs or prompts.",
        s["seeds"],
        s["config"]["loop"]["pairs_per_round"],
        if s["config"]["loop"]["rm_data"] == "new" { "this round's" } else { "all" },
        if s["config"]["loop"]["algo"] == "dpo" {
            format!(
                "DPO on the reward model's labels (β = {}, {} steps, the round's starting policy as the reference)",
                s["config"]["dpo"]["beta"], s["config"]["dpo"]["steps"]
            )
        } else {
            format!(
                "RLOO against the round's reward model (β = {}, {} steps, the KL penalty anchored to the round's starting policy)",
                s["config"]["rl"]["kl_coefs"][0], s["config"]["rl"]["steps"]
            )
        },
    ));
    page.code(s["command"].as_str().unwrap_or("mismatch loop"));

    page.section("Outer loop");
    let start = &s["start"];
    let plot = |title: &str, y: &str, series: Vec<Series>| {
        LinePlot {
            title: title.into(),
            x_label: "round (0 = start policy)".into(),
            y_label: y.into(),
            series,
            ..Default::default()
        }
        .to_svg()
    };
    page.plot(plot(
        "Gold and proxy of each round's policy",
        "score",
        vec![
            series("gold", s, Some(&start["gold"]), |r| &r["policy"]["gold"], false),
            series("proxy (that round's RM)", s, Some(&start["proxy"]), |r| &r["policy"]["proxy"], true),
        ],
    ));
    page.plot(plot(
        "Reward-model accuracy against gold on the samples of the policy each round starts from",
        "accuracy",
        vec![
            series("this round's RM", s, None, |r| &r["rm_acc_on_policy"], false),
            series("first round's RM", s, None, |r| &r["round0_rm_acc_on_policy"], true),
        ],
    ));
    page.plot(plot(
        "KL to the start policy",
        "KL",
        vec![series("KL(π_r ‖ π₀)", s, Some(&start["kl_to_start"]), |r| &r["policy"]["kl_to_start"], false)],
    ));
    let rows: Vec<Vec<String>> = rounds
        .iter()
        .map(|r| {
            let p = &r["policy"];
            vec![
                format!("{}", r["round"].as_u64().unwrap_or(0) + 1),
                format!("{:.0}", f(&r["labels"]["mean"])),
                ci_or_dash(&r["annotators_acc_gold"], 3),
                ci_or_dash(&r["rm_acc_on_policy"], 3),
                ci_or_dash(&r["round0_rm_acc_on_policy"], 3),
                ci_or_dash(&r["rm_acc_on_previous_policy"], 3),
                ci_or_dash(&r["rm_gain_vs_round0"], 3),
                ci_or_dash(&p["gold"], 3),
                ci_or_dash(&p["proxy"], 3),
                ci_or_dash(&p["kl_to_start"], 2),
            ]
        })
        .collect();
    page.paragraph(
        "Per round: the labels the reward model trained on; the annotators' agreement with gold on that round's pairs; \
         the accuracy against gold of the round's RM on the current policy's held-out pairs, of the first round's RM on the \
         same pairs and of the round's RM on the previous round's pairs (distribution shift), the paired gain over the \
         first round's RM; then the policy the round optimised.",
    );
    page.table(
        &[
            "round",
            "labels",
            "annotators vs gold",
            "RM on current policy",
            "first round's RM on current policy",
            "RM on previous policy",
            "gain vs first round's RM",
            "gold",
            "proxy",
            "KL to start",
        ],
        &rows,
    );
    let meters = ["benign_refusal", "hedging", "repetition", "filler", "length", "garbage"];
    let mut rows = vec![];
    for (name, v) in std::iter::once(("start".to_string(), start))
        .chain(rounds.iter().map(|r| (format!("round {}", r["round"].as_u64().unwrap_or(0) + 1), &r["policy"])))
    {
        let mut row = vec![name];
        row.extend(meters.iter().map(|m| ci_or_dash(&v["meters"][m], 2)));
        rows.push(row);
    }
    page.paragraph("Failure meters of each round's policy (means over seeds, t 95% intervals):");
    let mut header = vec!["policy"];
    header.extend(meters);
    page.table(&header, &rows);
    page.render()
}
