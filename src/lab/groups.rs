//! Whose preferences: preference data from rater groups that may disagree. For every two groups,
//! how often they agree on the comparisons both judged (rate and Cohen's κ, [`super::class`]). Then
//! one DPO adapter per group and one on every group's training pairs merged, each trained from the
//! base model, and each adapter's accuracy on every group's held-out pairs: the share of pairs
//! whose chosen answer the adapter's implicit reward prefers,
//! `log π(y_c|x) − log ref(y_c|x) > log π(y_r|x) − log ref(y_r|x)`,
//! with the mean margin of the two log-ratios. A group's own adapter should win on its own pairs;
//! the merged one averages the groups, and where they disagree it serves no one fully.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::class::{Agreement, CLASS_FORMAT, ClassFile, agreement, merge};
use super::spec::{EvalConfig, RunSpec, TrainData};
use crate::data::Preference;
use crate::{Error, Result};
#[cfg(feature = "engine")]
use {
    super::class::{Comparison, comparison},
    super::policy::Policy,
    super::run::{Run, split_indices},
    super::session::Session,
    super::spec::{Method, MethodKind},
    crate::align::dpo::{RefLogpsCache, encode_pairs, pair_logps},
    crate::align::train::Metrics,
    crate::model::Llama,
};

pub const MAX_GROUPS: usize = 8;
/// The adapter trained on every group's pairs.
pub const MERGED: &str = "merged";

/// One group's preferences.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub pairs: Vec<Preference>,
}

/// Groups from a class's files: the raters `assign` puts in a group (a rater it names no group for
/// is a group of their own), their pairs merged by majority within the group (`class::merge`: each
/// comparison once, even splits left out). Groups in order of first appearance.
pub fn groups_of(files: &[ClassFile], assign: &BTreeMap<String, String>) -> Vec<Group> {
    let group_of = |f: &ClassFile| {
        let rater = f.rater.trim().to_string();
        assign.get(&rater).map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).unwrap_or(rater)
    };
    let mut names: Vec<String> = Vec::new();
    for f in files {
        let g = group_of(f);
        if !names.contains(&g) {
            names.push(g);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let raters: Vec<&[Preference]> = files.iter().filter(|f| group_of(f) == name).map(|f| f.pairs.as_slice()).collect();
            Group { name, pairs: merge(&raters).pairs }
        })
        .collect()
}

/// A made-up class for lessons and the CLI's default: four raters judge the same 20 comparisons of
/// a one-sentence answer against a thorough one (`www/class/answers.json`). Ana and Ben are in
/// group "brief" and choose the short answer, Chloe and Dev in "thorough" and choose the long one;
/// each rater goes against their group on a few comparisons, as real raters do.
pub fn sample_class() -> (Vec<ClassFile>, BTreeMap<String, String>) {
    sample_class_from(include_bytes!("../../www/class/answers.json")).expect("the sample answers read")
}

/// The sample class from the answers file's bytes (the page fetches the file beside it).
pub fn sample_class_from(answers: &[u8]) -> Result<(Vec<ClassFile>, BTreeMap<String, String>)> {
    #[derive(Deserialize)]
    struct Answers {
        prompt: String,
        short: String,
        long: String,
    }
    let answers: Vec<Answers> = serde_json::from_slice(answers).map_err(|e| Error::Invalid(format!("the sample class's answers: {e}")))?;
    let raters = [("Ana", "brief", 0), ("Ben", "brief", 3), ("Chloe", "thorough", 1), ("Dev", "thorough", 5)];
    let files = raters
        .iter()
        .map(|&(rater, group, offset)| {
            let pairs = answers
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let wants_short = (group == "brief") != ((i + offset) % 7 == 0);
                    let (chosen, rejected) = if wants_short { (&a.short, &a.long) } else { (&a.long, &a.short) };
                    Preference { prompt: a.prompt.clone(), chosen: chosen.clone(), rejected: rejected.clone() }
                })
                .collect();
            ClassFile { alignlab_class: CLASS_FORMAT, rater: rater.into(), pairs, unpaired: vec![], demos: vec![], runs: vec![] }
        })
        .collect();
    Ok((files, raters.iter().map(|&(r, g, _)| (r.to_string(), g.to_string())).collect()))
}

/// A group's pairs split into those trained on and those held out, as a run with `spec` splits.
#[cfg(feature = "engine")]
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub name: String,
    pub train: Vec<Preference>,
    pub held_out: Vec<Preference>,
}

/// Splits the groups' comparisons with the run's seed and held-out fraction, the same way for
/// every group: a comparison two groups both judged is held out for both or trained on by both,
/// so no adapter (the merged one included) trains on a comparison it is tested on. Refuses groups
/// that leave nothing to train on or nothing to test.
#[cfg(feature = "engine")]
pub fn split_groups(groups: &[Group], spec: &RunSpec) -> Result<Vec<Split>> {
    if groups.len() < 2 || groups.len() > MAX_GROUPS {
        return Err(Error::Invalid(format!("compare 2 to {MAX_GROUPS} groups; there are {}", groups.len())));
    }
    if spec.method.kind() != MethodKind::Dpo {
        return Err(Error::Invalid("group adapters are trained with DPO: choose DPO as the method".into()));
    }
    let mut names = std::collections::BTreeSet::new();
    for g in groups {
        let name = g.name.trim();
        if name.is_empty() || name == MERGED || !names.insert(name) {
            return Err(Error::Invalid(format!("group names must be distinct, not empty and not '{MERGED}': '{name}'")));
        }
    }
    // Every comparison once, in order of first appearance; the held-out ones as a run would pick.
    let mut keys: Vec<Comparison> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for p in groups.iter().flat_map(|g| &g.pairs) {
        let k = comparison(p);
        if seen.insert(k.clone()) {
            keys.push(k);
        }
    }
    let (_, held) = split_indices(keys.len(), spec, 1);
    let held: std::collections::BTreeSet<&Comparison> = held.iter().map(|&i| &keys[i]).collect();
    groups
        .iter()
        .map(|g| {
            let (held_out, train): (Vec<Preference>, Vec<Preference>) = g.pairs.iter().cloned().partition(|p| held.contains(&comparison(p)));
            let name = g.name.trim().to_string();
            if held_out.is_empty() || train.is_empty() {
                return Err(Error::Invalid(format!(
                    "group {name} has {} pairs: with {:.0}% of the comparisons held out that leaves none to test or none to train on; add pairs or change the held-out share",
                    g.pairs.len(),
                    100.0 * spec.eval.eval_fraction
                )));
            }
            Ok(Split { name, train, held_out })
        })
        .collect()
}

/// How two groups agree, for the matrix (`None`: they share no comparison).
pub fn agreements(groups: &[Group]) -> Vec<Vec<Option<Agreement>>> {
    groups.iter().map(|a| groups.iter().map(|b| agreement(&a.pairs, &b.pairs)).collect()).collect()
}

/// The adapters to train: each group's training pairs, then all of them merged.
#[cfg(feature = "engine")]
pub fn plan(splits: &[Split]) -> Vec<(String, Vec<Preference>)> {
    let merged = splits.iter().flat_map(|s| s.train.iter().cloned()).collect();
    splits.iter().map(|s| (s.name.clone(), s.train.clone())).chain([(MERGED.to_string(), merged)]).collect()
}

/// One adapter's run: `spec` on `pairs`, nothing held out inside the run (the groups' held-out
/// pairs are kept aside by [`split_groups`], so no adapter sees another group's test pairs).
pub fn adapter_spec(spec: &RunSpec, pairs: Vec<Preference>) -> RunSpec {
    RunSpec {
        data: TrainData { pairs, ..TrainData::default() },
        eval: EvalConfig { eval_fraction: 0.0, ..spec.eval.clone() },
        ..spec.clone()
    }
}

/// An adapter on a set of pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairScore {
    /// Share of pairs whose chosen answer the implicit reward prefers.
    pub accuracy: f64,
    /// Mean of `(log π − log ref)(chosen) − (log π − log ref)(rejected)`, in nats.
    pub margin: f64,
    pub pairs: usize,
}

/// Scores `model` against the base model on each split's held-out pairs, in the splits' order.
/// Groups hold out the same comparisons, often chosen the other way round: each comparison is
/// scored once, and a group that chose the other answer gets its margin negated. The base model's
/// values are kept in the session ([`Session::ref_logps`]), so the next adapter scores only itself.
#[cfg(feature = "engine")]
pub async fn score_splits(session: &Session, model: &Llama, spec: &RunSpec, splits: &[Split]) -> Result<Vec<PairScore>> {
    let Method::Dpo(cfg) = &spec.method else {
        return Err(Error::Invalid("group adapters are trained with DPO: choose DPO as the method".into()));
    };
    // Each held-out comparison once, the way round the first group to hold it out chose.
    let mut index: BTreeMap<Comparison, usize> = BTreeMap::new();
    let mut unique: Vec<Preference> = Vec::new();
    for p in splits.iter().flat_map(|s| &s.held_out) {
        index.entry(comparison(p)).or_insert_with(|| {
            unique.push(p.clone());
            unique.len() - 1
        });
    }
    let pairs = encode_pairs(&session.lm, &spec.encoding, &unique)?;
    let all: Vec<usize> = (0..pairs.len()).collect();
    let mut reference = RefLogpsCache::new(&pairs, cfg.share_prompt, Some(session.ref_logps.clone()));
    reference.fill(&session.lm.model, &pairs, &all, session.pad()).await?;
    let reference = reference.get(&all)?;
    let policy = pair_logps(model, &pairs, &all, session.pad(), cfg.share_prompt).await?;
    // `(log π − log ref)(chosen) − (log π − log ref)(rejected)`, as `unique` has them.
    let margins: Vec<f64> = policy.iter().zip(&reference).map(|(p, r)| (f64::from(p[0]) - f64::from(r[0])) - (f64::from(p[1]) - f64::from(r[1]))).collect();
    Ok(splits
        .iter()
        .map(|s| {
            let m: Vec<f64> = s
                .held_out
                .iter()
                .map(|p| {
                    let i = index[&comparison(p)];
                    if p.chosen.trim() == unique[i].chosen.trim() { margins[i] } else { -margins[i] }
                })
                .collect();
            let n = m.len().max(1) as f64;
            PairScore { accuracy: m.iter().filter(|&&x| x > 0.0).count() as f64 / n, margin: m.iter().sum::<f64>() / n, pairs: m.len() }
        })
        .collect())
}

/// One adapter's row of the table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdapterRow {
    pub adapter: String,
    pub trained_on: usize,
    /// On each group's held-out pairs, in the groups' order.
    pub scores: Vec<PairScore>,
}

/// The table in three numbers: each group's adapter on its own group's held-out pairs, group
/// adapters on the other groups' pairs, and the merged adapter on every group's (mean accuracies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub own: f64,
    pub other: f64,
    pub merged: f64,
}

impl GroupSummary {
    /// `None` until every group's adapter and the merged one are in `rows`.
    pub fn of(rows: &[AdapterRow], groups: &[String]) -> Option<Self> {
        let row = |name: &str| rows.iter().find(|r| r.adapter == name);
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let (mut own, mut other) = (Vec::new(), Vec::new());
        for (i, g) in groups.iter().enumerate() {
            for (j, s) in row(g)?.scores.iter().enumerate() {
                if i == j { own.push(s.accuracy) } else { other.push(s.accuracy) }
            }
        }
        let merged = mean(row(MERGED)?.scores.iter().map(|s| s.accuracy).collect());
        Some(Self { own: mean(own), other: mean(other), merged })
    }
}

/// Mean agreement rate between different groups (`None` when no two share a comparison).
pub fn mean_agreement(matrix: &[Vec<Option<Agreement>>]) -> Option<f64> {
    let rates: Vec<f64> = matrix.iter().enumerate().flat_map(|(i, row)| row.iter().enumerate().filter(move |(j, _)| *j != i).filter_map(|(_, a)| a.map(|a| a.rate))).collect();
    (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
}

/// Trains one adapter from the base model and scores it on every group's held-out pairs; the row
/// and the trained model, or `None` when `on_step` (which sees each step's metrics) said stop.
#[cfg(feature = "engine")]
pub async fn train_and_score(
    session: &Session,
    spec: &RunSpec,
    name: &str,
    pairs: Vec<Preference>,
    splits: &[Split],
    on_step: &mut dyn FnMut(&Metrics) -> bool,
) -> Result<Option<(AdapterRow, Llama)>> {
    let base = Session { policy: Policy::base(&session.lm), ..session.clone() };
    let trained_on = pairs.len();
    let mut run = Run::new(&base, adapter_spec(spec, pairs))?;
    while !run.is_done() {
        let metrics = run.step().await?;
        if !on_step(&metrics) {
            return Ok(None);
        }
    }
    let super::run::Trained::Policy { model, .. } = run.trained() else { unreachable!("DPO trains a policy") };
    let scores = score_splits(session, &model, spec, splits).await?;
    Ok(Some((AdapterRow { adapter: name.to_string(), trained_on, scores }, model)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::Encoding;
    use crate::lab::spec::{Method, RunSettings};

    fn pairs(group: &str, n: usize) -> Vec<Preference> {
        (0..n).map(|i| Preference { prompt: format!("q{i}"), chosen: format!("{group} yes {i}"), rejected: format!("{group} no {i}") }).collect()
    }

    fn dpo_spec(fraction: f64) -> RunSpec {
        let mut spec = RunSettings::default().spec(vec![], Encoding::default(), TrainData::default());
        spec.eval.eval_fraction = fraction;
        spec
    }

    #[test]
    fn groups_split_by_comparison_and_merge_only_training_pairs() {
        // B judged the same ten comparisons as A, the other way round, and five of its own.
        let a = pairs("a", 10);
        let mut b: Vec<Preference> = a.iter().map(|p| Preference { prompt: p.prompt.clone(), chosen: p.rejected.clone(), rejected: p.chosen.clone() }).collect();
        b.extend(pairs("b", 5));
        let groups = [Group { name: "A".into(), pairs: a }, Group { name: "B".into(), pairs: b }];
        let spec = dpo_spec(0.2);
        let splits = split_groups(&groups, &spec).unwrap();
        let held: std::collections::BTreeSet<Comparison> = splits.iter().flat_map(|s| s.held_out.iter().map(comparison)).collect();
        assert_eq!(held.len(), 3, "a fifth of the 15 comparisons: {splits:?}");
        for p in &splits[0].held_out {
            assert!(splits[1].held_out.iter().any(|q| comparison(q) == comparison(p)), "a comparison both judged is held out for both");
            assert!(!splits[1].train.iter().any(|q| comparison(q) == comparison(p)));
        }
        let plan = plan(&splits);
        assert_eq!(plan.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["A", "B", MERGED]);
        assert_eq!(plan[2].1.len(), splits[0].train.len() + splits[1].train.len());
        assert!(plan[2].1.iter().all(|p| !splits.iter().any(|s| s.held_out.iter().any(|q| comparison(q) == comparison(p)))), "no held-out comparison is trained on");
        let one = adapter_spec(&spec, plan[0].1.clone());
        assert_eq!((one.data.pairs.len(), one.eval.eval_fraction), (splits[0].train.len(), 0.0));
    }

    #[test]
    fn bad_groups_are_refused_with_the_reason() {
        let err = |g: &[Group], f: f64| split_groups(g, &dpo_spec(f)).unwrap_err().to_string();
        let g = |n: &str, k: usize| Group { name: n.into(), pairs: pairs(n, k) };
        assert!(err(&[g("A", 4)], 0.25).contains("2 to 8 groups"));
        assert!(err(&[g("A", 4), g("A", 4)], 0.25).contains("distinct"));
        assert!(err(&[g("A", 4), g(MERGED, 4)], 0.25).contains("not 'merged'"));
        assert!(err(&[g("A", 4), g("B", 1)], 0.2).contains("group B has 1 pairs"), "{}", err(&[g("A", 4), g("B", 1)], 0.2));
        assert!(err(&[g("A", 4), g("B", 4)], 0.0).contains("none to test"));
        let mut sft = dpo_spec(0.25);
        sft.method = Method::Sft;
        assert!(split_groups(&[g("A", 4), g("B", 4)], &sft).unwrap_err().to_string().contains("DPO"));
    }

    #[test]
    fn the_sample_class_has_two_groups_that_mostly_disagree() {
        let (files, assign) = sample_class();
        let groups = groups_of(&files, &assign);
        // Each group's two raters split evenly on the comparisons where one goes against the group:
        // those are left out of the group's pairs.
        assert_eq!(groups.iter().map(|g| (g.name.as_str(), g.pairs.len())).collect::<Vec<_>>(), [("brief", 14), ("thorough", 15)]);
        let m = agreements(&groups);
        // Within a group the two raters differ on the comparisons either goes against it: Ana on
        // 3 of 20, Ben on 3 others.
        let within = agreement(&files[0].pairs, &files[1].pairs).unwrap();
        assert_eq!((within.shared, within.rate), (20, 0.7));
        let between = mean_agreement(&m).unwrap();
        assert_eq!(between, 0.0, "where a group has a majority, brief and thorough disagree");
        // Groups named by the teacher; raters without one keep their own name.
        let solo = groups_of(&files, &BTreeMap::new());
        assert_eq!(solo.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["Ana", "Ben", "Chloe", "Dev"]);
    }

    #[test]
    fn the_summary_reads_own_other_and_merged_accuracy() {
        let s = |a: f64| PairScore { accuracy: a, margin: 0.0, pairs: 4 };
        let rows = [
            AdapterRow { adapter: "A".into(), trained_on: 8, scores: vec![s(1.0), s(0.25)] },
            AdapterRow { adapter: "B".into(), trained_on: 8, scores: vec![s(0.0), s(0.75)] },
            AdapterRow { adapter: MERGED.into(), trained_on: 16, scores: vec![s(0.5), s(0.5)] },
        ];
        let names = ["A".to_string(), "B".to_string()];
        assert_eq!(GroupSummary::of(&rows, &names), Some(GroupSummary { own: 0.875, other: 0.125, merged: 0.5 }));
        assert_eq!(GroupSummary::of(&rows[..2], &names), None, "the merged adapter is still training");
    }

    #[test]
    fn the_agreement_matrix_is_one_on_the_diagonal_and_zero_for_opposite_groups() {
        let a = pairs("x", 6);
        let flipped: Vec<Preference> = a.iter().map(|p| Preference { prompt: p.prompt.clone(), chosen: p.rejected.clone(), rejected: p.chosen.clone() }).collect();
        let m = agreements(&[Group { name: "A".into(), pairs: a }, Group { name: "B".into(), pairs: flipped }]);
        assert_eq!(m[0][0].unwrap().rate, 1.0);
        assert_eq!(m[1][1].unwrap().rate, 1.0);
        assert_eq!((m[0][1].unwrap().rate, m[1][0].unwrap().rate), (0.0, 0.0));
    }
}
