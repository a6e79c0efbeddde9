//! The reference scored ahead of a run, in the worker's idle time ([`crate::lab::ReferenceAhead`]).
//! The page sends the run its Train form describes whenever the pairs, the form or the model
//! change; the worker scores the pairs the session lacks a turn at a time, each turn only while
//! no other request runs and the training warm-up ([`super::warm`]) is not under way: that goes
//! first.

use super::protocol::Event;
use super::router::{Host, Router, State};
use crate::Result;
use crate::lab::{ReferenceAhead, RunSpec};

/// Pairs a turn: on SmolLM2 on two cores a turn of two takes under a second, so a click that
/// comes during one waits at most that.
const PAIRS_PER_TURN: usize = 2;

impl<H: Host> Router<H> {
    /// Scores `run`'s reference ahead of it, quietly: a failure here is left for the run to report.
    pub(super) async fn score_ahead(&self, run: RunSpec) {
        let me = self.with(|s| {
            s.background += 1;
            s.scorings += 1;
            s.scorings
        });
        let _ = self.score_when_quiet(me, &run).await;
        self.with(|s| s.background -= 1);
    }

    /// Scores a turn whenever the worker is quiet, until every pair is kept, a newer request
    /// (`me` is this one's number) or a new model stops it; tells the page what it scored. The
    /// pairs are read only once the worker is quiet: the page sends this on every change to the form.
    async fn score_when_quiet(&self, me: u64, run: &RunSpec) -> Result<()> {
        let load = self.with(|s| s.loads);
        let current = |s: &State| s.scorings == me && s.loads == load;
        if !self.wait_quiet(current, |s| s.warming).await {
            return Ok(());
        }
        let Some(session) = self.with(|s| s.session.clone()) else { return Ok(()) };
        let Some(mut ahead) = ReferenceAhead::new(&session, run)? else { return Ok(()) };
        let (mut pairs, mut ms) = (0, 0.0);
        while ahead.remaining() > 0 && self.wait_quiet(current, |s| s.warming).await {
            let t0 = self.host.now_ms();
            pairs += ahead.step(PAIRS_PER_TURN).await?;
            ms += self.host.now_ms() - t0;
            // A turn of the event loop, for requests that came during the turn.
            self.host.sleep(0).await;
        }
        if pairs > 0 {
            self.host.post(Event::ReferenceScored { pairs, ms });
        }
        Ok(())
    }
}
