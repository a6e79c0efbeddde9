//! VADER sentiment (Hutto & Gilbert 2014): the `compound` score in [-1, 1], following
//! vaderSentiment 3.3.2's rules (boosters, negation within three words, ALL-CAPS emphasis,
//! "but" shifts, "least", idioms, ! and ? emphasis). The lexicon (MIT) is not committed:
//! scripts/setup fetches it from the vaderSentiment package on PyPI. Emoji descriptions are not
//! expanded (VADER's emoji table is left out).

use std::collections::HashMap;

use crate::{Error, Result};

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;

const NEGATE: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "ain't", "aren't", "can't",
    "couldn't", "daren't", "didn't", "doesn't", "dont", "hadnt", "hasnt", "havent", "isnt", "mightnt", "mustnt",
    "neither", "don't", "hadn't", "hasn't", "haven't", "isn't", "mightn't", "mustn't", "neednt", "needn't", "never",
    "none", "nope", "nor", "not", "nothing", "nowhere", "oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent",
    "oughtn't", "shan't", "shouldn't", "uh-uh", "wasn't", "weren't", "without", "wont", "wouldnt", "won't",
    "wouldn't", "rarely", "seldom", "despite",
];

const BOOST_UP: &[&str] = &[
    "absolutely", "amazingly", "awfully", "completely", "considerable", "considerably", "decidedly", "deeply",
    "effing", "enormous", "enormously", "entirely", "especially", "exceptional", "exceptionally", "extreme",
    "extremely", "fabulously", "flipping", "flippin", "frackin", "fracking", "fricking", "frickin", "frigging",
    "friggin", "fully", "fuckin", "fucking", "fuggin", "fugging", "greatly", "hella", "highly", "hugely",
    "incredible", "incredibly", "intensely", "major", "majorly", "more", "most", "particularly", "purely", "quite",
    "really", "remarkably", "so", "substantially", "thoroughly", "total", "totally", "tremendous", "tremendously",
    "uber", "unbelievably", "unusually", "utter", "utterly", "very",
];
const BOOST_DOWN: &[&str] = &[
    "almost", "barely", "hardly", "just enough", "kind of", "kinda", "kindof", "kind-of", "less", "little",
    "marginal", "marginally", "occasional", "occasionally", "partly", "scarce", "scarcely", "slight", "slightly",
    "somewhat", "sort of", "sorta", "sortof", "sort-of",
];
const SPECIAL_CASES: &[(&str, f64)] = &[
    ("the shit", 3.0), ("the bomb", 3.0), ("bad ass", 1.5), ("badass", 1.5), ("bus stop", 0.0),
    ("yeah right", -2.0), ("kiss of death", -1.5), ("to die for", 3.0), ("beating heart", 3.5),
];

pub struct Vader {
    lexicon: HashMap<String, f64>,
}

fn booster(word: &str) -> Option<f64> {
    if BOOST_UP.contains(&word) {
        Some(B_INCR)
    } else if BOOST_DOWN.contains(&word) {
        Some(B_DECR)
    } else {
        None
    }
}

/// Python's `str.isupper()`: has a cased character and no lowercase one.
fn is_upper(s: &str) -> bool {
    s.chars().any(char::is_uppercase) && !s.chars().any(char::is_lowercase)
}

fn negated(word: &str) -> bool {
    NEGATE.contains(&word) || word.contains("n't")
}

impl Vader {
    /// From the text of `vader_lexicon.txt` (token, mean rating, ... tab-separated).
    pub fn from_lexicon(text: &str) -> Result<Self> {
        let mut lexicon = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut cols = line.split('\t');
            let (Some(word), Some(v)) = (cols.next(), cols.next()) else {
                return Err(Error::format(format!("VADER lexicon line {}: expected 'word<TAB>rating'", i + 1)));
            };
            let v: f64 = v.trim().parse().map_err(|_| Error::format(format!("VADER lexicon line {}: bad rating", i + 1)))?;
            lexicon.insert(word.trim().to_string(), v);
        }
        if lexicon.len() < 1000 {
            return Err(Error::format("the VADER lexicon looks truncated; run scripts/setup again"));
        }
        Ok(Self { lexicon })
    }

    fn scalar_inc_dec(word: &str, valence: f64, cap_diff: bool) -> f64 {
        let Some(mut s) = booster(&word.to_lowercase()) else { return 0.0 };
        if valence < 0.0 {
            s = -s;
        }
        if is_upper(word) && cap_diff {
            s += if valence > 0.0 { C_INCR } else { -C_INCR };
        }
        s
    }

    /// VADER's compound score of `text`, in [-1, 1].
    pub fn compound(&self, text: &str) -> f64 {
        let mut sum: f64 = self.sentiments(text).iter().sum();
        let amplifier = punctuation(text);
        if sum > 0.0 {
            sum += amplifier;
        } else if sum < 0.0 {
            sum -= amplifier;
        }
        (sum / (sum * sum + 15.0).sqrt()).clamp(-1.0, 1.0)
    }

    /// VADER's `neu`: the share of `text` that carries no sentiment, in [0, 1]. Each word without
    /// a valence counts 1, each word with one counts `1 + |valence|` (plus the punctuation's
    /// emphasis on the stronger side); 0 for a text without words, as vaderSentiment gives.
    pub fn neutral(&self, text: &str) -> f64 {
        let sentiments = self.sentiments(text);
        let (mut pos, mut neg, mut neu) = (0.0, 0.0, 0.0);
        for &s in &sentiments {
            if s > 0.0 {
                pos += s + 1.0;
            } else if s < 0.0 {
                neg += s - 1.0;
            } else {
                neu += 1.0;
            }
        }
        if pos > f64::abs(neg) {
            pos += punctuation(text);
        } else if pos < f64::abs(neg) {
            neg -= punctuation(text);
        }
        let total = pos + neg.abs() + neu;
        if total == 0.0 { 0.0 } else { neu / total }
    }

    /// The valence of each word of `text`, after VADER's rules (boosters, negation, capitals,
    /// idioms, "least", and "but").
    fn sentiments(&self, text: &str) -> Vec<f64> {
        let words: Vec<String> = text
            .split_whitespace()
            .map(|w| {
                let stripped = w.trim_matches(|c: char| c.is_ascii_punctuation());
                if stripped.chars().count() <= 2 { w.to_string() } else { stripped.to_string() }
            })
            .collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let caps = words.iter().filter(|w| is_upper(w)).count();
        let cap_diff = caps > 0 && caps < words.len();
        let in_lex = |w: &str| self.lexicon.contains_key(w);

        let mut sentiments = Vec::with_capacity(words.len());
        for i in 0..words.len() {
            let item = &lower[i];
            if booster(item).is_some() || (item == "kind" && lower.get(i + 1).is_some_and(|n| n == "of")) {
                sentiments.push(0.0);
                continue;
            }
            let Some(&base) = self.lexicon.get(item) else {
                sentiments.push(0.0);
                continue;
            };
            let mut valence = base;
            if item == "no" && i + 1 < words.len() && in_lex(&lower[i + 1]) {
                valence = 0.0;
            }
            if (i > 0 && lower[i - 1] == "no")
                || (i > 1 && lower[i - 2] == "no")
                || (i > 2 && lower[i - 3] == "no" && (lower[i - 1] == "or" || lower[i - 1] == "nor"))
            {
                valence = base * N_SCALAR;
            }
            if is_upper(&words[i]) && cap_diff {
                valence += if valence > 0.0 { C_INCR } else { -C_INCR };
            }
            for start in 0..3 {
                if i > start && !in_lex(&lower[i - (start + 1)]) {
                    let mut s = Self::scalar_inc_dec(&words[i - (start + 1)], valence, cap_diff);
                    if start == 1 {
                        s *= 0.95;
                    }
                    if start == 2 {
                        s *= 0.9;
                    }
                    valence += s;
                    valence = negation_check(valence, &lower, start, i);
                    if start == 2 {
                        valence = special_idioms(valence, &lower, i);
                    }
                }
            }
            // "least": "at least" and "very least" do not negate.
            if i > 1 && !in_lex(&lower[i - 1]) && lower[i - 1] == "least" {
                if lower[i - 2] != "at" && lower[i - 2] != "very" {
                    valence *= N_SCALAR;
                }
            } else if i > 0 && !in_lex(&lower[i - 1]) && lower[i - 1] == "least" {
                valence *= N_SCALAR;
            }
            sentiments.push(valence);
        }
        // Text after "but" counts more, before it less.
        if let Some(bi) = lower.iter().position(|w| w == "but") {
            for (si, s) in sentiments.iter_mut().enumerate() {
                if si < bi {
                    *s *= 0.5;
                } else if si > bi {
                    *s *= 1.5;
                }
            }
        }
        sentiments
    }
}

/// Emphasis from exclamation and question marks, added to the stronger side.
fn punctuation(text: &str) -> f64 {
    let ep = text.matches('!').count().min(4) as f64 * 0.292;
    let qm = match text.matches('?').count() {
        n if n > 1 && n <= 3 => n as f64 * 0.18,
        n if n > 3 => 0.96,
        _ => 0.0,
    };
    ep + qm
}

fn negation_check(valence: f64, w: &[String], start: usize, i: usize) -> f64 {
    match start {
        0 if negated(&w[i - 1]) => valence * N_SCALAR,
        1 if w[i - 2] == "never" && (w[i - 1] == "so" || w[i - 1] == "this") => valence * 1.25,
        1 if w[i - 2] == "without" && w[i - 1] == "doubt" => valence,
        1 if negated(&w[i - 2]) => valence * N_SCALAR,
        2 if (w[i - 3] == "never" && (w[i - 2] == "so" || w[i - 2] == "this")) || (w[i - 1] == "so" || w[i - 1] == "this") => {
            valence * 1.25
        }
        2 if w[i - 3] == "without" && (w[i - 2] == "doubt" || w[i - 1] == "doubt") => valence,
        2 if negated(&w[i - 3]) => valence * N_SCALAR,
        _ => valence,
    }
}

fn special_idioms(mut valence: f64, w: &[String], i: usize) -> f64 {
    let special = |s: &str| SPECIAL_CASES.iter().find(|(k, _)| *k == s).map(|(_, v)| *v);
    let seqs = [
        format!("{} {}", w[i - 1], w[i]),
        format!("{} {} {}", w[i - 2], w[i - 1], w[i]),
        format!("{} {}", w[i - 2], w[i - 1]),
        format!("{} {} {}", w[i - 3], w[i - 2], w[i - 1]),
        format!("{} {}", w[i - 3], w[i - 2]),
    ];
    if let Some(v) = seqs.iter().find_map(|s| special(s)) {
        valence = v;
    }
    if i + 1 < w.len() {
        if let Some(v) = special(&format!("{} {}", w[i], w[i + 1])) {
            valence = v;
        }
    }
    if i + 2 < w.len() {
        if let Some(v) = special(&format!("{} {} {}", w[i], w[i + 1], w[i + 2])) {
            valence = v;
        }
    }
    for ngram in [&seqs[3], &seqs[4], &seqs[2]] {
        if let Some(b) = booster(ngram) {
            valence += b;
        }
    }
    valence
}
