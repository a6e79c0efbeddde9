//! Lab files: a lesson a teacher writes as one JSON file, read the same way by the page and the
//! CLI. A lesson is a short list of steps; each step says a few sentences, pre-fills a panel
//! ([`Preset`]), offers one action ([`Action`]), then says what to notice, with the numbers that
//! show it ([`Watch`]) and a question for the class. The format is in `docs/lab-files.md`.
//!
//! A lab file is as hostile as any other file: its size, counts and text lengths are bounded, and
//! a bad one is refused with the path of the field and what is wrong with it
//! (`steps[2].set.train.dpo.betta: no such setting; known: beta, label_smoothing, …`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::spec::{MethodKind, RunSettings, TrainData};
use crate::data::{Demonstration, Preference, Unpaired};
use crate::generate::SamplingConfig;
use crate::judges::JudgeSpec;
use crate::{Error, Result};

/// The format's version; a file says which it was written for.
pub const LAB_FORMAT: u32 = 1;
/// Largest lab file read, in bytes.
pub const MAX_LAB_BYTES: usize = 1 << 20;
const MAX_STEPS: usize = 40;
const MAX_TEXT: usize = 4000;
const MAX_ROWS: usize = 2000;
const MAX_WATCH: usize = 8;
/// Largest preset a settings link may carry, in bytes.
pub const MAX_PRESET_BYTES: usize = 16 << 10;

/// Where a step happens: the page's panels (the CLI runs the same action without them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Panel {
    #[default]
    Generate,
    Data,
    Train,
    Compare,
    /// One question under prompt variants, side by side.
    Prompting,
    /// Answers with and without passages retrieved from documents.
    Documents,
    /// Adversarial probes answered before and after alignment.
    Probes,
    /// The class's files: rater agreement, merged preferences, rater groups.
    Class,
    /// A constitution: the model judges its own answers against written principles.
    Constitution,
    /// Several reward models combined; where they disagree.
    Ensemble,
    /// A student learning from a teacher's answers; a weak critic picking a strong model's samples.
    Distill,
}

impl Panel {
    /// The page's tab id.
    pub const fn id(self) -> &'static str {
        match self {
            Self::Generate => "generate",
            Self::Data => "data",
            Self::Train => "train",
            Self::Compare => "compare",
            Self::Prompting => "prompting",
            Self::Documents => "documents",
            Self::Probes => "probes",
            Self::Class => "class",
            Self::Constitution => "constitution",
            Self::Ensemble => "ensemble",
            Self::Distill => "distill",
        }
    }
}

/// The one thing a step's "Try it" does, with the settings the step left in place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Read only: nothing runs.
    #[default]
    None,
    /// Sample answers to the prompt, scored by the judges.
    Generate,
    /// Train the chosen method on the page's data.
    Train,
    /// The reference and the policy answer the same prompt with the same seed.
    Compare,
    /// N samples from the policy; the judges (and reward model) pick the best.
    BestOfN,
    /// The Prompting tab's question under each of its variants.
    Variants,
    /// The Documents tab's question, answered without and with retrieved passages.
    Ask,
    /// The fact set, without and with the documents.
    Facts,
    /// The Probes tab's probes, answered by the reference and the policy.
    Probes,
    /// One DPO adapter per rater group and one merged, each scored on every group's held-out pairs.
    Groups,
    /// The policy's answers to the Constitution tab's prompts, judged by the base model against
    /// its principles; best-vs-worst pairs by self-score added to the data.
    SelfLabel,
    /// Reward models from several seeds (or resamples) of the data's pairs, as the session's ensemble.
    Ensemble,
    /// The Ensemble tab's answers scored by every member.
    EnsembleScore,
    /// SFT on the teacher's answers to the Data tab's prompts, measured on held-out prompts.
    Distill,
    /// The weak critic's picks among the policy's samples, scored by the judges.
    WeakToStrong,
    /// The Train tab's pipeline: its stages one after another, each measured.
    Pipeline,
}

impl Action {
    pub const fn label(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Generate => "Generate",
            Self::Train => "Train",
            Self::Compare => "Compare",
            Self::BestOfN => "Best of N",
            Self::Variants => "Try the variants",
            Self::Ask => "Ask",
            Self::Facts => "Check the facts",
            Self::Probes => "Run the probes",
            Self::Groups => "Train the group adapters",
            Self::SelfLabel => "Judge and label",
            Self::Ensemble => "Train the ensemble",
            Self::EnsembleScore => "Score the answers",
            Self::Distill => "Distill",
            Self::WeakToStrong => "Rerank with the weak critic",
            Self::Pipeline => "Run the pipeline",
        }
    }
}

/// Which way a watched number should move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Up,
    Down,
}

/// What a watched number is compared with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Its first value in the action that produced it (a run's first step).
    #[default]
    Start,
    /// Its value before this step (the last run's, or the last generation's).
    Before,
}

/// A number the page shows, highlighted, once the step's action has run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    /// A reading's name: a training metric by TRL's name (`rewards/margins`, `kl`,
    /// `eval/rewards/accuracies`, …) or one of the page's own ([`PAGE_READINGS`]).
    pub metric: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    #[serde(default)]
    pub from: Baseline,
}

/// Readings the panels report besides the training metrics.
pub const PAGE_READINGS: [(&str, &str); 37] = [
    ("samples/score", "mean weighted judge score of the generated samples"),
    ("samples/words", "mean length of the generated samples, in words"),
    ("compare/reference", "judge score of the reference's answer in Compare"),
    ("compare/policy", "judge score of the policy's answer in Compare"),
    ("compare/reference_rm", "reward-model score of the reference's answer in Compare"),
    ("compare/policy_rm", "reward-model score of the policy's answer in Compare"),
    ("best_of_n/best", "score of the best of the N samples"),
    ("best_of_n/mean", "mean score of the N samples (what one sample would get on average)"),
    ("variants/best", "judge score of the best-scoring prompt variant"),
    ("variants/reference_gain", "log-prob per token of the reference answer under the best variant, minus under the first"),
    ("documents/retrieved", "share of fact questions whose document BM25 retrieved"),
    ("documents/plain_right", "share of fact questions answered right without the documents"),
    ("documents/grounded_right", "share of fact questions answered right with the retrieved passages"),
    ("probes/triggered_before", "share of the probes' answers that showed the behaviour, before alignment (the reference)"),
    ("probes/triggered_after", "share of the probes' answers that showed the behaviour, after alignment (the policy)"),
    ("probes/spread_after", "standard deviation of the probes' mean scores after alignment: how much the prompt decides"),
    ("probes/kl", "mean KL of the policy's probe answers to the reference, in nats"),
    ("groups/agreement", "mean agreement rate between different rater groups, on the comparisons both judged"),
    ("groups/own_accuracy", "mean accuracy of each group's adapter on its own group's held-out pairs"),
    ("groups/other_accuracy", "mean accuracy of the group adapters on the other groups' held-out pairs"),
    ("constitution/self_score", "mean self-score (1 - mean P(yes) to the critique questions) of the answers the model judged"),
    ("constitution/judges", "mean judge score of the same answers"),
    ("constitution/agreement", "share of answer pairs the self-judgement orders as the judges do (0.5 = chance)"),
    ("groups/merged_accuracy", "mean accuracy of the adapter trained on every group's pairs, over the groups"),
    ("ensemble/member_accuracy", "mean held-out accuracy of the ensemble's members, each alone"),
    ("ensemble/mean_accuracy", "held-out accuracy of the members' mean reward"),
    ("ensemble/spread_held_out", "mean spread (members' standard deviation) of the rewards on the held-out answers"),
    ("ensemble/spread_answers", "mean spread of the rewards on the answers scored in the Ensemble tab"),
    ("distill/before", "judges' mean score of the student's held-out answers before learning from the teacher"),
    ("distill/after", "judges' mean score of the student's held-out answers after"),
    ("distill/teacher", "judges' mean score of the teacher's held-out answers"),
    ("distill/recovered", "share of the gap between student and teacher the student closed, by the judges"),
    ("weak_to_strong/recovered", "share of the gap between a random pick and the truth's own pick that the weak critic's picks closed"),
    ("pipeline/score", "judges' mean score of the held-out answers after the latest pipeline stage"),
    ("pipeline/gain", "that score minus the base model's, before any stage"),
    ("pipeline/kl", "mean KL of the held-out answers to the base model after the latest stage, in nats"),
    ("weak_to_strong/label_accuracy", "share of the weak critic's best-vs-worst pairs the truth orders the same way"),
];

/// Readings that count words or tokens: a lesson shows them to one decimal place ("24.0" words,
/// not "24.0000"), the rest (losses, scores, shares, nats) to four.
const LENGTHS: [&str; 2] = ["samples/words", "completions/mean_length"];

/// The decimal places a lesson shows `metric` with (its held-out `eval/` twin alike).
pub fn places(metric: &str) -> usize {
    if LENGTHS.contains(&metric.strip_prefix("eval/").unwrap_or(metric)) { 1 } else { 4 }
}

/// Metrics a training run logs (TRL's names); each also as `eval/NAME` on the held-out split.
pub const TRAIN_METRICS: [&str; 19] = [
    "loss",
    "grad_norm",
    "learning_rate",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "kl",
    "accuracy",
    "margin",
    "mean_token_accuracy",
    "entropy",
    "reward",
    "reward_std",
    "mean_reward",
    "clip_ratio",
    "completions/mean_length",
];

/// A judge a lab switches on, with its weight (`sentiment`, `length=30`, `include=a+b`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabJudge {
    pub judge: String,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

/// Examples a lab brings: added to the student's own (never replacing them), each once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LabData {
    pub pairs: Vec<Preference>,
    pub unpaired: Vec<Unpaired>,
    pub demos: Vec<Demonstration>,
    pub prompts: Vec<String>,
}

/// Settings a lesson or a step puts in place; what it leaves out stays as the student had it.
/// `sampling` and `train` are partial: only the keys given change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Preset {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
    /// Keys of the Generate tab's sampling settings (`max_new_tokens`, `temperature`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Value>,
    /// The judges switched on (the others are switched off), with weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judges: Option<Vec<LabJudge>>,
    /// Keys of the Train tab's settings (`method`, `dpo.beta`, `train.max_steps`, …), nested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<LabData>,
}

/// One step of a lesson.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub title: String,
    /// What to read first: the idea, and what the action will do.
    pub text: String,
    #[serde(default)]
    pub panel: Panel,
    #[serde(default)]
    pub set: Preset,
    #[serde(default)]
    pub action: Action,
    /// "Try it" starts from the base model: the policy's adapter (or fine-tune) is dropped first,
    /// so runs of a sweep each start from the same place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_base: bool,
    /// The numbers to look at once the action ran.
    #[serde(default)]
    pub watch: Vec<Watch>,
    /// What to notice once it ran.
    #[serde(default)]
    pub notice: String,
    /// A question for the class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

/// A lesson, as a lab file holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Lesson {
    /// The format version ([`LAB_FORMAT`]).
    pub alignlab_lab: u32,
    /// Short name, letters, digits and dashes (`dpo-basics`).
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub summary: String,
    /// About how long a class needs, in minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u32>,
    /// The model the lesson was written for (a name, shown to the student).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Put in place when the lesson starts.
    #[serde(default)]
    pub setup: Preset,
    pub steps: Vec<Step>,
}

fn invalid(path: &str, what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("lab file: {path}: {what}"))
}

/// The lab file's JSON Schema, derived from the types that read it (published as
/// `docs/lab.schema.json`; a test keeps the two equal). The reader checks more than a schema can
/// say (known metrics and judges, bounds), with errors that name the field.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Lesson)).expect("a schema is JSON")
}

impl Lesson {
    /// Reads and checks a lab file. The error names the field (`steps[1].watch[0].metric`) and
    /// what is wrong with it.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_LAB_BYTES {
            return Err(Error::Invalid(format!(
                "lab file is {} bytes; the most a lab file may hold is {MAX_LAB_BYTES} (1 MiB): move large data into a JSONL file",
                bytes.len()
            )));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let lesson: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." { Error::Invalid(format!("lab file: {inner}")) } else { invalid(&path, inner) }
        })?;
        lesson.validate()?;
        Ok(lesson)
    }

    /// Every bound and cross-field rule, naming the field that breaks it.
    pub fn validate(&self) -> Result<()> {
        if self.alignlab_lab != LAB_FORMAT {
            return Err(invalid("alignlab_lab", format!("this page reads version {LAB_FORMAT} of the format, the file says {}", self.alignlab_lab)));
        }
        if self.id.is_empty() || self.id.len() > 64 || !self.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid("id", "use 1 to 64 letters, digits and dashes (like \"dpo-basics\")"));
        }
        text("title", &self.title, 1, 120)?;
        text("summary", &self.summary, 0, MAX_TEXT)?;
        if let Some(m) = &self.model {
            text("model", m, 0, 200)?;
        }
        self.setup.validate("setup")?;
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(invalid("steps", format!("a lesson has 1 to {MAX_STEPS} steps, this one {}", self.steps.len())));
        }
        for (i, s) in self.steps.iter().enumerate() {
            s.validate(&format!("steps[{i}]"))?;
        }
        Ok(())
    }
}

fn text(path: &str, s: &str, min: usize, max: usize) -> Result<()> {
    let n = s.chars().count();
    if n < min {
        return Err(invalid(path, "must not be empty"));
    }
    if n > max {
        return Err(invalid(path, format!("is {n} characters; at most {max}")));
    }
    Ok(())
}

impl Step {
    fn validate(&self, at: &str) -> Result<()> {
        text(&format!("{at}.title"), &self.title, 1, 120)?;
        text(&format!("{at}.text"), &self.text, 1, MAX_TEXT)?;
        text(&format!("{at}.notice"), &self.notice, 0, MAX_TEXT)?;
        if let Some(q) = &self.question {
            text(&format!("{at}.question"), q, 1, MAX_TEXT)?;
        }
        self.set.validate(&format!("{at}.set"))?;
        if self.watch.len() > MAX_WATCH {
            return Err(invalid(&format!("{at}.watch"), format!("at most {MAX_WATCH} numbers to watch")));
        }
        for (i, w) in self.watch.iter().enumerate() {
            if !is_reading(&w.metric) {
                return Err(invalid(
                    &format!("{at}.watch[{i}].metric"),
                    format!(
                        "'{}' is not a number the page reports; use a training metric ({}, each also as eval/NAME) or one of {}",
                        w.metric.chars().take(80).collect::<String>(),
                        TRAIN_METRICS.join(", "),
                        PAGE_READINGS.map(|r| r.0).join(", ")
                    ),
                ));
            }
            if self.action == Action::None {
                return Err(invalid(&format!("{at}.watch[{i}]"), "a step without an action has nothing new to watch: give it an action"));
            }
        }
        if self.from_base && self.action == Action::None {
            return Err(invalid(&format!("{at}.from_base"), "only a step with an action can start from the base model"));
        }
        Ok(())
    }
}

/// A name [`Watch::metric`] may use.
pub fn is_reading(name: &str) -> bool {
    let m = name.strip_prefix("eval/").unwrap_or(name);
    TRAIN_METRICS.contains(&m) || PAGE_READINGS.iter().any(|r| r.0 == name)
}

impl Preset {
    fn validate(&self, at: &str) -> Result<()> {
        for (name, s) in [("system", &self.system), ("prompt", &self.prompt)] {
            if let Some(s) = s {
                text(&format!("{at}.{name}"), s, 0, MAX_TEXT)?;
            }
        }
        if let Some(p) = &self.sampling {
            let merged = patch(&SamplingConfig::default(), p, &format!("{at}.sampling"))?;
            let s: SamplingConfig = from_value(merged, &format!("{at}.sampling"))?;
            s.validate().map_err(|e| invalid(&format!("{at}.sampling"), e))?;
        }
        if let Some(p) = &self.train {
            let merged = patch(&RunSettings::default(), p, &format!("{at}.train"))?;
            let settings: RunSettings = from_value(merged, &format!("{at}.train"))?;
            // The rules a run checks when it starts, checked now rather than in front of the class
            // (with a judge standing in for whatever the student switches on).
            let judges = vec![(JudgeSpec::Sentiment, 1.0)];
            settings.spec(judges, crate::align::Encoding::default(), TrainData::default()).validate().map_err(|e| invalid(&format!("{at}.train"), e))?;
        }
        if let Some(js) = &self.judges {
            if js.len() > 16 {
                return Err(invalid(&format!("{at}.judges"), "at most 16 judges"));
            }
            for (i, j) in js.iter().enumerate() {
                let path = format!("{at}.judges[{i}]");
                JudgeSpec::parse_weighted(&j.judge).map_err(|e| invalid(&format!("{path}.judge"), e))?;
                if !j.weight.is_finite() || j.weight.abs() > 100.0 {
                    return Err(invalid(&format!("{path}.weight"), "must be a number between -100 and 100"));
                }
            }
        }
        if let Some(d) = &self.data {
            let n = d.pairs.len() + d.unpaired.len() + d.demos.len() + d.prompts.len();
            if n > MAX_ROWS {
                return Err(invalid(&format!("{at}.data"), format!("{n} examples; a lab file holds at most {MAX_ROWS}: put more in a JSONL file")));
            }
            let texts = d.pairs.iter().flat_map(|p| [&p.prompt, &p.chosen, &p.rejected]).chain(d.unpaired.iter().flat_map(|u| [&u.prompt, &u.completion])).chain(d.demos.iter().flat_map(|x| [&x.prompt, &x.completion])).chain(&d.prompts);
            for t in texts {
                text(&format!("{at}.data"), t, 0, MAX_TEXT)?;
            }
        }
        Ok(())
    }

    /// The sampling settings with this preset's keys put in.
    pub fn sampling(&self, current: &SamplingConfig) -> SamplingConfig {
        self.sampling.as_ref().and_then(|p| patch(current, p, "").ok()).and_then(|v| super::from_value(v).ok()).unwrap_or_else(|| current.clone())
    }

    /// The Train tab's settings with this preset's keys put in.
    pub fn train(&self, current: &RunSettings) -> RunSettings {
        self.train.as_ref().and_then(|p| patch(current, p, "").ok()).and_then(|v| super::from_value(v).ok()).unwrap_or_else(|| current.clone())
    }

    /// The judge list as the page keeps it (`(spec, weight, on)`): the preset's judges on, every
    /// other one kept but switched off.
    pub fn judges(&self, current: &[(String, f64, bool)]) -> Vec<(String, f64, bool)> {
        let Some(js) = &self.judges else { return current.to_vec() };
        let mut out: Vec<(String, f64, bool)> = current.iter().filter(|(s, _, _)| !js.iter().any(|j| &j.judge == s)).map(|(s, w, _)| (s.clone(), *w, false)).collect();
        out.extend(js.iter().map(|j| (j.judge.clone(), j.weight, true)));
        out
    }

    /// `data` with this preset's examples added, each one once.
    pub fn add_data(&self, data: &mut TrainData) -> usize {
        let Some(d) = &self.data else { return 0 };
        fn add<T: PartialEq + Clone>(to: &mut Vec<T>, from: &[T]) -> usize {
            let before = to.len();
            for x in from {
                if !to.contains(x) {
                    to.push(x.clone());
                }
            }
            to.len() - before
        }
        add(&mut data.pairs, &d.pairs) + add(&mut data.unpaired, &d.unpaired) + add(&mut data.demos, &d.demos) + add(&mut data.prompts, &d.prompts)
    }

    /// A preset on its own, as a shared link carries it (`?set=` JSON): the same fields, bounds
    /// and errors as a lab file's `setup`.
    pub fn parse(json: &str) -> Result<Self> {
        if json.len() > MAX_PRESET_BYTES {
            return Err(Error::Invalid(format!("settings link: {} bytes of settings; at most {MAX_PRESET_BYTES}", json.len())));
        }
        // From the bytes, as a lab file is read: one instantiation of the parser serves both.
        let de = &mut serde_json::Deserializer::from_slice(json.as_bytes());
        let p: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            Error::Invalid(format!("settings link: {path}: {}", e.into_inner()))
        })?;
        p.validate("set").map_err(|e| Error::Invalid(e.to_string().replacen("lab file: ", "settings link: ", 1)))?;
        Ok(p)
    }

    /// Every setting the page has, as a preset (what "Share these settings" puts in a link).
    pub fn of(system: &str, prompt: &str, chat: bool, sampling: &SamplingConfig, judges: &[(String, f64, bool)], train: &RunSettings) -> Self {
        Self {
            system: Some(system.to_string()),
            prompt: Some(prompt.to_string()),
            chat: Some(chat),
            sampling: serde_json::to_value(sampling).ok(),
            judges: Some(judges.iter().filter(|(_, _, on)| *on).map(|(j, w, _)| LabJudge { judge: j.clone(), weight: *w }).collect()),
            train: serde_json::to_value(train).ok(),
            data: None,
        }
    }

    /// The method a step's preset chooses, if it chooses one.
    pub fn method(&self) -> Option<MethodKind> {
        self.train.as_ref()?.get("method").and_then(|m| super::from_value(m.clone()).ok())
    }
}

fn from_value<T: serde::de::DeserializeOwned>(v: Value, at: &str) -> Result<T> {
    super::from_value(v).map_err(|e| {
        let path = e.path().to_string();
        invalid(&format!("{at}.{path}"), e.into_inner())
    })
}

/// `current` as JSON with `patch`'s keys put in, recursively; a key `current` does not have is
/// refused with the keys it does have (a typo in a lab file must not pass silently).
fn patch<T: Serialize>(current: &T, patch: &Value, at: &str) -> Result<Value> {
    fn merge(into: &mut Value, patch: &Value, at: &str) -> Result<()> {
        match (into, patch) {
            (Value::Object(into), Value::Object(patch)) => {
                for (k, v) in patch {
                    let path = format!("{at}.{k}");
                    match into.get_mut(k) {
                        Some(slot @ Value::Object(_)) => merge(slot, v, &path)?,
                        Some(slot) => *slot = v.clone(),
                        None => {
                            let known: Vec<&str> = into.keys().map(|k| k.as_str()).collect();
                            return Err(invalid(&path, format!("no such setting; known: {}", known.join(", "))));
                        }
                    }
                }
                Ok(())
            }
            (_, _) => Err(invalid(at, "expected an object of settings")),
        }
    }
    let mut v = serde_json::to_value(current).map_err(|e| Error::Invalid(e.to_string()))?;
    merge(&mut v, patch, at)?;
    Ok(v)
}

/// The lessons that ship with the app, in order: the files in `www/labs/`, compiled into the CLI.
/// (The page fetches the same files from its `labs/` folder instead: its wasm stays small.)
const BUILT_IN: [&str; 16] = [
    include_str!("../../www/labs/what-is-alignment.json"),
    include_str!("../../www/labs/prompting.json"),
    include_str!("../../www/labs/rlhf-three-steps.json"),
    include_str!("../../www/labs/dpo-without-reward-model.json"),
    include_str!("../../www/labs/lora.json"),
    include_str!("../../www/labs/automatic-feedback.json"),
    include_str!("../../www/labs/best-of-n.json"),
    include_str!("../../www/labs/reward-kl-tradeoff.json"),
    include_str!("../../www/labs/kto-from-thumbs.json"),
    include_str!("../../www/labs/answers-from-documents.json"),
    include_str!("../../www/labs/self-alignment.json"),
    include_str!("../../www/labs/red-teaming.json"),
    include_str!("../../www/labs/whose-preferences.json"),
    include_str!("../../www/labs/many-reward-models.json"),
    include_str!("../../www/labs/teacher-and-student.json"),
    include_str!("../../www/labs/break-it.json"),
];

/// The built-in lessons (a file that does not parse is left out; a test keeps them all valid).
pub fn built_in() -> Vec<Lesson> {
    BUILT_IN.iter().filter_map(|s| Lesson::parse(s.as_bytes()).ok()).collect()
}

/// A number as the page last saw it: its first value in the action that produced it, and now.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub first: f64,
    pub last: f64,
    /// When it was taken, counted over all readings: tells a fresh reading from an old one that
    /// happens to have the same value.
    #[serde(default)]
    pub seq: u64,
}

fn next_seq(readings: &Readings) -> u64 {
    readings.values().map(|r| r.seq).max().unwrap_or(0) + 1
}

/// The readings by name.
pub type Readings = BTreeMap<String, Reading>;

/// What a watched number did over a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub from: Option<f64>,
    pub to: f64,
    /// Whether it moved the way the lab said it would (`None` when the lab said nothing, or there
    /// is nothing to compare with).
    pub as_expected: Option<bool>,
}

impl Watch {
    /// The number's move, from the readings when the step began (`before`) to now; `None` until
    /// the step's action has produced it.
    pub fn outcome(&self, before: &Readings, now: &Readings) -> Option<Outcome> {
        let to = now.get(&self.metric)?;
        // Not produced since the step began: the action has not run (or not reported it) yet.
        if before.get(&self.metric).is_some_and(|b| b.seq == to.seq) {
            return None;
        }
        let from = match self.from {
            // A number taken once (a generation's score) has no start of its own to compare with.
            Baseline::Start => (to.first != to.last || self.expect.is_some()).then_some(to.first),
            Baseline::Before => before.get(&self.metric).map(|r| r.last),
        };
        let as_expected = match (self.expect, from) {
            (Some(Expect::Up), Some(f)) => Some(to.last > f),
            (Some(Expect::Down), Some(f)) => Some(to.last < f),
            _ => None,
        };
        Some(Outcome { from, to: to.last, as_expected })
    }
}

/// Readings from a run's metrics so far: each metric's first logged value and its latest
/// (held-out metrics appear every few steps, so each has its own first).
pub fn record_run(readings: &mut Readings, steps: &[BTreeMap<String, f64>]) {
    let seq = next_seq(readings);
    let mut seen: BTreeMap<&str, Reading> = BTreeMap::new();
    for m in steps {
        for (k, &v) in m.iter().filter(|(k, v)| *k != "step" && v.is_finite()) {
            seen.entry(k).and_modify(|r| r.last = v).or_insert(Reading { first: v, last: v, seq });
        }
    }
    readings.extend(seen.into_iter().map(|(k, r)| (k.to_string(), r)));
}

/// A reading taken once (a generation's mean score): first and last are the same.
pub fn record(readings: &mut Readings, name: &str, value: f64) {
    if value.is_finite() {
        let seq = next_seq(readings);
        readings.insert(name.to_string(), Reading { first: value, last: value, seq });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(steps: &str) -> String {
        format!(r#"{{"alignlab_lab": 1, "id": "t", "title": "T", "steps": {steps}}}"#)
    }

    fn err(json: &str) -> String {
        Lesson::parse(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn lengths_read_to_one_place_and_the_rest_to_four() {
        for name in LENGTHS {
            assert!(PAGE_READINGS.iter().any(|(r, _)| *r == name) || TRAIN_METRICS.contains(&name), "{name} is a reading");
        }
        assert_eq!([places("samples/words"), places("completions/mean_length"), places("eval/completions/mean_length")], [1; 3]);
        assert_eq!([places("loss"), places("rewards/margins"), places("constitution/agreement"), places("eval/loss")], [4; 4]);
    }

    #[test]
    fn every_built_in_lesson_reads() {
        for (i, s) in BUILT_IN.iter().enumerate() {
            let l = Lesson::parse(s.as_bytes()).unwrap_or_else(|e| panic!("built-in lesson {i}: {e}"));
            assert!(l.steps.iter().any(|s| s.action != Action::None), "{}: a lesson where nothing runs", l.id);
        }
        assert_eq!(built_in().len(), BUILT_IN.len());
        // `www/labs/index.json` (what a teacher browsing the app's files sees) lists the same, in order.
        let index: Vec<String> = serde_json::from_str(include_str!("../../www/labs/index.json")).unwrap();
        let ids: Vec<String> = built_in().into_iter().map(|l| format!("{}.json", l.id)).collect();
        assert_eq!(index, ids);
    }

    /// `docs/lab.schema.json` is the schema the reader's types give (regenerate it with
    /// `alignlab lab schema > docs/lab.schema.json`), and it describes the shipped lab files: their
    /// keys are the schema's, with every required one present.
    #[test]
    fn the_published_schema_is_the_readers_and_fits_every_built_in_lesson() {
        let published: serde_json::Value = serde_json::from_str(include_str!("../../docs/lab.schema.json")).unwrap();
        assert_eq!(published, schema(), "docs/lab.schema.json is stale: alignlab lab schema > docs/lab.schema.json");
        let defs = &published["$defs"];
        let fits = |what: &str, obj: &serde_json::Value, schema: &serde_json::Value| {
            let props = schema["properties"].as_object().unwrap();
            for k in obj.as_object().unwrap().keys() {
                assert!(props.contains_key(k), "{what}: key '{k}' is not in the schema");
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                assert!(obj.get(r.as_str().unwrap()).is_some(), "{what}: required '{r}' missing");
            }
            assert_eq!(schema["additionalProperties"], false, "{what}: the schema must refuse unknown keys, as the reader does");
        };
        for s in BUILT_IN {
            let lab: serde_json::Value = serde_json::from_str(s).unwrap();
            let id = lab["id"].as_str().unwrap().to_string();
            fits(&id, &lab, &published);
            for (i, step) in lab["steps"].as_array().unwrap().iter().enumerate() {
                fits(&format!("{id} steps[{i}]"), step, &defs["Step"]);
                for (j, w) in step["watch"].as_array().into_iter().flatten().enumerate() {
                    fits(&format!("{id} steps[{i}].watch[{j}]"), w, &defs["Watch"]);
                }
            }
        }
    }

    #[test]
    fn a_bad_field_is_named_with_what_is_wrong() {
        let e = err(&lab(r#"[{"title": "a", "text": "b", "set": {"train": {"dpo": {"betta": 0.1}}}}]"#));
        assert!(e.contains("steps[0].set.train.dpo.betta: no such setting; known: ") && e.contains("beta"), "{e}");
        let e = err(&lab(r#"[{"title": "a", "text": "b", "action": "fly"}]"#));
        assert!(e.contains("steps[0].action: unknown variant `fly`"), "{e}");
        let e = err(&lab(r#"[{"title": "a", "text": "b", "set": {"train": {"train": {"max_steps": "ten"}}}}]"#));
        assert!(e.contains("steps[0].set.train.train.max_steps: invalid type: string"), "{e}");
        let e = err(&lab(r#"[{"title": "a", "text": "b", "action": "train", "watch": [{"metric": "rewards/margin"}]}]"#));
        assert!(e.contains("steps[0].watch[0].metric: 'rewards/margin' is not a number"), "{e}");
        let e = err(&lab(r#"[{"title": "a", "text": "b", "set": {"train": {"method": "kto", "train": {"per_device_train_batch_size": 1}}}}]"#));
        assert!(e.contains("steps[0].set.train: KTO needs a batch size of at least 2"), "{e}");
        let e = err(&lab(r#"[{"title": "a", "text": "b", "set": {"judges": [{"judge": "kindness"}]}}]"#));
        assert!(e.contains("steps[0].set.judges[0].judge: unknown judge 'kindness'"), "{e}");
        let e = err(&lab(r#"[{"title": "a", "txt": "b"}]"#));
        assert!(e.contains("steps[0].txt: unknown field `txt`, expected one of `title`"), "{e}");
        let e = err(&lab("[]"));
        assert!(e.contains("steps: a lesson has 1 to 40 steps"), "{e}");
        let e = err(&lab(r#"[{"title": "a", "text": "b", "set": {"sampling": {"temperature": -1}}}]"#));
        assert!(e.contains("steps[0].sampling") || e.contains("steps[0].set.sampling"), "{e}");
        let e = err(r#"{"alignlab_lab": 2, "id": "t", "title": "T", "steps": []}"#);
        assert!(e.contains("alignlab_lab: this page reads version 1"), "{e}");
        let e = err("{\"alignlab_lab\": 1,");
        assert!(e.starts_with("lab file") && e.contains("EOF"), "{e}");
        let big = vec![b' '; MAX_LAB_BYTES + 1];
        let e = Lesson::parse(&big).unwrap_err().to_string();
        assert!(e.contains("the most a lab file may hold is 1048576"), "{e}");
    }

    #[test]
    fn a_preset_changes_only_what_it_names() {
        let l = Lesson::parse(lab(r#"[{"title": "a", "text": "b", "set": {
            "train": {"method": "rl", "rl": {"beta": 0.0}, "train": {"max_steps": 7}},
            "sampling": {"temperature": 0.3},
            "judges": [{"judge": "politeness", "weight": 2}],
            "data": {"prompts": ["Hi", "Hi"], "pairs": [{"prompt": "p", "chosen": "c", "rejected": "r"}]}}}]"#).as_bytes())
        .unwrap();
        let set = &l.steps[0].set;
        let mut was = RunSettings::default();
        was.dpo.beta = 0.5;
        let now = set.train(&was);
        assert_eq!(now.method, MethodKind::Rl);
        assert_eq!(now.rl.beta, 0.0);
        assert_eq!(now.train.max_steps, 7);
        assert_eq!(now.dpo.beta, 0.5, "a knob the lab does not name keeps the student's value");
        assert_eq!(now.train.learning_rate, was.train.learning_rate);
        let s = set.sampling(&SamplingConfig { seed: 9, ..SamplingConfig::default() });
        assert_eq!((s.temperature, s.seed), (0.3, 9));
        let judges = set.judges(&[("sentiment".into(), 1.0, true), ("politeness".into(), 1.0, false)]);
        assert_eq!(judges, vec![("sentiment".into(), 1.0, false), ("politeness".into(), 2.0, true)]);
        let mut data = TrainData { prompts: vec!["Hi".into(), "mine".into()], ..TrainData::default() };
        assert_eq!(set.add_data(&mut data), 1, "the pair is new, the prompt was there");
        assert_eq!(data.prompts, vec!["Hi".to_string(), "mine".to_string()]);
        assert_eq!(set.method(), Some(MethodKind::Rl));
    }

    #[test]
    fn a_settings_link_carries_every_setting_and_comes_back_the_same() {
        let mut train = RunSettings::default();
        train.method = MethodKind::Kto;
        train.kto.beta = 0.3;
        let sampling = SamplingConfig { temperature: 0.25, seed: 3, ..SamplingConfig::default() };
        let judges = vec![("sentiment".to_string(), 2.0, true), ("profanity".to_string(), 1.0, false)];
        let p = Preset::of("Be brief.", "Hi", true, &sampling, &judges, &train);
        let back = Preset::parse(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.train(&RunSettings::default()), train);
        assert_eq!(back.sampling(&SamplingConfig::default()), sampling);
        assert_eq!(back.judges(&[]), vec![("sentiment".to_string(), 2.0, true)]);
        let e = Preset::parse(r#"{"sampling": {"temprature": 1}}"#).unwrap_err().to_string();
        assert!(e.starts_with("settings link: set.sampling.temprature: no such setting"), "{e}");
        let e = Preset::parse(r#"{"promt": "x"}"#).unwrap_err().to_string();
        assert!(e.starts_with("settings link: promt: unknown field"), "{e}");
    }

    #[test]
    fn a_watched_number_reports_its_move_once_the_action_ran() {
        let up = Watch { metric: "kl".into(), expect: Some(Expect::Up), from: Baseline::Before };
        let start = Watch { metric: "kl".into(), expect: Some(Expect::Down), from: Baseline::Start };
        let mut before = Readings::new();
        record(&mut before, "kl", 0.2);
        assert_eq!(up.outcome(&before, &before), None, "nothing new yet");
        let mut now = before.clone();
        let run = [
            BTreeMap::from([("kl".to_string(), 0.05), ("step".to_string(), 1.0)]),
            BTreeMap::from([("kl".to_string(), f64::NAN), ("step".to_string(), 2.0)]),
            BTreeMap::from([("kl".to_string(), 0.9), ("step".to_string(), 3.0)]),
        ];
        record_run(&mut now, &run);
        assert_eq!(up.outcome(&before, &now), Some(Outcome { from: Some(0.2), to: 0.9, as_expected: Some(true) }));
        assert_eq!(start.outcome(&before, &now), Some(Outcome { from: Some(0.05), to: 0.9, as_expected: Some(false) }));
        assert!(!now.contains_key("step"));
        // The same value taken again is a new reading; one taken once has nothing to start from.
        let shown = Watch { metric: "samples/score".into(), expect: None, from: Baseline::Start };
        record(&mut now, "samples/score", 0.5);
        let again = now.clone();
        record(&mut now, "samples/score", 0.5);
        assert_eq!(shown.outcome(&again, &again), None);
        assert_eq!(shown.outcome(&again, &now), Some(Outcome { from: None, to: 0.5, as_expected: None }));
    }
}
