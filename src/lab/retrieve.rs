//! Retrieval-augmented answers: the student's documents cut into passages, indexed with BM25,
//! and the best passages put into the prompt ahead of the question.
//!
//! BM25 (Robertson & Zaragoza), as the `bm25` crate scores it after stemming and dropping English
//! stop words, with k1 = 1.2 and b = 0.75:
//! `score(D, Q) = Σ_{q ∈ Q} IDF(q) · f(q, D) · (k1 + 1) / (f(q, D) + k1 · (1 - b + b · |D| / avgdl))`.
//!
//! A fact set (questions with the answers a document gives) measures it: how often the passage
//! holding the answer is retrieved, and how often the model's answer holds the right fact without
//! the documents and with them.

use bm25::{Language, SearchEngine, SearchEngineBuilder};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
#[cfg(feature = "engine")]
use {super::session::Session, super::spec::Which, crate::align::Encoding, crate::generate::SamplingConfig};

/// Largest document: a long handbook, not a book.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Largest library, all documents together.
pub const MAX_LIBRARY_BYTES: usize = 8 << 20;
pub const MAX_DOCUMENTS: usize = 200;
/// A passage is a paragraph (its heading kept with it); longer ones are cut at sentence ends.
pub const MAX_PASSAGE_CHARS: usize = 700;
/// Passages put into one prompt, at most.
pub const MAX_TOP_K: usize = 8;
pub const MAX_FACTS: usize = 500;
pub const MAX_FACTS_BYTES: usize = 1 << 20;

/// A text or Markdown file the student added (or one of the sample set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub name: String,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    /// The document it comes from.
    pub doc: String,
    pub text: String,
}

/// A retrieved passage and its BM25 score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub doc: String,
    pub text: String,
    pub score: f32,
}

impl Document {
    /// Refuses a document over [`MAX_DOCUMENT_BYTES`] before it is read (`len` is the file's size).
    pub fn check_size(name: &str, len: u64) -> Result<()> {
        if len > MAX_DOCUMENT_BYTES as u64 {
            return Err(Error::Invalid(format!(
                "{name} is {:.1} MB, more than a document may be (1 MB); split it into smaller files",
                len as f64 / 1e6
            )));
        }
        Ok(())
    }

    /// A file the student gave: at most [`MAX_DOCUMENT_BYTES`], and UTF-8 text.
    pub fn from_bytes(name: String, bytes: Vec<u8>) -> Result<Self> {
        Self::check_size(&name, bytes.len() as u64)?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Self { name, text }),
            Err(_) => Err(Error::Invalid(format!("{name} is not UTF-8 text; save it as plain text or Markdown"))),
        }
    }
}

/// The documents as passages, with their BM25 index.
pub struct Library {
    passages: Vec<Passage>,
    engine: SearchEngine<u32>,
}

impl Library {
    /// Cuts `docs` into passages and indexes them. Refuses empty, oversized or too many files.
    pub fn new(docs: &[Document]) -> Result<Self> {
        if docs.len() > MAX_DOCUMENTS {
            return Err(Error::Invalid(format!("{} documents is more than the {MAX_DOCUMENTS} a library may hold; remove some", docs.len())));
        }
        let mut total = 0usize;
        let mut passages = Vec::new();
        for d in docs {
            Document::check_size(&d.name, d.text.len() as u64)?;
            total = total.saturating_add(d.text.len());
            if total > MAX_LIBRARY_BYTES {
                return Err(Error::Invalid("the documents come to more than 8 MB together; remove some".into()));
            }
            passages.extend(split(&d.text).into_iter().map(|text| Passage { doc: d.name.clone(), text }));
        }
        if passages.is_empty() {
            return Err(Error::Invalid("there are no documents to search: add a text or Markdown file, or use the sample set".into()));
        }
        let corpus: Vec<bm25::Document<u32>> =
            passages.iter().enumerate().map(|(i, p)| bm25::Document::new(i as u32, p.text.clone())).collect();
        let engine = SearchEngineBuilder::<u32>::with_documents(Language::English, corpus).build();
        Ok(Self { passages, engine })
    }

    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    /// The `k` passages that best match `query`, best first (none when no word of it matches).
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        self.engine
            .search(query, k.min(MAX_TOP_K))
            .into_iter()
            .filter_map(|r| {
                let p = self.passages.get(r.document.id as usize)?;
                Some(Hit { doc: p.doc.clone(), text: p.text.clone(), score: r.score })
            })
            .collect()
    }
}

/// Paragraphs (split at blank lines), a heading kept with the paragraph after it, long ones cut at
/// sentence ends so a passage stays near [`MAX_PASSAGE_CHARS`]. Linear in the text: a document is
/// up to a megabyte, and the worker cuts it before the student can search.
fn split(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut heading = String::new();
    for block in text.replace("\r\n", "\n").split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        if block.starts_with('#') && !block.contains('\n') {
            heading.push_str(block);
            heading.push('\n');
            continue;
        }
        paragraph(&(std::mem::take(&mut heading) + block), &mut out);
    }
    // Headings with no paragraph after them are a passage of their own, cut like any other.
    paragraph(&heading, &mut out);
    out
}

/// One paragraph's passages: whole sentences while they fit; a run-on "sentence" longer than a
/// passage is cut every [`MAX_PASSAGE_CHARS`] characters.
fn paragraph(block: &str, out: &mut Vec<String>) {
    let mut push = |p: &str| {
        let p = p.trim();
        if !p.is_empty() {
            out.push(p.to_string());
        }
    };
    let (mut piece, mut chars) = (String::new(), 0usize);
    for sentence in block.split_inclusive(". ") {
        let n = sentence.chars().count();
        if chars > 0 && chars + n > MAX_PASSAGE_CHARS {
            push(&std::mem::take(&mut piece));
            chars = 0;
        }
        piece.push_str(sentence);
        chars += n;
        if chars > MAX_PASSAGE_CHARS {
            let mut rest = piece.as_str();
            while chars > MAX_PASSAGE_CHARS {
                let cut = rest.char_indices().nth(MAX_PASSAGE_CHARS).map_or(rest.len(), |(i, _)| i);
                push(&rest[..cut]);
                rest = &rest[cut..];
                chars -= MAX_PASSAGE_CHARS;
            }
            piece = rest.to_string();
        }
    }
    push(&piece);
}

/// The prompt with the passages ahead of the question, numbered, each with its document's name.
pub fn augmented_prompt(question: &str, hits: &[Hit]) -> String {
    let mut p = String::from("Answer the question using the passages below. If they do not say, say that you do not know.\n\n");
    for (i, h) in hits.iter().enumerate() {
        p.push_str(&format!("[{}] ({}) {}\n\n", i + 1, h.doc, h.text));
    }
    p.push_str("Question: ");
    p.push_str(question);
    p
}

/// The sample fact set's first question: what the page asks until the student types a question
/// (a test keeps it equal to `www/library/facts.json`'s first).
pub const SAMPLE_QUESTION: &str = "How many minutes does the ferry crossing from Tarrowick to Quenby take on a calm day?";

/// The sample library shipped with the project (a fictional island no model has read about), in
/// the order `www/library/index.json` lists it.
pub fn sample_documents() -> Vec<Document> {
    macro_rules! doc {
        ($f:literal) => {
            Document { name: $f.into(), text: include_str!(concat!("../../www/library/", $f)).into() }
        };
    }
    vec![
        doc!("ferry.md"),
        doc!("lighthouse.md"),
        doc!("field-station.md"),
        doc!("bird-reserve.md"),
        doc!("school.md"),
        doc!("festival.md"),
    ]
}

/// One question of a fact set, the answers that count as right, and the document that says so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    pub question: String,
    /// Accepted spellings ("7", "seven"); an answer is right when it holds one.
    pub answers: Vec<String>,
    /// The document holding the answer.
    #[serde(default)]
    pub source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FactFile {
    alignlab_facts: u32,
    facts: Vec<Fact>,
}

impl Fact {
    /// Whether `answer` holds one of the accepted answers (case and spacing ignored).
    pub fn is_answered_by(&self, answer: &str) -> bool {
        let norm = |s: &str| s.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
        let a = norm(answer);
        self.answers.iter().map(|x| norm(x)).any(|x| !x.is_empty() && a.contains(&x))
    }
}

/// Reads a fact file (`{"alignlab_facts": 1, "facts": [{question, answers, source}]}`).
pub fn parse_facts(bytes: &[u8]) -> Result<Vec<Fact>> {
    let f: FactFile = super::read_versioned(bytes, "fact file", MAX_FACTS_BYTES, "a fact set is a few hundred questions at most", |f: &FactFile| f.alignlab_facts)?;
    if f.facts.is_empty() || f.facts.len() > MAX_FACTS {
        return Err(Error::Invalid(format!("a fact file holds 1 to {MAX_FACTS} questions; this one has {}", f.facts.len())));
    }
    for (i, fact) in f.facts.iter().enumerate() {
        if fact.question.trim().is_empty() || fact.answers.iter().all(|a| a.trim().is_empty()) {
            return Err(Error::Invalid(format!("facts[{i}]: a fact needs a question and at least one answer")));
        }
    }
    Ok(f.facts)
}

/// The sample fact set, about the sample library.
pub fn sample_facts() -> Vec<Fact> {
    parse_facts(include_bytes!("../../www/library/facts.json")).expect("the shipped fact set reads")
}

/// One question answered twice with the same seed: from the model alone, and with the passages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub hits: Vec<Hit>,
    pub plain: String,
    pub grounded: String,
}

/// Answers `question` by `which` model without documents and with the top `k` passages.
#[cfg(feature = "engine")]
#[allow(clippy::too_many_arguments)]
pub async fn answer(
    session: &Session,
    which: Which,
    enc: &Encoding,
    library: &Library,
    question: &str,
    k: usize,
    sampling: &SamplingConfig,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Answer> {
    let mut out = None;
    answers(session, which, enc, library, &[question.to_string()], k, sampling, keep_going, &mut |_, a| out = Some(a)).await?;
    // Stopped before its answers were done: what was written so far, as the panel shows it.
    out.ok_or_else(|| Error::Invalid("stopped before the answers were written".into()))
}

/// [`answer`] for each of `questions`, their answers decoded together (the same settings for
/// every question, as for one); `on_answer` sees each question's index and answer, in order.
/// `keep_going` is asked after each token and before each answer is handed on (one question
/// stopped mid-way is handed on as far as it got, as the panel shows it).
#[cfg(feature = "engine")]
#[allow(clippy::too_many_arguments)]
pub async fn answers(
    session: &Session,
    which: Which,
    enc: &Encoding,
    library: &Library,
    questions: &[String],
    k: usize,
    sampling: &SamplingConfig,
    keep_going: &mut dyn FnMut() -> bool,
    on_answer: &mut dyn FnMut(usize, Answer),
) -> Result<()> {
    if let Some(i) = questions.iter().position(|q| q.trim().is_empty()) {
        let which = if questions.len() == 1 { String::new() } else { format!(" (question {} is blank)", i + 1) };
        return Err(Error::Invalid(format!("write a question first{which}")));
    }
    let hits: Vec<Vec<Hit>> = questions.iter().map(|q| library.search(q, k)).collect();
    // Each question asked twice, without the passages and with them.
    let one = SamplingConfig { num_samples: 1, ..sampling.clone() };
    let prompts: Vec<String> = questions.iter().zip(&hits).flat_map(|(q, h)| [q.clone(), augmented_prompt(q, h)]).collect();
    let asks: Vec<(&str, SamplingConfig)> = prompts.iter().map(|p| (p.as_str(), one.clone())).collect();
    let mut generated = session.answers(which, enc, &asks)?;
    let text = |s: Vec<crate::generate::Sample>| s.into_iter().next().map(|s| s.text).unwrap_or_default();
    let mut hits = hits.into_iter();
    while let Some((_, plain)) = generated.next(keep_going).await? {
        let Some((i, grounded)) = generated.next(keep_going).await? else { break };
        // Stopped: the questions then running come back cut short; they are not answers.
        if !keep_going() && questions.len() > 1 {
            break;
        }
        let hits = hits.next().expect("one list of passages per question");
        on_answer(i / 2, Answer { hits, plain: text(plain), grounded: text(grounded) });
    }
    Ok(())
}

/// A fact checked: was its document retrieved, and did each answer hold the fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FactRow {
    pub question: String,
    pub expected: String,
    pub retrieved: bool,
    pub plain_right: bool,
    pub grounded_right: bool,
    pub answer: Answer,
}

impl FactRow {
    /// Marks `answer` (from [`answer`]) against `fact`.
    pub fn of(fact: &Fact, answer: Answer) -> Self {
        Self {
            question: fact.question.clone(),
            expected: fact.answers.first().cloned().unwrap_or_default(),
            retrieved: answer.hits.iter().any(|h| h.doc == fact.source),
            plain_right: fact.is_answered_by(&answer.plain),
            grounded_right: fact.is_answered_by(&answer.grounded),
            answer,
        }
    }
}

/// A fact set's totals: shares of questions whose source was retrieved, answered right without
/// documents, and answered right with them (1 - each answer share is its hallucination rate).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FactSummary {
    pub questions: usize,
    pub retrieved: f64,
    pub plain_right: f64,
    pub grounded_right: f64,
}

impl FactSummary {
    pub fn of(rows: &[FactRow]) -> Self {
        let share = |f: fn(&FactRow) -> bool| rows.iter().filter(|r| f(r)).count() as f64 / rows.len().max(1) as f64;
        Self { questions: rows.len(), retrieved: share(|r| r.retrieved), plain_right: share(|r| r.plain_right), grounded_right: share(|r| r.grounded_right) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_finds_the_passage_holding_each_answer() {
        let lib = Library::new(&sample_documents()).unwrap();
        let facts = sample_facts();
        assert!(facts.len() >= 15, "{} facts", facts.len());
        let (mut top1, mut top3) = (0, 0);
        for f in &facts {
            let hits = lib.search(&f.question, 3);
            // The passage holds the answer, not just the right document.
            let holds = |h: &Hit| h.doc == f.source && f.is_answered_by(&h.text);
            top1 += hits.first().is_some_and(holds) as usize;
            top3 += hits.iter().any(holds) as usize;
        }
        let n = facts.len() as f64;
        eprintln!("BM25 on the sample facts: recall@1 {:.2}, recall@3 {:.2}", top1 as f64 / n, top3 as f64 / n);
        assert!(top1 as f64 / n >= 0.8, "recall@1 {top1}/{n}");
        assert!(top3 as f64 / n >= 0.9, "recall@3 {top3}/{n}");
        // An unrelated question finds nothing of it, or scores far lower.
        let best = lib.search(&facts[0].question, 1)[0].score;
        let stray = lib.search("quantum chromodynamics of gluons", 1);
        assert!(stray.first().map_or(true, |h| h.score < best / 2.0), "{stray:?}");
    }

    /// The page reads the sample library from `www/library/` by its index, and asks the first
    /// fact's question before the files are in: both must say what the CLI's copy says.
    #[test]
    fn the_page_finds_the_sample_library_the_cli_compiles_in() {
        let index: serde_json::Value = serde_json::from_slice(include_bytes!("../../www/library/index.json")).unwrap();
        let names: Vec<String> = sample_documents().into_iter().map(|d| d.name).collect();
        assert_eq!(index["files"], serde_json::json!(names));
        assert_eq!(sample_facts()[0].question, SAMPLE_QUESTION);
    }

    #[test]
    fn every_sample_fact_is_in_its_document() {
        let docs = sample_documents();
        for f in sample_facts() {
            let d = docs.iter().find(|d| d.name == f.source).unwrap_or_else(|| panic!("{}: no document {}", f.question, f.source));
            assert!(f.is_answered_by(&d.text), "{}: {:?} not in {}", f.question, f.answers, f.source);
        }
    }

    #[test]
    fn passages_keep_headings_and_stay_short() {
        let long = "Word ".repeat(400) + ". Tail sentence.";
        let text = format!("# Title\n\nFirst para. Two.\n\n## Sub\n\nSecond para.\r\n\r\n{long}");
        let p = split(&text);
        assert_eq!(p[0], "# Title\nFirst para. Two.");
        assert_eq!(p[1], "## Sub\nSecond para.");
        assert!(p.len() >= 4, "{p:?}");
        assert!(p.iter().all(|x| x.chars().count() <= MAX_PASSAGE_CHARS), "{p:?}");
        assert_eq!(p.concat().matches("Word").count(), 400);
    }

    /// What an odd document once did: trailing headings became one passage of any length, and a
    /// run of spaces an empty passage.
    #[test]
    fn any_document_cuts_into_short_nonempty_passages() {
        let headings = "# Heading\n\n".repeat(200);
        let spaces = format!("start{}end", " ".repeat(2000));
        for text in [headings.as_str(), spaces.as_str()] {
            let p = split(text);
            assert!(!p.is_empty() && p.iter().all(|x| !x.is_empty() && x.chars().count() <= MAX_PASSAGE_CHARS), "{p:?}");
        }
        assert_eq!(split(&headings).concat().matches("# Heading").count(), 200);
        assert_eq!(split(&spaces), ["start", "end"]);
        // A megabyte of one run-on sentence, in multi-byte characters: cut in one pass, nothing lost.
        let runon = "é".repeat(MAX_DOCUMENT_BYTES / 2);
        let p = split(&runon);
        assert_eq!(p.len(), (MAX_DOCUMENT_BYTES / 2).div_ceil(MAX_PASSAGE_CHARS));
        assert_eq!(p.concat(), runon);
    }

    #[test]
    fn bad_libraries_and_fact_files_say_what_is_wrong() {
        let err = |r: Result<Library>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(Library::new(&[])).contains("no documents"));
        let big = Document { name: "big.txt".into(), text: "a".repeat(MAX_DOCUMENT_BYTES + 1) };
        assert!(err(Library::new(&[big])).contains("big.txt is 1.0 MB"));
        let e = Document::from_bytes("photo.md".into(), vec![0xff, 0xfe]).unwrap_err().to_string();
        assert!(e.contains("photo.md is not UTF-8 text"), "{e}");
        let e = parse_facts(br#"{"alignlab_facts": 1, "facts": [{"question": "q", "answer": ["x"]}]}"#).unwrap_err().to_string();
        assert!(e.contains("facts[0]") && e.contains("answer"), "{e}");
        let e = parse_facts(br#"{"alignlab_facts": 1, "facts": [{"question": "q", "answers": [" "]}]}"#).unwrap_err().to_string();
        assert!(e.contains("facts[0]: a fact needs"), "{e}");
        assert!(parse_facts(br#"{"alignlab_facts": 2, "facts": []}"#).unwrap_err().to_string().contains("not one this app reads"));
    }

    #[test]
    fn an_answer_counts_when_it_holds_an_accepted_spelling() {
        let f = Fact { question: "q".into(), answers: vec!["Maren  Holt".into(), "seven".into()], source: String::new() };
        assert!(f.is_answered_by("It was maren\nholt, I think."));
        assert!(f.is_answered_by("Seven boats"));
        assert!(!f.is_answered_by("Nobody knows."));
    }

    #[test]
    fn the_prompt_numbers_the_passages_and_ends_with_the_question() {
        let hits = vec![Hit { doc: "a.md".into(), text: "The ferry is blue.".into(), score: 2.0 }];
        let p = augmented_prompt("What colour is the ferry?", &hits);
        assert!(p.contains("[1] (a.md) The ferry is blue.") && p.ends_with("Question: What colour is the ferry?"), "{p}");
    }
}
