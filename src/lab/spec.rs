//! What a run is, declared once: the method and its knobs, the data, the trainer, LoRA, the
//! encoding and the held-out evaluation. The CLI's arguments and the page's form both produce a
//! [`RunSpec`]; the engine's config structs carry their own defaults (and, natively, their clap
//! arguments), so nothing here repeats a number.

use serde::{Deserialize, Serialize};

use super::ensemble::Combine;
use crate::align::Encoding;
use crate::align::dpo::DpoConfig;
use crate::align::kto::KtoConfig;
use crate::align::reward::RewardConfig;
use crate::align::rl::RlConfig;
use crate::align::train::TrainConfig;
use crate::data::{Demonstration, Preference, Unpaired};
use crate::judges::JudgeSpec;
use crate::model::LoraConfig;
use crate::{Error, Result};

/// Which weights answer: the policy (with what training changed) or the reference (the model
/// before training: adapters off, or the base weights for a full fine-tune).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    #[default]
    Policy,
    Reference,
}

/// Where a reward comes from: weighted judges, or the session's reward model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RewardSpec {
    Judges(Vec<(JudgeSpec, f64)>),
    /// The reward model trained (or loaded) in this session.
    RewardModel,
    /// The session's reward-model ensemble, its members' rewards combined.
    Ensemble(Combine),
}

/// A method and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Method {
    Dpo(DpoConfig),
    Kto(KtoConfig),
    Reward(RewardConfig),
    Sft,
    Rl { cfg: RlConfig, reward: RewardSpec },
}

/// The methods by name, for menus and file names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    #[default]
    Dpo,
    Kto,
    Reward,
    Sft,
    Rl,
}

impl MethodKind {
    pub const ALL: [MethodKind; 5] = [Self::Dpo, Self::Kto, Self::Reward, Self::Sft, Self::Rl];

    /// Short name: "dpo", "kto", "reward", "sft", "rl".
    pub const fn id(self) -> &'static str {
        match self {
            Self::Dpo => "dpo",
            Self::Kto => "kto",
            Self::Reward => "reward",
            Self::Sft => "sft",
            Self::Rl => "rl",
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Dpo => "DPO",
            Self::Kto => "KTO",
            Self::Reward => "Reward model",
            Self::Sft => "SFT",
            Self::Rl => "RLHF",
        }
    }

    /// What it learns from, for a menu.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Dpo => "DPO (preference pairs)",
            Self::Kto => "KTO (thumbs up/down)",
            Self::Reward => "Reward model (preference pairs)",
            Self::Sft => "SFT (ideal answers)",
            Self::Rl => "RLHF (GRPO on prompts)",
        }
    }

    /// What the method needs, said as what to do when it is missing.
    pub const fn needs(self) -> &'static str {
        match self {
            Self::Dpo | Self::Reward => "preference pairs: rank some samples, auto-label, or import a JSONL file",
            Self::Kto => "thumbs up/down ratings (at least 2): rate some samples or import a JSONL file",
            Self::Sft => "ideal answers: write one under a sample, or import prompt/completion lines",
            Self::Rl => "prompts: add some on the Data tab or in a JSONL file (the prompts of pairs count too)",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.id() == id)
    }
}

impl Method {
    pub fn kind(&self) -> MethodKind {
        match self {
            Self::Dpo(_) => MethodKind::Dpo,
            Self::Kto(_) => MethodKind::Kto,
            Self::Reward(_) => MethodKind::Reward,
            Self::Sft => MethodKind::Sft,
            Self::Rl { .. } => MethodKind::Rl,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// The user's data; each method takes what it trains on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainData {
    pub pairs: Vec<Preference>,
    pub unpaired: Vec<Unpaired>,
    pub demos: Vec<Demonstration>,
    pub prompts: Vec<String>,
}

/// One training run, whole.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub method: Method,
    /// `max_steps` counts optimizer steps, or rounds for RLHF (each samples once, then takes
    /// `num_iterations` optimizer steps on the samples).
    pub train: TrainConfig,
    /// LoRA settings, or `None` for full fine-tuning (tiny models only).
    pub lora: Option<LoraConfig>,
    pub encoding: Encoding,
    pub eval: EvalConfig,
    pub data: TrainData,
}

/// The held-out split: a fraction of the examples never trained on, scored every few steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
#[serde(default)]
pub struct EvalConfig {
    /// Fraction of the examples held out (0 = none; RLHF has no held-out split).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = EvalConfig::default().eval_fraction))]
    pub eval_fraction: f64,
    /// Score the held-out examples every this many steps, and after the last.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = EvalConfig::default().eval_steps))]
    pub eval_steps: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self { eval_fraction: 0.2, eval_steps: 5 }
    }
}

impl RunSpec {
    /// Checks every number before anything is allocated; the error names the knob.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        self.train.validate()?;
        if let Some(l) = &self.lora {
            l.validate()?;
            if !(l.lora_alpha > 0.0 && l.lora_alpha.is_finite()) {
                return bad("lora_alpha must be a positive number".into());
            }
        }
        if !(0.0..=0.5).contains(&self.eval.eval_fraction) {
            return bad("eval_fraction must be between 0 and 0.5".into());
        }
        if self.eval.eval_steps == 0 {
            return bad("eval_steps must be at least 1".into());
        }
        let positive = |name: &str, v: f64| if v > 0.0 && v.is_finite() { Ok(()) } else { bad(format!("{name} must be above 0")) };
        match &self.method {
            Method::Dpo(c) => {
                positive("beta", c.beta)?;
                if !(0.0..0.5).contains(&c.label_smoothing) {
                    return bad("label_smoothing must be in [0, 0.5)".into());
                }
            }
            Method::Kto(c) => {
                positive("beta", c.beta)?;
                if self.train.per_device_train_batch_size < 2 {
                    return bad("KTO needs a batch size of at least 2 (its KL estimate pairs mismatched examples)".into());
                }
            }
            Method::Reward(_) if self.lora.is_none() => {
                return bad("the reward model trains a LoRA adapter: choose LoRA, not full fine-tuning".into());
            }
            Method::Rl { cfg, reward } => {
                if cfg.num_generations < 2 {
                    return bad("RLHF needs at least 2 samples per prompt to compare them".into());
                }
                if cfg.prompts_per_step == 0 || cfg.num_iterations == 0 || cfg.max_new_tokens == 0 {
                    return bad("prompts per step, inner iterations and max tokens must be at least 1".into());
                }
                if !(cfg.epsilon > 0.0 && cfg.epsilon < 1.0) {
                    return bad("the clip epsilon must be in (0, 1)".into());
                }
                if !(cfg.beta >= 0.0 && cfg.beta.is_finite()) {
                    return bad("the KL beta must be 0 or more".into());
                }
                if matches!(reward, RewardSpec::Judges(j) if j.is_empty()) {
                    return bad("say what rewards the samples: switch on a judge, or use the reward model".into());
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Where RLHF's reward comes from, as a form offers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardChoice {
    #[default]
    Judges,
    /// (Saved settings of earlier versions spell it `rewardmodel`.)
    #[serde(alias = "rewardmodel")]
    RewardModel,
    /// The reward-model ensemble, combined as [`RunSettings::combine`] says.
    Ensemble,
}

/// Every knob of every method at once, as a form keeps them: switching method keeps the others'
/// values. [`RunSettings::spec`] turns it into the [`RunSpec`] of the chosen method.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    pub method: MethodKind,
    pub dpo: DpoConfig,
    pub kto: KtoConfig,
    pub reward: RewardConfig,
    pub rl: RlConfig,
    pub rl_reward: RewardChoice,
    /// How an ensemble's rewards combine when it is the reward.
    pub combine: Combine,
    /// Train every weight instead of a LoRA adapter (tiny models only).
    pub full_finetune: bool,
    pub lora: LoraConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

impl RunSettings {
    /// The run of the chosen method. `judges` are those switched on (RLHF's reward when it uses
    /// judges); the seed is the trainer's everywhere.
    pub fn spec(&self, judges: Vec<(JudgeSpec, f64)>, encoding: Encoding, data: TrainData) -> RunSpec {
        let seed = self.train.seed;
        let method = match self.method {
            MethodKind::Dpo => Method::Dpo(self.dpo.clone()),
            MethodKind::Kto => Method::Kto(self.kto.clone()),
            MethodKind::Reward => Method::Reward(self.reward.clone()),
            MethodKind::Sft => Method::Sft,
            MethodKind::Rl => Method::Rl {
                cfg: RlConfig { seed, ..self.rl.clone() },
                reward: match self.rl_reward {
                    RewardChoice::Judges => RewardSpec::Judges(judges),
                    RewardChoice::RewardModel => RewardSpec::RewardModel,
                    RewardChoice::Ensemble => RewardSpec::Ensemble(self.combine),
                },
            },
        };
        let lora = (!self.full_finetune || self.method == MethodKind::Reward).then(|| LoraConfig { seed, ..self.lora.clone() });
        RunSpec { method, train: self.train.clone(), lora, encoding, eval: self.eval.clone(), data }
    }
}
