//! The router's training job: start a [`Run`], step it until it is done, paused, stopped or
//! fails, and after every step make what it trained the session's (Generate uses it at once).
//! While it trains, and when it ends, the trained adapter, reward model or fully fine-tuned weights
//! go to the page to keep (IndexedDB), so a crashed worker or a reload loses at most
//! [`SNAPSHOT_MS`] of training.

use std::rc::Rc;

use super::protocol::*;
use super::router::{Host, Router};
use crate::lab::Run;
use crate::Result;

/// How often a running job hands its adapter (or reward model) to the page to keep.
const SNAPSHOT_MS: f64 = 5_000.0;

impl<H: Host> Router<H> {
    pub(super) async fn train(self: &Rc<Self>, job: JobId, spec: RunSpec) -> Result<()> {
        let run = Run::new(&self.session()?, spec)?;
        self.host.post(Event::TrainStarted {
            job,
            trainable: run.trainable(),
            total_steps: run.total_steps(),
            examples: run.examples(),
            held_out: run.held_out(),
        });
        self.with(|s| s.control = None);
        self.drive(job, run, 0.0).await
    }

    pub(super) async fn control(self: &Rc<Self>, job: JobId, action: RunControl) -> Result<()> {
        if action != RunControl::Resume {
            self.with(|s| s.control = Some((job, action)));
            // A paused run has no loop to see the Stop: end it here.
            if action == RunControl::Stop {
                if let Some((_, run, _)) = self.with(|s| s.paused.take_if(|(j, _, _)| *j == job)) {
                    return self.finish(job, run, RunState::Stopped, None).await;
                }
            }
            return Ok(());
        }
        let (j, run, millis) = self
            .with(|s| s.paused.take())
            .ok_or_else(|| crate::Error::Invalid("there is no paused run to resume".into()))?;
        if j != job {
            self.with(|s| s.paused = Some((j, run, millis)));
            return Err(crate::Error::Invalid("that run is no longer paused".into()));
        }
        self.with(|s| s.control = None);
        self.drive(job, run, millis).await
    }

    fn take_control(&self, job: JobId) -> Option<RunControl> {
        self.with(|s| s.control.take_if(|(j, _)| *j == job)).map(|(_, a)| a)
    }

    /// Steps until done, paused, stopped or failed.
    async fn drive(self: &Rc<Self>, job: JobId, mut run: Run, mut millis: f64) -> Result<()> {
        let mut last_snapshot = self.host.now_ms();
        loop {
            if run.is_done() {
                return self.finish(job, run, RunState::Finished, None).await;
            }
            match self.take_control(job) {
                Some(RunControl::Pause) => {
                    self.snapshot(&run).await;
                    self.host.post(Event::TrainEnded { job, state: RunState::Paused, message: None });
                    self.with(|s| s.paused = Some((job, run, millis)));
                    return Ok(());
                }
                Some(RunControl::Stop) => return self.finish(job, run, RunState::Stopped, None).await,
                _ => {}
            }
            let t0 = self.host.now_ms();
            match run.step().await {
                Ok(mut metrics) => {
                    let ms = self.host.now_ms() - t0;
                    millis += ms;
                    metrics.insert("step_seconds".into(), ms / 1000.0);
                    self.update(|s| run.publish(s));
                    self.host.post(Event::Metrics { job, values: metrics, millis, detail: run.detail().cloned() });
                    if self.host.now_ms() - last_snapshot >= SNAPSHOT_MS && !run.is_done() {
                        self.snapshot(&run).await;
                        last_snapshot = self.host.now_ms();
                    }
                }
                Err(e) => {
                    // The trainer rolled back to the last good weights: keep them and stop.
                    self.post_error(Some(job), &e);
                    return self.finish(job, run, RunState::Failed, Some(e.to_string())).await;
                }
            }
        }
    }

    /// Publishes the run, notes it in the policy's history, and hands its result to the page.
    async fn finish(&self, job: JobId, run: Run, state: RunState, message: Option<String>) -> Result<()> {
        let is_reward = matches!(run.spec.method, Method::Reward(_));
        self.update(|s| {
            run.publish(s);
            if run.steps_done() > 0 && !is_reward {
                s.policy.history.push(run.label());
            }
        });
        self.post_policy_state();
        self.host.post(Event::TrainEnded { job, state, message });
        // The page keeps a copy, so a reload or a lost device loses nothing.
        self.snapshot(&run).await;
        Ok(())
    }

    /// Hands what `run` trained so far (published to the session) to the page to keep: the
    /// adapter, the reward model, or every weight of a full fine-tune (tiny models only, so a
    /// copy every few seconds is cheap).
    async fn snapshot(&self, run: &Run) {
        if run.steps_done() == 0 {
            return;
        }
        let what = match run.spec.method {
            Method::Reward(_) => Artifact::RewardModel,
            _ if run.spec.lora.is_some() => Artifact::Adapter,
            _ => Artifact::Merged,
        };
        if let Err(e) = self.export(None, what).await {
            self.post_error(None, &e);
        }
    }
}
