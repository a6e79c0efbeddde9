//! A quantized model's f32 weights, made in the background once the model is ready. On the CPU
//! they wait at load as the file's blocks (`Weights::defer_blocks`): an answer decodes from the
//! blocks, so making the f32 copy first (540 MB for SmolLM2, most of the page's way from the
//! downloaded file to a ready model on a slow machine) only delayed the student. A training step
//! or a long prompt reads them; made here, while the student reads and types, they cost that
//! first step nothing. A request that needs them sooner makes the rest itself.

use super::protocol::Event;
use super::router::{Host, Router};
use crate::lab::Session;

/// How often the background work looks whether a request has ended.
const POLL_MS: u32 = 50;

impl<H: Host> Router<H> {
    /// Makes `session`'s deferred weights, one at a time and only while no request is being
    /// served, then says how long they took; stops for a new model.
    pub(super) async fn make_deferred_weights(&self, session: &Session) {
        let model = &session.lm.model;
        let weights = model.deferred_weights();
        if weights == 0 {
            return;
        }
        let load = self.with(|s| s.loads);
        // The load's request, in flight until this ends, is background work from here.
        self.with(|s| s.background += 1);
        let mut ms = 0.0;
        loop {
            while self.with(|s| s.loads == load && s.busy > s.background) {
                self.host.sleep(POLL_MS).await;
            }
            if self.with(|s| s.loads != load) {
                break;
            }
            let t0 = self.host.now_ms();
            let more = model.make_next_weight();
            ms += self.host.now_ms() - t0;
            if !more {
                self.host.post(Event::WeightsMade { weights, ms });
                break;
            }
            // A turn of the event loop, for requests that came meanwhile.
            self.host.sleep(0).await;
        }
        self.with(|s| s.background -= 1);
    }
}
