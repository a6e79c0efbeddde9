//! The policy: the model Generate and Compare use, as one value. It is the base model, the base
//! with a LoRA adapter, or fully fine-tuned weights; it knows its reference, how it came to be,
//! and how to leave and enter the lab (PEFT adapter files, an HF checkpoint).

use serde::{Deserialize, Serialize};

use crate::model::LoraConfig;
#[cfg(feature = "engine")]
use {
    crate::io::LoadedModel,
    crate::io::hf,
    crate::io::peft::{self, AdapterFiles},
    crate::model::Llama,
    crate::{Error, Result},
    burn::module::Module,
};

/// Full fine-tuning keeps a frozen copy plus AdamW's two moments: only for tiny models.
pub const FULL_FINETUNE_MAX_PARAMS: usize = 20_000_000;

/// What the policy's own weights are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PolicyKind {
    Base,
    Lora(LoraConfig),
    Full,
}

#[cfg(feature = "engine")]
#[derive(Clone)]
pub struct Policy {
    pub model: Llama,
    pub kind: PolicyKind,
    /// What shaped it, oldest first ("DPO (20 steps)", "an imported adapter").
    pub history: Vec<String>,
    /// Its weights outside any adapter are the loaded model's.
    base_is_loaded: bool,
}

/// Where an installed adapter came from, for the policy's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterFrom {
    /// A file the user opened.
    #[default]
    File,
    /// The adapter the page kept from the last visit (or from before the engine restarted).
    Kept,
}

#[cfg(feature = "engine")]
impl AdapterFrom {
    fn label(self) -> &'static str {
        match self {
            Self::File => "an imported adapter",
            Self::Kept => "the adapter kept from your last session",
        }
    }
}

#[cfg(feature = "engine")]
impl Policy {
    pub fn base(lm: &LoadedModel) -> Self {
        Self { model: lm.model.clone(), kind: PolicyKind::Base, history: Vec::new(), base_is_loaded: true }
    }

    /// Whether its weights outside any adapter are still the loaded model's: then a run's
    /// reference (adapters off, or a frozen copy for a full fine-tune) is the loaded model, and
    /// the reference values the session keeps for it hold. A full fine-tune or imported weights
    /// end it (a LoRA run on top keeps them as its base); a reset or an imported adapter, which
    /// sits on the loaded weights, brings it back.
    pub fn base_is_loaded(&self) -> bool {
        self.base_is_loaded
    }

    /// Back to the base model: adapters and fine-tuned weights dropped.
    pub fn reset(&mut self, lm: &LoadedModel) {
        *self = Self::base(lm);
    }

    /// Whether there is anything of its own to export or reset.
    pub fn is_trained(&self) -> bool {
        self.kind != PolicyKind::Base
    }

    pub fn lora(&self) -> Option<&LoraConfig> {
        match &self.kind {
            PolicyKind::Lora(c) => Some(c),
            _ => None,
        }
    }

    /// "LoRA r=8 alpha=16 on q_proj,v_proj after DPO (20 steps)".
    pub fn describe(&self) -> String {
        let what = match &self.kind {
            PolicyKind::Lora(l) => format!("LoRA r={} alpha={} on {}", l.r, l.lora_alpha, l.target_modules.join(",")),
            PolicyKind::Full => "fully fine-tuned weights".into(),
            PolicyKind::Base => "the base model".into(),
        };
        if self.history.is_empty() { what } else { format!("{what} after {}", self.history.join(", then ")) }
    }

    /// The model before training: adapters off, or the loaded weights for a full fine-tune.
    pub fn reference(&self, lm: &LoadedModel) -> Llama {
        match self.kind {
            PolicyKind::Full => lm.model.clone(),
            _ => self.model.reference(),
        }
    }

    /// The model a run trains, from this policy. The same adapter shape (rank, alpha, targets,
    /// rsLoRA) keeps training the adapter there is; another gets a fresh adapter; `None` trains
    /// every weight (with any adapter merged in first), refused above [`FULL_FINETUNE_MAX_PARAMS`].
    pub fn for_training(&self, lora: Option<&LoraConfig>) -> Result<Llama> {
        let mut model = self.model.clone();
        match (lora, self.lora()) {
            (Some(want), Some(have)) if same_shape(want, have) => {}
            (Some(want), _) => {
                model.remove_lora();
                model.add_lora(want)?;
            }
            (None, Some(_)) => {
                return Err(Error::Invalid(
                    "full fine-tuning starts from plain weights: reset to the base model (or export the adapter) first".into(),
                ));
            }
            (None, None) => {
                let n = model.num_params();
                if n > FULL_FINETUNE_MAX_PARAMS {
                    return Err(Error::Invalid(format!(
                        "full fine-tuning keeps two extra copies of all {:.0} M weights: it is for tiny models \
                         (up to {} M). Use LoRA for this one",
                        n as f64 / 1e6,
                        FULL_FINETUNE_MAX_PARAMS / 1_000_000
                    )));
                }
                model = model.all_trainable();
            }
        }
        Ok(model)
    }

    /// Takes what a run trained (the run's label joins the history when it ends).
    pub fn trained(&mut self, model: Llama, lora: Option<LoraConfig>) {
        self.base_is_loaded &= lora.is_some();
        self.kind = match lora {
            Some(c) => PolicyKind::Lora(c),
            None => PolicyKind::Full,
        };
        self.model = model;
    }

    /// Installs a PEFT adapter on the base weights, replacing any adapter.
    pub fn import_adapter(&mut self, lm: &LoadedModel, config_json: &[u8], safetensors: &[u8], from: AdapterFrom) -> Result<LoraConfig> {
        let mut model = lm.model.clone();
        let cfg = peft::load_adapter(&mut model, config_json, safetensors)?;
        *self = Self { model, kind: PolicyKind::Lora(cfg.clone()), history: vec![from.label().into()], base_is_loaded: true };
        Ok(cfg)
    }

    /// Installs fully fine-tuned weights as the policy: an HF checkpoint (`config.json` +
    /// `model.safetensors`) of this model's shapes, as [`crate::io::hf::save_hf`] writes it. How
    /// a full fine-tune the page kept comes back after a reload.
    pub fn import_weights(&mut self, lm: &LoadedModel, config_json: &[u8], safetensors: &[u8]) -> Result<()> {
        let parts = hf::HfParts { config_json, safetensors: vec![safetensors], tokenizer_json: None, tokenizer_config_json: None, chat_template: None };
        let mut ckpt = hf::load(parts, &mut |_, _| {})?;
        // Every shape is checked against the loaded model's config: weights of another model fail.
        let model = Llama::from_weights(&lm.config, &mut ckpt.weights, &lm.device).map_err(|e| {
            Error::Invalid(format!("these fine-tuned weights do not fit the loaded model: {e}"))
        })?;
        *self = Self { model, kind: PolicyKind::Full, history: vec!["training in your last session".into()], base_is_loaded: false };
        Ok(())
    }

    /// The adapter in PEFT's layout.
    pub async fn export_adapter(&self, base_model: &str) -> Result<AdapterFiles> {
        let cfg = self.lora().ok_or_else(|| {
            Error::Invalid("the policy has no LoRA adapter to export: train one first (a full fine-tune leaves as a checkpoint)".into())
        })?;
        peft::save_adapter(&self.model, cfg, base_model).await
    }

    /// Parameters a run on this policy trains: the adapter's, or all of them.
    pub fn trainable(model: &Llama) -> usize {
        if model.has_lora() { model.num_trainable() } else { model.num_params() }
    }
}

#[cfg(feature = "engine")]
fn same_shape(a: &LoraConfig, b: &LoraConfig) -> bool {
    let targets = |c: &LoraConfig| {
        let mut t = c.target_modules.clone();
        t.sort();
        t
    };
    a.r == b.r && a.lora_alpha == b.lora_alpha && targets(a) == targets(b) && a.use_rslora == b.use_rslora
}
