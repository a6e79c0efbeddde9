//! A class's work, pooled: each student exports one class file (their preferences, ratings, ideal
//! answers and a report of their runs); the teacher opens many at once and sees how often raters
//! agree, a merged preference set, and everyone's runs side by side.
//!
//! Two raters *compare* when both judged the same two answers to the same prompt (in either
//! order). Over the comparisons they share:
//!
//! - agreement rate  p_o = agreements / shared comparisons;
//! - Cohen's kappa   κ = (p_o − p_e) / (1 − p_e), with p_e = p_a·p_b + (1 − p_a)(1 − p_b), where
//!   p_a and p_b are how often each rater chose the answer that sorts first: the agreement two
//!   raters with the same habits would reach by chance.
//!
//! The merged set keeps, for each comparison, the answer most raters chose; ties are left out.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::data::{Demonstration, Preference, Unpaired};
use crate::{Error, Result};

/// The format's version.
pub const CLASS_FORMAT: u32 = 1;
/// Largest class file read, in bytes.
pub const MAX_CLASS_BYTES: usize = 16 << 20;

/// One run as a student reports it: method, settings, how far it got, its last numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub method: String,
    /// The run's settings as the page keeps them (JSON).
    #[serde(default)]
    pub settings: serde_json::Value,
    pub steps: usize,
    pub state: String,
    /// Each metric's last value (held-out ones as `eval/...`).
    #[serde(default)]
    pub last: BTreeMap<String, f64>,
}

impl RunReport {
    /// A run's report from its logged steps: each metric's last finite value.
    pub fn from_steps(method: &str, settings_json: &str, steps: &[BTreeMap<String, f64>], state: &str) -> Self {
        let mut last = BTreeMap::new();
        for m in steps {
            for (k, v) in m.iter().filter(|(k, v)| *k != "step" && v.is_finite()) {
                last.insert(k.clone(), *v);
            }
        }
        let settings = serde_json::from_str(settings_json).unwrap_or(serde_json::Value::Null);
        Self { method: method.to_string(), settings, steps: steps.len(), state: state.to_string(), last }
    }
}

/// What one student hands in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassFile {
    pub alignlab_class: u32,
    /// The student's (or group's) name as they typed it.
    pub rater: String,
    #[serde(default)]
    pub pairs: Vec<Preference>,
    #[serde(default)]
    pub unpaired: Vec<Unpaired>,
    #[serde(default)]
    pub demos: Vec<Demonstration>,
    #[serde(default)]
    pub runs: Vec<RunReport>,
}

impl ClassFile {
    /// Reads a class file; the error names the field that is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_CLASS_BYTES {
            return Err(Error::Invalid(format!("class file is {} bytes; at most {MAX_CLASS_BYTES} (16 MiB)", bytes.len())));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let f: Self = serde_path_to_error::deserialize(de).map_err(|e| Error::Invalid(format!("class file: {}: {}", e.path(), e.inner())))?;
        if f.alignlab_class != CLASS_FORMAT {
            return Err(Error::Invalid(format!("class file: alignlab_class: this page reads version {CLASS_FORMAT}, the file says {}", f.alignlab_class)));
        }
        if f.rater.trim().is_empty() || f.rater.chars().count() > 80 {
            return Err(Error::Invalid("class file: rater: give a name of 1 to 80 characters".into()));
        }
        Ok(f)
    }
}

/// A comparison: a prompt and two answers, the pair sorted so that either order is the same key.
pub type Comparison = (String, String, String);

/// The comparison a pair judges.
pub fn comparison(p: &Preference) -> Comparison {
    let (c, r) = (p.chosen.trim(), p.rejected.trim());
    let (a, b) = if c < r { (c, r) } else { (r, c) };
    (p.prompt.trim().to_string(), a.to_string(), b.to_string())
}

/// Each comparison a rater judged, and whether they chose the answer that sorts first (a rater who
/// judged the same comparison twice counts by their last judgement).
fn judgements(pairs: &[Preference]) -> BTreeMap<Comparison, bool> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let (c, r) = (p.chosen.trim(), p.rejected.trim());
        if c == r {
            continue;
        }
        out.insert(comparison(p), c < r);
    }
    out
}

/// How two raters agree on the comparisons both judged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub shared: usize,
    pub rate: f64,
    /// `None` when chance agreement is 1 (both always chose the same side), where κ is undefined.
    pub kappa: Option<f64>,
}

/// Agreement between two raters' pairs; `None` when they share no comparison.
pub fn agreement(a: &[Preference], b: &[Preference]) -> Option<Agreement> {
    let (ja, jb) = (judgements(a), judgements(b));
    let shared: Vec<(bool, bool)> = ja.iter().filter_map(|(k, &x)| jb.get(k).map(|&y| (x, y))).collect();
    if shared.is_empty() {
        return None;
    }
    let n = shared.len() as f64;
    let rate = shared.iter().filter(|(x, y)| x == y).count() as f64 / n;
    let pa = shared.iter().filter(|(x, _)| *x).count() as f64 / n;
    let pb = shared.iter().filter(|(_, y)| *y).count() as f64 / n;
    let chance = pa * pb + (1.0 - pa) * (1.0 - pb);
    let kappa = (chance < 1.0).then(|| (rate - chance) / (1.0 - chance));
    Some(Agreement { shared: shared.len(), rate, kappa })
}

/// The class's preferences as one set: each comparison once, won by the answer most raters chose.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    pub pairs: Vec<Preference>,
    /// Comparisons left out because the raters split evenly.
    pub ties: usize,
    /// Comparisons judged by more than one rater.
    pub contested: usize,
}

pub fn merge(raters: &[&[Preference]]) -> Merged {
    let mut votes: BTreeMap<Comparison, (usize, usize)> = BTreeMap::new();
    for pairs in raters {
        for (k, first_wins) in judgements(pairs) {
            let v = votes.entry(k).or_default();
            if first_wins { v.0 += 1 } else { v.1 += 1 }
        }
    }
    let mut m = Merged::default();
    for ((prompt, a, b), (fa, fb)) in votes {
        if fa + fb > 1 {
            m.contested += 1;
        }
        let (chosen, rejected) = match fa.cmp(&fb) {
            std::cmp::Ordering::Greater => (a, b),
            std::cmp::Ordering::Less => (b, a),
            std::cmp::Ordering::Equal => {
                m.ties += 1;
                continue;
            }
        };
        m.pairs.push(Preference { prompt, chosen, rejected });
    }
    m
}

/// The distinct raters' names, in order of first appearance, each once.
pub fn raters(files: &[ClassFile]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    files.iter().map(|f| f.rater.trim().to_string()).filter(|r| seen.insert(r.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(prompt: &str, chosen: &str, rejected: &str) -> Preference {
        Preference { prompt: prompt.into(), chosen: chosen.into(), rejected: rejected.into() }
    }

    #[test]
    fn identical_raters_agree_fully_and_opposite_ones_never() {
        let a = vec![p("q", "kind", "rude"), p("q", "short", "long"), p("r", "yes", "no"), p("r", "x", "y")];
        let flipped: Vec<Preference> = a.iter().map(|x| p(&x.prompt, &x.rejected, &x.chosen)).collect();
        let same = agreement(&a, &a).unwrap();
        assert_eq!((same.shared, same.rate), (4, 1.0));
        assert!((same.kappa.unwrap() - 1.0).abs() < 1e-12);
        let opposite = agreement(&a, &flipped).unwrap();
        assert_eq!((opposite.shared, opposite.rate), (4, 0.0));
        assert!(opposite.kappa.unwrap() < 0.0);
        assert_eq!(agreement(&a, &[p("other", "a", "b")]), None, "nothing shared");
    }

    #[test]
    fn kappa_discounts_the_agreement_chance_would_give() {
        // Two raters who each pick the first-sorting answer in 3 of 4 comparisons and agree on
        // 2 of 4: p_o = 0.5, p_e = 0.75·0.75 + 0.25·0.25 = 0.625, κ = (0.5 − 0.625)/0.375 = −1/3.
        let a = vec![p("q", "a", "b"), p("q", "c", "d"), p("q", "e", "f"), p("q", "h", "g")];
        let b = vec![p("q", "a", "b"), p("q", "d", "c"), p("q", "e", "f"), p("q", "g", "h")];
        let g = agreement(&a, &b).unwrap();
        assert_eq!(g.rate, 0.5);
        assert!((g.kappa.unwrap() + 1.0 / 3.0).abs() < 1e-12, "{g:?}");
    }

    #[test]
    fn the_merged_set_keeps_the_majority_and_drops_ties() {
        let r1 = vec![p("q", "kind", "rude"), p("q", "short", "long")];
        let r2 = vec![p("q", "kind", "rude"), p("q", "long", "short")];
        let r3 = vec![p("q", "rude", "kind"), p("z", "hi", "bye")];
        let m = merge(&[&r1, &r2, &r3]);
        assert_eq!(m.pairs, vec![p("q", "kind", "rude"), p("z", "hi", "bye")]);
        assert_eq!((m.ties, m.contested), (1, 2));
    }

    #[test]
    fn a_class_file_names_what_is_wrong() {
        let e = ClassFile::parse(br#"{"alignlab_class": 1, "rater": "Ana", "pairs": [{"prompt": "q", "chosen": 3}]}"#).unwrap_err().to_string();
        assert!(e.contains("class file: pairs[0].chosen: invalid type: integer"), "{e}");
        let e = ClassFile::parse(br#"{"alignlab_class": 1, "rater": " "}"#).unwrap_err().to_string();
        assert!(e.contains("rater: give a name"), "{e}");
        let ok = ClassFile::parse(br#"{"alignlab_class": 1, "rater": "Ana", "runs": [{"method": "dpo", "steps": 4, "state": "finished", "last": {"loss": 0.5}}]}"#).unwrap();
        assert_eq!(ok.runs[0].last["loss"], 0.5);
        assert_eq!(raters(&[ok.clone(), ok]), vec!["Ana".to_string()]);
        let steps = [BTreeMap::from([("loss".to_string(), 0.7), ("step".to_string(), 1.0)]), BTreeMap::from([("loss".to_string(), f64::NAN), ("eval/loss".to_string(), 0.6)])];
        let r = RunReport::from_steps("dpo", r#"{"method": "dpo"}"#, &steps, "finished");
        assert_eq!((r.steps, r.last.len(), r.last["loss"], r.last["eval/loss"]), (2, 2, 0.7, 0.6));
    }
}
