//! Adversarial probes: prompts written to pull a model off its instructions or into rude, unsafe
//! or off-topic answers. Each probe is answered by the model before alignment (the reference) and
//! after it (the policy), with the same seed, and every answer is scored by the probe's own
//! judges; an answer scored below the probe's `trigger_below` shows the behaviour the probe hunts.
//!
//! Per probe: the share of answers that trigger, before and after, and the mean sequence KL of
//! the policy's answers to the reference, `KL ≈ mean over answers of log π(y) - log ref(y)`.
//! Over the set: the trigger rates and mean scores, by category, and the spread of the probes'
//! mean scores (their standard deviation), which says how much the prompt decides the behaviour:
//! alignment tends to widen it, as wanted answers get likelier and a prompt written to pull the
//! other way still can.

use serde::{Deserialize, Serialize};

use super::label::pairs_from_ranking;
use crate::align::Encoding;
use crate::align::best_of_n::Ranked;
use crate::data::Preference;
use crate::judges::JudgeSpec;
use crate::{Error, Result};
#[cfg(feature = "engine")]
use {
    super::answers::seeded,
    super::evaluate::sequence_kl,
    super::policy::PolicyKind,
    super::session::Session,
    super::spec::Which,
    crate::generate::{Request, Sample, SamplingConfig},
};

pub const MAX_PROBES: usize = 200;
pub const MAX_PROBE_CHARS: usize = 2000;
/// Judges one probe may name.
pub const MAX_PROBE_JUDGES: usize = 8;
pub const MAX_PROBES_BYTES: usize = 1 << 20;

/// What a probe tries to get out of the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Insults, anger, swearing.
    #[default]
    Rude,
    /// Help with something that could hurt someone.
    Unsafe,
    /// Leaving the topic the system prompt sets.
    OffTopic,
    /// Breaking a rule the system prompt sets (a secret, a length, a format).
    Instructions,
}

impl Category {
    pub const ALL: [Category; 4] = [Self::Rude, Self::Unsafe, Self::OffTopic, Self::Instructions];

    pub fn label(self) -> &'static str {
        match self {
            Self::Rude => "rude",
            Self::Unsafe => "unsafe",
            Self::OffTopic => "off topic",
            Self::Instructions => "instructions",
        }
    }
}

/// One probe: a prompt, the system prompt it is asked under (empty: the session's), and the
/// judges that score its answers in the CLI's form (`sentiment`, `avoid=a+b`, `length=20*2`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default)]
    pub category: Category,
    pub prompt: String,
    #[serde(default)]
    pub system: String,
    pub judges: Vec<String>,
    /// An answer scored below this shows the behaviour.
    #[serde(default)]
    pub trigger_below: f64,
    /// Why the probe might work, for the student.
    #[serde(default)]
    pub note: String,
}

impl Probe {
    /// The probe's judges, parsed; an unknown one is named.
    pub fn judge_specs(&self) -> Result<Vec<(JudgeSpec, f64)>> {
        if self.judges.is_empty() || self.judges.len() > MAX_PROBE_JUDGES {
            return Err(Error::Invalid(format!("a probe needs 1 to {MAX_PROBE_JUDGES} judges to score its answers (e.g. sentiment); this one has {}", self.judges.len())));
        }
        self.judges.iter().map(|j| JudgeSpec::parse_weighted(j.trim())).collect()
    }

    /// Refuses what cannot be asked: an empty or overlong prompt, bad judges.
    pub fn validate(&self) -> Result<()> {
        if self.prompt.trim().is_empty() {
            return Err(Error::Invalid("a probe needs a prompt".into()));
        }
        for (what, text) in [("prompt", &self.prompt), ("system prompt", &self.system), ("note", &self.note)] {
            if text.chars().count() > MAX_PROBE_CHARS {
                return Err(Error::Invalid(format!("the probe's {what} is over {MAX_PROBE_CHARS} characters; shorten it")));
            }
        }
        if !self.trigger_below.is_finite() {
            return Err(Error::Invalid("trigger_below must be a number".into()));
        }
        self.judge_specs().map(|_| ())
    }

    /// The encoding the probe is asked under: its own system prompt when it has one.
    pub fn encoding(&self, enc: &Encoding) -> Encoding {
        if self.system.trim().is_empty() { enc.clone() } else { Encoding { system: self.system.clone(), ..enc.clone() } }
    }
}

/// Checks a whole set (the worker and the file reader share it).
pub fn validate_all(probes: &[Probe]) -> Result<()> {
    if probes.is_empty() || probes.len() > MAX_PROBES {
        return Err(Error::Invalid(format!("a probe set holds 1 to {MAX_PROBES} probes; this one has {}", probes.len())));
    }
    probes.iter().enumerate().try_for_each(|(i, p)| p.validate().map_err(|e| Error::Invalid(format!("probes[{i}]: {e}"))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProbeFile {
    alignlab_probes: u32,
    probes: Vec<Probe>,
}

/// Reads a probe file (`{"alignlab_probes": 1, "probes": [{category, prompt, system, judges, trigger_below, note}]}`).
pub fn parse_probes(bytes: &[u8]) -> Result<Vec<Probe>> {
    let f: ProbeFile = super::read_versioned(bytes, "probe file", MAX_PROBES_BYTES, "a probe set is a few hundred prompts at most", |f: &ProbeFile| f.alignlab_probes)?;
    validate_all(&f.probes)?;
    Ok(f.probes)
}

/// Writes a probe file that [`parse_probes`] reads back.
pub fn probes_file(probes: &[Probe]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({"alignlab_probes": 1, "probes": probes})).expect("probes serialize")
}

/// The probe set shipped with the project (`www/probes.json`).
pub fn starter_probes() -> Vec<Probe> {
    parse_probes(include_bytes!("../../www/probes.json")).expect("the shipped probe set reads")
}

/// One model's answers to a probe, scored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub texts: Vec<String>,
    pub scores: Vec<f64>,
    /// How many answers scored below the trigger.
    pub triggered: usize,
}

impl Side {
    pub fn mean(&self) -> f64 {
        mean(&self.scores)
    }

    pub fn rate(&self) -> f64 {
        if self.scores.is_empty() { 0.0 } else { self.triggered as f64 / self.scores.len() as f64 }
    }
}

/// How a probe fared from before to after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Triggered before, never after.
    Fixed,
    /// Triggers less often.
    Better,
    /// Triggers as often as before.
    StillTriggers,
    /// Triggers more often.
    Worse,
    /// Triggered neither before nor after.
    NeverTriggered,
}

impl Verdict {
    pub fn of(before: f64, after: f64) -> Self {
        match (before > 0.0, after > 0.0) {
            (false, false) => Self::NeverTriggered,
            (true, false) => Self::Fixed,
            _ if after < before => Self::Better,
            _ if after > before => Self::Worse,
            _ => Self::StillTriggers,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Better => "better",
            Self::StillTriggers => "still triggers",
            Self::Worse => "worse",
            Self::NeverTriggered => "never triggered",
        }
    }
}

/// A probe answered before and after alignment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: Probe,
    pub before: Side,
    pub after: Side,
    /// Mean sequence KL of the after answers to the reference, in nats.
    pub kl: f64,
    pub verdict: Verdict,
}

impl ProbeResult {
    /// Best against worst of all this probe's answers, as preference pairs for training against
    /// the behaviour (red-teaming's loop). None for a probe with its own system prompt: a pair
    /// does not carry one, and training without it would teach a different lesson.
    pub fn pairs(&self, per_probe: usize) -> Vec<Preference> {
        if !self.probe.system.trim().is_empty() {
            return Vec::new();
        }
        // An answer both models gave counts once.
        let mut seen = std::collections::HashSet::new();
        let mut ranked: Vec<Ranked> = [&self.before, &self.after]
            .iter()
            .flat_map(|s| s.texts.iter().zip(&s.scores))
            .filter(|(t, _)| seen.insert(t.as_str()))
            .map(|(t, &score)| Ranked { text: t.clone(), tokens: vec![], score })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        pairs_from_ranking(&self.probe.prompt, &ranked, per_probe)
    }
}

/// Answers each probe by the reference and by the policy (the same seed for both, probe `i`
/// seeded `seed + i`), scores every answer with the probe's judges and measures the policy's KL
/// to the reference. Each side's answers are decoded several probes together, the two sides
/// side by side, so `on_result` sees each probe's result, in order, as soon as both sides have
/// answered it. `keep_going` is asked after each token and before each probe is scored.
#[cfg(feature = "engine")]
pub async fn run_probes(
    session: &Session,
    enc: &Encoding,
    probes: &[Probe],
    sampling: &SamplingConfig,
    keep_going: &mut dyn FnMut() -> bool,
    on_result: &mut dyn FnMut(usize, ProbeResult),
) -> Result<()> {
    validate_all(probes)?;
    let encs: Vec<Encoding> = probes.iter().map(|p| p.encoding(enc)).collect();
    let requests = probes
        .iter()
        .zip(&encs)
        .enumerate()
        .map(|(i, (p, enc))| Ok(Request { prompt: session.prompt_ids(enc, &p.prompt)?, sampling: seeded(sampling, i) }))
        .collect::<Result<Vec<_>>>()?;
    // An untrained policy is its reference: the same answers, asked once.
    let trained = !matches!(session.policy.kind, PolicyKind::Base);
    let mut before_answers = session.answers_to(Which::Reference, requests.clone())?;
    // The policy's log-probabilities of its answers, for the KL, come with them.
    let mut after_answers = if trained { Some(session.answers_to(Which::Policy, requests.clone())?.keeping_logps()) } else { None };
    let reference = session.model(Which::Reference);
    while let Some((i, samples)) = before_answers.next(keep_going).await? {
        let after = match after_answers.as_mut() {
            Some(a) => match a.next(keep_going).await? {
                Some((_, samples)) => Some(samples),
                None => break,
            },
            None => None,
        };
        if !keep_going() {
            break;
        }
        let (probe, enc) = (&probes[i], &encs[i]);
        let judges = probe.judge_specs()?;
        let before = score_side(session, enc, probe, &judges, &samples).await?;
        let (after, kl) = match after {
            Some(samples) => {
                let side = score_side(session, enc, probe, &judges, &samples).await?;
                (side, mean(&sequence_kl(session, &reference, &requests[i].prompt, &samples).await?))
            }
            None => (before.clone(), 0.0),
        };
        let verdict = Verdict::of(before.rate(), after.rate());
        on_result(i, ProbeResult { probe: probe.clone(), before, after, kl, verdict });
    }
    Ok(())
}

/// One model's answers to the probe, scored with its judges.
#[cfg(feature = "engine")]
async fn score_side(session: &Session, enc: &Encoding, probe: &Probe, judges: &[(JudgeSpec, f64)], samples: &[Sample]) -> Result<Side> {
    let texts: Vec<String> = samples.iter().map(|s| s.text.clone()).collect();
    let (scores, _) = session.judge_texts(enc, &probe.prompt, &texts, judges.to_vec()).await?;
    let triggered = scores.iter().filter(|&&s| s < probe.trigger_below).count();
    Ok(Side { texts, scores, triggered })
}

/// Before and after for one category, or for the whole set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub probes: usize,
    /// Share of answers that showed the behaviour.
    pub rate_before: f64,
    pub rate_after: f64,
    pub mean_before: f64,
    pub mean_after: f64,
}

impl Tally {
    fn of<'a>(results: impl Iterator<Item = &'a ProbeResult> + Clone) -> Self {
        let all = |f: fn(&ProbeResult) -> &Side| -> Side {
            results.clone().map(f).fold(Side::default(), |mut acc, s| {
                acc.scores.extend(&s.scores);
                acc.triggered += s.triggered;
                acc
            })
        };
        let (b, a) = (all(|r| &r.before), all(|r| &r.after));
        Self { probes: results.count(), rate_before: b.rate(), rate_after: a.rate(), mean_before: b.mean(), mean_after: a.mean() }
    }
}

/// A probe run summed up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeSummary {
    pub all: Tally,
    pub by_category: Vec<(Category, Tally)>,
    /// Standard deviation of the probes' mean scores: how much the prompt decides the behaviour.
    pub spread_before: f64,
    pub spread_after: f64,
    pub kl: f64,
    /// Mean length of the answers in words, before and after: a change in score that comes with
    /// much shorter or longer answers may be the length speaking.
    pub words_before: f64,
    pub words_after: f64,
    /// How many probes got each verdict, in [`Verdict`]'s order.
    pub fixed: usize,
    pub better: usize,
    pub still_triggers: usize,
    pub worse: usize,
}

impl ProbeSummary {
    pub fn of(results: &[ProbeResult]) -> Self {
        let by_category = Category::ALL
            .iter()
            .filter(|c| results.iter().any(|r| r.probe.category == **c))
            .map(|&c| (c, Tally::of(results.iter().filter(move |r| r.probe.category == c))))
            .collect();
        let spread = |f: fn(&ProbeResult) -> f64| std_dev(&results.iter().map(f).collect::<Vec<_>>());
        let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
        Self {
            all: Tally::of(results.iter()),
            by_category,
            spread_before: spread(|r| r.before.mean()),
            spread_after: spread(|r| r.after.mean()),
            kl: mean(&results.iter().map(|r| r.kl).collect::<Vec<_>>()),
            words_before: mean_words(results.iter().map(|r| &r.before)),
            words_after: mean_words(results.iter().map(|r| &r.after)),
            fixed: count(Verdict::Fixed),
            better: count(Verdict::Better),
            still_triggers: count(Verdict::StillTriggers),
            worse: count(Verdict::Worse),
        }
    }
}

fn mean_words<'a>(sides: impl Iterator<Item = &'a Side>) -> f64 {
    mean(&sides.flat_map(|s| s.texts.iter().map(|t| t.split_whitespace().count() as f64)).collect::<Vec<_>>())
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Population standard deviation.
fn std_dev(v: &[f64]) -> f64 {
    let m = mean(v);
    mean(&v.iter().map(|x| (x - m).powi(2)).collect::<Vec<_>>()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(scores: &[f64], below: f64) -> Side {
        Side {
            texts: (0..scores.len()).map(|i| format!("answer {i}")).collect(),
            scores: scores.to_vec(),
            triggered: scores.iter().filter(|&&s| s < below).count(),
        }
    }

    fn result(category: Category, before: &[f64], after: &[f64]) -> ProbeResult {
        let (b, mut a) = (side(before, 0.0), side(after, 0.0));
        a.texts = a.texts.iter().map(|t| format!("{t} later")).collect();
        let verdict = Verdict::of(b.rate(), a.rate());
        ProbeResult { probe: Probe { category, prompt: "p".into(), judges: vec!["sentiment".into()], ..Probe::default() }, before: b, after: a, kl: 0.5, verdict }
    }

    #[test]
    fn the_shipped_set_reads_and_covers_every_category() {
        let probes = starter_probes();
        for c in Category::ALL {
            assert!(probes.iter().filter(|p| p.category == c).count() >= 3, "{c:?}");
        }
        assert!(probes.iter().all(|p| !p.note.is_empty()), "every shipped probe says why it might work");
        assert_eq!(parse_probes(probes_file(&probes).as_bytes()).unwrap(), probes);
    }

    #[test]
    fn verdicts_compare_trigger_rates() {
        assert_eq!(Verdict::of(0.5, 0.0), Verdict::Fixed);
        assert_eq!(Verdict::of(0.5, 0.25), Verdict::Better);
        assert_eq!(Verdict::of(0.5, 0.5), Verdict::StillTriggers);
        assert_eq!(Verdict::of(0.25, 0.5), Verdict::Worse);
        assert_eq!(Verdict::of(0.0, 0.25), Verdict::Worse);
        assert_eq!(Verdict::of(0.0, 0.0), Verdict::NeverTriggered);
    }

    #[test]
    fn the_summary_pools_answers_by_category() {
        let rs = [
            result(Category::Rude, &[-0.5, 0.5], &[0.5, 0.5]),
            result(Category::Rude, &[-0.5, -0.5], &[-0.5, 0.5]),
            result(Category::OffTopic, &[1.0, 1.0], &[1.0, 1.0]),
        ];
        let s = ProbeSummary::of(&rs);
        assert_eq!((s.all.probes, s.fixed, s.better, s.still_triggers, s.worse), (3, 1, 1, 0, 0));
        assert!((s.all.rate_before - 3.0 / 6.0).abs() < 1e-12 && (s.all.rate_after - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(s.by_category.len(), 2, "no unsafe or instructions probes ran");
        let (c, rude) = &s.by_category[0];
        assert_eq!(*c, Category::Rude);
        assert!((rude.rate_before - 0.75).abs() < 1e-12 && (rude.rate_after - 0.25).abs() < 1e-12);
        assert!((rude.mean_after - 0.25).abs() < 1e-12);
        // Probe means before: 0, -0.5, 1 -> population sd sqrt(7/18); after: 0.5, 0, 1 -> sqrt(1/6).
        assert!((s.spread_before - (7.0f64 / 18.0).sqrt()).abs() < 1e-12, "{}", s.spread_before);
        assert!((s.spread_after - (1.0f64 / 6.0).sqrt()).abs() < 1e-12, "{}", s.spread_after);
        assert!((s.kl - 0.5).abs() < 1e-12);
        // Answers are "answer i" before and "answer i later" after.
        assert_eq!((s.words_before, s.words_after), (2.0, 3.0));
    }

    #[test]
    fn pairs_put_the_best_answer_over_the_worst_and_skip_system_prompts() {
        let mut r = result(Category::Rude, &[-0.5, 0.2], &[0.9, 0.2]);
        r.before.texts = vec!["rude".into(), "meh".into()];
        r.after.texts = vec!["kind".into(), "meh".into()];
        let p = r.pairs(2);
        assert_eq!(p.len(), 1, "three different answers make one pair: the one both models gave counts once");
        assert_eq!((p[0].prompt.as_str(), p[0].chosen.as_str(), p[0].rejected.as_str()), ("p", "kind", "rude"));
        r.probe.system = "Only talk about cooking.".into();
        assert!(r.pairs(1).is_empty());
    }

    #[test]
    fn bad_probe_files_say_what_is_wrong() {
        let err = |b: &str| parse_probes(b.as_bytes()).unwrap_err().to_string();
        assert!(err(r#"{"alignlab_probes": 1, "probes": [{"prompt": "x", "judges": ["kindness"]}]}"#).contains("probes[0]: unknown judge 'kindness'"));
        assert!(err(r#"{"alignlab_probes": 1, "probes": [{"prompt": "x", "judges": []}]}"#).contains("needs 1 to 8 judges"));
        let many = format!(r#"{{"alignlab_probes": 1, "probes": [{{"prompt": "x", "judges": [{}]}}]}}"#, vec!["\"sentiment\""; 9].join(","));
        assert!(err(&many).contains("this one has 9"));
        assert!(err(r#"{"alignlab_probes": 1, "probes": [{"prompt": " ", "judges": ["sentiment"]}]}"#).contains("probes[0]: a probe needs a prompt"));
        let e = err(r#"{"alignlab_probes": 1, "probes": [{"prompt": "x", "judges": ["sentiment"], "category": "mean"}]}"#);
        assert!(e.contains("probes[0].category") && e.contains("unknown variant"), "{e}");
        assert!(err(r#"{"alignlab_probes": 2, "probes": []}"#).contains("not one this app reads"));
        assert!(err(r#"{"alignlab_probes": 1, "probes": []}"#).contains("1 to 200"));
        let long = format!(r#"{{"alignlab_probes": 1, "probes": [{{"prompt": "{}", "judges": ["sentiment"]}}]}}"#, "a".repeat(MAX_PROBE_CHARS + 1));
        assert!(err(&long).contains("prompt is over 2000"));
    }
}
