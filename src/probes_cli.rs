//! `alignlab probes`: the adversarial probe set answered before alignment (the base model) and
//! after it (the `--adapter`), each answer judged; pairs from the answers for training against
//! what still triggers (lab::probes).

use std::path::PathBuf;

use alignlab::align::Encoding;
use alignlab::backend::block_on;
use alignlab::data;
use alignlab::generate::SamplingConfig;
use alignlab::lab::probes::{Category, Probe, ProbeSummary, parse_probes, run_probes, starter_probes, ProbeResult};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::ModelArgs;

#[derive(Args)]
pub struct ProbesArgs {
    /// The model; with --adapter, "after" is the model with it and "before" the base.
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub encoding: Encoding,
    #[command(flatten)]
    pub sampling: SamplingConfig,
    /// A probe file ({"alignlab_probes": 1, "probes": [...]}); without it, the shipped set.
    #[arg(long)]
    pub probes: Option<PathBuf>,
    /// Only these categories (repeatable): rude, unsafe, off_topic, instructions.
    #[arg(long = "category", value_parser = parse_category)]
    pub categories: Vec<Category>,
    /// Write best-vs-worst pairs from every probe's answers here (TRL JSONL), to train against
    /// the behaviour; probes with their own system prompt give none.
    #[arg(long)]
    pub pairs_out: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub pairs_per_probe: usize,
    #[arg(long)]
    pub json: bool,
}

fn parse_category(s: &str) -> Result<Category, String> {
    serde_json::from_value(json!(s)).map_err(|_| format!("unknown category '{s}'; use rude, unsafe, off_topic or instructions"))
}

pub fn probes(a: ProbesArgs) -> Result<()> {
    let mut set: Vec<Probe> = match &a.probes {
        Some(p) => parse_probes(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)?,
        None => starter_probes(),
    };
    if !a.categories.is_empty() {
        set.retain(|p| a.categories.contains(&p.category));
    }
    if set.is_empty() {
        bail!("no probe is in the categories asked for");
    }
    let session = crate::open_session(&a.model, false, a.json)?;
    if a.model.adapter.is_none() && !a.json {
        eprintln!("no --adapter: before and after are the same model, so this shows what triggers now");
    }
    let mut results = Vec::new();
    let mut answered = |_, r: ProbeResult| {
        if !a.json {
            let n = r.before.scores.len();
            println!(
                "[{}] {}\n  before {}/{n} triggered (mean {:+.3})  after {}/{n} (mean {:+.3})  KL {:.3}  {}",
                r.probe.category.label(), r.probe.prompt, r.before.triggered, r.before.mean(), r.after.triggered, r.after.mean(), r.kl, r.verdict.label()
            );
        }
        results.push(r);
    };
    block_on(run_probes(&session, &a.encoding, &set, &a.sampling, &mut || true, &mut answered))?;
    let summary = ProbeSummary::of(&results);
    if let Some(path) = &a.pairs_out {
        let pairs: Vec<_> = results.iter().flat_map(|r| r.pairs(a.pairs_per_probe)).collect();
        std::fs::write(path, data::export(&pairs)).with_context(|| format!("writing {}", path.display()))?;
        if !a.json {
            eprintln!("{} pairs written to {}", pairs.len(), path.display());
        }
    }
    if a.json {
        println!("{}", json!({"summary": summary, "probes": results}));
    } else {
        let s = &summary;
        println!(
            "\n{} probes: answers triggering {:.0}% before, {:.0}% after; mean score {:+.3} -> {:+.3}; spread {:.3} -> {:.3}; length {:.1} -> {:.1} words; KL {:.3}",
            s.all.probes, 100.0 * s.all.rate_before, 100.0 * s.all.rate_after, s.all.mean_before, s.all.mean_after, s.spread_before, s.spread_after, s.words_before, s.words_after, s.kl
        );
        println!("fixed {}, better {}, still triggering {}, worse {}", s.fixed, s.better, s.still_triggers, s.worse);
        for (c, t) in &s.by_category {
            println!("  {:<13} {:>3.0}% -> {:>3.0}%", c.label(), 100.0 * t.rate_before, 100.0 * t.rate_after);
        }
    }
    Ok(())
}
