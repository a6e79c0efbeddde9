//! The router's inference-time jobs: prompt variants side by side, answers with and without
//! retrieved passages (one question, or a whole fact set), and the adversarial probes before and
//! after alignment, and self-alignment's labelling (the model judging its own answers against a
//! constitution). Each is a call into the lab.

use std::rc::Rc;

use super::protocol::*;
use super::router::{Host, Router};
use crate::align::Encoding;
use crate::generate::SamplingConfig;
use crate::judges::JudgeSpec;
use crate::lab::constitution::{Judged, judge_prompts, self_pairs};
use crate::lab::probes::run_probes;
use crate::lab::prompting::{try_variants, validate_all};
use crate::lab::retrieve::{self, Library};
use crate::Result;

impl<H: Host> Router<H> {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn variants(
        self: &Rc<Self>,
        job: JobId,
        question: String,
        enc: Encoding,
        sampling: SamplingConfig,
        variants: Vec<Variant>,
        reference: Option<String>,
        judges: Vec<(JudgeSpec, f64)>,
    ) -> Result<()> {
        validate_all(&variants)?;
        let session = self.session()?;
        let mut posted = |index, result| self.host.post(Event::VariantTried { job, index, result });
        try_variants(&session, Which::Policy, &enc, &question, &variants, reference.as_deref(), &sampling, judges, &mut || !self.cancelled(job), &mut posted).await?;
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }

    pub(super) async fn ask(self: &Rc<Self>, job: JobId, question: String, enc: Encoding, sampling: SamplingConfig, docs: Vec<Document>, k: usize) -> Result<()> {
        let library = Library::new(&docs)?;
        let session = self.session()?;
        let answer = retrieve::answer(&session, Which::Policy, &enc, &library, &question, k, &sampling, &mut || !self.cancelled(job)).await?;
        self.host.post(Event::Answered { job, answer });
        self.with(|s| s.cancelled.remove(&job));
        Ok(())
    }

    pub(super) async fn check_facts(
        self: &Rc<Self>,
        job: JobId,
        facts: Vec<Fact>,
        enc: Encoding,
        sampling: SamplingConfig,
        docs: Vec<Document>,
        k: usize,
    ) -> Result<()> {
        let library = Library::new(&docs)?;
        let session = self.session()?;
        let total = facts.len();
        let questions: Vec<String> = facts.iter().map(|f| f.question.clone()).collect();
        let mut posted = |i: usize, answer| {
            let row = retrieve::FactRow::of(&facts[i], answer);
            self.host.post(Event::FactChecked { job, row, done: i + 1, total });
        };
        retrieve::answers(&session, Which::Policy, &enc, &library, &questions, k, &sampling, &mut || !self.cancelled(job), &mut posted).await?;
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }

    pub(super) async fn probes(self: &Rc<Self>, job: JobId, probes: Vec<Probe>, enc: Encoding, sampling: SamplingConfig) -> Result<()> {
        let session = self.session()?;
        let total = probes.len();
        let mut posted = |i: usize, result| self.host.post(Event::ProbeAnswered { job, result, done: i + 1, total });
        run_probes(&session, &enc, &probes, &sampling, &mut || !self.cancelled(job), &mut posted).await?;
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn self_label(
        self: &Rc<Self>,
        job: JobId,
        constitution: Constitution,
        prompts: Vec<String>,
        enc: Encoding,
        sampling: SamplingConfig,
        judges: Vec<(JudgeSpec, f64)>,
        pairs_per_prompt: usize,
    ) -> Result<()> {
        let session = self.session()?;
        let total = prompts.len();
        let mut posted = |i: usize, answers: Vec<Judged>| {
            let pairs = self_pairs(&prompts[i], &answers, pairs_per_prompt);
            self.host.post(Event::SelfJudged { job, prompt: prompts[i].clone(), answers, pairs, done: i + 1, total });
        };
        judge_prompts(&session, Which::Policy, &enc, &constitution, &prompts, &sampling, judges, &mut || !self.cancelled(job), &mut posted).await?;
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }
}
