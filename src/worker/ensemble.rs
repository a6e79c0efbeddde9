//! The router's reward-model ensemble jobs (`lab::ensemble`): train the members one after another
//! and install them as the session's ensemble, and score answers with every member.

use std::rc::Rc;

use super::protocol::*;
use super::router::{Host, Router};
use crate::align::Encoding;
use crate::lab::ensemble::{check_texts, plan, report, score_texts, train_member};
use crate::{Error, Result};

impl<H: Host> Router<H> {
    pub(super) async fn ensemble(self: &Rc<Self>, job: JobId, spec: RunSpec, members: usize, resample: Resample) -> Result<()> {
        let plan = plan(&spec, members, resample)?;
        let session = self.session()?;
        let mut heads = Vec::with_capacity(members);
        for (k, member) in plan.members.into_iter().enumerate() {
            let steps = member.train.max_steps;
            let mut step = 0;
            let head = train_member(&session, member, &mut |_| {
                step += 1;
                self.host.post(Event::EnsembleStep { job, member: k + 1, members, step, steps });
                !self.cancelled(job)
            })
            .await?;
            match head {
                Some(h) => heads.push(h),
                None => break,
            }
        }
        if heads.len() == members {
            let report = report(&session, &heads, &spec.encoding, &plan.held_out).await?;
            self.update(|s| s.ensemble = heads);
            self.host.post(Event::EnsembleTrained { job, report });
            self.post_policy_state();
        }
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }

    pub(super) async fn ensemble_score(&self, job: JobId, prompt: String, enc: Encoding, completions: Vec<String>) -> Result<()> {
        let session = self.session()?;
        if session.ensemble.len() < 2 {
            return Err(Error::Invalid("there is no reward-model ensemble yet: train one first".into()));
        }
        let texts: Vec<(String, String)> = completions.into_iter().filter(|c| !c.trim().is_empty()).map(|c| (prompt.clone(), c)).collect();
        check_texts(texts.len())?;
        let scored = score_texts(&session, &session.ensemble, &enc, &texts).await?;
        self.host.post(Event::EnsembleScored { job, scored });
        self.host.post(Event::Done { job });
        Ok(())
    }
}
