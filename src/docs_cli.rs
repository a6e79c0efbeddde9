//! `alignlab docs`: BM25 retrieval over local documents, answers with and without them, and the
//! fact set that measures both (lab::retrieve).

use std::path::{Path, PathBuf};

use alignlab::align::Encoding;
use alignlab::backend::block_on;
use alignlab::generate::SamplingConfig;
use alignlab::lab::Which;
use alignlab::lab::retrieve::{Document, FactRow, FactSummary, answer, answers, Library, parse_facts, sample_documents, sample_facts};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::ModelArgs;

#[derive(Args)]
pub struct DocsArgs {
    #[command(subcommand)]
    pub command: DocsCommand,
}

#[derive(Args)]
pub struct LibraryArgs {
    /// Text or Markdown files, or folders of them (.md, .txt); without any, the sample set
    /// about the island of Quenby.
    #[arg(long = "docs", num_args = 1..)]
    pub docs: Vec<PathBuf>,
    /// Passages put into the prompt (a 135M model reads one best; more confuse it).
    #[arg(long, default_value_t = 1)]
    pub k: usize,
}

#[derive(Args)]
pub struct AnswerArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub library: LibraryArgs,
    #[command(flatten)]
    pub encoding: Encoding,
    #[command(flatten)]
    pub sampling: SamplingConfig,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum DocsCommand {
    /// The passages BM25 finds for a query (no model needed).
    Search {
        query: String,
        #[command(flatten)]
        library: LibraryArgs,
        #[arg(long)]
        json: bool,
    },
    /// Answer a question without the documents and with the best passages, side by side.
    Ask {
        #[arg(long)]
        question: String,
        #[command(flatten)]
        a: AnswerArgs,
    },
    /// Run a fact set: how often the answer's passage is retrieved, and how often the model is
    /// right without the documents and with them.
    Facts {
        /// A fact file ({"alignlab_facts": 1, "facts": [{question, answers, source}]}); without
        /// it, the sample set's.
        #[arg(long)]
        facts: Option<PathBuf>,
        #[command(flatten)]
        a: AnswerArgs,
    },
}

/// Reads each path (a folder gives its .md and .txt files, in name order).
fn read_documents(paths: &[PathBuf]) -> Result<Vec<Document>> {
    if paths.is_empty() {
        return Ok(sample_documents());
    }
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "md" || x == "txt"))
                .collect();
            inner.sort();
            files.extend(inner);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        bail!("no .md or .txt files in {}", paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    }
    files.iter().map(|f| read_document(f)).collect()
}

/// A file's size is checked before it is read.
fn read_document(f: &Path) -> Result<Document> {
    let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Document::check_size(&name, std::fs::metadata(f).with_context(|| format!("reading {}", f.display()))?.len())?;
    let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
    Ok(Document::from_bytes(name, bytes)?)
}

pub fn docs(a: DocsArgs) -> Result<()> {
    match a.command {
        DocsCommand::Search { query, library, json } => {
            let lib = Library::new(&read_documents(&library.docs)?)?;
            let hits = lib.search(&query, library.k);
            if json {
                println!("{}", json!({"query": query, "passages": lib.passages().len(), "hits": hits}));
            } else {
                for (i, h) in hits.iter().enumerate() {
                    println!("[{}] {} (BM25 {:.2})\n{}\n", i + 1, h.doc, h.score, h.text);
                }
            }
        }
        DocsCommand::Ask { question, a } => {
            let lib = Library::new(&read_documents(&a.library.docs)?)?;
            let session = crate::open_session(&a.model, false, a.json)?;
            let ans = block_on(answer(&session, Which::Policy, &a.encoding, &lib, &question, a.library.k, &a.sampling, &mut || true))?;
            if a.json {
                println!("{}", json!({"question": question, "answer": ans}));
            } else {
                for (i, h) in ans.hits.iter().enumerate() {
                    println!("[{}] {} (BM25 {:.2}): {}", i + 1, h.doc, h.score, h.text.replace('\n', " "));
                }
                println!("\n--- without the documents ---\n{}\n\n--- with them ---\n{}", ans.plain.trim(), ans.grounded.trim());
            }
        }
        DocsCommand::Facts { facts, a } => {
            let lib = Library::new(&read_documents(&a.library.docs)?)?;
            let facts = match &facts {
                Some(p) => parse_facts(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)?,
                None => sample_facts(),
            };
            let session = crate::open_session(&a.model, false, a.json)?;
            let mut rows = Vec::new();
            let questions: Vec<String> = facts.iter().map(|f| f.question.clone()).collect();
            let mut checked = |i: usize, ans| {
                let (f, row) = (&facts[i], FactRow::of(&facts[i], ans));
                if !a.json {
                    let mark = |b: bool| if b { "right" } else { "wrong" };
                    println!("{:70} retrieved {:5}  without {}  with {}", f.question, row.retrieved, mark(row.plain_right), mark(row.grounded_right));
                }
                rows.push(row);
            };
            block_on(answers(&session, Which::Policy, &a.encoding, &lib, &questions, a.library.k, &a.sampling, &mut || true, &mut checked))?;
            let s = FactSummary::of(&rows);
            if a.json {
                println!("{}", json!({"summary": s, "rows": rows}));
            } else {
                println!(
                    "{} questions: source retrieved {:.0}%, right without documents {:.0}%, with them {:.0}%",
                    s.questions,
                    s.retrieved * 100.0,
                    s.plain_right * 100.0,
                    s.grounded_right * 100.0
                );
            }
        }
    }
    Ok(())
}
