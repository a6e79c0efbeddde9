//! Training data in TRL's JSONL formats: preference (`prompt`/`chosen`/`rejected`), unpaired for
//! KTO (`prompt`/`completion`/`label`), prompt-only, and prompt/completion demonstrations. Import
//! keeps every good line and reports every bad one with its line number; nothing is dropped
//! silently.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Preference {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Unpaired {
    pub prompt: String,
    pub completion: String,
    /// true = thumbs up (desirable), false = thumbs down.
    pub label: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptOnly {
    pub prompt: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Demonstration {
    pub prompt: String,
    pub completion: String,
}

/// A line that could not be imported, with why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What an import produced: the good records and the bad lines.
#[derive(Clone, Debug)]
pub struct Imported<T> {
    pub records: Vec<T>,
    pub errors: Vec<LineError>,
}

/// Records that must have non-empty text fields say which.
pub trait Record: DeserializeOwned + Serialize {
    const FIELDS: &'static [&'static str];
    fn texts(&self) -> Vec<(&'static str, &str)>;
}

impl Record for Preference {
    const FIELDS: &'static [&'static str] = &["prompt", "chosen", "rejected"];
    fn texts(&self) -> Vec<(&'static str, &str)> {
        vec![("prompt", &self.prompt), ("chosen", &self.chosen), ("rejected", &self.rejected)]
    }
}
impl Record for Unpaired {
    const FIELDS: &'static [&'static str] = &["prompt", "completion", "label"];
    fn texts(&self) -> Vec<(&'static str, &str)> {
        vec![("prompt", &self.prompt), ("completion", &self.completion)]
    }
}
impl Record for PromptOnly {
    const FIELDS: &'static [&'static str] = &["prompt"];
    fn texts(&self) -> Vec<(&'static str, &str)> {
        vec![("prompt", &self.prompt)]
    }
}
impl Record for Demonstration {
    const FIELDS: &'static [&'static str] = &["prompt", "completion"];
    fn texts(&self) -> Vec<(&'static str, &str)> {
        vec![("prompt", &self.prompt), ("completion", &self.completion)]
    }
}

/// TRL's conversational form: a list of `{role, content}` messages stands for its text. A prompt
/// list is joined as the user turns; a completion list takes the assistant turn.
fn flatten_conversational(v: &mut serde_json::Value) {
    if let Some(obj) = v.as_object_mut() {
        for (key, field) in obj.iter_mut() {
            if let Some(msgs) = field.as_array() {
                let text: Vec<String> = msgs
                    .iter()
                    .filter(|m| {
                        let role = m.get("role").and_then(|r| r.as_str()).unwrap_or("");
                        if key == "prompt" { role != "assistant" && role != "system" } else { role == "assistant" }
                    })
                    .filter_map(|m| m.get("content").and_then(|c| c.as_str()).map(str::to_string))
                    .collect();
                if !text.is_empty() {
                    *field = serde_json::Value::String(text.join("\n"));
                }
            }
        }
    }
}

/// Parses JSONL. Blank lines are skipped; every other line becomes a record or a [`LineError`].
pub fn import<T: Record>(text: &str) -> Imported<T> {
    let mut records = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                errors.push(LineError { line: n, message: format!("not valid JSON ({e})") });
                continue;
            }
        };
        if !value.is_object() {
            errors.push(LineError { line: n, message: "expected a JSON object".into() });
            continue;
        }
        flatten_conversational(&mut value);
        let missing: Vec<&str> = T::FIELDS.iter().copied().filter(|f| value.get(f).is_none()).collect();
        if !missing.is_empty() {
            errors.push(LineError { line: n, message: format!("missing field(s) {}", missing.join(", ")) });
            continue;
        }
        match serde_json::from_value::<T>(value) {
            Ok(r) => match r.texts().iter().find(|(_, t)| t.trim().is_empty()) {
                Some((field, _)) => errors.push(LineError { line: n, message: format!("'{field}' is empty") }),
                None => records.push(r),
            },
            Err(e) => errors.push(LineError { line: n, message: format!("wrong field type ({e})") }),
        }
    }
    Imported { records, errors }
}

/// One JSON object per line, TRL's format.
pub fn export<T: Serialize>(records: &[T]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&serde_json::to_string(r).expect("records serialize"));
        out.push('\n');
    }
    out
}

/// All pairs a ranking implies (each answer over every one ranked below it), skipping equal or
/// empty texts.
pub fn ranking_pairs(prompt: &str, ranked: &[String]) -> Vec<Preference> {
    let mut out = Vec::new();
    for i in 0..ranked.len() {
        for j in i + 1..ranked.len() {
            if ranked[i].trim() != ranked[j].trim() && !ranked[i].trim().is_empty() && !ranked[j].trim().is_empty() {
                out.push(Preference { prompt: prompt.to_string(), chosen: ranked[i].clone(), rejected: ranked[j].clone() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_with_numbers_and_the_rest_kept() {
        let text = r#"{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
not json
{"prompt": "Hi", "chosen": "Hello!"}

{"prompt": "Hi", "chosen": "", "rejected": "x"}
{"prompt": [{"role": "user", "content": "Hey"}], "chosen": [{"role": "assistant", "content": "Hi there"}], "rejected": [{"role": "assistant", "content": "What"}]}
{"prompt": 3, "chosen": "a", "rejected": "b"}
"#;
        let got = import::<Preference>(text);
        assert_eq!(got.records.len(), 2);
        assert_eq!(got.records[1], Preference { prompt: "Hey".into(), chosen: "Hi there".into(), rejected: "What".into() });
        let lines: Vec<usize> = got.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 5, 7]);
        assert!(got.errors[1].message.contains("rejected"));
        assert!(got.errors[2].message.contains("'chosen' is empty"));
        // Export then import is the identity.
        let again = import::<Preference>(&export(&got.records));
        assert_eq!(again.records, got.records);
        assert!(again.errors.is_empty());
    }

    #[test]
    fn kto_labels_must_be_booleans() {
        let got = import::<Unpaired>("{\"prompt\":\"a\",\"completion\":\"b\",\"label\":true}\n{\"prompt\":\"a\",\"completion\":\"b\",\"label\":\"yes\"}");
        assert_eq!(got.records.len(), 1);
        assert_eq!(got.errors[0].line, 2);
    }
}
