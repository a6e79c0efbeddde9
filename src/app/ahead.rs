//! Tells the worker what Train would start, so that it scores the reference of the pairs a DPO
//! run lacks while the student reads and clicks (`Request::ScoreReference`,
//! `crate::lab::ReferenceAhead`): after Save ranking, an import, a change to the form, a model
//! ready. The worker works only while nothing else runs, and the newest request replaces an older
//! one; what it scored shows in the model bar's tooltip.

use leptos::prelude::*;

use super::{Ctx, client, lesson, train};
use crate::lab::MethodKind;
use crate::worker::protocol::Request;

pub(super) fn score_ahead(ctx: Ctx) {
    // Whether a model is ready, as its own signal: the model bar's later updates send nothing.
    let ready = Memo::new(move |_| ctx.model.with(Option::is_some) && !ctx.loading.get());
    Effect::new(move |_| {
        ctx.pairs.track();
        ctx.settings.track();
        if !ready.get() || ctx.training.get() {
            return;
        }
        // A form the run would refuse sends nothing: Train says what is wrong.
        if let Ok(run) = train::spec(ctx, lesson::data_tab(ctx)) {
            if run.method.kind() == MethodKind::Dpo && !run.data.pairs.is_empty() {
                client::send(&Request::ScoreReference { run });
            }
        }
    });
}
