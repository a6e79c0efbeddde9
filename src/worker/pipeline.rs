//! The router's curriculum and pipeline jobs (`lab::curriculum`, `lab::pipeline`): pairs ordered
//! by a reward source's margin; stages run one after another on the session's policy, each
//! measured and handed to the page with what it trained.

use std::rc::Rc;

use super::protocol::*;
use super::router::{Host, Router, peft_files};
use crate::align::Encoding;
use crate::align::reward::save_reward_model;
use crate::data::Preference;
use crate::generate::SamplingConfig;
use crate::judges::JudgeSpec;
use crate::lab::curriculum::{margins, order};
use crate::lab::pipeline::Pipeline;
use crate::lab::{MethodKind, Rewarder};
use crate::Result;

impl<H: Host> Router<H> {
    pub(super) async fn pipeline(
        self: &Rc<Self>,
        job: JobId,
        stages: Vec<RunSpec>,
        eval_prompts: Vec<String>,
        enc: Encoding,
        sampling: SamplingConfig,
        judges: Vec<(JudgeSpec, f64)>,
    ) -> Result<()> {
        let mut session = self.session()?;
        let truth = if judges.is_empty() { None } else { Some(Rewarder::judges(judges, session.judge_data.clone())?) };
        let methods: Vec<MethodKind> = stages.iter().map(|s| s.method.kind()).collect();
        let pipeline = Pipeline { stages, eval_prompts: &eval_prompts, encoding: &enc, sampling: &sampling, judges: truth.as_ref() };
        pipeline.validate()?;
        let report = pipeline.base(&session).await?;
        self.host.post(Event::PipelineStage { job, report, files: Vec::new() });
        let n = methods.len();
        for (k, method) in methods.into_iter().enumerate() {
            let report = pipeline
                .stage(k, &mut session, &mut |step, steps| {
                    self.host.post(Event::PipelineStep { job, stage: k + 1, stages: n, step, steps });
                    !self.cancelled(job)
                })
                .await?;
            let Some(report) = report else { break };
            // Each stage's result stays with the session, so a stop keeps the stages done.
            self.update(|s| {
                s.policy = session.policy.clone();
                s.reward_model = session.reward_model.clone();
            });
            self.post_policy_state();
            let files = match method {
                MethodKind::Reward => match &session.reward_model {
                    Some(h) => peft_files(save_reward_model(&h.model, &h.lora, &session.model_name()).await?),
                    None => Vec::new(),
                },
                _ if session.policy.lora().is_some() => peft_files(session.policy.export_adapter(&session.model_name()).await?),
                _ => Vec::new(),
            };
            self.host.post(Event::PipelineStage { job, report, files });
        }
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }

    pub(super) async fn order_pairs(&self, job: JobId, pairs: Vec<Preference>, enc: Encoding, reward: RewardSpec, how: Order) -> Result<()> {
        let session = self.session()?;
        let rewarder = session.rewarder(&reward)?;
        let m = margins(&session, &rewarder, &enc, &pairs).await?;
        self.host.post(Event::Ordered { job, pairs: order(&pairs, &m, how) });
        self.host.post(Event::Done { job });
        Ok(())
    }
}
