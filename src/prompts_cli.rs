//! `alignlab prompts`: one question under prompt variants, side by side (lab::prompting).

use std::path::PathBuf;

use alignlab::backend::block_on;
use alignlab::lab::Which;
use alignlab::lab::prompting::{Variant, VariantResult, parse_variants, starter_variants, try_variants};
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use crate::train_cli::SampleArgs;

#[derive(Args)]
pub struct PromptsArgs {
    /// The model, sampling, and the judges (and reward model) that score each answer.
    #[command(flatten)]
    pub s: SampleArgs,
    #[arg(long)]
    pub question: String,
    /// A JSON list of variants ({name, system, shots: [{user, assistant}], instruction});
    /// without it, four starters: plain, a system prompt, two examples, step by step.
    #[arg(long)]
    pub variants: Option<PathBuf>,
    /// An answer whose log-probability is measured under each variant.
    #[arg(long)]
    pub reference: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn prompts(a: PromptsArgs) -> Result<()> {
    let mut session = crate::open_session(&a.s.model, false, a.json)?;
    let judges = a.s.reward.load(&mut session)?;
    let variants: Vec<Variant> = match &a.variants {
        Some(p) => parse_variants(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)?,
        None => starter_variants(),
    };
    let mut rows = Vec::new();
    let mut tried = |_, r: VariantResult| {
        if !a.json {
            let rm = r.reward_model.map(|x| format!("  reward model {x:+.3}")).unwrap_or_default();
            let lp = r.reference_logp_per_token.map(|x| format!("  reference {x:.3} nats/token")).unwrap_or_default();
            println!("=== {} ({} prompt tokens): judges {:+.3}{rm}{lp}, {} words\n{}\n", r.name, r.prompt_tokens, r.judges, r.words, r.text.trim());
        }
        rows.push(r);
    };
    block_on(try_variants(&session, Which::Policy, &a.s.encoding, &a.question, &variants, a.reference.as_deref(), &a.s.sampling, judges, &mut || true, &mut tried))?;
    if a.json {
        println!("{}", json!({"question": a.question, "variants": rows}));
    }
    Ok(())
}
