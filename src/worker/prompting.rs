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
use crate::lab::constitution::{judge_samples, self_pairs};
use crate::lab::probes::{self, run_probe};
use crate::lab::prompting::{try_variant, validate_all};
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
        for (index, v) in variants.iter().enumerate() {
            if self.cancelled(job) {
                break;
            }
            let result = try_variant(&session, Which::Policy, &enc, &question, v, reference.as_deref(), &sampling, judges.clone(), &mut || !self.cancelled(job)).await?;
            self.host.post(Event::VariantTried { job, index, result });
        }
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
        for (i, fact) in facts.iter().enumerate() {
            if self.cancelled(job) {
                break;
            }
            let answer = retrieve::answer(&session, Which::Policy, &enc, &library, &fact.question, k, &sampling, &mut || !self.cancelled(job)).await?;
            let row = retrieve::FactRow::of(fact, answer);
            self.host.post(Event::FactChecked { job, row, done: i + 1, total });
        }
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }

    pub(super) async fn probes(self: &Rc<Self>, job: JobId, probes: Vec<Probe>, enc: Encoding, sampling: SamplingConfig) -> Result<()> {
        probes::validate_all(&probes)?;
        let session = self.session()?;
        let total = probes.len();
        for (i, probe) in probes.iter().enumerate() {
            if self.cancelled(job) {
                break;
            }
            // Each probe its own seed, as the CLI does: one probe's answers do not depend on the others.
            let sampling = SamplingConfig { seed: sampling.seed.wrapping_add(i as u64), ..sampling.clone() };
            let result = run_probe(&session, &enc, probe, &sampling, &mut || !self.cancelled(job)).await?;
            self.host.post(Event::ProbeAnswered { job, result, done: i + 1, total });
        }
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
        constitution.validate()?;
        let session = self.session()?;
        let total = prompts.len();
        for (i, prompt) in prompts.into_iter().enumerate() {
            if self.cancelled(job) {
                break;
            }
            // Seeded per prompt, as the CLI does.
            let sampling = SamplingConfig { seed: sampling.seed.wrapping_add(i as u64), ..sampling.clone() };
            let answers = judge_samples(&session, Which::Policy, &enc, &constitution, &prompt, &sampling, judges.clone(), &mut || !self.cancelled(job)).await?;
            let pairs = self_pairs(&prompt, &answers, pairs_per_prompt);
            self.host.post(Event::SelfJudged { job, prompt, answers, pairs, done: i + 1, total });
        }
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }
}
