//! `alignlab ensemble`: several reward models on the same pairs (different seeds, or bootstrap
//! resamples), their held-out accuracy alone and combined, and how much they disagree on the
//! held-out answers and on texts you bring (lab::ensemble). The members are saved for `rl`,
//! `best-of-n`, `pairs` and `eval`, which take `--reward-model` once per member and `--combine`.

use std::path::PathBuf;

use alignlab::align::Encoding;
use alignlab::align::reward::{RewardConfig, save_reward_model};
use alignlab::align::train::TrainConfig;
use alignlab::backend::block_on;
use alignlab::data::{Demonstration, Preference};
use alignlab::lab::ensemble::{Resample, check_texts, Scored, mean_spread, plan, report, score_texts, train_member};
use alignlab::lab::{EvalConfig, Method, RunSpec, TrainData};
use alignlab::model::LoraConfig;
use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use crate::ModelArgs;
use crate::train_cli::read_data;

#[derive(Args)]
pub struct EnsembleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Preference pairs (TRL JSONL: prompt, chosen, rejected).
    #[arg(long)]
    pub data: PathBuf,
    /// How many reward models (2 to 8).
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// How the members come to differ: seeds (same pairs), or bootstrap (pairs resampled too).
    #[arg(long, value_enum, default_value_t = Resample::Seeds)]
    pub resample: Resample,
    /// Texts to score with every member (JSONL: prompt, completion), to see where they disagree:
    /// answers unlike the training pairs usually spread them further apart.
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Save each member (PEFT, SEQ_CLS) under DIR/member-K.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub train: TrainConfig,
    #[command(flatten)]
    pub lora: LoraConfig,
    #[command(flatten)]
    pub reward: RewardConfig,
    #[command(flatten)]
    pub encoding: Encoding,
    /// `--eval-fraction`: the share of pairs held out to test every member on.
    #[command(flatten)]
    pub eval: EvalConfig,
    #[arg(long)]
    pub json: bool,
}

pub fn ensemble(a: EnsembleArgs) -> Result<()> {
    let pairs = read_data::<Preference>(&a.data)?;
    let spec = RunSpec {
        method: Method::Reward(a.reward.clone()),
        train: a.train.clone(),
        lora: Some(a.lora.clone()),
        encoding: a.encoding.clone(),
        eval: a.eval.clone(),
        data: TrainData { pairs, ..Default::default() },
    };
    let plan = plan(&spec, a.members, a.resample)?;
    let texts: Vec<(String, String)> = match &a.texts {
        Some(p) => read_data::<Demonstration>(p)?.into_iter().map(|d| (d.prompt, d.completion)).collect(),
        None => Vec::new(),
    };
    check_texts(texts.len())?;
    let session = crate::open_session(&a.model, true, a.json)?;
    let mut heads = Vec::with_capacity(plan.members.len());
    for (k, member) in plan.members.into_iter().enumerate() {
        if !a.json {
            eprintln!("training member {} of {} on {} pairs (seed {})", k + 1, a.members, member.data.pairs.len(), member.train.seed);
        }
        let head = block_on(train_member(&session, member, &mut |_| true))?.expect("never stopped");
        if let Some(dir) = &a.output_dir {
            let files = block_on(save_reward_model(&head.model, &head.lora, &session.model_name()))?;
            let to = dir.join(format!("member-{}", k + 1));
            files.write_dir(&to).with_context(|| format!("saving {}", to.display()))?;
        }
        heads.push(head);
    }
    let held = if plan.held_out.is_empty() { None } else { Some(block_on(report(&session, &heads, &a.encoding, &plan.held_out))?) };
    let scored: Vec<Scored> = if texts.is_empty() { Vec::new() } else { block_on(score_texts(&session, &heads, &a.encoding, &texts))? };
    if a.json {
        let texts_spread = (!scored.is_empty()).then(|| mean_spread(&scored));
        println!("{}", json!({"members": a.members, "held_out": held, "texts": scored, "texts_spread": texts_spread}));
        return Ok(());
    }
    match &held {
        Some(r) => {
            println!("held-out accuracy on {} pairs:", r.pairs);
            for (k, acc) in r.members.iter().enumerate() {
                println!("  member {:<3} {acc:.2}", k + 1);
            }
            for (c, acc) in &r.combined {
                println!("  {:<10} {acc:.2}", c.name());
            }
            println!("mean spread (members' standard deviation) on the held-out answers: {:.3}", r.spread);
        }
        None => println!("no pairs held out (--eval-fraction 0): no accuracy to report"),
    }
    if !scored.is_empty() {
        println!("\nyour texts (mean reward ± spread, then each member):");
        for s in &scored {
            let members: Vec<String> = s.members.iter().map(|m| format!("{m:+.2}")).collect();
            println!("  {:+.2} ± {:.2}  [{}]  {}", s.mean, s.spread, members.join(" "), s.completion.trim());
        }
        println!("mean spread on your texts: {:.3}", mean_spread(&scored));
    }
    Ok(())
}
