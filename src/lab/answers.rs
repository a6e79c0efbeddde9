//! A model's answers to several prompts, decoded together ([`Generations`]), as the lab asks for
//! them: each prompt with its own settings, the reference's answers taken from and kept in
//! [`KeptSamples`](super::session::KeptSamples) as [`Session::generate`] does, and each prompt's
//! answers handed back in order as soon as they are done.

use super::session::Session;
use super::spec::Which;
use crate::Result;
use crate::align::Encoding;
use crate::generate::{DecodePath, FinishReason, Generations, Request, Sample, SamplingConfig};

/// `which`'s answers to prompts, in their order ([`Answers::next`]).
pub struct Answers<'s> {
    session: &'s Session,
    which: Which,
    requests: Vec<Request>,
    /// Per prompt, its kept answers (taken when handed back).
    kept: Vec<Option<Vec<Sample>>>,
    /// The answers to the prompts not kept, in the prompts' order.
    generations: Generations<'s>,
    returned: usize,
}

impl Session {
    /// `which`'s answers to each of `prompts` (text, encoded with `enc`) with its settings.
    /// Every prompt is encoded before any is answered: a prompt the template cannot take is an
    /// error before any work.
    pub fn answers(&self, which: Which, enc: &Encoding, prompts: &[(&str, SamplingConfig)]) -> Result<Answers<'_>> {
        let requests = prompts.iter().map(|(p, s)| Ok(Request { prompt: self.prompt_ids(enc, p)?, sampling: s.clone() })).collect::<Result<Vec<_>>>()?;
        self.answers_to(which, requests)
    }

    /// [`Session::answers`] to prompts already encoded.
    pub fn answers_to(&self, which: Which, requests: Vec<Request>) -> Result<Answers<'_>> {
        let kept: Vec<Option<Vec<Sample>>> = requests.iter().map(|r| self.kept(which, &r.prompt, &r.sampling)).collect();
        let to_ask = requests.iter().zip(&kept).filter(|(_, k)| k.is_none()).map(|(r, _)| r.clone()).collect();
        let generations = Generations::owned(DecodePath::Auto, self.model(which), &self.lm.tokenizer, to_ask)?;
        Ok(Answers { session: self, which, requests, kept, generations, returned: 0 })
    }
}

impl Answers<'_> {
    /// Keeps each answer's per-token log-probabilities under `which` ([`Sample::logps`]). Kept
    /// answers of the reference have none: ask for them only from a model that does not keep
    /// its answers (the policy).
    pub fn keeping_logps(mut self) -> Self {
        debug_assert!(self.kept.iter().all(Option::is_none), "kept answers have no log-probabilities");
        self.generations = self.generations.keeping_logps();
        self
    }

    /// Prompt `i` as token ids (as it was answered).
    pub fn ids(&self, i: usize) -> &[u32] {
        &self.requests[i].prompt
    }

    /// The next prompt's index and answers; `None` after the last, or once `keep_going` (asked
    /// after each token) said no: the prompts running then come back with their answers
    /// cancelled, the rest do not come back.
    pub async fn next(&mut self, keep_going: &mut dyn FnMut() -> bool) -> Result<Option<(usize, Vec<Sample>)>> {
        let Some(request) = self.requests.get(self.returned) else { return Ok(None) };
        let i = self.returned;
        if let Some(samples) = self.kept[i].take() {
            self.returned += 1;
            return Ok(Some((i, samples)));
        }
        // The generations come back in the prompts' order, so this is prompt i's.
        let Some((_, samples)) = self.generations.next(&mut |_, _| keep_going()).await? else { return Ok(None) };
        if self.session.keeps(self.which) && samples.iter().all(|s| s.finish_reason != FinishReason::Cancelled) {
            self.session.ref_samples.borrow_mut().keep(request.prompt.clone(), request.sampling.clone(), samples.clone());
        }
        self.returned += 1;
        Ok(Some((i, samples)))
    }
}

/// `sampling` for the `i`th of several prompts: seeded `seed + i`, so each prompt's answers do not
/// depend on the others (the same in the page and the CLI).
pub fn seeded(sampling: &SamplingConfig, i: usize) -> SamplingConfig {
    SamplingConfig { seed: sampling.seed.wrapping_add(i as u64), ..sampling.clone() }
}

/// Each of `prompts` with `sampling` [`seeded`] by its place, counted from `first`: what
/// [`Session::answers`] takes for a list of prompts.
pub fn seeded_each<'p>(prompts: impl IntoIterator<Item = &'p str>, sampling: &SamplingConfig, first: usize) -> Vec<(&'p str, SamplingConfig)> {
    prompts.into_iter().enumerate().map(|(i, p)| (p, seeded(sampling, first + i))).collect()
}
