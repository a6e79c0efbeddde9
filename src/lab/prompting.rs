//! Prompting as alignment: one question answered under prompt variants the student writes (a
//! system prompt, few-shot examples as earlier chat turns, an instruction such as "think step by
//! step"), each with the same seed, scored by the judges and the reward model, and measured by
//! how likely a reference answer becomes under it:
//! `log p(reference | variant's prompt) = Σ_t log p(y_t | prompt, y_<t)`.
//! The cheapest alignment: no weight changes at all.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
#[cfg(feature = "engine")]
use {
    super::session::Session,
    super::spec::Which,
    crate::align::Encoding,
    crate::generate::{DecodePath, Generations, Request, SamplingConfig},
    crate::io::{LoadedModel, Message},
    crate::judges::JudgeSpec,
    crate::logps::completion_logps,
};

pub const MAX_VARIANTS: usize = 8;
pub const MAX_SHOTS: usize = 16;
/// Longest system prompt, example or instruction, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;

/// A worked example shown before the question.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shot {
    pub user: String,
    pub assistant: String,
}

/// One way of asking.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// The system message (chat models), or a preamble (plain-text models).
    #[serde(default)]
    pub system: String,
    /// Worked examples, as earlier user and assistant turns.
    #[serde(default)]
    pub shots: Vec<Shot>,
    /// Added after the question, e.g. "Think step by step, then give the answer."
    #[serde(default)]
    pub instruction: String,
}

impl Variant {
    /// The question as asked under this variant.
    pub fn question(&self, question: &str) -> String {
        if self.instruction.trim().is_empty() { question.to_string() } else { format!("{question}\n\n{}", self.instruction.trim()) }
    }

    /// Refuses what cannot be asked: too many examples, texts past [`MAX_TEXT_CHARS`].
    pub fn validate(&self) -> Result<()> {
        let name = if self.name.trim().is_empty() { "a variant" } else { self.name.as_str() };
        if self.shots.len() > MAX_SHOTS {
            return Err(Error::Invalid(format!("{name}: {} examples is more than {MAX_SHOTS}; keep the best few", self.shots.len())));
        }
        let texts = [&self.system, &self.instruction].into_iter().chain(self.shots.iter().flat_map(|s| [&s.user, &s.assistant]));
        if texts.into_iter().any(|t| t.chars().count() > MAX_TEXT_CHARS) {
            return Err(Error::Invalid(format!("{name}: a text is longer than {MAX_TEXT_CHARS} characters; shorten it")));
        }
        Ok(())
    }

    /// The prompt's token ids. With a chat template: system, each example as a user turn and an
    /// assistant turn, then the question. Without: the same as plain text, `Question:`/`Answer:`.
    /// Refused when it leaves less than `room` tokens of the model's context for the answer.
    #[cfg(feature = "engine")]
    pub fn prompt_ids(&self, lm: &LoadedModel, enc: &Encoding, question: &str, room: usize) -> Result<Vec<u32>> {
        self.validate()?;
        let asked = self.question(question);
        let ids = if enc.chat && lm.chat_template.is_some() {
            let mut m = Vec::new();
            if !self.system.trim().is_empty() {
                m.push(Message::system(&self.system));
            }
            for s in &self.shots {
                m.push(Message::user(&s.user));
                m.push(Message::assistant(&s.assistant));
            }
            m.push(Message::user(&asked));
            lm.tokenizer.encode(&lm.chat_prompt(&m, true)?, false)?
        } else {
            let mut t = String::new();
            if !self.system.trim().is_empty() {
                t.push_str(self.system.trim());
                t.push_str("\n\n");
            }
            for s in &self.shots {
                t.push_str(&format!("Question: {}\nAnswer: {}\n\n", s.user.trim(), s.assistant.trim()));
            }
            t.push_str(&format!("Question: {asked}\nAnswer:"));
            lm.tokenizer.encode(&t, true)?
        };
        let context = lm.model.rope.max_positions;
        if ids.len().saturating_add(room) > context {
            return Err(Error::Invalid(format!(
                "{}: the prompt is {} tokens, and with {room} for the answer that is more than the model's context of {context}; \
                 use fewer or shorter examples",
                self.name,
                ids.len()
            )));
        }
        Ok(ids)
    }
}

/// What one variant did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    pub name: String,
    pub prompt_tokens: usize,
    pub text: String,
    pub tokens: usize,
    pub words: usize,
    /// The switched-on judges' weighted score (0 with none).
    pub judges: f64,
    /// The reward model's score, when there is one.
    pub reward_model: Option<f64>,
    /// `log p(reference answer | prompt)`, summed over its tokens and per token.
    pub reference_logp: Option<f64>,
    pub reference_logp_per_token: Option<f64>,
}

/// Asks `question` under each of `variants` with `sampling` (one sample each, the same seed, so
/// every variant draws the same), the variants' answers decoded together; scores each answer as
/// an answer to the bare question, and measures the log-probability of `reference` when one is
/// given. `on_result` sees each variant's index and result, in order. `keep_going` is asked after
/// each token and before each answer is scored.
#[cfg(feature = "engine")]
#[allow(clippy::too_many_arguments)]
pub async fn try_variants(
    session: &Session,
    which: Which,
    enc: &Encoding,
    question: &str,
    variants: &[Variant],
    reference: Option<&str>,
    sampling: &SamplingConfig,
    judges: Vec<(JudgeSpec, f64)>,
    keep_going: &mut dyn FnMut() -> bool,
    on_result: &mut dyn FnMut(usize, VariantResult),
) -> Result<()> {
    if question.trim().is_empty() {
        return Err(Error::Invalid("write a question first".into()));
    }
    let one = SamplingConfig { num_samples: 1, ..sampling.clone() };
    let requests = variants
        .iter()
        .map(|v| Ok(Request { prompt: v.prompt_ids(&session.lm, enc, question, one.max_new_tokens)?, sampling: one.clone() }))
        .collect::<Result<Vec<_>>>()?;
    let reference = match reference.filter(|r| !r.trim().is_empty()) {
        Some(r) => Some(session.lm.tokenizer.encode(r, false)?),
        None => None,
    };
    let model = session.model(which);
    let mut answers = Generations::new(DecodePath::Auto, &model, &session.lm.tokenizer, requests.clone())?;
    while let Some((i, samples)) = answers.next(&mut |_, _| keep_going()).await? {
        if !keep_going() {
            break;
        }
        let ids = &requests[i].prompt;
        let (text, tokens) = samples.into_iter().next().map(|s| (s.text, s.tokens.len())).unwrap_or_default();
        let (by_judges, by_model) = session.judge_texts(enc, question, std::slice::from_ref(&text), judges.clone()).await?;
        let (mut reference_logp, mut reference_logp_per_token) = (None, None);
        if let Some(c) = &reference {
            let scored = completion_logps(&model, session.pad(), &[(ids.clone(), c.clone())]).await?.remove(0);
            reference_logp = Some(scored.sum as f64);
            reference_logp_per_token = Some(scored.sum as f64 / c.len().max(1) as f64);
        }
        on_result(
            i,
            VariantResult {
                name: variants[i].name.clone(),
                prompt_tokens: ids.len(),
                words: text.split_whitespace().count(),
                text,
                tokens,
                judges: by_judges.first().copied().unwrap_or(0.0),
                reward_model: by_model.and_then(|v| v.first().copied()),
                reference_logp,
                reference_logp_per_token,
            },
        );
    }
    Ok(())
}

/// Reads variants as JSON (a list of [`Variant`]), naming the field that is wrong.
pub fn parse_variants(bytes: &[u8]) -> Result<Vec<Variant>> {
    if bytes.len() > 1 << 20 {
        return Err(Error::Invalid("this variants file is over 1 MiB".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v: Vec<Variant> = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| Error::Invalid(format!("not a list of prompt variants: {}: {}", e.path(), e.inner())))?;
    validate_all(&v)?;
    Ok(v)
}

/// 1 to [`MAX_VARIANTS`] variants, each valid.
pub fn validate_all(variants: &[Variant]) -> Result<()> {
    if variants.is_empty() || variants.len() > MAX_VARIANTS {
        return Err(Error::Invalid(format!("give 1 to {MAX_VARIANTS} variants, not {}", variants.len())));
    }
    variants.iter().try_for_each(Variant::validate)
}

/// Four variants a lesson starts from: the bare question, a system prompt, two examples, and a
/// step-by-step instruction.
pub fn starter_variants() -> Vec<Variant> {
    vec![
        Variant { name: "plain".into(), ..Default::default() },
        Variant {
            name: "system prompt".into(),
            system: "You are a kind, patient teacher. Answer in two short, friendly sentences.".into(),
            ..Default::default()
        },
        Variant {
            name: "two examples".into(),
            shots: vec![
                Shot { user: "Why do leaves fall in autumn?".into(), assistant: "Trees drop them to save water over the winter. New ones grow in spring.".into() },
                Shot { user: "Why is the sea salty?".into(), assistant: "Rivers carry salt from rocks into the sea. The water evaporates and the salt stays.".into() },
            ],
            ..Default::default()
        },
        Variant { name: "step by step".into(), instruction: "Think step by step, then give the answer in one sentence.".into(), ..Default::default() },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_checked_and_named_in_errors() {
        let e = parse_variants(br#"[{"name": "a", "shots": [{"user": "q", "asistant": "x"}]}]"#).unwrap_err().to_string();
        assert!(e.contains("[0].shots[0]") && e.contains("asistant"), "{e}");
        assert!(parse_variants(b"[]").unwrap_err().to_string().contains("1 to 8"));
        let long = Variant { name: "long".into(), system: "x".repeat(MAX_TEXT_CHARS + 1), ..Default::default() };
        assert!(long.validate().unwrap_err().to_string().starts_with("long: a text is longer"));
        let many = Variant { name: "many".into(), shots: vec![Shot::default(); MAX_SHOTS + 1], ..Default::default() };
        assert!(many.validate().is_err());
        assert_eq!(starter_variants().len(), 4);
        let text = serde_json::to_vec(&starter_variants()).unwrap();
        assert_eq!(parse_variants(&text).unwrap(), starter_variants());
    }

    #[test]
    fn the_instruction_follows_the_question() {
        let v = Variant { instruction: " Think step by step. ".into(), ..Default::default() };
        assert_eq!(v.question("Why?"), "Why?\n\nThink step by step.");
        assert_eq!(Variant::default().question("Why?"), "Why?");
    }
}
