//! Reward sources as one async scorer: weighted judges, or a reward model. RLHF, best-of-N,
//! auto-labelling, Compare and evaluation all score through [`Rewarder::rewards`]; a new source
//! (an ensemble of reward models) is a new variant here, and no front end changes.

use std::rc::Rc;

use super::ensemble::Combine;
use super::session::Session;
use crate::align::best_of_n::Candidate;
use crate::align::reward::RewardModel;
use crate::judges::{JudgeData, JudgeSpec, Judges};
use crate::model::LoraConfig;
use crate::{Error, Result};

/// A trained reward model and the adapter settings it was made with (needed to export it).
#[derive(Clone)]
pub struct RewardHead {
    /// Without gradient tracking: it only scores.
    pub model: RewardModel,
    pub lora: LoraConfig,
}

#[derive(Clone)]
pub enum Rewarder {
    Judges { judges: Vec<(JudgeSpec, f64)>, data: Rc<JudgeData> },
    Model { head: RewardHead, pad: u32, end_of_turn: u32, stop_ids: Vec<u32> },
    /// Reward models combined into one reward ([`super::ensemble`]).
    Ensemble { members: Vec<Rewarder>, combine: Combine },
}

impl Rewarder {
    /// Checks the judges can run (their word lists are there) before any sampling starts.
    pub fn judges(judges: Vec<(JudgeSpec, f64)>, data: Rc<JudgeData>) -> Result<Self> {
        if judges.is_empty() {
            return Err(Error::Invalid("no judge is switched on: choose at least one, or use a reward model".into()));
        }
        Judges::new(judges.clone(), &data)?;
        Ok(Self::Judges { judges, data })
    }

    /// A reward model scoring the session's model's texts.
    pub fn model(session: &Session, head: RewardHead) -> Self {
        let tok = &session.lm.tokenizer;
        Self::Model { head, pad: tok.pad_id(), end_of_turn: tok.end_of_turn(), stop_ids: tok.stop_ids.clone() }
    }

    /// One reward per candidate, higher is better.
    pub async fn rewards(&self, cands: &[Candidate<'_>]) -> Result<Vec<f64>> {
        match self {
            Self::Ensemble { members, combine } => {
                let mut by_member = Vec::with_capacity(members.len());
                for m in members {
                    by_member.push(Box::pin(m.rewards(cands)).await?);
                }
                Ok((0..cands.len()).map(|i| combine.of(&by_member.iter().map(|r| r[i]).collect::<Vec<_>>())).collect())
            }
            Self::Judges { judges, data } => {
                let j = Judges::new(judges.clone(), data)?;
                Ok(cands.iter().map(|c| j.score(c.completion)).collect())
            }
            Self::Model { head, pad, end_of_turn, stop_ids } => {
                if cands.is_empty() {
                    return Ok(Vec::new());
                }
                // The reward model learnt on completions that end with the end-of-turn token
                // (Encoding::completion): score them the same way.
                let pairs: Vec<(Vec<u32>, Vec<u32>)> = cands
                    .iter()
                    .map(|c| {
                        let mut ids = c.completion_ids.to_vec();
                        if ids.last().is_none_or(|t| !stop_ids.contains(t)) {
                            ids.push(*end_of_turn);
                        }
                        (c.prompt_ids.to_vec(), ids)
                    })
                    .collect();
                Ok(head.model.rewards_for(&pairs, *pad).await?.into_iter().map(f64::from).collect())
            }
        }
    }
}
