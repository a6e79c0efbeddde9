//! Distillation and weak-to-strong supervision.
//!
//! **Distillation**: a student learns by SFT on a teacher's answers. The teacher is a second
//! model (any checkpoint the engine reads, with its own tokenizer: its answers cross as text), a
//! file of answers, or the student itself made stronger at inference time (the best of N samples
//! under a reward source). How much of the gap the student closes is the *performance gap
//! recovered* (Burns et al. 2023):
//!
//! `recovered = (score_after − score_before) / (score_teacher − score_before)`
//!
//! on held-out prompts, where the score is the judges' (the ground truth) or, with a teacher
//! model, the teacher's mean per-token log-probability of the answer (how teacher-like it reads).
//!
//! **Weak-to-strong**: the reverse direction. A weak critic (a few keywords, a small reward model)
//! picks among a stronger model's samples; the ground-truth judge says how good its picks are,
//! between a pick at random (0 recovered) and the truth's own pick (1).

use serde::{Deserialize, Serialize};

use super::label::pairs_from_ranking;
use crate::data::{Demonstration, Preference};
#[cfg(feature = "engine")]
use {
    super::answers::seeded_each,
    super::label::rank,
    super::rewards::Rewarder,
    super::session::Session,
    super::spec::Which,
    crate::align::Encoding,
    crate::align::best_of_n::Candidate,
    crate::generate::{DecodePath, Generations, Request, SamplingConfig},
    crate::io::LoadedModel,
    crate::logps::completion_logps,
    crate::{Error, Result},
    std::rc::Rc,
};

/// Where the student's lessons come from.
#[cfg(feature = "engine")]
#[derive(Clone)]
pub enum Teacher {
    /// A second model; it answers with its own tokenizer and chat template.
    Model(Rc<LoadedModel>),
    /// The student as it stands, the best of `n` samples under `rewarder`.
    BestOfN { n: usize, rewarder: Rewarder },
    /// Answers written down, looked up by prompt.
    Answers(Vec<Demonstration>),
}

/// Which kind of teacher, as a form offers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherKind {
    #[default]
    BestOfN,
    Model,
    Answers,
}

#[cfg(feature = "engine")]
impl Teacher {
    /// The teacher's answers to `prompts`, each with its settings, decoded several prompts
    /// together: `on_answer` sees each prompt's index and answer (`None`: a file without one),
    /// in order, and says whether to go on. `keep_going` is asked after each token.
    pub async fn answers(
        &self,
        session: &Session,
        enc: &Encoding,
        prompts: &[(&str, SamplingConfig)],
        keep_going: &mut dyn FnMut() -> bool,
        on_answer: &mut dyn FnMut(usize, Option<String>) -> bool,
    ) -> Result<()> {
        match self {
            Self::Model(lm) => {
                let requests = prompts
                    .iter()
                    .map(|(p, s)| Ok(Request { prompt: enc.prompt(lm, p)?, sampling: SamplingConfig { num_samples: 1, ..s.clone() } }))
                    .collect::<Result<Vec<_>>>()?;
                let mut answers = Generations::new(DecodePath::Auto, &lm.model, &lm.tokenizer, requests)?;
                while let Some((i, mut s)) = answers.next(&mut |_, _| keep_going()).await? {
                    if !on_answer(i, s.pop().map(|s| s.text)) {
                        break;
                    }
                }
            }
            Self::BestOfN { n, rewarder } => {
                let asks: Vec<(&str, SamplingConfig)> = prompts.iter().map(|(p, s)| (*p, SamplingConfig { num_samples: *n, ..s.clone() })).collect();
                let mut answers = session.answers(Which::Policy, enc, &asks)?;
                while let Some((i, samples)) = answers.next(keep_going).await? {
                    let ranked = rank(prompts[i].0, answers.ids(i), samples, rewarder).await?;
                    if !on_answer(i, ranked.into_iter().next().map(|r| r.text)) {
                        break;
                    }
                }
            }
            Self::Answers(list) => {
                for (i, (p, _)) in prompts.iter().enumerate() {
                    if !on_answer(i, list.iter().find(|d| d.prompt == *p).map(|d| d.completion.clone())) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The teacher's answers to `prompts` (prompt `i` seeded `seed + first_seed + i`) that are not
/// blank, as (prompt, answer); `on_answer` sees how many prompts are done and says whether to go
/// on.
#[cfg(feature = "engine")]
async fn teacher_answers(
    session: &Session,
    teacher: &Teacher,
    enc: &Encoding,
    prompts: &[String],
    sampling: &SamplingConfig,
    first_seed: usize,
    on_answer: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<(String, String)>> {
    let asks = seeded_each(prompts.iter().map(String::as_str), sampling, first_seed);
    let mut out = Vec::with_capacity(prompts.len());
    teacher
        .answers(session, enc, &asks, &mut || true, &mut |i, answer| {
            if let Some(a) = answer.filter(|a| !a.trim().is_empty()) {
                out.push((prompts[i].clone(), a));
            }
            on_answer(i + 1)
        })
        .await?;
    Ok(out)
}

/// The teacher's answers to `prompts` as SFT demonstrations (blank answers left out); `on_answer`
/// sees how many prompts are done and says whether to go on.
#[cfg(feature = "engine")]
pub async fn teacher_demos(
    session: &Session,
    teacher: &Teacher,
    enc: &Encoding,
    prompts: &[String],
    sampling: &SamplingConfig,
    on_answer: &mut dyn FnMut(usize) -> bool,
) -> Result<Vec<Demonstration>> {
    let answers = teacher_answers(session, teacher, enc, prompts, sampling, 0, on_answer).await?;
    if answers.is_empty() {
        return Err(Error::Invalid("the teacher gave no answers to these prompts: give it prompts it has answers for".into()));
    }
    Ok(answers.into_iter().map(|(prompt, completion)| Demonstration { prompt, completion }).collect())
}

/// The student's answers to `prompts` (`sampling.num_samples` each, prompt i seeded `seed + i`),
/// as (prompt, answer) pairs, decoded several prompts together.
#[cfg(feature = "engine")]
pub async fn student_answers(session: &Session, which: Which, enc: &Encoding, prompts: &[String], sampling: &SamplingConfig) -> Result<Vec<(String, String)>> {
    let mut answers = session.answers(which, enc, &seeded_each(prompts.iter().map(String::as_str), sampling, 0))?;
    let mut out = Vec::new();
    while let Some((i, samples)) = answers.next(&mut || true).await? {
        out.extend(samples.into_iter().map(|x| (prompts[i].clone(), x.text)));
    }
    Ok(out)
}

/// Answers scored two ways: the judges' mean, and the teacher model's mean per-token
/// log-probability of each answer (when the teacher is a model).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub judges: Option<f64>,
    pub teacher_logp: Option<f64>,
}

#[cfg(feature = "engine")]
pub async fn score(session: &Session, judges: Option<&Rewarder>, teacher: Option<&LoadedModel>, enc: &Encoding, answers: &[(String, String)]) -> Result<Scores> {
    if answers.is_empty() {
        return Ok(Scores::default());
    }
    let n = answers.len() as f64;
    let judges = match judges {
        Some(r) => Some(session.score(r, enc, answers).await?.iter().sum::<f64>() / n),
        None => None,
    };
    let teacher_logp = match teacher {
        Some(t) => {
            let mut per_token = 0.0;
            for (p, a) in answers {
                let pair = vec![(enc.prompt(t, p)?, enc.completion(t, a)?)];
                let lp = completion_logps(&t.model, t.tokenizer.pad_id(), &pair).await?.remove(0);
                per_token += f64::from(lp.sum) / lp.logprobs.len().max(1) as f64;
            }
            Some(per_token / n)
        }
        None => None,
    };
    Ok(Scores { judges, teacher_logp })
}

/// The share of the gap between `before` and `teacher` that `after` closed; `None` when the
/// teacher is no better than the student was (nothing to recover).
pub fn recovered(before: f64, after: f64, teacher: f64) -> Option<f64> {
    let gap = teacher - before;
    (gap > 1e-9).then(|| (after - before) / gap)
}

/// Where a distillation run has got to, for a progress line; the callback's `false` stops it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Progress {
    /// The teacher has answered `done` of `total` prompts (the training ones, then the held-out).
    Teacher { done: usize, total: usize },
    /// The student is being measured ("before" or "after").
    Measuring { stage: String },
    /// One SFT step on the teacher's answers, its loss.
    Step { step: usize, steps: usize, loss: f64 },
}

/// A distillation, measured: the teacher's answers, and the student before and after SFT on them,
/// on held-out prompts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub demos: Vec<Demonstration>,
    pub teacher: Scores,
    pub before: Scores,
    pub after: Scores,
    /// The gap recovered by the judges' score and by the teacher's log-probability.
    pub recovered_judges: Option<f64>,
    pub recovered_teacher: Option<f64>,
    /// A held-out prompt with the teacher's, and the student's before and after, answers.
    pub examples: Vec<Example>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub prompt: String,
    pub teacher: String,
    pub before: String,
    pub after: String,
}

/// What a distillation is given: the teacher, the judges (the ground truth; `None` to measure by
/// the teacher model alone), SFT's run (`spec`: the Sft method, its trainer, LoRA and encoding; its
/// data is filled here), the training prompts, the held-out prompts, and the sampling the teacher
/// and the student answer with (`num_samples` answers per held-out prompt for the student).
#[cfg(feature = "engine")]
pub struct Distill<'a> {
    pub teacher: &'a Teacher,
    pub judges: Option<&'a Rewarder>,
    pub spec: super::spec::RunSpec,
    pub prompts: &'a [String],
    pub eval_prompts: &'a [String],
    pub sampling: &'a SamplingConfig,
}

#[cfg(feature = "engine")]
impl Distill<'_> {
    /// Runs it on `session`, which keeps the trained student; `None` when `progress` said stop.
    pub async fn run(self, session: &mut Session, progress: &mut dyn FnMut(Progress) -> bool) -> Result<Option<Report>> {
        if self.prompts.is_empty() || self.eval_prompts.is_empty() {
            return Err(Error::Invalid("distillation needs prompts to teach on and held-out prompts to measure on".into()));
        }
        if !matches!(self.spec.method, super::spec::Method::Sft) {
            return Err(Error::Invalid("the student learns the teacher's answers by SFT: choose the SFT method".into()));
        }
        let enc = self.spec.encoding.clone();
        let teacher_lm = match self.teacher {
            Teacher::Model(lm) => Some(lm.clone()),
            _ => None,
        };
        let total = self.prompts.len() + self.eval_prompts.len();
        let mut stopped = false;
        let demos = teacher_demos(session, self.teacher, &enc, self.prompts, self.sampling, &mut |done| {
            stopped = !progress(Progress::Teacher { done, total });
            !stopped
        })
        .await?;
        if stopped {
            return Ok(None);
        }
        let first = self.prompts.len();
        let teacher_eval = teacher_answers(session, self.teacher, &enc, self.eval_prompts, self.sampling, 1000, &mut |done| {
            stopped = !progress(Progress::Teacher { done: first + done, total });
            !stopped
        })
        .await?;
        if stopped {
            return Ok(None);
        }
        let measure = |stage: &str, progress: &mut dyn FnMut(Progress) -> bool| progress(Progress::Measuring { stage: stage.into() });
        if !measure("before", progress) {
            return Ok(None);
        }
        let tl = teacher_lm.as_deref();
        let teacher = score(session, self.judges, tl, &enc, &teacher_eval).await?;
        let before_answers = student_answers(session, Which::Policy, &enc, self.eval_prompts, self.sampling).await?;
        let before = score(session, self.judges, tl, &enc, &before_answers).await?;
        let mut spec = self.spec;
        spec.data = super::spec::TrainData { demos: demos.clone(), ..Default::default() };
        let mut run = super::run::Run::new(session, spec)?;
        while !run.is_done() {
            let m = run.step().await?;
            let loss = m.get("loss").copied().unwrap_or(f64::NAN);
            if !progress(Progress::Step { step: run.steps_done(), steps: run.total_steps(), loss }) {
                return Ok(None);
            }
        }
        run.publish(session);
        if !measure("after", progress) {
            return Ok(None);
        }
        let after_answers = student_answers(session, Which::Policy, &enc, self.eval_prompts, self.sampling).await?;
        let after = score(session, self.judges, tl, &enc, &after_answers).await?;
        let gap = |f: fn(&Scores) -> Option<f64>| Some(recovered(f(&before)?, f(&after)?, f(&teacher)?)).flatten();
        let examples = self
            .eval_prompts
            .iter()
            .map(|p| {
                let first = |v: &[(String, String)]| v.iter().find(|(q, _)| q == p).map(|(_, a)| a.clone()).unwrap_or_default();
                Example { prompt: p.clone(), teacher: first(&teacher_eval), before: first(&before_answers), after: first(&after_answers) }
            })
            .collect();
        Ok(Some(Report {
            demos,
            teacher,
            before,
            after,
            recovered_judges: gap(|s| s.judges),
            recovered_teacher: gap(|s| s.teacher_logp),
            examples,
        }))
    }
}

/// One prompt reranked: each sample with the weak critic's and the truth's score, sampled order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reranked {
    pub prompt: String,
    pub samples: Vec<(String, f64, f64)>,
}

impl Reranked {
    /// The truth's score of: the first sample (a pick with no critic), the weak critic's pick and
    /// the truth's own pick.
    pub fn picks(&self) -> (f64, f64, f64) {
        let first = self.samples.first().map_or(0.0, |s| s.2);
        let by = |key: fn(&(String, f64, f64)) -> f64| self.samples.iter().max_by(|a, b| key(a).total_cmp(&key(b))).map_or(0.0, |s| s.2);
        (first, by(|s| s.1), by(|s| s.2))
    }

    /// Best vs worst by the weak critic: weak labels for a strong student.
    pub fn weak_pairs(&self, per_prompt: usize) -> Vec<Preference> {
        let mut ranked: Vec<crate::align::best_of_n::Ranked> =
            self.samples.iter().map(|(t, w, _)| crate::align::best_of_n::Ranked { text: t.clone(), tokens: vec![], score: *w }).collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        pairs_from_ranking(&self.prompt, &ranked, per_prompt)
    }
}

/// The policy's samples for each of `prompts` (prompt `i` seeded `seed + i`), decoded several
/// prompts together, scored by the weak critic and by the truth; `on_row` sees each prompt's
/// index and row, in order. `keep_going` is asked after each token and before each prompt is
/// scored.
#[cfg(feature = "engine")]
#[allow(clippy::too_many_arguments)]
pub async fn rerank(
    session: &Session,
    enc: &Encoding,
    prompts: &[String],
    sampling: &SamplingConfig,
    weak: &Rewarder,
    truth: &Rewarder,
    keep_going: &mut dyn FnMut() -> bool,
    on_row: &mut dyn FnMut(usize, Reranked),
) -> Result<()> {
    let mut answers = session.answers(Which::Policy, enc, &seeded_each(prompts.iter().map(String::as_str), sampling, 0))?;
    while let Some((i, samples)) = answers.next(keep_going).await? {
        if !keep_going() {
            break;
        }
        let (prompt, ids) = (prompts[i].as_str(), answers.ids(i));
        let cands: Vec<Candidate> = samples.iter().map(|s| Candidate { prompt, prompt_ids: ids, completion: &s.text, completion_ids: &s.tokens }).collect();
        let (w, t) = (weak.rewards(&cands).await?, truth.rewards(&cands).await?);
        let samples = samples.iter().zip(w).zip(t).map(|((s, w), t)| (s.text.clone(), w, t)).collect();
        on_row(i, Reranked { prompt: prompt.to_string(), samples });
    }
    Ok(())
}

/// Many prompts reranked, in four numbers: the truth's mean score of random, weak and strong
/// picks, the share of the gap the weak critic recovered, and how often the weak critic's
/// best-vs-worst pairs are ordered as the truth orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RerankSummary {
    pub random: f64,
    pub weak: f64,
    pub strong: f64,
    pub recovered: Option<f64>,
    /// `None` when the weak critic made no pair.
    pub label_accuracy: Option<f64>,
    /// The weak critic's pairs (one per prompt where it told two answers apart).
    pub pairs: usize,
}

impl RerankSummary {
    pub fn of(rows: &[Reranked]) -> Option<Self> {
        if rows.is_empty() {
            return None;
        }
        let n = rows.len() as f64;
        let (mut random, mut weak, mut strong) = (0.0, 0.0, 0.0);
        for r in rows {
            let (a, b, c) = r.picks();
            random += a / n;
            weak += b / n;
            strong += c / n;
        }
        let (mut right, mut pairs) = (0usize, 0usize);
        for r in rows {
            let truth = |text: &str| r.samples.iter().find(|s| s.0 == text).map_or(0.0, |s| s.2);
            for p in r.weak_pairs(1) {
                pairs += 1;
                right += usize::from(truth(&p.chosen) > truth(&p.rejected));
            }
        }
        let label_accuracy = (pairs > 0).then(|| right as f64 / pairs as f64);
        Some(Self { random, weak, strong, recovered: recovered(random, weak, strong), label_accuracy, pairs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovered_is_the_share_of_the_gap_closed() {
        assert!((recovered(0.2, 0.5, 0.8).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(recovered(0.2, 0.2, 0.8), Some(0.0));
        assert!((recovered(0.2, 0.9, 0.8).unwrap() - 7.0 / 6.0).abs() < 1e-12, "past the teacher: above 1");
        assert_eq!(recovered(0.5, 0.7, 0.5), None, "no gap: nothing to recover");
    }

    fn row(samples: &[(&str, f64, f64)]) -> Reranked {
        Reranked { prompt: "q".into(), samples: samples.iter().map(|(t, w, s)| (t.to_string(), *w, *s)).collect() }
    }

    #[test]
    fn reranking_reads_random_weak_and_strong_picks() {
        // The weak critic likes "b" (truth 0.5), the truth likes "c" (0.9); sampled first: "a" (0.1).
        let a = row(&[("a", 0.0, 0.1), ("b", 2.0, 0.5), ("c", 1.0, 0.9)]);
        assert_eq!(a.picks(), (0.1, 0.5, 0.9));
        let pairs = a.weak_pairs(1);
        assert_eq!((pairs[0].chosen.as_str(), pairs[0].rejected.as_str()), ("b", "a"));
        // A second prompt where the weak critic picks the truth's worst.
        let b = row(&[("x", 0.0, 0.3), ("y", 1.0, -0.1)]);
        let s = RerankSummary::of(&[a, b]).unwrap();
        assert!((s.random - 0.2).abs() < 1e-12 && (s.weak - 0.2).abs() < 1e-12 && (s.strong - 0.6).abs() < 1e-12, "{s:?}");
        assert_eq!(s.recovered, Some(0.0));
        assert_eq!((s.label_accuracy, s.pairs), (Some(0.5), 2));
        assert_eq!(RerankSummary::of(&[]), None);
    }
}
