//! A pipeline: stages run one after another on one policy (SFT, then a reward model, then RLHF;
//! or SFT then DPO), each taking up the adapter the stage before trained, as the Train tab does
//! run after run. Each stage is measured when it ends on the same held-out prompts (the judges'
//! mean score, the KL to the base model, the answers' length), beside the base model before any
//! stage, so the table shows what each stage added.
//!
//! The reference of every stage is the base model (adapters off), as TRL's trainers do when
//! handed a PEFT model that carries the earlier stage's adapter: DPO's implicit reward and RLHF's
//! KL leash are measured from the base, and the KL column reads the same way for every stage.

use serde::{Deserialize, Serialize};

use super::evaluate::EvalReport;
use super::spec::MethodKind;
use crate::align::train::Metrics;
#[cfg(feature = "engine")]
use {
    super::evaluate::evaluate,
    super::rewards::Rewarder,
    super::run::Run,
    super::session::Session,
    super::spec::RunSpec,
    crate::align::Encoding,
    crate::generate::SamplingConfig,
    crate::{Error, Result},
};

/// At most this many stages: a class period holds a few.
pub const MAX_STAGES: usize = 6;

/// One stage as it ended; the first row of a pipeline's table is the base model (`method: None`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// "SFT (8 steps)", or "base model".
    pub label: String,
    pub method: Option<MethodKind>,
    /// The stage's last step's metrics (TRL's names), `eval/...` included when it held out.
    pub last: Metrics,
    /// On the held-out prompts, the policy after this stage; `None` without judges or prompts.
    pub eval: Option<EvalReport>,
}

#[cfg(feature = "engine")]
pub struct Pipeline<'a> {
    pub stages: Vec<RunSpec>,
    pub eval_prompts: &'a [String],
    pub encoding: &'a Encoding,
    pub sampling: &'a SamplingConfig,
    /// What the held-out answers are scored by.
    pub judges: Option<&'a Rewarder>,
}

#[cfg(feature = "engine")]
impl Pipeline<'_> {
    /// Checks every stage before the first starts: a bad third stage should not cost two stages'
    /// training. Policy stages share one adapter shape, so each takes up the one before's adapter.
    pub fn validate(&self) -> Result<()> {
        if self.stages.is_empty() || self.stages.len() > MAX_STAGES {
            return Err(Error::Invalid(format!("a pipeline has 1 to {MAX_STAGES} stages, not {}", self.stages.len())));
        }
        let mut shape = None;
        for (i, s) in self.stages.iter().enumerate() {
            s.validate().map_err(|e| Error::Invalid(format!("stage {} ({}): {e}", i + 1, s.method.name())))?;
            if s.method.kind() == MethodKind::Reward {
                continue;
            }
            let this = s.lora.as_ref().map(|l| (l.r, l.lora_alpha.to_bits(), l.target_modules.clone(), l.use_rslora));
            match &shape {
                None => shape = Some(this),
                Some(first) if *first != this => {
                    return Err(Error::Invalid(format!(
                        "stage {} trains a different adapter from the stages before it: every stage that trains the policy needs the same LoRA rank, alpha and targets (or full fine-tuning throughout)",
                        i + 1
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The first row: the base model on the held-out prompts, before any stage.
    pub async fn base(&self, session: &Session) -> Result<StageReport> {
        let base = Session { policy: super::policy::Policy::base(&session.lm), ..session.clone() };
        Ok(StageReport { label: "base model".into(), method: None, last: Metrics::new(), eval: self.measure(&base).await? })
    }

    /// Runs stage `k` (0-based) on `session`, which keeps what it trained (the policy, or the
    /// reward model a later RLHF stage is rewarded by). `on_step` sees (step, steps) and says
    /// whether to go on; `None` when it said stop. The caller snapshots the session in between.
    pub async fn stage(&self, k: usize, session: &mut Session, on_step: &mut dyn FnMut(usize, usize) -> bool) -> Result<Option<StageReport>> {
        let spec = self.stages.get(k).cloned().ok_or_else(|| Error::Invalid(format!("there is no stage {}", k + 1)))?;
        let method = spec.method.kind();
        let mut run = Run::new(session, spec)?;
        let mut last = Metrics::new();
        while !run.is_done() {
            last = run.step().await?;
            if !on_step(run.steps_done(), run.total_steps()) {
                return Ok(None);
            }
        }
        run.publish(session);
        if method != MethodKind::Reward {
            session.policy.history.push(run.label());
        }
        let eval = if method == MethodKind::Reward { None } else { self.measure(session).await? };
        Ok(Some(StageReport { label: run.label(), method: Some(method), last, eval }))
    }

    /// The policy on the held-out prompts against the base model.
    async fn measure(&self, session: &Session) -> Result<Option<EvalReport>> {
        match self.judges {
            Some(j) if !self.eval_prompts.is_empty() => {
                let base = session.lm.model.clone();
                // Before any stage the policy is the base model.
                let reference = session.policy.is_trained().then_some(&base);
                Ok(Some(evaluate(session, &session.policy.model, reference, self.encoding, self.eval_prompts, self.sampling, j).await?))
            }
            _ => Ok(None),
        }
    }
}
