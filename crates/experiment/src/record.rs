//! `seed.json`: one seed's [`SeedResult`] as JSON, losslessly, so that `mismatch run --merge`
//! summarises exactly the numbers the seed's own process computed.
//!
//! The result types' own `Serialize` is what the metrics files use: it leaves out the
//! per-sample scores and writes NaN as `null`. Here every field is kept and every f64 read back
//! has the bits that were written: a finite value is a JSON number (serde_json writes the
//! shortest form that parses back to the same value, and reads it back exactly with
//! `float_roundtrip`), and NaN and ±∞, which JSON has no number for, are strings of their bits
//! (`"0x7ff8000000000000"`). The field lists below mirror the types (serde's remote derive), so
//! a field added to a result type and not here fails to compile.

use crate::bon::BonCurve;
use crate::guided::GuidedCurve;
use crate::optimise::RunLog;
use crate::pipeline::{RmEval, SeedResult};
use crate::proxy::RmKind;
use crate::sample::EvalPoint;
use mismatch_world::meters::{Meters, FAILURE_METERS};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// `r` as the text of `seed.json`.
pub fn to_json(r: &SeedResult) -> String {
    let mut buf = Vec::new();
    SeedResultDef::serialize(r, &mut serde_json::Serializer::pretty(&mut buf)).expect("a seed result serialises");
    String::from_utf8(buf).expect("serde_json writes UTF-8")
}

/// The seed result in the text of a `seed.json`.
pub fn from_json(text: &str) -> serde_json::Result<SeedResult> {
    let mut de = serde_json::Deserializer::from_str(text);
    let r = SeedResultDef::deserialize(&mut de)?;
    de.end()?;
    Ok(r)
}

/// One f64, exactly (module doc).
struct Exact(f64);

impl Serialize for Exact {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64(self.0)
        } else {
            s.serialize_str(&format!("{:#018x}", self.0.to_bits()))
        }
    }
}

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Exact;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or the bits of a non-finite one as \"0x…\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Exact, E> {
                Ok(Exact(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Exact, E> {
                Ok(Exact(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Exact, E> {
                Ok(Exact(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Exact, E> {
                let bits = v.strip_prefix("0x").and_then(|h| u64::from_str_radix(h, 16).ok());
                match bits.map(f64::from_bits) {
                    Some(x) if !x.is_finite() => Ok(Exact(x)),
                    _ => Err(E::custom(format!("`{v}` is not the bits of a non-finite number"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

mod exact {
    use super::*;
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        Exact(*v).serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Exact::deserialize(d)?.0)
    }
}

mod exact_vec {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&x| Exact(x)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Exact>::deserialize(d)?.into_iter().map(|x| x.0).collect())
    }
}

/// [`EvalPoint::per_sample`]: its keys are the names in [`FAILURE_METERS`].
mod per_sample {
    use super::*;
    pub fn serialize<S: Serializer>(m: &BTreeMap<&'static str, Vec<f64>>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, v.iter().map(|&x| Exact(x)).collect::<Vec<_>>())))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<&'static str, Vec<f64>>, D::Error> {
        let m = BTreeMap::<String, Vec<Exact>>::deserialize(d)?;
        m.into_iter()
            .map(|(k, v)| {
                let name = FAILURE_METERS.iter().find(|&&n| n == k).ok_or_else(|| {
                    serde::de::Error::custom(format!("`{k}` is not a failure meter ({})", FAILURE_METERS.join(", ")))
                })?;
                Ok((*name, v.into_iter().map(|x| x.0).collect()))
            })
            .collect()
    }
}

/// `Vec<T>` through `T`'s remote definition `Def`.
macro_rules! vec_of {
    ($module:ident, $t:ty, $def:tt) => {
        mod $module {
            use super::*;
            #[derive(Serialize)]
            struct Ref<'a>(#[serde(with = $def)] &'a $t);
            #[derive(Deserialize)]
            struct Own(#[serde(with = $def)] $t);
            pub fn serialize<S: Serializer>(v: &[$t], s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(v.iter().map(Ref))
            }
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<$t>, D::Error> {
                Ok(Vec::<Own>::deserialize(d)?.into_iter().map(|o| o.0).collect())
            }
        }
    };
}

vec_of!(rm_evals, RmEval, "RmEvalDef");
vec_of!(bon_curves, BonCurve, "BonCurveDef");
vec_of!(guided_curves, GuidedCurve, "GuidedCurveDef");
vec_of!(run_logs, RunLog, "RunLogDef");
vec_of!(eval_points, EvalPoint, "EvalPointDef");

#[derive(Serialize, Deserialize)]
#[serde(remote = "SeedResult", deny_unknown_fields)]
struct SeedResultDef {
    seed: u64,
    #[serde(with = "rm_evals")]
    rms: Vec<RmEval>,
    #[serde(with = "bon_curves")]
    bon: Vec<BonCurve>,
    #[serde(with = "guided_curves", default, skip_serializing_if = "Vec::is_empty")]
    guided: Vec<GuidedCurve>,
    #[serde(with = "run_logs")]
    runs: Vec<RunLog>,
    #[serde(with = "exact")]
    annotator_acc_gold: f64,
    /// Absent from the seeds of a setting without a judge, so their files are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    judge: Option<crate::pipeline::JudgeRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "RmEval", deny_unknown_fields)]
struct RmEvalDef {
    name: String,
    kind: RmKind,
    pairs: usize,
    #[serde(with = "exact")]
    acc_gold: f64,
    #[serde(with = "exact")]
    acc_annotators: f64,
    #[serde(with = "exact")]
    ece: f64,
    #[serde(with = "exact")]
    length_corr: f64,
    #[serde(with = "exact")]
    gold_length_corr: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "BonCurve", deny_unknown_fields)]
struct BonCurveDef {
    name: String,
    n: Vec<usize>,
    #[serde(with = "exact_vec")]
    kl: Vec<f64>,
    #[serde(with = "exact_vec")]
    proxy: Vec<f64>,
    #[serde(with = "exact_vec")]
    gold: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "GuidedCurve", deny_unknown_fields)]
struct GuidedCurveDef {
    name: String,
    #[serde(with = "exact_vec")]
    param: Vec<f64>,
    kl_is_bound: bool,
    #[serde(with = "exact_vec")]
    kl: Vec<f64>,
    #[serde(with = "exact_vec")]
    proxy: Vec<f64>,
    #[serde(with = "exact_vec")]
    gold: Vec<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "RunLog", deny_unknown_fields)]
struct RunLogDef {
    name: String,
    /// The trainer's records, JSON already.
    steps: Vec<serde_json::Value>,
    #[serde(with = "eval_points")]
    evals: Vec<EvalPoint>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "EvalPoint", deny_unknown_fields)]
struct EvalPointDef {
    step: usize,
    #[serde(with = "exact")]
    kl: f64,
    #[serde(with = "exact")]
    kl_lo: f64,
    #[serde(with = "exact")]
    kl_hi: f64,
    #[serde(with = "exact")]
    proxy: f64,
    #[serde(with = "exact")]
    proxy_lo: f64,
    #[serde(with = "exact")]
    proxy_hi: f64,
    #[serde(with = "exact")]
    gold: f64,
    #[serde(with = "exact")]
    gold_lo: f64,
    #[serde(with = "exact")]
    gold_hi: f64,
    #[serde(with = "MetersDef")]
    meters: Meters,
    #[serde(with = "exact_vec")]
    golds: Vec<f64>,
    #[serde(with = "exact_vec")]
    proxies: Vec<f64>,
    #[serde(with = "per_sample")]
    per_sample: BTreeMap<&'static str, Vec<f64>>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Meters", deny_unknown_fields)]
struct MetersDef {
    n: usize,
    #[serde(with = "exact")]
    gold: f64,
    #[serde(with = "exact")]
    gold_lo: f64,
    #[serde(with = "exact")]
    gold_hi: f64,
    #[serde(with = "exact")]
    correct: f64,
    #[serde(with = "exact")]
    benign_refusal: f64,
    #[serde(with = "exact")]
    harmful_refusal: f64,
    #[serde(with = "exact")]
    hedging: f64,
    #[serde(with = "exact")]
    repetition: f64,
    #[serde(with = "exact")]
    filler: f64,
    #[serde(with = "exact")]
    length: f64,
    #[serde(with = "exact")]
    garbage: f64,
    #[serde(with = "exact")]
    distinct1: f64,
    #[serde(with = "exact")]
    distinct2: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values JSON numbers lose or that are easy to get wrong: NaN (also with a payload and a
    /// sign), ±∞, −0, a subnormal, the extremes, and sums that are not their decimal look.
    const AWKWARD: [f64; 12] = [
        f64::NAN,
        -f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        5e-324,
        f64::MAX,
        f64::MIN_POSITIVE,
        0.1 + 0.2,
        1.0 / 3.0,
        1e21,
    ];

    fn point(step: usize, x: f64) -> EvalPoint {
        let meters = Meters { n: 3, gold: x, benign_refusal: f64::NAN, distinct2: -x, ..Default::default() };
        let per_sample = FAILURE_METERS.iter().map(|&m| (m, AWKWARD.to_vec())).collect();
        let mut p = EvalPoint::new(step, &[x, 0.5], AWKWARD.to_vec(), vec![x, f64::NAN], meters, per_sample);
        p.kl_lo = f64::from_bits(0x7ff8_0000_0000_0001); // a NaN with a payload
        p
    }

    fn result() -> SeedResult {
        let rm = RmEval::new(
            RmKind::Wco,
            4,
            (&[1.0f32, 1.0][..], &[1.0f32, 1.0][..]),
            (&[0.0, 1.0], &[1.0, 0.0]),
            &[0.5, 0.5],
            &[1.0, 1.0, 1.0, 1.0],
        );
        let bon = BonCurve {
            name: "bon-single".into(),
            n: vec![1, 2],
            kl: AWKWARD.to_vec(),
            proxy: vec![0.1 + 0.2],
            gold: vec![],
        };
        let steps = vec![serde_json::json!({"step": 1, "objective/kl": 0.1 + 0.2, "x": null})];
        let runs = vec![RunLog { name: "rl-single-kl0.01".into(), steps, evals: vec![point(0, 0.1), point(3, -0.0)] }];
        SeedResult {
            seed: u64::MAX,
            rms: vec![rm],
            bon: vec![bon],
            guided: vec![GuidedCurve {
                name: "rad-single".into(),
                param: vec![0.0, 0.5],
                kl_is_bound: false,
                kl: AWKWARD.to_vec(),
                proxy: vec![f64::NAN, 1.0],
                gold: vec![0.1 + 0.2, -0.0],
            }],
            runs,
            annotator_acc_gold: f64::NEG_INFINITY,
            judge: None,
        }
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn every_f64_reads_back_with_its_bits() {
        let r = result();
        let text = to_json(&r);
        let back = from_json(&text).unwrap();
        assert_eq!(to_json(&back), text, "a second round trip changes the text");
        assert!(text.contains("\"0x7ff8000000000001\"") && text.contains("-0.0"), "{text}");
        assert_eq!(back.seed, u64::MAX);
        assert_eq!(back.annotator_acc_gold.to_bits(), f64::NEG_INFINITY.to_bits());
        assert!(back.rms[0].length_corr.is_nan(), "a constant score has no correlation");
        assert_eq!(back.rms[0].length_corr.to_bits(), r.rms[0].length_corr.to_bits());
        assert_eq!(bits(&back.bon[0].kl), bits(&AWKWARD));
        assert_eq!(bits(&back.guided[0].kl), bits(&AWKWARD));
        assert_eq!(bits(&back.guided[0].proxy), bits(&r.guided[0].proxy));
        assert_eq!(bits(&back.guided[0].gold), bits(&r.guided[0].gold));
        let (a, b) = (&r.runs[0].evals[1], &back.runs[0].evals[1]);
        assert_eq!(bits(&b.proxies), bits(&AWKWARD));
        assert_eq!(bits(&b.golds), bits(&a.golds));
        assert_eq!(b.kl_lo.to_bits(), a.kl_lo.to_bits());
        assert_eq!(b.meters.benign_refusal.to_bits(), a.meters.benign_refusal.to_bits());
        assert_eq!(b.meters.distinct2.to_bits(), a.meters.distinct2.to_bits());
        for m in FAILURE_METERS {
            assert_eq!(bits(&b.per_sample[m]), bits(&AWKWARD), "{m}");
        }
        assert_eq!(back.runs[0].steps, r.runs[0].steps);
        // What the metrics files write of a point is unchanged by the round trip.
        assert_eq!(serde_json::to_string(b).unwrap(), serde_json::to_string(a).unwrap());
    }

    #[test]
    fn a_judge_record_round_trips_and_is_absent_without_a_judge() {
        let mut r = result();
        assert!(!to_json(&r).contains("\"judge\""));
        let counts =
            crate::real::judge::JudgeCounts { judged: 5, identical: 2, both: 4, consistent: 3, ..Default::default() };
        r.judge = Some(crate::pipeline::JudgeRecord {
            name: "j (pair-v2)".into(),
            vs_start: counts,
            human_pairs: counts,
            agrees_with_humans: 3,
            held_out_pairs: 5,
        });
        let back = from_json(&to_json(&r)).unwrap();
        assert_eq!(back.judge, r.judge);
    }

    #[test]
    fn a_damaged_record_is_refused_naming_the_field() {
        let text = to_json(&result());
        let bad = text.replacen("\"0x7ff8000000000001\"", "\"0x3ff0000000000000\"", 1);
        let e = from_json(&bad).unwrap_err().to_string();
        assert!(e.contains("is not the bits of a non-finite number"), "{e}");
        let e = from_json(&text.replacen("\"annotator_acc_gold\"", "\"annotators\"", 1)).unwrap_err().to_string();
        assert!(e.contains("annotators"), "{e}");
        let e = from_json(&text.replacen("\"garbage\": [", "\"rubbish\": [", 1)).unwrap_err().to_string();
        assert!(e.contains("`rubbish` is not a failure meter"), "{e}");
    }
}
