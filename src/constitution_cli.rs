//! `alignlab constitution`: principle-driven self-alignment. Answers sampled from the policy, each
//! judged by the model itself (the reference, as P(yes) to a critique question per principle) and
//! by the judges; best-vs-worst pairs by self-score for DPO (lab::constitution).

use std::path::PathBuf;

use alignlab::backend::block_on;
use alignlab::data::{self, PromptOnly};
use alignlab::lab::Which;
use alignlab::lab::constitution::{Constitution, Judged, Summary, agreement_with_judges, judge_prompts, parse_constitution, self_pairs, starter_constitution};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::train_cli::{SampleArgs, read_data};

#[derive(Args)]
pub struct ConstitutionArgs {
    /// The model (with --adapter, answers come from the adapter; the base model judges), sampling,
    /// and the judges the self-judgement is compared with.
    #[command(flatten)]
    pub s: SampleArgs,
    /// Prompts (JSONL with "prompt").
    #[arg(long, conflicts_with = "prompt")]
    pub prompts: Option<PathBuf>,
    #[arg(long)]
    pub prompt: Option<String>,
    /// {"alignlab_constitution": 1, "principles": [...]}; without it, three starter principles
    /// (polite and kind; helpful; nothing rude, hurtful or dangerous).
    #[arg(long)]
    pub constitution: Option<PathBuf>,
    /// Write best-vs-worst pairs by self-score here (TRL JSONL), for DPO.
    #[arg(long)]
    pub pairs_out: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub pairs_per_prompt: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn constitution(a: ConstitutionArgs) -> Result<()> {
    let constitution: Constitution = match &a.constitution {
        Some(p) => parse_constitution(&std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)?,
        None => starter_constitution(),
    };
    let prompts: Vec<String> = match (&a.prompts, &a.prompt) {
        (Some(p), _) => read_data::<PromptOnly>(p)?.into_iter().map(|p| p.prompt).collect(),
        (None, Some(p)) => vec![p.clone()],
        (None, None) => bail!("give --prompt TEXT or --prompts FILE.jsonl"),
    };
    let mut session = crate::open_session(&a.s.model, false, a.json)?;
    let judges = a.s.reward.load(&mut session)?;
    let (mut rows, mut pairs, mut all) = (Vec::new(), Vec::new(), Vec::<Vec<Judged>>::new());
    let mut judged = |i: usize, judged: Vec<Judged>| {
        let prompt = &prompts[i];
        if !a.json {
            println!("=== {prompt}");
            for j in &judged {
                let by: Vec<String> = j.by_principle.iter().map(|p| format!("{p:.2}")).collect();
                println!("  self {:.3} [{}]  judges {:+.3}  {}", j.self_score, by.join(" "), j.judges, j.text.trim().replace('\n', " "));
            }
        }
        pairs.extend(self_pairs(prompt, &judged, a.pairs_per_prompt));
        rows.push(json!({"prompt": prompt, "answers": judged, "agreement": agreement_with_judges(&judged)}));
        all.push(judged);
    };
    block_on(judge_prompts(&session, Which::Policy, &a.s.encoding, &constitution, &prompts, &a.s.sampling, judges, &mut || true, &mut judged))?;
    let sum = Summary::of(all.iter().map(Vec::as_slice)).unwrap_or_default();
    if let Some(path) = &a.pairs_out {
        std::fs::write(path, data::export(&pairs)).with_context(|| format!("writing {}", path.display()))?;
    }
    let summary = json!({"answers": sum.answers, "self_score": sum.self_score, "judges": sum.judges, "agreement": sum.agreement, "pairs": pairs.len()});
    if a.json {
        println!("{}", json!({"principles": constitution.principles, "summary": summary, "prompts": rows}));
    } else {
        println!(
            "\n{} answers: mean self-score {:.3}, mean judge score {:+.3}; the self-judgement orders answer pairs as the judges do {}; {} pairs",
            sum.answers,
            sum.self_score,
            sum.judges,
            sum.agreement.map_or("(no pair the judges tell apart)".into(), |x| format!("{:.0}% of the time", 100.0 * x)),
            pairs.len()
        );
    }
    Ok(())
}
