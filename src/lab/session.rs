//! A session: the loaded model, the policy, the reward model and the judges' word lists, with
//! what a person does with them: generate, read log-probabilities, score with judges or the
//! reward model, bring a reward model in and out. Cloning is cheap (weights are shared), so a
//! front end can hand a copy to a long job and take its results back.

use std::cell::RefCell;
use std::rc::Rc;

use burn::module::Module;

use super::policy::Policy;
use super::rewards::{RewardHead, Rewarder};
use super::spec::{RewardSpec, Which};
use crate::align::Encoding;
use crate::align::best_of_n::Candidate;
use crate::align::dpo::RefLogpsStore;
use crate::align::reward::{load_reward_model, save_reward_model};
use crate::generate::{FinishReason, Sample, SamplingConfig, TextStream, TokenEvent, generate};
use crate::io::LoadedModel;
use crate::io::peft::AdapterFiles;
use crate::judges::{JudgeData, JudgeSpec};
use crate::logps::completion_logps;
use crate::model::Llama;
use crate::{Error, Result};

#[derive(Clone)]
pub struct Session {
    pub lm: Rc<LoadedModel>,
    pub policy: Policy,
    pub reward_model: Option<RewardHead>,
    /// The members of a reward-model ensemble, when one has been trained.
    pub ensemble: Vec<RewardHead>,
    pub judge_data: Rc<JudgeData>,
    /// DPO's reference log-probabilities under the loaded model, kept for every run whose
    /// reference it is ([`Policy::base_is_loaded`]); copies of the session share it.
    pub ref_logps: Rc<RefCell<RefLogpsStore>>,
    /// The reference's answers, kept while it is the loaded model; copies share them.
    pub ref_samples: Rc<RefCell<KeptSamples>>,
}

/// The reference's answers by prompt and sampling settings, the newest [`KEPT_SAMPLES`]. The same
/// prompt, seed and settings give the same answers, and the loaded model does not change: so
/// Compare's reference side and the probes' answers before training are written once, not again
/// after every run. Kept only while the reference is the loaded model ([`Policy::base_is_loaded`]).
#[derive(Default)]
pub struct KeptSamples(std::collections::VecDeque<(Vec<u32>, SamplingConfig, Vec<Sample>)>);

/// How many generations [`KeptSamples`] holds: a lesson's or a class's prompts, a few settings each.
const KEPT_SAMPLES: usize = 32;

impl KeptSamples {
    fn get(&self, ids: &[u32], sampling: &SamplingConfig) -> Option<&Vec<Sample>> {
        self.0.iter().find(|(i, s, _)| i == ids && s == sampling).map(|(_, _, samples)| samples)
    }

    pub(super) fn keep(&mut self, ids: Vec<u32>, sampling: SamplingConfig, samples: Vec<Sample>) {
        if self.0.len() == KEPT_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back((ids, sampling, samples));
    }
}

/// Per-token log-probabilities of a text under the policy and the reference (the heatmap).
pub struct TokenLogps {
    /// What each token adds to the decoded text.
    pub pieces: Vec<String>,
    pub policy: Vec<f32>,
    pub reference: Vec<f32>,
}

impl Session {
    pub fn new(lm: LoadedModel, judge_data: Rc<JudgeData>) -> Self {
        let policy = Policy::base(&lm);
        Self { lm: Rc::new(lm), policy, reward_model: None, ensemble: Vec::new(), judge_data, ref_logps: Default::default(), ref_samples: Default::default() }
    }

    /// The model's name: its metadata name, else what the caller knows it by.
    pub fn model_name(&self) -> String {
        self.lm.info.name.clone().unwrap_or_default()
    }

    pub fn pad(&self) -> u32 {
        self.lm.tokenizer.pad_id()
    }

    pub fn prompt_ids(&self, enc: &Encoding, prompt: &str) -> Result<Vec<u32>> {
        enc.prompt(&self.lm, prompt)
    }

    pub fn model(&self, which: Which) -> Llama {
        match which {
            Which::Policy => self.policy.model.clone(),
            Which::Reference => self.policy.reference(&self.lm),
        }
    }

    /// Samples for `prompt`; returns the prompt's ids and the samples. The reference's come from
    /// [`KeptSamples`] when it has written them before (no tokens are then streamed).
    pub async fn generate(
        &self,
        which: Which,
        enc: &Encoding,
        prompt: &str,
        sampling: &SamplingConfig,
        on_token: &mut dyn FnMut(TokenEvent) -> bool,
    ) -> Result<(Vec<u32>, Vec<Sample>)> {
        let ids = self.prompt_ids(enc, prompt)?;
        if let Some(samples) = self.kept(which, &ids, sampling) {
            return Ok((ids, samples));
        }
        let samples = generate(&self.model(which), &self.lm.tokenizer, &ids, sampling, on_token).await?;
        if self.keeps(which) && samples.iter().all(|s| s.finish_reason != FinishReason::Cancelled) {
            self.ref_samples.borrow_mut().keep(ids.clone(), sampling.clone(), samples.clone());
        }
        Ok((ids, samples))
    }

    /// Whether [`Session::generate`] would give `which`'s answers from [`KeptSamples`].
    pub fn is_kept(&self, which: Which, enc: &Encoding, prompt: &str, sampling: &SamplingConfig) -> bool {
        self.prompt_ids(enc, prompt).is_ok_and(|ids| self.keeps(which) && self.ref_samples.borrow().get(&ids, sampling).is_some())
    }

    /// Whether `which`'s answers go to and come from [`KeptSamples`]: the reference's, while it is
    /// the loaded model.
    pub(super) fn keeps(&self, which: Which) -> bool {
        which == Which::Reference && self.policy.base_is_loaded()
    }

    /// `which`'s kept answers for `ids` and `sampling`, if it keeps them and has them.
    pub(super) fn kept(&self, which: Which, ids: &[u32], sampling: &SamplingConfig) -> Option<Vec<Sample>> {
        self.keeps(which).then(|| self.ref_samples.borrow().get(ids, sampling).cloned()).flatten()
    }

    /// Per-token log-probabilities of `completion` after `prompt`, policy and reference.
    pub async fn token_logps(&self, enc: &Encoding, prompt: &str, completion: &str) -> Result<TokenLogps> {
        let p = self.prompt_ids(enc, prompt)?;
        let c = self.lm.tokenizer.encode(completion, false)?;
        if c.is_empty() {
            return Err(Error::Invalid("there is no text to score: write or generate some first".into()));
        }
        let pairs = vec![(p, c.clone())];
        let policy = completion_logps(&self.model(Which::Policy), self.pad(), &pairs).await?.remove(0);
        let reference = completion_logps(&self.model(Which::Reference), self.pad(), &pairs).await?.remove(0);
        let mut stream = TextStream::default();
        let pieces = c.iter().map(|&t| stream.push(&self.lm.tokenizer, t)).collect();
        Ok(TokenLogps { pieces, policy: policy.logprobs, reference: reference.logprobs })
    }

    /// The scorer a reward spec names.
    pub fn rewarder(&self, spec: &RewardSpec) -> Result<Rewarder> {
        match spec {
            RewardSpec::Judges(j) => Rewarder::judges(j.clone(), self.judge_data.clone()),
            RewardSpec::RewardModel => {
                let head = self.reward_model.clone().ok_or_else(|| {
                    Error::Invalid("there is no reward model yet: train one (or load one), or use judges".into())
                })?;
                Ok(Rewarder::model(self, head))
            }
            RewardSpec::Ensemble(combine) => {
                if self.ensemble.len() < 2 {
                    return Err(Error::Invalid("there is no reward-model ensemble yet: train one (2 members or more), or use judges".into()));
                }
                Ok(Rewarder::Ensemble { members: self.ensemble.iter().map(|h| Rewarder::model(self, h.clone())).collect(), combine: *combine })
            }
        }
    }

    /// One reward per (prompt, completion) text, from `rewarder`: texts encoded as generation
    /// would have made them, so a reward model sees what it learnt on.
    pub async fn score(&self, rewarder: &Rewarder, enc: &Encoding, texts: &[(String, String)]) -> Result<Vec<f64>> {
        let ids: Vec<(Vec<u32>, Vec<u32>)> = texts.iter().map(|(p, c)| Ok((self.prompt_ids(enc, p)?, enc.completion(&self.lm, c)?))).collect::<Result<_>>()?;
        let cands: Vec<Candidate> = texts
            .iter()
            .zip(&ids)
            .map(|((p, c), (pi, ci))| Candidate { prompt: p, prompt_ids: pi, completion: c, completion_ids: ci })
            .collect();
        rewarder.rewards(&cands).await
    }

    /// Scores finished texts for `prompt`: the judges' weighted sum (empty judges: zeros) and,
    /// when there is one, the reward model's score.
    pub async fn judge_texts(
        &self,
        enc: &Encoding,
        prompt: &str,
        completions: &[String],
        judges: Vec<(JudgeSpec, f64)>,
    ) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        let p = self.prompt_ids(enc, prompt)?;
        let ids: Vec<Vec<u32>> = completions.iter().map(|c| enc.completion(&self.lm, c)).collect::<Result<_>>()?;
        let cands: Vec<Candidate> = completions
            .iter()
            .zip(&ids)
            .map(|(c, i)| Candidate { prompt, prompt_ids: &p, completion: c, completion_ids: i })
            .collect();
        let by_judges = if judges.is_empty() {
            vec![0.0; completions.len()]
        } else {
            self.rewarder(&RewardSpec::Judges(judges))?.rewards(&cands).await?
        };
        let by_model = match self.reward_model {
            Some(_) => Some(self.rewarder(&RewardSpec::RewardModel)?.rewards(&cands).await?),
            None => None,
        };
        Ok((by_judges, by_model))
    }

    /// Loads a reward model saved in PEFT's layout (SEQ_CLS with a score head) on the base weights.
    pub fn import_reward_model(&mut self, files: &AdapterFiles) -> Result<()> {
        self.reward_model = Some(self.read_reward_model(files)?);
        Ok(())
    }

    /// A reward model from PEFT files, ready to score (the session is left as it was).
    pub fn read_reward_model(&self, files: &AdapterFiles) -> Result<RewardHead> {
        let backbone = self.lm.model.clone().no_grad();
        let (model, lora) = load_reward_model(backbone, files.config_json.as_bytes(), &files.safetensors)?;
        // Scoring only: no gradients and no dropout (`no_grad` alone keeps dropout on).
        Ok(RewardHead { model: model.freeze(), lora })
    }

    pub async fn export_reward_model(&self) -> Result<AdapterFiles> {
        let head = self.reward_model.as_ref().ok_or_else(|| Error::Invalid("there is no reward model to export: train one first".into()))?;
        save_reward_model(&head.model, &head.lora, &self.model_name()).await
    }
}
