//! Alignment methods, one file each, over the shared [`train::Trainer`]. Names, defaults and
//! metrics follow TRL so runs can move between this lab and TRL/PEFT.

pub mod best_of_n;
pub mod dpo;
pub mod kto;
pub mod reward;
pub mod rl;
pub mod sft;
pub mod train;

use serde::{Deserialize, Serialize};

use crate::io::Message;
use crate::{LoadedModel, Result};

/// How text becomes token ids for training, like TRL's processing: the prompt as a chat user
/// turn (when the model has a template and `chat` is on) with the generation prompt; the
/// completion tokenized on its own, followed by the end-of-turn token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Encoding {
    pub chat: bool,
    pub max_prompt_length: usize,
    pub max_completion_length: usize,
}

impl Default for Encoding {
    fn default() -> Self {
        Self { chat: true, max_prompt_length: 128, max_completion_length: 128 }
    }
}

impl Encoding {
    pub fn prompt(&self, lm: &LoadedModel, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = if self.chat && lm.chat_template.is_some() {
            let text = lm.chat_prompt(&[Message::user(prompt)], true)?;
            lm.tokenizer.encode(&text, false)?
        } else {
            lm.tokenizer.encode(prompt, true)?
        };
        // Keep the end of a long prompt: that is where the question is.
        if ids.len() > self.max_prompt_length {
            ids.drain(..ids.len() - self.max_prompt_length);
        }
        Ok(ids)
    }

    pub fn completion(&self, lm: &LoadedModel, completion: &str) -> Result<Vec<u32>> {
        let mut ids = lm.tokenizer.encode(completion, false)?;
        ids.truncate(self.max_completion_length.saturating_sub(1));
        if let Some(&eot) = lm.tokenizer.stop_ids.first() {
            ids.push(eot);
        }
        Ok(ids)
    }
}

use burn::module::Module;

use crate::model::Llama;

/// The reference model of DPO, KTO and RL: the policy with its adapters switched off (one copy
/// of the weights), or, for full fine-tuning, a frozen copy taken before training.
pub enum Reference {
    AdaptersOff,
    Frozen(Box<Llama>),
}

impl Reference {
    pub fn for_policy(policy: &Llama) -> Self {
        if policy.has_lora() { Self::AdaptersOff } else { Self::Frozen(Box::new(policy.clone().no_grad())) }
    }

    pub fn model(&self, policy: &Llama) -> Llama {
        match self {
            Self::AdaptersOff => policy.reference(),
            Self::Frozen(m) => (**m).clone(),
        }
    }
}
