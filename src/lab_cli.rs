//! `alignlab lab`: lab files from the command line. A teacher checks a lab file before class
//! (`check`: the same reader and errors as the page), reads a lesson as text (`show`), and lists
//! the lessons the app ships (`list`).

use std::path::PathBuf;

use alignlab::lab::lesson::{Action, Lesson, built_in};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// The built-in lessons, in order.
    List,
    /// Check lab files as the page reads them; the error names the field and what is wrong.
    Check { files: Vec<PathBuf> },
    /// A lesson as text: each step's settings, action, what to watch and the question. FILE or a
    /// built-in lesson's id.
    Show { lesson: String },
    /// The lab file's JSON Schema (what docs/lab.schema.json holds), from the types that read it.
    Schema,
}

pub fn lab(a: LabArgs) -> Result<()> {
    match a.command {
        LabCommand::List => {
            for l in built_in() {
                println!("{:<28} {:>3} min  {:>2} steps  {}", l.id, l.minutes.unwrap_or(0), l.steps.len(), l.title);
            }
            Ok(())
        }
        LabCommand::Check { files } => {
            if files.is_empty() {
                bail!("name at least one lab file");
            }
            let mut bad = 0;
            for f in &files {
                match read(f) {
                    Ok(l) => println!("ok   {}: {} ({} steps)", f.display(), l.title, l.steps.len()),
                    Err(e) => {
                        bad += 1;
                        println!("bad  {}: {e:#}", f.display());
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} of {} lab files could not be read", files.len());
            }
            Ok(())
        }
        LabCommand::Schema => {
            println!("{}", serde_json::to_string_pretty(&alignlab::lab::lesson::schema())?);
            Ok(())
        }
        LabCommand::Show { lesson } => {
            let l = match built_in().into_iter().find(|l| l.id == lesson) {
                Some(l) => l,
                None => read(&PathBuf::from(&lesson))?,
            };
            show(&l);
            Ok(())
        }
    }
}

fn read(path: &PathBuf) -> Result<Lesson> {
    let len = std::fs::metadata(path).with_context(|| format!("cannot open {}", path.display()))?.len();
    if len > alignlab::lab::lesson::MAX_LAB_BYTES as u64 {
        bail!("{} is {len} bytes; a lab file holds at most 1 MiB", path.display());
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Lesson::parse(&bytes)?)
}

fn show(l: &Lesson) {
    println!("# {}\n", l.title);
    if !l.summary.is_empty() {
        println!("{}\n", l.summary);
    }
    let setup = serde_json::to_string(&l.setup).unwrap_or_default();
    if setup != "{}" {
        println!("setup: {setup}\n");
    }
    for (i, s) in l.steps.iter().enumerate() {
        println!("## {}. {} ({} tab)\n\n{}\n", i + 1, s.title, s.panel.id(), s.text);
        let set = serde_json::to_string(&s.set).unwrap_or_default();
        if set != "{}" {
            println!("settings: {set}");
        }
        if s.action != Action::None {
            println!("try it: {}{}", s.action.label(), if s.from_base { " (from the base model)" } else { "" });
        }
        for w in &s.watch {
            let dir = w.expect.map(|e| format!(" (expect {e:?} from {:?})", w.from).to_lowercase()).unwrap_or_default();
            println!("watch: {}{dir}", w.metric);
        }
        if !s.notice.is_empty() {
            println!("notice: {}", s.notice);
        }
        if let Some(q) = &s.question {
            println!("question: {q}");
        }
        println!();
    }
}
