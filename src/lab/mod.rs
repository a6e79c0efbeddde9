//! The lab: everything the page and the CLI do with a model, below both of them, written once.
//! No clap, no DOM, no globals; async at heart (the CLI blocks once, at its edge). Settings, file
//! formats and summaries build without the `engine` feature (the page's wasm uses them); what runs
//! on a model is marked `#[cfg(feature = "engine")]`.
//!
//! - [`spec`]: what a run is ([`RunSpec`]), the methods, reward sources, form settings.
//! - [`session`]: the loaded model with its policy, reward model and judges; generate, per-token
//!   log-probabilities, scoring texts. [`answers`]: answers to several prompts decoded together.
//! - [`policy`]: base / LoRA / full fine-tune as one value, its reference, import and export.
//! - [`rewards`]: judges and reward models as one async scorer.
//! - [`run`]: a run made real: `step().await`, held-out metrics, what it trained. [`detail`]: a
//!   step example by example (DPO's pairs on the loss curve, RL's samples). [`ahead`]: a DPO
//!   run's reference values scored in the idle time before it starts.
//! - [`handoff`]: a run's data, adapter and a TRL script, to continue it on a GPU box.
//! - [`class`]: a class's work pooled: rater agreement (rate, Cohen's kappa), a merged set, runs.
//! - [`curriculum`]: pairs ordered by a reward source's margin, easy or hard first.
//! - [`distill`]: SFT on a teacher's answers (a second model, a file, best-of-N), the gap
//!   recovered; weak-to-strong: a weak critic picking a stronger model's samples.
//! - [`ensemble`]: reward models from several seeds or resamples, combined (mean, min, mean −
//!   spread); where the members disagree.
//! - [`constitution`]: self-alignment: the model judges its answers against principles, P(yes).
//! - [`groups`]: whose preferences: one adapter per rater group and one merged, each scored on
//!   every group's held-out pairs.
//! - [`pipeline`]: stages (SFT, reward model, RLHF, DPO...) one after another on one policy,
//!   each measured on held-out prompts.
//! - [`lesson`]: lab files: a teacher's lesson as steps of settings, one action and what to notice.
//! - [`prompting`]: one question under prompt variants. [`retrieve`]: BM25 over documents, answers
//!   with and without them, a fact set.
//! - [`probes`]: adversarial prompts answered before and after alignment, judged.
//! - [`label`]: best-of-N and best-vs-worst pairs. [`evaluate`]: reward, length and KL on prompts.
//! - [`shown`]: how a measured number reads (no "-0.0000").

#[cfg(feature = "engine")]
pub mod ahead;
#[cfg(feature = "engine")]
pub mod answers;
pub mod carried;
pub mod class;
pub mod constitution;
pub mod curriculum;
pub mod detail;
pub mod distill;
pub mod ensemble;
pub mod evaluate;
pub mod groups;
#[cfg(feature = "engine")]
pub mod handoff;
pub mod label;
pub mod lesson;
pub mod pipeline;
pub mod policy;
pub mod probes;
pub mod prompting;
pub mod retrieve;
pub mod shown;
#[cfg(feature = "engine")]
pub mod rewards;
#[cfg(feature = "engine")]
pub mod run;
#[cfg(feature = "engine")]
pub mod session;
pub mod spec;

pub use evaluate::EvalReport;

/// `v` as a `T`, the error holding the bad field's path. Every JSON value the lab reads goes
/// through here, so each type's reader is built once (the page's download holds every copy).
pub(crate) fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> std::result::Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(v)
}

/// Reads a small versioned JSON file someone gives the lab (a fact set, a probe set, a
/// constitution): its size checked before parsing, a bad field named by its path, a version newer
/// than 1 refused. `too_big` says what such a file usually holds.
pub(crate) fn read_versioned<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str, max_bytes: usize, too_big: &str, version: impl Fn(&T) -> u32) -> crate::Result<T> {
    let invalid = |m: String| crate::Error::Invalid(m);
    if bytes.len() > max_bytes {
        let limit = if max_bytes >= 1 << 20 { format!("{} MiB", max_bytes >> 20) } else { format!("{} KiB", max_bytes >> 10) };
        return Err(invalid(format!("this {what} is over {limit}; {too_big}")));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let f: T = serde_path_to_error::deserialize(&mut de).map_err(|e| invalid(format!("not a {what}: {}: {}", e.path(), e.inner())))?;
    match version(&f) {
        1 => Ok(f),
        v => Err(invalid(format!("{what} version {v} is not one this app reads (1); update alignlab"))),
    }
}
pub use label::pairs_from_ranking;
pub use policy::{AdapterFrom, FULL_FINETUNE_MAX_PARAMS, PolicyKind};
pub use spec::*;
#[cfg(feature = "engine")]
pub use {
    ahead::ReferenceAhead,
    evaluate::evaluate,
    label::best_of_n,
    policy::Policy,
    rewards::{RewardHead, Rewarder},
    run::{Run, RunState, Trained},
    session::{Session, TokenLogps},
};
