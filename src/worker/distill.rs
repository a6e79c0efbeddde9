//! The router's distillation jobs (`lab::distill`): a second model loaded to teach, SFT on a
//! teacher's answers measured on held-out prompts (the session keeps the trained student), and a
//! weak critic's picks among the policy's samples.

use std::rc::Rc;

use super::protocol::*;
use super::router::{Host, Router};
use crate::align::Encoding;
use crate::generate::SamplingConfig;
use crate::io::Checkpoint;
use crate::judges::JudgeSpec;
use crate::lab::distill::{Distill, Teacher, rerank};
use crate::lab::Rewarder;
use crate::{Error, Result};

impl<H: Host> Router<H> {
    pub(super) async fn load_teacher(&self, job: JobId, source: ModelSource) -> Result<()> {
        let session = self.session()?;
        let (name, model, tokenizer, _) = self.read_source(source).await?;
        let ckpt = Checkpoint::from_bytes(&model, tokenizer.as_deref(), &mut |_, _| {})?;
        drop(model);
        // Inference only: the teacher never trains, so no autodiff graph is kept for it.
        let device = session.lm.device.clone().inner();
        let mut lm = ckpt.into_model(&device, &mut |_, _| {})?;
        let name = lm.info.name.get_or_insert(name).clone();
        let parameters = lm.config.num_parameters();
        self.with(|s| s.teacher = Some(Rc::new(lm)));
        self.host.post(Event::TeacherReady { job, name, parameters });
        self.host.post(Event::Done { job });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn distill(
        self: &Rc<Self>,
        job: JobId,
        choice: TeacherChoice,
        judges: Vec<(JudgeSpec, f64)>,
        run: RunSpec,
        prompts: Vec<String>,
        eval_prompts: Vec<String>,
        sampling: SamplingConfig,
    ) -> Result<()> {
        let mut session = self.session()?;
        let truth = if judges.is_empty() { None } else { Some(Rewarder::judges(judges, session.judge_data.clone())?) };
        let teacher = match choice {
            TeacherChoice::BestOfN { n } => Teacher::BestOfN {
                n,
                rewarder: truth.clone().ok_or_else(|| Error::Invalid("the best-of-N teacher ranks answers by the judges: switch on a judge".into()))?,
            },
            TeacherChoice::Model => Teacher::Model(
                self.with(|s| s.teacher.clone()).ok_or_else(|| Error::Invalid("no teacher model is loaded: load one first, or pick another teacher".into()))?,
            ),
            TeacherChoice::Answers(demos) => Teacher::Answers(demos),
        };
        let job_run = Distill { teacher: &teacher, judges: truth.as_ref(), spec: run, prompts: &prompts, eval_prompts: &eval_prompts, sampling: &sampling };
        let report = job_run
            .run(&mut session, &mut |progress| {
                self.host.post(Event::Distilling { job, progress });
                !self.cancelled(job)
            })
            .await?;
        if let Some(report) = report {
            // The student keeps what it learnt, as after any run.
            self.update(|s| s.policy = session.policy.clone());
            self.post_policy_state();
            self.host.post(Event::Distilled { job, report });
        }
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }

    pub(super) async fn weak_to_strong(
        self: &Rc<Self>,
        job: JobId,
        prompts: Vec<String>,
        enc: Encoding,
        sampling: SamplingConfig,
        weak: Vec<(JudgeSpec, f64)>,
        truth: Vec<(JudgeSpec, f64)>,
    ) -> Result<()> {
        let session = self.session()?;
        let weak = Rewarder::judges(weak, session.judge_data.clone())?;
        let truth = Rewarder::judges(truth, session.judge_data.clone())?;
        let total = prompts.len();
        let mut posted = |i: usize, row| self.host.post(Event::Reranked { job, row, done: i + 1, total });
        rerank(&session, &enc, &prompts, &sampling, &weak, &truth, &mut || !self.cancelled(job), &mut posted).await?;
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }
}
