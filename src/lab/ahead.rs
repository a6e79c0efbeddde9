//! The reference scored ahead of a run. Between saving pairs and pressing Train a student reads
//! and clicks; in that idle time the worker computes the reference's log-probabilities of the
//! pairs a DPO run would train on into the session's store ([`Session::ref_logps`]), where the run
//! finds them instead of scoring them during its steps. On SmolLM2 in the page a first run's
//! second step scores two pairs new to the session: 2.9 s against 2.0 for the same step once
//! their values are kept (`docs/results.md`, stops 59 and 63).
//!
//! The values are the ones the run would compute: the same reference (the policy the run builds,
//! its adapters off), scored by [`RefLogpsCache::fill`] as in a run. A first step whose policy is
//! its own reference still takes its values from its own pass, and those replace the ones scored
//! ahead. On the CPU, where `fill` scores each pair alone, a run so gives the same numbers bit for
//! bit whether or not anything was scored ahead of it (`tests/suite/lab.rs`); on a GPU a turn's
//! pairs share a batch, as a step's do, so they agree to rounding, as kept values always have.

use std::cell::RefCell;
use std::rc::Rc;

use crate::Result;
use crate::align::Reference;
use crate::align::dpo::{EncodedPair, RefLogpsCache, RefLogpsStore, encode_pairs};
use crate::model::Llama;

use super::{Method, RunSpec, Session};

/// At most this many pairs a time, the newest first: a class's ranking adds a few, and a big
/// imported set would keep the cores busy for minutes.
pub const AHEAD_MAX_PAIRS: usize = 32;

pub struct ReferenceAhead {
    pairs: Vec<EncodedPair>,
    /// Indices into `pairs` to score, in order.
    todo: Vec<usize>,
    next: usize,
    reference: Llama,
    share_prompt: bool,
    store: Rc<RefCell<RefLogpsStore>>,
    pad: u32,
}

impl ReferenceAhead {
    /// The pairs of `spec` the session keeps no values of, up to [`AHEAD_MAX_PAIRS`], newest first;
    /// `None` when a run of `spec` keeps none in the session (not DPO with kept reference values,
    /// or a reference other than the loaded model).
    pub fn new(session: &Session, spec: &RunSpec) -> Result<Option<Self>> {
        spec.validate()?;
        let Method::Dpo(cfg) = &spec.method else { return Ok(None) };
        if !cfg.precompute_ref_log_probs || !session.policy.base_is_loaded() {
            return Ok(None);
        }
        let pairs = encode_pairs(&session.lm, &spec.encoding, &spec.data.pairs)?;
        let store = session.ref_logps.borrow();
        let todo: Vec<usize> = (0..pairs.len()).rev().filter(|&i| !store.contains(cfg.share_prompt, &pairs[i])).take(AHEAD_MAX_PAIRS).collect();
        drop(store);
        let policy = session.policy.for_training(spec.lora.as_ref())?;
        let reference = Reference::for_policy(&policy).model(&policy);
        let pad = session.lm.tokenizer.pad_id();
        Ok(Some(Self { pairs, todo, next: 0, reference, share_prompt: cfg.share_prompt, store: session.ref_logps.clone(), pad }))
    }

    /// Pairs left to look at.
    pub fn remaining(&self) -> usize {
        self.todo.len() - self.next
    }

    /// Scores the next `n` pairs the session still lacks (a run may have scored some meanwhile):
    /// how many it scored.
    pub async fn step(&mut self, n: usize) -> Result<usize> {
        let end = self.todo.len().min(self.next.saturating_add(n));
        let pairs: Vec<EncodedPair> = {
            let store = self.store.borrow();
            self.todo[self.next..end].iter().map(|&i| &self.pairs[i]).filter(|p| !store.contains(self.share_prompt, p)).cloned().collect()
        };
        self.next = end;
        // None of them kept, so the cache hands nothing out: the store counts only what runs take.
        let mut cache = RefLogpsCache::new(&pairs, self.share_prompt, Some(self.store.clone()));
        let all: Vec<usize> = (0..pairs.len()).collect();
        cache.fill(&self.reference, &pairs, &all, self.pad).await?;
        Ok(pairs.len())
    }
}
