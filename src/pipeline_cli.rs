//! `alignlab curriculum` and `alignlab pipeline`. Curriculum: pairs ordered by a reward source's
//! margin (easy or hard first), written back as JSONL for `dpo --in-order` (lab::curriculum).
//! Pipeline: stages run one after another on one policy, each measured on held-out prompts, with
//! each stage's adapter (or reward model) saved as it ends (lab::pipeline).

use std::path::PathBuf;

use alignlab::align::Encoding;
use alignlab::align::dpo::DpoConfig;
use alignlab::align::kto::KtoConfig;
use alignlab::align::reward::{RewardConfig, save_reward_model};
use alignlab::align::rl::RlConfig;
use alignlab::align::train::TrainConfig;
use alignlab::backend::block_on;
use alignlab::data::{self, Demonstration, Preference, PromptOnly, Unpaired};
use alignlab::generate::SamplingConfig;
use alignlab::lab::curriculum::{Order, margins, order};
use alignlab::lab::pipeline::{Pipeline, StageReport};
use alignlab::lab::{EvalConfig, Method, MethodKind, RewardSpec, RunSpec, TrainData};
use alignlab::model::LoraConfig;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::ModelArgs;
use crate::train_cli::{RewardSourceArgs, read_data};

#[derive(Args)]
pub struct CurriculumArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// What measures each pair's margin: judges, a reward model, or an ensemble of them.
    #[command(flatten)]
    pub reward: RewardSourceArgs,
    #[command(flatten)]
    pub encoding: Encoding,
    /// Preference pairs (TRL JSONL).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = Order::EasyFirst)]
    pub order: Order,
    /// The ordered pairs (TRL JSONL), for `alignlab dpo --in-order` or `reward --in-order`.
    #[arg(long)]
    pub output: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn curriculum(a: CurriculumArgs) -> Result<()> {
    let pairs = read_data::<Preference>(&a.data)?;
    let mut session = crate::open_session(&a.model, false, a.json)?;
    let rewarder = a.reward.rewarder(&mut session)?;
    let m = block_on(margins(&session, &rewarder, &a.encoding, &pairs))?;
    let sorted = order(&pairs, &m, a.order);
    let out: Vec<Preference> = sorted.iter().map(|(p, _)| p.clone()).collect();
    std::fs::write(&a.output, data::export(&out)).with_context(|| format!("writing {}", a.output.display()))?;
    if a.json {
        let rows: Vec<_> = sorted.iter().map(|(p, m)| json!({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "margin": m})).collect();
        println!("{}", json!({"order": a.order, "pairs": rows}));
    } else {
        for (p, m) in &sorted {
            println!("{m:+8.3}  {}", p.prompt.trim());
        }
        let wrong = sorted.iter().filter(|(_, m)| *m < 0.0).count();
        println!("{} pairs written to {}; {wrong} have a negative margin (the reward source prefers the rejected answer)", sorted.len(), a.output.display());
    }
    Ok(())
}

/// One stage from the command line: METHOD=FILE[,steps=N][,lr=X][,batch=N][,beta=X].
#[derive(Clone, Debug)]
pub struct StageArg {
    method: MethodKind,
    file: PathBuf,
    steps: Option<usize>,
    lr: Option<f64>,
    batch: Option<usize>,
    beta: Option<f64>,
}

fn parse_stage(s: &str) -> Result<StageArg, String> {
    let mut parts = s.split(',');
    let head = parts.next().unwrap_or("");
    let (m, file) = head.split_once('=').ok_or_else(|| format!("--stage takes METHOD=FILE[,steps=N,lr=X,batch=N,beta=X], not '{s}'"))?;
    let method = MethodKind::from_id(m.trim()).ok_or_else(|| format!("'{m}' is not a method: sft, dpo, kto, reward or rl"))?;
    let mut st = StageArg { method, file: PathBuf::from(file), steps: None, lr: None, batch: None, beta: None };
    for kv in parts {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("'{kv}' is not KEY=VALUE"))?;
        let bad = || format!("'{v}' is not a number for {k}");
        match k.trim() {
            "steps" => st.steps = Some(v.trim().parse().map_err(|_| bad())?),
            "lr" => st.lr = Some(v.trim().parse().map_err(|_| bad())?),
            "batch" => st.batch = Some(v.trim().parse().map_err(|_| bad())?),
            "beta" => st.beta = Some(v.trim().parse().map_err(|_| bad())?),
            other => return Err(format!("unknown stage setting '{other}': steps, lr, batch or beta")),
        }
    }
    Ok(st)
}

#[derive(Args)]
pub struct PipelineArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A stage (repeatable, in order): METHOD=FILE with optional ,steps=N ,lr=X ,batch=N ,beta=X.
    /// sft takes prompt/completion lines, dpo and reward pairs, kto rated answers, rl prompts; an
    /// rl stage is rewarded by the reward model an earlier stage trained, else by --judge.
    #[arg(long = "stage", value_parser = parse_stage, required = true)]
    pub stages: Vec<StageArg>,
    /// The judges: RLHF's reward without a reward stage, and the score of the held-out answers.
    #[command(flatten)]
    pub reward: RewardSourceArgs,
    /// Held-out prompts every stage is measured on (JSONL with "prompt").
    #[arg(long)]
    pub eval_prompts: Option<PathBuf>,
    /// Answers per held-out prompt, and their length and temperature.
    #[arg(long, default_value_t = 4)]
    pub eval_samples: usize,
    #[arg(long, default_value_t = 40)]
    pub eval_max_new_tokens: usize,
    #[arg(long, default_value_t = 0.8)]
    pub eval_temperature: f32,
    /// Each stage's adapter (or reward model) under DIR/stage-K-METHOD, DIR/pipeline.json (the
    /// table) and DIR/stages.json (each stage's spec and the held-out sampling).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Defaults for every stage (a stage's own steps, lr, batch override them).
    #[command(flatten)]
    pub train: TrainConfig,
    #[command(flatten)]
    pub lora: LoraConfig,
    #[command(flatten)]
    pub encoding: Encoding,
    #[command(flatten)]
    pub eval: EvalConfig,
    #[arg(long)]
    pub json: bool,
}

fn stage_spec(a: &PipelineArgs, s: &StageArg, reward_before: bool) -> Result<RunSpec> {
    let mut data = TrainData::default();
    let method = match s.method {
        MethodKind::Sft => {
            data.demos = read_data::<Demonstration>(&s.file)?;
            Method::Sft
        }
        MethodKind::Dpo => {
            data.pairs = read_data::<Preference>(&s.file)?;
            Method::Dpo(DpoConfig { beta: s.beta.unwrap_or(DpoConfig::default().beta), ..DpoConfig::default() })
        }
        MethodKind::Kto => {
            data.unpaired = read_data::<Unpaired>(&s.file)?;
            Method::Kto(KtoConfig { beta: s.beta.unwrap_or(KtoConfig::default().beta), ..KtoConfig::default() })
        }
        MethodKind::Reward => {
            data.pairs = read_data::<Preference>(&s.file)?;
            Method::Reward(RewardConfig::default())
        }
        MethodKind::Rl => {
            data.prompts = read_data::<PromptOnly>(&s.file)?.into_iter().map(|p| p.prompt).collect();
            let reward = if reward_before {
                RewardSpec::RewardModel
            } else if a.reward.judges.is_empty() {
                bail!("an rl stage needs a reward: a reward stage before it, or --judge");
            } else {
                RewardSpec::Judges(a.reward.judges.clone())
            };
            let cfg = RlConfig { beta: s.beta.unwrap_or(RlConfig::default().beta), seed: a.train.seed, ..RlConfig::default() };
            Method::Rl { cfg, reward }
        }
    };
    let train = TrainConfig {
        max_steps: s.steps.unwrap_or(a.train.max_steps),
        learning_rate: s.lr.unwrap_or(a.train.learning_rate),
        per_device_train_batch_size: s.batch.unwrap_or(a.train.per_device_train_batch_size),
        ..a.train.clone()
    };
    Ok(RunSpec { method, train, lora: Some(a.lora.clone()), encoding: a.encoding.clone(), eval: a.eval.clone(), data })
}

pub fn pipeline(a: PipelineArgs) -> Result<()> {
    let mut stages = Vec::with_capacity(a.stages.len());
    let mut reward_before = false;
    for s in &a.stages {
        stages.push(stage_spec(&a, s, reward_before)?);
        reward_before |= s.method == MethodKind::Reward;
    }
    let eval_prompts: Vec<String> = match &a.eval_prompts {
        Some(p) => read_data::<PromptOnly>(p)?.into_iter().map(|p| p.prompt).collect(),
        None => Vec::new(),
    };
    let mut session = crate::open_session(&a.model, true, a.json)?;
    let judges = a.reward.load(&mut session)?;
    let truth = if judges.is_empty() { None } else { Some(session.rewarder(&RewardSpec::Judges(judges))?) };
    let sampling = SamplingConfig {
        num_samples: a.eval_samples,
        max_new_tokens: a.eval_max_new_tokens,
        temperature: a.eval_temperature,
        seed: a.train.seed,
        ..SamplingConfig::default()
    };
    if let Some(dir) = &a.output_dir {
        // Each stage's whole spec without its data, as `run.json` holds a run's: the same
        // `RunSpec`s the page's worker takes.
        let specs: Vec<RunSpec> = stages.iter().map(|s| RunSpec { data: TrainData::default(), ..s.clone() }).collect();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("stages.json"), serde_json::to_string_pretty(&json!({"stages": specs, "sampling": sampling}))?).context("writing stages.json")?;
    }
    let pipeline = Pipeline { stages, eval_prompts: &eval_prompts, encoding: &a.encoding, sampling: &sampling, judges: truth.as_ref() };
    pipeline.validate()?;
    let mut reports = vec![block_on(pipeline.base(&session))?];
    if !a.json {
        eprintln!("{}", line(&reports[0]));
    }
    for (k, s) in a.stages.iter().enumerate() {
        let quiet = a.json;
        let report = block_on(pipeline.stage(k, &mut session, &mut |step, steps| {
            if !quiet {
                eprintln!("stage {}/{}: step {step}/{steps}", k + 1, a.stages.len());
            }
            true
        }))?
        .expect("never stopped");
        if !a.json {
            eprintln!("{}", line(&report));
        }
        if let Some(dir) = &a.output_dir {
            let to = dir.join(format!("stage-{}-{}", k + 1, s.method.id()));
            let files = match s.method {
                MethodKind::Reward => {
                    let head = session.reward_model.as_ref().context("the reward stage left no reward model")?;
                    block_on(save_reward_model(&head.model, &head.lora, &session.model_name()))?
                }
                _ => block_on(session.policy.export_adapter(&session.model_name()))?,
            };
            files.write_dir(&to).with_context(|| format!("saving {}", to.display()))?;
        }
        reports.push(report);
    }
    if let Some(dir) = &a.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("pipeline.json"), serde_json::to_string_pretty(&reports)?).context("writing pipeline.json")?;
    }
    if a.json {
        println!("{}", json!({"stages": reports}));
    } else {
        println!("\n{:<26} {:>12} {:>14} {:>10}", "after", "judges", "KL to base", "length");
        for r in &reports {
            if let Some(e) = &r.eval {
                println!("{:<26} {:>+12.3} {:>14.2} {:>10.1}", r.label, e.mean_score, e.kl, e.mean_length);
            } else {
                println!("{:<26} {:>12} {:>14} {:>10}", r.label, "—", "—", "—");
            }
        }
    }
    Ok(())
}

fn line(r: &StageReport) -> String {
    let eval = r.eval.as_ref().map_or(String::new(), |e| format!(": judges {:+.3}, KL to base {:.2}, length {:.1}", e.mean_score, e.kl, e.mean_length));
    format!("{}{eval}", r.label)
}
