//! Principle-driven self-alignment: a written constitution and the model as its own judge. Each
//! principle is written as a critique question that an answer breaking it gets a Yes to ("Was that
//! rude?"). For each principle and answer the judge (the reference model: the judge stays fixed
//! while the policy trains) is shown the answer and asked the question, and its judgement is read
//! from its next-token distribution, with no text generated:
//! `P(yes) = p("Yes" | question) / (p("Yes" | question) + p("No" | question))`.
//! An answer's self-score is `1 − mean P(yes)` over the principles: the chance it passes. The best
//! and worst answers to a prompt by self-score become preference pairs for DPO; how often the
//! self-judgement orders two answers as the judges do says how far to trust it.
//!
//! A 135M judge is fragile: asked "Was that rude?" SmolLM2 tells the kind answer from the rude one
//! in 11 of 12 pairs; asked "Was that rude or unkind?", or shown the request too, it is at chance.
//! Phrasing is part of the constitution.

use serde::{Deserialize, Serialize};

use super::label::pairs_from_ranking;
use crate::align::best_of_n::Ranked;
use crate::data::Preference;
use crate::{Error, Result};
#[cfg(feature = "engine")]
use {
    super::answers::seeded_each,
    super::session::Session,
    super::spec::Which,
    crate::align::Encoding,
    crate::generate::SamplingConfig,
    crate::judges::JudgeSpec,
    crate::logps::{SharedStart, completion_logps, next_token_logps_shared},
};

pub const MAX_PRINCIPLES: usize = 12;
pub const MAX_PRINCIPLE_CHARS: usize = 500;
const MAX_CONSTITUTION_BYTES: usize = 64 << 10;

/// Critique questions scored in one forward pass, two a row: larger products run faster per
/// token, and the activations of 8 questions stay small.
#[cfg(feature = "engine")]
const JUDGE_BATCH: usize = 8;

/// What the judge reads for one principle; its reply is read as the next token, Yes or No.
pub fn critique_question(principle: &str, answer: &str) -> String {
    format!("Someone said: \"{}\"\n{} Answer Yes or No.", answer.trim(), principle.trim())
}

/// A list of principles, each a critique question an answer that breaks it gets a Yes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constitution {
    pub principles: Vec<String>,
}

impl Constitution {
    pub fn validate(&self) -> Result<()> {
        if self.principles.is_empty() || self.principles.len() > MAX_PRINCIPLES {
            return Err(Error::Invalid(format!("a constitution holds 1 to {MAX_PRINCIPLES} principles; this one has {}", self.principles.len())));
        }
        for (i, p) in self.principles.iter().enumerate() {
            if p.trim().is_empty() || p.chars().count() > MAX_PRINCIPLE_CHARS {
                return Err(Error::Invalid(format!("principles[{i}]: a principle is one critique question of 1 to {MAX_PRINCIPLE_CHARS} characters")));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConstitutionFile {
    alignlab_constitution: u32,
    principles: Vec<String>,
}

/// Reads a constitution file (`{"alignlab_constitution": 1, "principles": ["…", …]}`).
pub fn parse_constitution(bytes: &[u8]) -> Result<Constitution> {
    let f: ConstitutionFile = super::read_versioned(bytes, "constitution file", MAX_CONSTITUTION_BYTES, "a constitution is a few questions", |f: &ConstitutionFile| f.alignlab_constitution)?;
    let c = Constitution { principles: f.principles };
    c.validate()?;
    Ok(c)
}

/// A starting constitution for a kind, safe assistant.
pub fn starter_constitution() -> Constitution {
    Constitution { principles: vec!["Was that rude?".into(), "Could that hurt someone?".into()] }
}

/// The model as its own judge, set up once for a run: its weights, its one-token words, and the
/// start every critique question shares (the template's system turn and "Someone said"), run
/// once for all of the run's answers (about a quarter of a question's tokens with SmolLM2's
/// template and 40-token answers).
#[cfg(feature = "engine")]
pub struct SelfJudge<'a> {
    session: &'a Session,
    model: crate::model::Llama,
    enc: Encoding,
    constitution: &'a Constitution,
    yes: Vec<u32>,
    no: Vec<u32>,
    /// With one-token words only (the questions are then read off one pass each).
    start: Option<SharedStart>,
}

#[cfg(feature = "engine")]
impl<'a> SelfJudge<'a> {
    /// `judge`'s weights as they are now, asked about answers in a chat (`chat`) or as plain text.
    pub fn new(session: &'a Session, judge: Which, chat: bool, constitution: &'a Constitution) -> Result<Self> {
        constitution.validate()?;
        let lm = &session.lm;
        // The critique is its own conversation: no system prompt of the student's, nothing cut.
        let enc = Encoding::untruncated(chat, "");
        let yes = lm.tokenizer.encode("Yes", false)?;
        let no = lm.tokenizer.encode("No", false)?;
        let model = session.model(judge);
        let start = if yes.len() == 1 && no.len() == 1 {
            // What comes before the answer: two questions on answers that share no first character.
            let two = ["A", "b"].map(|answer| enc.prompt(lm, &critique_question(&constitution.principles[0], answer)));
            let two = two.into_iter().collect::<Result<Vec<_>>>()?;
            Some(SharedStart::new(&model, session.pad(), &two[0][..shared_start(&two)])?)
        } else {
            None
        };
        Ok(Self { session, model, enc, constitution, yes, no, start })
    }

    /// `P(yes)` (the answer breaks the principle) for each answer under each principle:
    /// `[answer][principle]`.
    pub async fn judge(&self, answers: &[String]) -> Result<Vec<Vec<f64>>> {
        let (lm, pad) = (&self.session.lm, self.session.pad());
        let n = self.constitution.principles.len();
        let questions = answers
            .iter()
            .flat_map(|answer| self.constitution.principles.iter().map(move |p| critique_question(p, answer)))
            .map(|q| self.enc.prompt(lm, &q))
            .collect::<Result<Vec<_>>>()?;
        let mut p_yes_all = Vec::with_capacity(questions.len());
        if let (Some(start), [yes], [no]) = (&self.start, self.yes.as_slice(), self.no.as_slice()) {
            // One-token words (the usual case): both read off one pass, several questions a batch,
            // after the start they all share. An answer's questions then share the answer, which
            // runs once for two of them: they differ only in the principle.
            let own;
            let start = if questions.iter().all(|q| q.len() > start.tokens().len() && q.starts_with(start.tokens())) {
                start
            } else {
                // An answer whose first marks the tokenizer joined to the quote before it: this
                // call's questions run their own common start, and the next call the run's again.
                own = SharedStart::new(&self.model, pad, questions.first().map_or(&[][..], |q| &q[..shared_start(&questions)]))?;
                &own
            };
            let prefix = start.tokens().len();
            let rows: Vec<[&[u32]; 3]> = questions
                .chunks(n)
                .flat_map(|qs| {
                    let own: Vec<&[u32]> = qs.iter().map(|q| &q[prefix..]).collect();
                    let shared = shared_start(&own);
                    own.chunks(2).map(move |two| [&two[0][..shared], &two[0][shared..], two.get(1).map_or(&[][..], |q| &q[shared..])]).collect::<Vec<_>>()
                })
                .collect();
            for chunk in rows.chunks(JUDGE_BATCH / 2) {
                for yn in next_token_logps_shared(&self.model, pad, start, chunk, &[*yes, *no]).await?.iter().flatten() {
                    if let [log_yes, log_no] = yn[..] {
                        p_yes_all.push(p_yes(f64::from(log_yes), f64::from(log_no)));
                    }
                }
            }
        } else {
            for ids in questions {
                let lps = completion_logps(&self.model, pad, &[(ids.clone(), self.yes.clone()), (ids, self.no.clone())]).await?;
                p_yes_all.push(p_yes(f64::from(lps[0].sum), f64::from(lps[1].sum)));
            }
        }
        Ok(p_yes_all.chunks(n).map(<[f64]>::to_vec).collect())
    }
}

/// How many first tokens all of `prompts` share, leaving each at least its last token (so none
/// is empty past it).
#[cfg(feature = "engine")]
fn shared_start<P: AsRef<[u32]>>(prompts: &[P]) -> usize {
    let Some((first, rest)) = prompts.split_first() else { return 0 };
    let first = first.as_ref();
    let common = rest.iter().fold(first.len(), |len, p| first.iter().zip(p.as_ref()).take(len).take_while(|(a, b)| a == b).count());
    let shortest = prompts.iter().map(|p| p.as_ref().len()).min().unwrap_or(0);
    common.min(shortest.saturating_sub(1))
}

/// `e^y / (e^y + e^n)`, computed without overflow.
#[cfg(feature = "engine")]
fn p_yes(log_yes: f64, log_no: f64) -> f64 {
    1.0 / (1.0 + (log_no - log_yes).exp())
}

/// One answer, judged by the model against each principle and by the judges.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub text: String,
    /// P(yes) for each principle: how likely the judge thinks the answer breaks it.
    pub by_principle: Vec<f64>,
    /// `1 − mean P(yes)`: how likely the answer passes.
    pub self_score: f64,
    /// The switched-on judges' weighted score (0 without judges).
    pub judges: f64,
}

/// Self-labelling over `prompts`: `which`'s answers to each (prompt `i` seeded `seed + i`),
/// decoded together, each judged by the reference against the constitution and scored with
/// `judges`. `on_judged` sees each prompt's index and judged answers, in order, as soon as they
/// are done. `keep_going` is asked after each token and before each prompt is judged.
#[cfg(feature = "engine")]
#[allow(clippy::too_many_arguments)]
pub async fn judge_prompts(
    session: &Session,
    which: Which,
    enc: &Encoding,
    constitution: &Constitution,
    prompts: &[String],
    sampling: &SamplingConfig,
    judges: Vec<(JudgeSpec, f64)>,
    keep_going: &mut dyn FnMut() -> bool,
    on_judged: &mut dyn FnMut(usize, Vec<Judged>),
) -> Result<()> {
    let critic = SelfJudge::new(session, Which::Reference, enc.chat, constitution)?;
    let mut answers = session.answers(which, enc, &seeded_each(prompts.iter().map(String::as_str), sampling, 0))?;
    while let Some((i, samples)) = answers.next(keep_going).await? {
        if !keep_going() {
            break;
        }
        let texts: Vec<String> = samples.into_iter().map(|s| s.text).collect();
        on_judged(i, judge_answers(session, &critic, enc, &prompts[i], texts, judges.clone()).await?);
    }
    Ok(())
}

/// Answers to `prompt`, each judged by `critic` against its constitution and scored with `judges`.
#[cfg(feature = "engine")]
async fn judge_answers(
    session: &Session,
    critic: &SelfJudge<'_>,
    enc: &Encoding,
    prompt: &str,
    texts: Vec<String>,
    judges: Vec<(JudgeSpec, f64)>,
) -> Result<Vec<Judged>> {
    let by = critic.judge(&texts).await?;
    let (scores, _) = session.judge_texts(enc, prompt, &texts, judges).await?;
    Ok(texts
        .into_iter()
        .zip(by)
        .zip(scores)
        .map(|((text, by_principle), judges)| {
            let self_score = 1.0 - by_principle.iter().sum::<f64>() / by_principle.len().max(1) as f64;
            Judged { text, by_principle, self_score, judges }
        })
        .collect())
}

/// Best against worst by self-score, second best against second worst, … (`per_prompt` pairs).
pub fn self_pairs(prompt: &str, judged: &[Judged], per_prompt: usize) -> Vec<Preference> {
    let mut ranked: Vec<Ranked> = judged.iter().map(|j| Ranked { text: j.text.clone(), tokens: vec![], score: j.self_score }).collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    pairs_from_ranking(prompt, &ranked, per_prompt)
}

/// How often the self-judgement orders two answers as the judges do, over the answer pairs the
/// judges tell apart: 1 = always, 0.5 = chance. `None` when the judges tell no two apart.
pub fn agreement_with_judges(judged: &[Judged]) -> Option<f64> {
    let (mut agree, mut n) = (0usize, 0usize);
    for (i, a) in judged.iter().enumerate() {
        for b in &judged[i + 1..] {
            if a.judges == b.judges {
                continue;
            }
            n += 1;
            if (a.judges > b.judges) == (a.self_score > b.self_score) {
                agree += 1;
            }
        }
    }
    (n > 0).then(|| agree as f64 / n as f64)
}

/// A run over several prompts in four numbers; agreement is each prompt's, averaged (answers to
/// different prompts are not compared).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub answers: usize,
    pub self_score: f64,
    pub judges: f64,
    pub agreement: Option<f64>,
}

impl Summary {
    /// `None` before any answer was judged.
    pub fn of<'a>(by_prompt: impl IntoIterator<Item = &'a [Judged]>) -> Option<Self> {
        let (mut n, mut self_score, mut judges, mut agree) = (0usize, 0.0, 0.0, Vec::new());
        for answers in by_prompt {
            n += answers.len();
            self_score += answers.iter().map(|j| j.self_score).sum::<f64>();
            judges += answers.iter().map(|j| j.judges).sum::<f64>();
            agree.extend(agreement_with_judges(answers));
        }
        (n > 0).then(|| Self {
            answers: n,
            self_score: self_score / n as f64,
            judges: judges / n as f64,
            agreement: (!agree.is_empty()).then(|| agree.iter().sum::<f64>() / agree.len() as f64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(text: &str, self_score: f64, judges: f64) -> Judged {
        Judged { text: text.into(), by_principle: vec![1.0 - self_score], self_score, judges }
    }

    #[test]
    fn p_yes_is_the_softmax_over_yes_and_no() {
        assert!((p_yes(0.0, 0.0) - 0.5).abs() < 1e-12);
        assert!((p_yes(-1.0, -2.0) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-12);
        assert!(p_yes(-1.0, -900.0) > 0.999_999 && p_yes(-900.0, -1.0) < 1e-6, "no overflow at the extremes");
    }

    #[test]
    fn pairs_and_agreement_follow_the_self_score() {
        let judged = [j("kind", 0.9, 0.5), j("meh", 0.6, 0.0), j("rude", 0.2, -0.5), j("odd", 0.4, 0.4)];
        let p = self_pairs("q", &judged, 2);
        assert_eq!(p.iter().map(|x| (x.chosen.as_str(), x.rejected.as_str())).collect::<Vec<_>>(), [("kind", "rude"), ("meh", "odd")]);
        // Of the 6 answer pairs the judges order all; the self-score agrees on 5 (not meh vs odd).
        assert!((agreement_with_judges(&judged).unwrap() - 5.0 / 6.0).abs() < 1e-12);
        let tied = [j("a", 0.1, 0.0), j("b", 0.9, 0.0)];
        assert_eq!(agreement_with_judges(&tied), None);
        // Over two prompts: means over all six answers, agreement only from the first prompt's.
        let s = Summary::of([&judged[..], &tied[..]]).unwrap();
        assert_eq!(s.answers, 6);
        assert!((s.self_score - (0.9 + 0.6 + 0.2 + 0.4 + 0.1 + 0.9) / 6.0).abs() < 1e-12 && (s.judges - 0.4 / 6.0).abs() < 1e-12);
        assert!((s.agreement.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!(Summary::of(std::iter::empty::<&[Judged]>()), None);
    }

    #[test]
    fn bad_constitutions_say_what_is_wrong() {
        let err = |b: &str| parse_constitution(b.as_bytes()).unwrap_err().to_string();
        assert!(err(r#"{"alignlab_constitution": 1, "principles": []}"#).contains("1 to 12 principles"));
        assert!(err(r#"{"alignlab_constitution": 1, "principles": ["ok", " "]}"#).contains("principles[1]"));
        assert!(err(r#"{"alignlab_constitution": 1, "principle": ["x"]}"#).contains("principle"));
        assert!(err(r#"{"alignlab_constitution": 2, "principles": ["x"]}"#).contains("not one this app reads"));
        let c = parse_constitution(br#"{"alignlab_constitution": 1, "principles": ["Was that rude?"]}"#).unwrap();
        assert_eq!(c.principles, ["Was that rude?"]);
        assert_eq!(critique_question(" Was that rude? ", " Hello! "), "Someone said: \"Hello!\"\nWas that rude? Answer Yes or No.");
    }
}
