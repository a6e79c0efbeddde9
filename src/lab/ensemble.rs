//! Reward-model ensembles: several reward models trained on the same preferences, from different
//! seeds (a new LoRA init, score head and batch order each) or on bootstrap resamples of the
//! pairs, combined into one reward. Where the members agree the ensemble is as sure as one model;
//! where they disagree (answers unlike the training data) the spread across members says so, and
//! a pessimistic combination keeps RL and best-of-N from trusting a score no member vouches for.
//!
//! With member rewards `r_1..r_K`: mean `r̄ = Σ r_k / K`; min `min_k r_k`; mean minus spread
//! `r̄ − s`, where `s = sqrt(Σ (r_k − r̄)² / (K − 1))` is the members' sample standard deviation.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
#[cfg(feature = "engine")]
use {
    super::rewards::{RewardHead, Rewarder},
    super::run::{Run, Trained, split_indices},
    super::session::Session,
    super::spec::{Method, RunSpec, TrainData},
    crate::align::Encoding,
    crate::align::train::Metrics,
    crate::data::Preference,
    rand::{Rng, SeedableRng},
};

/// At most this many members: each is a reward model held in memory and run on every score.
pub const MAX_MEMBERS: usize = 8;

/// Bradley-Terry fixes a reward only up to a constant, so two members can agree on every ranking
/// and still sit far apart. Members are trained with TRL's `center_rewards_coefficient` at least
/// this (Eisenstein et al. 2023, who used it for ensembles): each pulled towards 0, their spread
/// measures disagreement, not offsets.
pub const CENTERING: f64 = 0.01;

/// How the members' rewards become one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Combine {
    #[default]
    Mean,
    /// The most pessimistic member.
    Min,
    /// The mean less the members' standard deviation: uncertain answers are marked down.
    MeanMinusSpread,
}

impl Combine {
    pub const ALL: [Combine; 3] = [Self::Mean, Self::Min, Self::MeanMinusSpread];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Min => "min",
            Self::MeanMinusSpread => "mean − spread",
        }
    }

    pub fn of(self, rewards: &[f64]) -> f64 {
        let (mean, sd) = mean_sd(rewards);
        match self {
            Self::Mean => mean,
            Self::Min => rewards.iter().copied().fold(f64::INFINITY, f64::min),
            Self::MeanMinusSpread => mean - sd,
        }
    }
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n.max(1.0);
    if x.len() < 2 {
        return (mean, 0.0);
    }
    (mean, (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt())
}

/// How the members come to differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Resample {
    /// The same pairs, a different seed each.
    #[default]
    Seeds,
    /// A different seed and a bootstrap resample of the pairs each (as many, drawn with replacement).
    Bootstrap,
}

/// The members' runs and the pairs every member is tested on.
#[cfg(feature = "engine")]
pub struct Plan {
    pub members: Vec<RunSpec>,
    pub held_out: Vec<Preference>,
}

/// Splits the reward-model run's pairs once (its seed and held-out share), then gives member `k`
/// the seed `seed + k` (trainer and LoRA) and the training pairs, resampled for [`Resample::Bootstrap`],
/// centred by at least [`CENTERING`]. No member trains on a held-out pair.
#[cfg(feature = "engine")]
pub fn plan(spec: &RunSpec, members: usize, resample: Resample) -> Result<Plan> {
    if !matches!(spec.method, Method::Reward(_)) {
        return Err(Error::Invalid("an ensemble is made of reward models: choose the reward-model method".into()));
    }
    if !(2..=MAX_MEMBERS).contains(&members) {
        return Err(Error::Invalid(format!("an ensemble has 2 to {MAX_MEMBERS} members, not {members}")));
    }
    spec.validate()?;
    let pairs = &spec.data.pairs;
    let (train, held) = split_indices(pairs.len(), spec, 2);
    if train.len() < 2 {
        return Err(Error::Invalid(format!("an ensemble needs at least 2 pairs to train on; there are {}", train.len())));
    }
    let train: Vec<Preference> = train.iter().map(|&i| pairs[i].clone()).collect();
    let held_out = held.iter().map(|&i| pairs[i].clone()).collect();
    let members = (0..members as u64)
        .map(|k| {
            let seed = spec.train.seed.wrapping_add(k);
            let data = match resample {
                Resample::Seeds => train.clone(),
                Resample::Bootstrap => {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xB007_5712);
                    (0..train.len()).map(|_| train[rng.random_range(0..train.len())].clone()).collect()
                }
            };
            let mut s = spec.clone();
            s.train.seed = seed;
            if let Some(l) = &mut s.lora {
                l.seed = seed;
            }
            s.eval.eval_fraction = 0.0;
            if let Method::Reward(c) = &mut s.method
                && c.center_rewards_coefficient == 0.0
            {
                c.center_rewards_coefficient = CENTERING;
            }
            s.data = TrainData { pairs: data, ..Default::default() };
            s
        })
        .collect();
    Ok(Plan { members, held_out })
}

/// Trains one member; `None` when `on_step` (which sees each step's metrics) said stop.
#[cfg(feature = "engine")]
pub async fn train_member(session: &Session, spec: RunSpec, on_step: &mut dyn FnMut(&Metrics) -> bool) -> Result<Option<RewardHead>> {
    let mut run = Run::new(session, spec)?;
    while !run.is_done() {
        let metrics = run.step().await?;
        if !on_step(&metrics) {
            return Ok(None);
        }
    }
    match run.trained() {
        Trained::RewardModel(head) => Ok(Some(head)),
        Trained::Policy { .. } => unreachable!("the plan's runs train reward models"),
    }
}

/// One answer as the ensemble sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub prompt: String,
    pub completion: String,
    pub members: Vec<f64>,
    pub mean: f64,
    /// The members' standard deviation: how much they disagree.
    pub spread: f64,
}

/// At most this many answers a person gives are scored at once: each is a forward pass per member.
pub const MAX_TEXTS: usize = 64;

/// Refuses more answers than [`MAX_TEXTS`] from a person (the held-out report is not bounded).
pub fn check_texts(n: usize) -> Result<()> {
    if n > MAX_TEXTS {
        return Err(Error::Invalid(format!("{n} answers to score: at most {MAX_TEXTS} at a time, each is read by every member")));
    }
    Ok(())
}

/// Scores (prompt, completion) texts with every member.
#[cfg(feature = "engine")]
pub async fn score_texts(session: &Session, heads: &[RewardHead], enc: &Encoding, texts: &[(String, String)]) -> Result<Vec<Scored>> {
    // `[text][member]`
    let mut rewards = vec![Vec::with_capacity(heads.len()); texts.len()];
    for head in heads {
        for (row, v) in rewards.iter_mut().zip(session.score(&Rewarder::model(session, head.clone()), enc, texts).await?) {
            row.push(v);
        }
    }
    Ok(texts
        .iter()
        .zip(rewards)
        .map(|((p, c), members)| {
            let (mean, spread) = mean_sd(&members);
            Scored { prompt: p.clone(), completion: c.clone(), members, mean, spread }
        })
        .collect())
}

/// The ensemble on its held-out pairs: each member's accuracy, each combination's, and the mean
/// spread over the held-out answers (what "in distribution" looks like).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub pairs: usize,
    pub members: Vec<f64>,
    /// Accuracy of each combination, in [`Combine::ALL`]'s order.
    pub combined: Vec<(Combine, f64)>,
    pub spread: f64,
}

#[cfg(feature = "engine")]
pub async fn report(session: &Session, heads: &[RewardHead], enc: &Encoding, held_out: &[Preference]) -> Result<Report> {
    let texts: Vec<(String, String)> =
        held_out.iter().flat_map(|p| [(p.prompt.clone(), p.chosen.clone()), (p.prompt.clone(), p.rejected.clone())]).collect();
    let scored = score_texts(session, heads, enc, &texts).await?;
    let n = held_out.len().max(1) as f64;
    let accuracy = |pick: &dyn Fn(&Scored) -> f64| scored.chunks(2).filter(|cr| pick(&cr[0]) > pick(&cr[1])).count() as f64 / n;
    Ok(Report {
        pairs: held_out.len(),
        members: (0..heads.len()).map(|k| accuracy(&|s: &Scored| s.members[k])).collect(),
        combined: Combine::ALL.iter().map(|&c| (c, accuracy(&|s: &Scored| c.of(&s.members)))).collect(),
        spread: mean_spread(&scored),
    })
}

/// Mean of the answers' spreads.
pub fn mean_spread(scored: &[Scored]) -> f64 {
    scored.iter().map(|s| s.spread).sum::<f64>() / scored.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::Encoding;
    use crate::lab::spec::{MethodKind, RunSettings};

    #[test]
    fn combinations_follow_their_formulas() {
        let r = [1.0, 2.0, 6.0];
        let (mean, sd) = mean_sd(&r);
        assert_eq!(mean, 3.0);
        // Σ(r − 3)² = 4 + 1 + 9 = 14, over K − 1 = 2: sd = √7.
        assert!((sd - 7f64.sqrt()).abs() < 1e-12);
        assert_eq!(Combine::Mean.of(&r), 3.0);
        assert_eq!(Combine::Min.of(&r), 1.0);
        assert!((Combine::MeanMinusSpread.of(&r) - (3.0 - 7f64.sqrt())).abs() < 1e-12);
        assert_eq!(mean_sd(&[5.0]), (5.0, 0.0));
    }

    fn spec(n: usize) -> RunSpec {
        let settings = RunSettings { method: MethodKind::Reward, ..Default::default() };
        let pairs = (0..n).map(|i| Preference { prompt: format!("q{i}"), chosen: format!("yes {i}"), rejected: format!("no {i}") }).collect();
        settings.spec(vec![], Encoding::default(), TrainData { pairs, ..Default::default() })
    }

    #[test]
    fn members_differ_by_seed_or_resample_and_never_see_held_out_pairs() {
        let s = spec(20);
        let p = plan(&s, 3, Resample::Seeds).unwrap();
        assert_eq!((p.members.len(), p.held_out.len()), (3, 4));
        let seeds: Vec<u64> = p.members.iter().map(|m| m.train.seed).collect();
        assert_eq!(seeds, [s.train.seed, s.train.seed + 1, s.train.seed + 2]);
        assert!(p.members.iter().all(|m| m.lora.as_ref().unwrap().seed == m.train.seed && m.eval.eval_fraction == 0.0));
        assert!(p.members.windows(2).all(|w| w[0].data == w[1].data), "seeds: the same pairs");
        assert!(p.members.iter().all(|m| matches!(&m.method, Method::Reward(c) if c.center_rewards_coefficient == CENTERING)));
        let b = plan(&s, 3, Resample::Bootstrap).unwrap();
        assert_eq!(b.held_out, p.held_out, "one split for every member");
        assert_ne!(b.members[0].data, b.members[1].data, "bootstrap: different draws");
        for m in &b.members {
            assert_eq!(m.data.pairs.len(), 16);
            assert!(m.data.pairs.iter().all(|x| !b.held_out.contains(x)));
            let distinct: std::collections::HashSet<&str> = m.data.pairs.iter().map(|x| x.prompt.as_str()).collect();
            assert!(distinct.len() < 16, "drawn with replacement: some pairs twice");
        }
    }

    #[test]
    fn bad_ensembles_are_refused_with_the_reason() {
        let e = |s: &RunSpec, k: usize| plan(s, k, Resample::Seeds).err().unwrap().to_string();
        assert!(e(&spec(20), 1).contains("2 to 8 members"));
        assert!(e(&spec(20), 9).contains("2 to 8 members"));
        assert!(e(&spec(1), 3).contains("at least 2 pairs"));
        let mut dpo = spec(20);
        dpo.method = RunSettings::default().spec(vec![], Encoding::default(), TrainData::default()).method;
        assert!(e(&dpo, 3).contains("reward-model method"));
        assert!(check_texts(MAX_TEXTS).is_ok() && check_texts(MAX_TEXTS + 1).unwrap_err().to_string().contains("at most 64"));
    }
}
