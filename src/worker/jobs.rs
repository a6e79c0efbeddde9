//! The router's short jobs: generate (tokens streamed), per-token log-probabilities, judging
//! texts, and auto-labelling prompts into pairs. Each is a call into the lab and its events.

use std::rc::Rc;

use super::protocol::*;
use super::router::{Host, Router};
use crate::align::Encoding;
use crate::generate::{FinishReason, SamplingConfig};
use crate::judges::JudgeSpec;
use crate::lab::{best_of_n, pairs_from_ranking};
use crate::{Error, Result};

impl<H: Host> Router<H> {
    pub(super) async fn generate(self: &Rc<Self>, job: JobId, prompt: String, enc: Encoding, sampling: SamplingConfig, which: Which) -> Result<()> {
        let session = self.session()?;
        let kept = session.is_kept(which, &enc, &prompt, &sampling);
        let t0 = self.host.now_ms();
        let mut first: Option<f64> = None;
        let mut n_tokens = 0usize;
        let (_, samples) = session
            .generate(which, &enc, &prompt, &sampling, &mut |ev| {
                first.get_or_insert_with(|| self.host.now_ms() - t0);
                n_tokens += 1;
                if !ev.text_delta.is_empty() {
                    self.host.post(Event::Token { job, sample: ev.sample, delta: ev.text_delta.to_string() });
                }
                !self.cancelled(job)
            })
            .await?;
        let millis = self.host.now_ms() - t0;
        let samples = samples
            .into_iter()
            .map(|s| SampleOut {
                text: s.text,
                tokens: s.tokens.len(),
                finish: match s.finish_reason {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                    FinishReason::Cancelled => "stopped",
                }
                .into(),
            })
            .collect();
        let first_token_ms = first.unwrap_or(millis);
        let tokens_per_s = n_tokens as f64 / ((millis - first_token_ms).max(1.0) / 1000.0);
        self.host.post(Event::Generated { job, samples, millis, first_token_ms, tokens_per_s, kept });
        self.with(|s| s.cancelled.remove(&job));
        Ok(())
    }

    pub(super) async fn logprobs(&self, job: JobId, prompt: String, enc: Encoding, completion: String) -> Result<()> {
        let t = self.session()?.token_logps(&enc, &prompt, &completion).await?;
        self.host.post(Event::Logprobs { job, pieces: t.pieces, policy: t.policy, reference: t.reference });
        Ok(())
    }

    pub(super) async fn judge(&self, job: JobId, prompt: String, enc: Encoding, completions: Vec<String>, judges: Vec<(JudgeSpec, f64)>) -> Result<()> {
        let (judges, reward_model) = self.session()?.judge_texts(&enc, &prompt, &completions, judges).await?;
        self.host.post(Event::Judged { job, judges, reward_model });
        Ok(())
    }

    /// N samples per prompt, ranked by the reward source, best vs worst as a pair; a Labelled
    /// event after each prompt, so Stop keeps what was labelled.
    pub(super) async fn auto_label(&self, job: JobId, prompts: Vec<String>, enc: Encoding, sampling: SamplingConfig, reward: RewardSpec) -> Result<()> {
        if sampling.num_samples < 2 {
            return Err(Error::Invalid("auto-labelling compares samples: ask for at least 2 per prompt".into()));
        }
        let session = self.session()?;
        let rewarder = session.rewarder(&reward)?;
        let total = prompts.len();
        for (i, prompt) in prompts.into_iter().enumerate() {
            if self.cancelled(job) {
                break;
            }
            let cfg = SamplingConfig { seed: sampling.seed.wrapping_add(i as u64), ..sampling.clone() };
            let ranked = best_of_n(&session, Which::Policy, &enc, &prompt, &cfg, &rewarder, &mut || !self.cancelled(job)).await?;
            let pairs = pairs_from_ranking(&prompt, &ranked, 1);
            self.host.post(Event::Labelled { job, pairs, done: i + 1, total });
        }
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }
}
