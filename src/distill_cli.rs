//! `alignlab distill` and `alignlab weak-to-strong` (lab::distill). Distill: a teacher (a second
//! model, a file of answers, or the student's own best of N) answers the prompts, the student
//! learns the answers by SFT, and held-out prompts say how much of the teacher's lead it closed.
//! Weak-to-strong: a weak critic picks among the model's samples; the judges (the truth) say how
//! good its picks are between a random pick and their own.

use std::path::PathBuf;
use std::rc::Rc;

use alignlab::align::train::TrainConfig;
use alignlab::backend::block_on;
use alignlab::data::{self, Demonstration, PromptOnly};
use alignlab::judges::JudgeSpec;
use alignlab::lab::distill::{Distill, Progress, RerankSummary, Teacher, rerank};
use alignlab::lab::{EvalConfig, Method, RunSpec, TrainData};
use alignlab::model::LoraConfig;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::ModelArgs;
use crate::train_cli::{SampleArgs, read_data};

fn prompts(path: &PathBuf) -> Result<Vec<String>> {
    Ok(read_data::<PromptOnly>(path)?.into_iter().map(|p| p.prompt).collect())
}

#[derive(Args)]
pub struct DistillArgs {
    /// The student, the judges (the ground truth; optional with --teacher) and sampling (-n:
    /// answers per held-out prompt when measuring the student).
    #[command(flatten)]
    pub s: SampleArgs,
    /// Prompts the teacher answers and the student learns from (JSONL with "prompt").
    #[arg(long)]
    pub prompts: PathBuf,
    /// Held-out prompts the student is measured on before and after.
    #[arg(long)]
    pub eval_prompts: PathBuf,
    /// Teacher: a second model (.gguf, HF directory, or llama2.c .bin with --teacher-tokenizer).
    #[arg(long, group = "who")]
    pub teacher: Option<PathBuf>,
    #[arg(long, requires = "teacher")]
    pub teacher_tokenizer: Option<PathBuf>,
    /// Teacher: answers in a file (JSONL: prompt, completion).
    #[arg(long, group = "who")]
    pub teacher_answers: Option<PathBuf>,
    /// Teacher: the student itself, the best of N samples under the judges.
    #[arg(long, group = "who")]
    pub teacher_best_of: Option<usize>,
    /// Write the teacher's answers here (TRL JSONL: prompt, completion).
    #[arg(long)]
    pub demos_out: Option<PathBuf>,
    /// Save the student's adapter (PEFT) here.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// SFT's optimizer steps (its other settings are the trainer's defaults; its seed is --seed).
    #[arg(long, default_value_t = TrainConfig::default().max_steps)]
    pub max_steps: usize,
    #[arg(long, default_value_t = TrainConfig::default().learning_rate)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = TrainConfig::default().per_device_train_batch_size)]
    pub batch_size: usize,
    #[command(flatten)]
    pub lora: LoraConfig,
    #[command(flatten)]
    pub eval: EvalConfig,
    #[arg(long)]
    pub json: bool,
}

pub fn distill(a: DistillArgs) -> Result<()> {
    let (train_prompts, eval_prompts) = (prompts(&a.prompts)?, prompts(&a.eval_prompts)?);
    let mut session = crate::open_session(&a.s.model, true, a.json)?;
    let judges = a.s.reward.load(&mut session)?;
    let truth = if judges.is_empty() { None } else { Some(session.rewarder(&alignlab::lab::RewardSpec::Judges(judges))?) };
    let teacher = match (&a.teacher, &a.teacher_answers, a.teacher_best_of) {
        (Some(model), _, _) => {
            let m = ModelArgs { model: model.clone(), tokenizer: a.teacher_tokenizer.clone(), backend: a.s.model.backend, adapter: None };
            let t = crate::open_session(&m, false, a.json).context("loading the teacher")?;
            Teacher::Model(t.lm.clone())
        }
        (_, Some(file), _) => Teacher::Answers(read_data::<Demonstration>(file)?),
        (_, _, Some(n)) => {
            let rewarder = truth.clone().context("--teacher-best-of ranks samples by the judges: give --judge")?;
            if n < 2 {
                bail!("--teacher-best-of needs at least 2 samples to pick from");
            }
            Teacher::BestOfN { n, rewarder }
        }
        _ => bail!("name the teacher: --teacher MODEL, --teacher-answers FILE or --teacher-best-of N"),
    };
    if truth.is_none() && !matches!(teacher, Teacher::Model(_)) {
        bail!("nothing to measure the student by: give --judge, or a teacher model (--teacher)");
    }
    let spec = RunSpec {
        method: Method::Sft,
        train: TrainConfig {
            max_steps: a.max_steps,
            learning_rate: a.learning_rate,
            per_device_train_batch_size: a.batch_size,
            seed: a.s.sampling.seed,
            ..TrainConfig::default()
        },
        lora: Some(a.lora.clone()),
        encoding: a.s.encoding.clone(),
        eval: a.eval.clone(),
        data: TrainData::default(),
    };
    let job = Distill { teacher: &teacher, judges: truth.as_ref(), spec, prompts: &train_prompts, eval_prompts: &eval_prompts, sampling: &a.s.sampling };
    let quiet = a.json;
    let report = block_on(job.run(&mut session, &mut |p| {
        if !quiet {
            match p {
                Progress::Teacher { done, total } => eprint!("\rteacher answered {done}/{total}"),
                Progress::Measuring { stage } => eprintln!("\nmeasuring the student {stage} SFT"),
                Progress::Step { step, steps, loss } => eprintln!("SFT step {step}/{steps}: loss {loss:.3}"),
            }
        }
        true
    }))?
    .expect("never stopped");
    if let Some(path) = &a.demos_out {
        std::fs::write(path, data::export(&report.demos)).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(dir) = &a.output_dir {
        block_on(session.policy.export_adapter(&session.model_name()))?.write_dir(dir).context("saving the student's adapter")?;
    }
    if a.json {
        println!("{}", json!({"demos": report.demos.len(), "teacher": report.teacher, "before": report.before, "after": report.after,
            "recovered_judges": report.recovered_judges, "recovered_teacher": report.recovered_teacher, "examples": report.examples}));
        return Ok(());
    }
    println!("the student learnt from {} teacher answers; on {} held-out prompts:", report.demos.len(), eval_prompts.len());
    let line = |name: &str, f: fn(&alignlab::lab::distill::Scores) -> Option<f64>, gap: Option<f64>| {
        if let (Some(b), Some(a), Some(t)) = (f(&report.before), f(&report.after), f(&report.teacher)) {
            let g = gap.map_or("no gap to recover".into(), |g| format!("{:.0}% of the gap recovered", 100.0 * g));
            println!("  {name:<22} student {b:+.3} -> {a:+.3}   teacher {t:+.3}   ({g})");
        }
    };
    line("judges' mean score", |s| s.judges, report.recovered_judges);
    line("teacher's logp/token", |s| s.teacher_logp, report.recovered_teacher);
    for e in report.examples.iter().take(3) {
        println!("\n=== {}\n  teacher: {}\n  before:  {}\n  after:   {}", e.prompt, e.teacher.trim(), e.before.trim(), e.after.trim());
    }
    Ok(())
}

#[derive(Args)]
pub struct WeakToStrongArgs {
    /// The strong model, the truth (--judge, or --reward-model) and sampling (-n samples per prompt).
    #[command(flatten)]
    pub s: SampleArgs,
    #[arg(long)]
    pub prompts: PathBuf,
    /// The weak critic's judges (repeatable, as --judge): for example a few keywords, include=happy+fun.
    #[arg(long = "weak", value_parser = |s: &str| JudgeSpec::parse_weighted(s).map_err(|e| e.to_string()))]
    pub weak: Vec<(JudgeSpec, f64)>,
    /// Write the weak critic's best-vs-worst pairs here (TRL JSONL): weak labels for DPO.
    #[arg(long)]
    pub pairs_out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn weak_to_strong(a: WeakToStrongArgs) -> Result<()> {
    let list = prompts(&a.prompts)?;
    let mut session = crate::open_session(&a.s.model, false, a.json)?;
    let truth = a.s.reward.rewarder(&mut session)?;
    if a.weak.is_empty() {
        bail!("name the weak critic: --weak include=happy+fun (judges, repeatable)");
    }
    let weak = alignlab::lab::Rewarder::judges(a.weak.clone(), Rc::clone(&session.judge_data))?;
    let mut rows = Vec::with_capacity(list.len());
    block_on(rerank(&session, &a.s.encoding, &list, &a.s.sampling, &weak, &truth, &mut || true, &mut |_, row| rows.push(row)))?;
    let summary = RerankSummary::of(&rows).context("no prompts")?;
    if let Some(path) = &a.pairs_out {
        let pairs: Vec<_> = rows.iter().flat_map(|r| r.weak_pairs(1)).collect();
        std::fs::write(path, data::export(&pairs)).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        println!("{}", json!({"summary": summary, "prompts": rows}));
    } else {
        println!("the truth's mean score of the pick, over {} prompts:", rows.len());
        println!("  at random (the first sample) {:+.3}\n  the weak critic's pick       {:+.3}\n  the truth's own pick         {:+.3}", summary.random, summary.weak, summary.strong);
        if let Some(g) = summary.recovered {
            println!("the weak critic recovered {:.0}% of the gap", 100.0 * g);
        }
        if let Some(acc) = summary.label_accuracy {
            println!("its {} best-vs-worst pairs agree with the truth {:.0}% of the time", summary.pairs, 100.0 * acc);
        }
    }
    Ok(())
}
