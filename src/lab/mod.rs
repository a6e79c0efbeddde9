//! The lab: everything the page and the CLI do with a model, below both of them, written once.
//! No clap, no DOM, no globals; async at heart (the CLI blocks once, at its edge).
//!
//! - [`spec`]: what a run is ([`RunSpec`]), the methods, reward sources, form settings.
//! - [`session`]: the loaded model with its policy, reward model and judges; generate, per-token
//!   log-probabilities, scoring texts.
//! - [`policy`]: base / LoRA / full fine-tune as one value, its reference, import and export.
//! - [`rewards`]: judges and reward models as one async scorer.
//! - [`run`]: a run made real: `step().await`, held-out metrics, what it trained.
//! - [`handoff`]: a run's data, adapter and a TRL script, to continue it on a GPU box.
//! - [`class`]: a class's work pooled: rater agreement (rate, Cohen's kappa), a merged set, runs.
//! - [`constitution`]: self-alignment: the model judges its answers against principles, P(yes).
//! - [`groups`]: whose preferences: one adapter per rater group and one merged, each scored on
//!   every group's held-out pairs.
//! - [`lesson`]: lab files: a teacher's lesson as steps of settings, one action and what to notice.
//! - [`prompting`]: one question under prompt variants. [`retrieve`]: BM25 over documents, answers
//!   with and without them, a fact set.
//! - [`probes`]: adversarial prompts answered before and after alignment, judged.
//! - [`label`]: best-of-N and best-vs-worst pairs. [`evaluate`]: reward, length and KL on prompts.

pub mod class;
pub mod constitution;
pub mod evaluate;
pub mod groups;
pub mod handoff;
pub mod label;
pub mod lesson;
pub mod policy;
pub mod probes;
pub mod prompting;
pub mod retrieve;
pub mod rewards;
pub mod run;
pub mod session;
pub mod spec;

pub use evaluate::{EvalReport, evaluate};
pub use label::{best_of_n, pairs_from_ranking};
pub use policy::{AdapterFrom, FULL_FINETUNE_MAX_PARAMS, Policy, PolicyKind};
pub use rewards::{RewardHead, Rewarder};
pub use run::{Run, RunState, Trained};
pub use session::{Session, TokenLogps};
pub use spec::*;
