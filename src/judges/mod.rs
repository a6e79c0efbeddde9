//! Automatic judges: programmatic feedback that scores a completion, used as a reward and to
//! label preference pairs from N samples (best vs worst) instead of ranking by hand.

mod vader;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

pub use vader::Vader;

use crate::{Error, Result};

/// One judge and its settings. Every score is roughly in [-1, 1]; higher is better.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JudgeSpec {
    /// VADER compound sentiment: +1 very positive, -1 very negative.
    Sentiment,
    /// A neutral tone: VADER's neutral share of the words, from -1 (every word charged, either
    /// way) to +1 (none). With `sentiment` it steers answers toward calm rather than cheerful.
    Neutral,
    /// Share of politeness markers ("please", "thank you", ...), capped at 1.
    Politeness,
    /// -1 per profane word (capped at -1 overall), 0 when clean.
    Profanity,
    /// 1 at `target_words`, falling linearly to -1 at twice (or zero) the target.
    Length { target_words: usize },
    /// Fraction of `words` present, minus the fraction of `avoid` present.
    Keywords {
        #[serde(default)]
        include: Vec<String>,
        #[serde(default)]
        avoid: Vec<String>,
    },
}

impl JudgeSpec {
    pub fn name(&self) -> String {
        match self {
            Self::Sentiment => "sentiment".into(),
            Self::Neutral => "neutral".into(),
            Self::Politeness => "politeness".into(),
            Self::Profanity => "profanity".into(),
            Self::Length { target_words } => format!("length~{target_words}"),
            Self::Keywords { .. } => "keywords".into(),
        }
    }

    /// Parses the CLI form: `sentiment`, `politeness`, `profanity`, `length=40`,
    /// `include=word1+word2`, `avoid=word1+word2`, each optionally `*WEIGHT` (e.g. `sentiment*2`).
    pub fn parse_weighted(s: &str) -> Result<(Self, f64)> {
        let (spec, weight) = match s.split_once('*') {
            Some((a, w)) => (a, w.parse::<f64>().map_err(|_| Error::Invalid(format!("bad judge weight in '{s}'")))?),
            None => (s, 1.0),
        };
        let words = |v: &str| v.split('+').map(|w| w.trim().to_lowercase()).filter(|w| !w.is_empty()).collect();
        let judge = match spec.split_once('=') {
            None if spec == "sentiment" => Self::Sentiment,
            None if spec == "neutral" => Self::Neutral,
            None if spec == "politeness" => Self::Politeness,
            None if spec == "profanity" => Self::Profanity,
            Some(("length", n)) => Self::Length {
                target_words: n.parse().map_err(|_| Error::Invalid(format!("length judge needs a number: '{s}'")))?,
            },
            Some(("include", v)) => Self::Keywords { include: words(v), avoid: vec![] },
            Some(("avoid", v)) => Self::Keywords { include: vec![], avoid: words(v) },
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown judge '{s}'; use sentiment, neutral, politeness, profanity, length=N, include=a+b, avoid=a+b (optionally *WEIGHT)"
                )));
            }
        };
        Ok((judge, weight))
    }
}

/// The word lists the judges need, loaded once.
#[derive(Default)]
pub struct JudgeData {
    pub vader: Option<Vader>,
    pub profanity: HashSet<String>,
}

impl JudgeData {
    pub fn from_texts(vader_lexicon: Option<&str>, profanity_list: Option<&str>) -> Result<Self> {
        Ok(Self {
            vader: vader_lexicon.map(Vader::from_lexicon).transpose()?,
            profanity: profanity_list
                .map(|t| t.lines().map(|l| l.trim().to_lowercase()).filter(|l| !l.is_empty()).collect())
                .unwrap_or_default(),
        })
    }

    /// From `models/judges/` (scripts/setup fetches the files there).
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
        Self::from_texts(read("vader_lexicon.txt").as_deref(), read("profanity_wordlist.txt").as_deref())
    }
}

const POLITE: &[&str] = &[
    "please", "thank you", "thanks", "sorry", "apologize", "apologies", "appreciate", "kindly", "would you",
    "could you", "you're welcome", "my pleasure", "happy to help", "glad", "excuse me", "pardon",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// A weighted sum of judges.
pub struct Judges<'a> {
    pub items: Vec<(JudgeSpec, f64)>,
    pub data: &'a JudgeData,
}

impl<'a> Judges<'a> {
    pub fn new(items: Vec<(JudgeSpec, f64)>, data: &'a JudgeData) -> Result<Self> {
        if items.is_empty() {
            return Err(Error::Invalid("choose at least one judge".into()));
        }
        for (j, _) in &items {
            if matches!(j, JudgeSpec::Sentiment | JudgeSpec::Neutral) && data.vader.is_none() {
                return Err(Error::Invalid("the sentiment and neutral judges need VADER's lexicon: run scripts/setup".into()));
            }
            if *j == JudgeSpec::Profanity && data.profanity.is_empty() {
                return Err(Error::Invalid("the profanity judge needs its word list: run scripts/setup".into()));
            }
        }
        Ok(Self { items, data })
    }

    pub fn score_one(&self, judge: &JudgeSpec, completion: &str) -> f64 {
        let lower = completion.to_lowercase();
        let ws = words(completion);
        match judge {
            JudgeSpec::Sentiment => self.data.vader.as_ref().map_or(0.0, |v| v.compound(completion)),
            JudgeSpec::Neutral => self.data.vader.as_ref().map_or(0.0, |v| 2.0 * v.neutral(completion) - 1.0),
            JudgeSpec::Politeness => (POLITE.iter().filter(|p| lower.contains(*p)).count() as f64 / 2.0).min(1.0),
            JudgeSpec::Profanity => {
                let hits = ws.iter().filter(|w| self.data.profanity.contains(*w)).count();
                -(hits as f64).min(1.0)
            }
            JudgeSpec::Length { target_words } => {
                let t = (*target_words).max(1) as f64;
                1.0 - 2.0 * ((ws.len() as f64 - t).abs() / t).min(1.0)
            }
            JudgeSpec::Keywords { include, avoid } => {
                let frac = |list: &[String]| {
                    if list.is_empty() { 0.0 } else { list.iter().filter(|k| lower.contains(k.as_str())).count() as f64 / list.len() as f64 }
                };
                frac(include) - frac(avoid)
            }
        }
    }

    /// Weighted sum of every judge's score.
    pub fn score(&self, completion: &str) -> f64 {
        self.items.iter().map(|(j, w)| w * self.score_one(j, completion)).sum()
    }
}
