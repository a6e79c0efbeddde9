//! The Train tab's knobs: every setting of every method, bound straight to the engine's own
//! structs in [`RunSettings`] (defaults and names live there), each with a one-line tooltip.

use leptos::prelude::*;

use super::{Ctx, lesson};
use super::fields::{check, choice, number};
use crate::align::dpo::DpoLossType;
use crate::align::rl::{Advantage, KlEstimator, KlPlacement};
use crate::align::train::Schedule;
use crate::lab::ensemble::Combine;
use crate::lab::{MethodKind, RewardChoice, RunSettings, TrainData};
use crate::model::lora::TARGETS;

const fn method(m: MethodKind) -> (MethodKind, &'static str, &'static str) {
    (m, m.id(), m.label())
}

const METHODS: [(MethodKind, &str, &str); 5] =
    [method(MethodKind::Dpo), method(MethodKind::Kto), method(MethodKind::Reward), method(MethodKind::Sft), method(MethodKind::Rl)];
const LOSSES: [(DpoLossType, &str, &str); 4] = [
    (DpoLossType::Sigmoid, "sigmoid", "sigmoid"),
    (DpoLossType::Robust, "robust", "robust"),
    (DpoLossType::Ipo, "ipo", "ipo"),
    (DpoLossType::Hinge, "hinge", "hinge"),
];
const REWARDS: [(RewardChoice, &str, &str); 3] = [
    (RewardChoice::Judges, "judges", "Judges"),
    (RewardChoice::RewardModel, "rm", "Reward model"),
    (RewardChoice::Ensemble, "ensemble", "Reward-model ensemble"),
];
const COMBINES: [(Combine, &str, &str); 3] = [
    (Combine::Mean, "mean", "mean"),
    (Combine::Min, "min", "min (the most pessimistic member)"),
    (Combine::MeanMinusSpread, "mean_minus_spread", "mean − spread"),
];
const ADVANTAGES: [(Advantage, &str, &str); 2] = [(Advantage::Grpo, "grpo", "GRPO (mean/std)"), (Advantage::Rloo, "rloo", "RLOO (leave one out)")];
const ESTIMATORS: [(KlEstimator, &str, &str); 2] = [(KlEstimator::K3, "k3", "k3 (unbiased, ≥ 0)"), (KlEstimator::K1, "k1", "k1 (log ratio)")];
const PLACEMENTS: [(KlPlacement, &str, &str); 2] = [(KlPlacement::Loss, "loss", "in the loss (GRPO)"), (KlPlacement::Reward, "reward", "in the reward (PPO)")];
const SCHEDULES: [(Schedule, &str, &str); 3] =
    [(Schedule::Linear, "linear", "linear"), (Schedule::Cosine, "cosine", "cosine"), (Schedule::Constant, "constant", "constant")];

#[component]
pub fn TrainForm(form: RwSignal<RunSettings>) -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let is = move |m: MethodKind| form.with(|f| f.method == m);
    let count = move || {
        let (n, what): (fn(&TrainData) -> usize, &str) = match form.with(|f| f.method) {
            MethodKind::Dpo | MethodKind::Reward => (|d| d.pairs.len(), "pairs"),
            MethodKind::Kto => (|d| d.unpaired.len(), "ratings"),
            MethodKind::Sft => (|d| d.demos.len(), "ideal answers"),
            MethodKind::Rl => (|d| if d.prompts.is_empty() { d.pairs.len() } else { d.prompts.len() }, "prompts"),
        };
        let data = TrainData { pairs: ctx.pairs.get(), unpaired: ctx.unpaired.get(), demos: ctx.demos.get(), prompts: ctx.prompts.get() };
        format!("{} {what}{}", n(&data), lesson::lesson_note(ctx, &data, n))
    };
    view! {
        <div class="row">
            {choice(form, "Method", "DPO learns from preference pairs; KTO from thumbs up/down; a reward model scores answers; SFT imitates ideal answers; RLHF samples and reinforces what the judges or reward model like.",
                &METHODS, |f| f.method, |f, v| f.method = v)}
            <span class="muted">{count}</span>
        </div>
        <Show when=move || is(MethodKind::Dpo)>
            <div class="row">
                {choice(form, "Loss type", "sigmoid = the DPO paper; robust tolerates noisy labels; ipo regularises harder; hinge = SLiC.", &LOSSES, |f| f.dpo.loss_type, |f, v| f.dpo.loss_type = v)}
                {number(form, "Beta", "How far the policy may move from the reference: small beta = bolder changes.", "0.05", |f| f.dpo.beta, |f, v| f.dpo.beta = v)}
                {number(form, "Label smoothing", "Assume this fraction of labels is flipped (conservative DPO).", "0.05", |f| f.dpo.label_smoothing, |f, v| f.dpo.label_smoothing = v)}
            </div>
        </Show>
        <Show when=move || is(MethodKind::Kto)>
            <div class="row">
                {number(form, "Beta", "How far the policy may move from the reference.", "0.05", |f| f.kto.beta, |f, v| f.kto.beta = v)}
                {number(form, "Desirable weight", "Weight of thumbs-up examples in the loss.", "0.1", |f| f.kto.desirable_weight, |f, v| f.kto.desirable_weight = v)}
                {number(form, "Undesirable weight", "Weight of thumbs-down examples in the loss.", "0.1", |f| f.kto.undesirable_weight, |f, v| f.kto.undesirable_weight = v)}
            </div>
        </Show>
        <Show when=move || is(MethodKind::Reward)>
            <div class="row">
                {number(form, "Margin", "Required gap between the chosen and rejected rewards.", "0.1", |f| f.reward.margin, |f, v| f.reward.margin = v)}
                {number(form, "Centering", "Pulls rewards towards 0 (center_rewards_coefficient).", "0.01", |f| f.reward.center_rewards_coefficient, |f, v| f.reward.center_rewards_coefficient = v)}
            </div>
        </Show>
        <Show when=move || is(MethodKind::Rl)>
            <div class="row">
                {choice(form, "Reward source", "What rewards the samples: the judges (below), the reward model you trained, or the ensemble from the Ensemble tab.", &REWARDS, |f| f.rl_reward, |f, v| f.rl_reward = v)}
                <Show when=move || form.with(|f| f.rl_reward == RewardChoice::Ensemble)>
                    {choice(form, "Combine", "How the members' rewards become one: their mean, the lowest, or the mean less their spread (uncertain answers marked down).", &COMBINES, |f| f.combine, |f, v| f.combine = v)}
                </Show>
                {number(form, "Samples per prompt", "Each is compared with its group's mean reward.", "1", |f| f.rl.num_generations, |f, v| f.rl.num_generations = v)}
                {number(form, "Prompts per round", "Prompts sampled each round.", "1", |f| f.rl.prompts_per_step, |f, v| f.rl.prompts_per_step = v)}
                {number(form, "KL beta", "The leash: penalty on drifting from the reference (0 = no leash).", "0.01", |f| f.rl.beta, |f, v| f.rl.beta = v)}
                {number(form, "Max tokens", "Longest sampled answer in tokens.", "1", |f| f.rl.max_new_tokens, |f, v| f.rl.max_new_tokens = v)}
                {number(form, "Sampling temperature", "Randomness of the sampled answers.", "0.1", |f| f.rl.temperature, |f, v| f.rl.temperature = v)}
            </div>
            <div class="row">
                {choice(form, "Advantage", "How a sample's reward is compared with its group's.", &ADVANTAGES, |f| f.rl.advantage, |f, v| f.rl.advantage = v)}
                {choice(form, "KL estimator", "How KL to the reference is estimated from sampled tokens.", &ESTIMATORS, |f| f.rl.kl_estimator, |f, v| f.rl.kl_estimator = v)}
                {choice(form, "KL placement", "Penalise KL in the loss (GRPO) or subtract it from the reward (PPO).", &PLACEMENTS, |f| f.rl.kl_in, |f, v| f.rl.kl_in = v)}
                {number(form, "Clip epsilon", "PPO clipping: how far one update may move a token's probability ratio.", "0.05", |f| f.rl.epsilon, |f, v| f.rl.epsilon = v)}
                {number(form, "Inner steps", "Optimizer steps on each round's samples.", "1", |f| f.rl.num_iterations, |f, v| f.rl.num_iterations = v)}
            </div>
            <super::data::JudgePicker/>
        </Show>
        <div class="row">
            {check(form, "LoRA", "LoRA trains two small matrices per layer and leaves the model as it is; without it every weight trains (tiny models only).",
                |f| !f.full_finetune, |f, v| f.full_finetune = !v)}
            {number(form, "Rank", "Rank of the adapter matrices: more = more capacity, more memory.", "1", |f| f.lora.r, |f, v| f.lora.r = v)}
            {number(form, "Alpha", "Scale of the adapter's update (alpha / rank).", "1", |f| f.lora.lora_alpha, |f, v| f.lora.lora_alpha = v)}
            {number(form, "Dropout", "Dropout on the adapter's input while training.", "0.05", |f| f.lora.lora_dropout, |f, v| f.lora.lora_dropout = v)}
            {check(form, "rsLoRA", "Scale by alpha / sqrt(rank): steadier at high ranks.", |f| f.lora.use_rslora, |f, v| f.lora.use_rslora = v)}
            <span title="Which projections get an adapter.">"Targets: "</span>
            {TARGETS.into_iter().map(|t| view! {
                <label><input type="checkbox" prop:checked=move || form.with(|f| f.lora.target_modules.iter().any(|x| x == t))
                    on:change=move |ev| form.update(|f| { f.lora.target_modules.retain(|y| y != t); if event_target_checked(&ev) { f.lora.target_modules.push(t.into()); } })/>
                    {t.trim_end_matches("_proj")}</label>
            }).collect_view()}
        </div>
        <div class="row">
            {number(form, "Learning rate", "Step size of AdamW. Too high and training diverges (the page stops it and keeps the last good weights).", "0.0001", |f| f.train.learning_rate, |f, v| f.train.learning_rate = v)}
            {number(form, "Steps", "Optimizer steps (for RLHF: rounds, each sampling fresh answers and taking the inner steps on them).", "1", |f| f.train.max_steps, |f, v| f.train.max_steps = v)}
            {number(form, "Batch size", "Examples per step: larger is steadier and slower.", "1", |f| f.train.per_device_train_batch_size, |f, v| f.train.per_device_train_batch_size = v)}
            {choice(form, "Schedule", "How the learning rate changes after warm-up.", &SCHEDULES, |f| f.train.lr_scheduler_type, |f, v| f.train.lr_scheduler_type = v)}
            {number(form, "Warm-up", "Fraction of the steps spent raising the learning rate from 0.", "0.05", |f| f.train.warmup_ratio, |f, v| f.train.warmup_ratio = v)}
            {number(form, "Seed", "Same seed + same data = the same run.", "1", |f| f.train.seed, |f, v| f.train.seed = v)}
            {check(form, "In order", "Take the examples in the order of the Data tab (a curriculum: order the pairs there first) instead of shuffling them.", |f| f.train.in_order, |f, v| f.train.in_order = v)}
            {number(form, "Held out", "Fraction of the examples kept aside to measure the model on data it never trained on.", "0.05", |f| f.eval.eval_fraction, |f, v| f.eval.eval_fraction = v)}
            {number(form, "Evaluate every", "Score the held-out examples every this many steps (and after the last).", "1", |f| f.eval.eval_steps, |f, v| f.eval.eval_steps = v)}
        </div>
    }
}
