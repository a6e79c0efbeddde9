//! The router's rater-groups job: one DPO adapter per group and one merged, each trained from the
//! base model and scored on every group's held-out pairs (`lab::groups`). The session's policy is
//! left as it was: these adapters are measured, not installed.

use std::rc::Rc;

use super::protocol::*;
use super::router::{Host, Router};
use crate::lab::groups::{Group, plan, split_groups, train_and_score};
use crate::Result;

impl<H: Host> Router<H> {
    pub(super) async fn groups(self: &Rc<Self>, job: JobId, groups: Vec<Group>, spec: RunSpec) -> Result<()> {
        spec.validate()?;
        let splits = split_groups(&groups, &spec)?;
        let session = self.session()?;
        let steps = spec.train.max_steps;
        for (adapter, pairs) in plan(&splits) {
            let mut step = 0;
            let row = train_and_score(&session, &spec, &adapter, pairs, &splits, &mut |_| {
                step += 1;
                self.host.post(Event::GroupStep { job, adapter: adapter.clone(), step, steps });
                !self.cancelled(job)
            })
            .await?;
            match row {
                Some((row, _)) => self.host.post(Event::GroupTrained { job, row }),
                None => break,
            }
        }
        self.with(|s| s.cancelled.remove(&job));
        self.host.post(Event::Done { job });
        Ok(())
    }
}
