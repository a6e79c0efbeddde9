//! Alignment methods, one file each, over the shared [`train::Trainer`]. Names, defaults and
//! metrics follow TRL so runs can move between this lab and TRL/PEFT.

pub mod best_of_n;
pub mod dpo;
pub mod kto;
pub mod reward;
pub mod rl;
#[cfg(feature = "engine")]
pub mod sft;
pub mod parts;
#[cfg(feature = "engine")]
pub mod resume;
pub mod train;

use serde::{Deserialize, Serialize};

#[cfg(feature = "engine")]
use crate::{Error, LoadedModel, Result, io::Message};

/// How text becomes token ids, for generation, scoring and training alike (TRL's processing):
/// the prompt as a chat user turn, after the system prompt, with the generation prompt (when the
/// model has a template and `chat` is on), else the plain text after BOS; the completion
/// tokenized on its own, followed by the end-of-turn token. Long prompts keep their end (where
/// the question is); long completions their start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::Args))]
#[serde(default)]
pub struct Encoding {
    /// Use the model's chat template (ignored for models without one).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long = "no-chat", action = clap::ArgAction::SetFalse,
        help = "Plain-text prompts instead of the model's chat template"))]
    pub chat: bool,
    /// System message for chat models (empty: the template's own default).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value = ""))]
    pub system: String,
    /// Longest prompt in tokens (longer ones keep their end).
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = Encoding::default().max_prompt_length))]
    pub max_prompt_length: usize,
    /// Longest completion in tokens, end-of-turn included.
    #[cfg_attr(not(target_arch = "wasm32"), arg(long, default_value_t = Encoding::default().max_completion_length))]
    pub max_completion_length: usize,
}

impl Default for Encoding {
    fn default() -> Self {
        Self { chat: true, system: String::new(), max_prompt_length: 128, max_completion_length: 128 }
    }
}

impl Encoding {
    /// For generation and scoring: nothing is cut (the model's context is the only limit).
    pub fn untruncated(chat: bool, system: &str) -> Self {
        Self { chat, system: system.to_string(), max_prompt_length: usize::MAX, max_completion_length: usize::MAX }
    }
}

#[cfg(feature = "engine")]
impl Encoding {
    pub fn prompt(&self, lm: &LoadedModel, prompt: &str) -> Result<Vec<u32>> {
        let prompt = bounded_text(lm, prompt, self.max_prompt_length, Keep::End, "prompt")?;
        let mut ids = if self.chat && lm.chat_template.is_some() {
            let mut messages = Vec::new();
            if !self.system.trim().is_empty() {
                messages.push(Message::system(&self.system));
            }
            messages.push(Message::user(prompt));
            // The template already holds the special tokens it wants.
            lm.tokenizer.encode(&lm.chat_prompt(&messages, true)?, false)?
        } else {
            lm.tokenizer.encode(prompt, true)?
        };
        // An empty plain prompt starts from BOS alone (how llama2.c's stories begin).
        if ids.is_empty() {
            ids.extend(lm.tokenizer.bos_id);
        }
        if ids.len() > self.max_prompt_length {
            ids.drain(..ids.len() - self.max_prompt_length);
        }
        Ok(ids)
    }

    pub fn completion(&self, lm: &LoadedModel, completion: &str) -> Result<Vec<u32>> {
        let completion = bounded_text(lm, completion, self.max_completion_length, Keep::Start, "completion")?;
        let mut ids = lm.tokenizer.encode(completion, false)?;
        ids.truncate(self.max_completion_length.saturating_sub(1));
        if let Some(&eot) = lm.tokenizer.stop_ids.first() {
            ids.push(eot);
        }
        Ok(ids)
    }
}

#[cfg(feature = "engine")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Start,
    End,
}

/// Text cut to what `max_tokens` tokens (and the model's context) can use, before the real
/// encoding: truncation comes first, so a 10 MB line costs about what a short one does. The cut
/// keeps a margin of 16 tokens beyond the limit, checked by tokenizing the cut alone (a tokenizer
/// that drops whitespace covers more bytes per token than its longest piece: the cut then
/// grows). Text that cannot fit the context at all is an error where nothing may be truncated
/// (generation, scoring).
#[cfg(feature = "engine")]
fn bounded_text<'t>(lm: &LoadedModel, text: &'t str, max_tokens: usize, keep: Keep, what: &str) -> Result<&'t str> {
    let context = lm.model.rope.max_positions;
    let limit = max_tokens.min(context);
    let mut budget = lm.tokenizer.text_budget(limit);
    while text.len() > budget {
        let cut = match keep {
            Keep::Start => &text[..text.floor_char_boundary(budget)],
            Keep::End => &text[text.ceil_char_boundary(text.len() - budget)..],
        };
        if lm.tokenizer.encode(cut, false)?.len() >= limit.saturating_add(16) {
            if max_tokens >= context {
                return Err(Error::Invalid(format!(
                    "the {what} is {} characters long, more than the model's context of {context} \
                     tokens can hold; shorten it",
                    text.chars().count()
                )));
            }
            return Ok(cut);
        }
        budget = budget.saturating_mul(4);
    }
    Ok(text)
}

#[cfg(feature = "engine")]
use {burn::module::Module, crate::model::Llama};

/// The reference model of DPO, KTO and RL: the policy with its adapters switched off (one copy
/// of the weights), or, for full fine-tuning, a frozen copy taken before training.
#[cfg(feature = "engine")]
pub enum Reference {
    AdaptersOff,
    Frozen(Box<Llama>),
}

#[cfg(feature = "engine")]
impl Reference {
    pub fn for_policy(policy: &Llama) -> Self {
        if policy.has_lora() { Self::AdaptersOff } else { Self::Frozen(Box::new(policy.clone().freeze())) }
    }

    pub fn model(&self, policy: &Llama) -> Llama {
        match self {
            Self::AdaptersOff => policy.reference(),
            Self::Frozen(m) => (**m).clone(),
        }
    }

    /// Whether `policy`, which has taken no step yet (`stepped` false), computes exactly what
    /// this reference does: a frozen copy is the policy as it was before its first step; with
    /// adapters, only while every adapter's B is zero (fresh ones are: `x A B` adds exactly 0),
    /// not for adapters a previous run trained.
    pub async fn is_policy(&self, policy: &Llama, stepped: bool) -> Result<bool> {
        if stepped {
            return Ok(false);
        }
        match self {
            Self::AdaptersOff => policy.adapters_add_zero().await,
            Self::Frozen(_) => Ok(true),
        }
    }
}
