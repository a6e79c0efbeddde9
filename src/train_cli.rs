//! The training and evaluation subcommands: `pairs`, `dpo`, `kto`, `reward`, `sft`, `rl`,
//! `best-of-n`, `eval`. A training command builds a [`RunSpec`] from its arguments and steps a
//! [`Run`]; it writes `run.json` (the spec without the data), `metrics.jsonl` (one line per step,
//! TRL's names) and what it trained under `--output-dir`: the adapter in PEFT's layout, a reward
//! model (PEFT SEQ_CLS), or an HF checkpoint for full fine-tuning. With `--save-steps N` it writes
//! a checkpoint every N steps (adapter, optimizer state, step), whole or not at all, so a killed
//! run resumes with `--resume-from` exactly where it was.

use std::path::{Path, PathBuf};

use alignlab::align::Encoding;
use alignlab::align::dpo::DpoConfig;
use alignlab::align::kto::KtoConfig;
use alignlab::align::reward::RewardConfig;
use alignlab::align::rl::RlConfig;
use alignlab::align::train::{Metrics, TrainConfig};
use alignlab::backend::block_on;
use alignlab::data::{self, Demonstration, Preference, PromptOnly, Record, Unpaired};
use alignlab::generate::SamplingConfig;
use alignlab::lab::answers::seeded_each;
use alignlab::io::hf::save_hf;
use alignlab::io::peft::{AdapterFiles, write_atomic};
use alignlab::judges::JudgeSpec;
use alignlab::lab::ensemble::{Combine, MAX_MEMBERS};
use alignlab::lab::handoff::Handoff;
use alignlab::lab::{AdapterFrom, EvalConfig, Method, RewardSpec, Rewarder, Run, RunSpec, Session, TrainData, Which};
use alignlab::model::LoraConfig;
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use serde_json::json;

use crate::checkpoint_cli::{Log, checkpoint, last_logged_step, newest_checkpoint, read_checkpoint_state};
use crate::{ModelArgs, open_session};

/// What every training command takes.
#[derive(Args, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data (TRL JSONL).
    #[arg(long)]
    pub data: PathBuf,
    /// Where metrics.jsonl, run.json and the trained adapter (or model) go.
    #[arg(long)]
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub train: TrainConfig,
    #[command(flatten)]
    pub lora: LoraConfig,
    /// Train every weight instead of adapters (tiny models only).
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub encoding: Encoding,
    #[command(flatten)]
    pub eval: EvalConfig,
    /// Continue a stopped run from DIR: an output directory (its newest checkpoint-N), a
    /// checkpoint-N directory, or an adapter directory. With a checkpoint the run continues
    /// exactly (adapter, AdamW's moments, schedule, batches); from a bare adapter AdamW's moments
    /// start afresh.
    #[arg(long)]
    pub resume_from: Option<PathBuf>,
    /// Save a checkpoint (adapter, optimizer state, step) every N steps into
    /// OUTPUT_DIR/checkpoint-N, written whole then renamed; only the newest is kept. 0 = only
    /// the final adapter.
    #[arg(long, default_value_t = 0)]
    pub save_steps: usize,
    /// Also write the policy with its adapter merged in as an HF checkpoint (OUTPUT_DIR/merged).
    #[arg(long)]
    pub merge: bool,
    /// Also write OUTPUT_DIR/trl: this run's data (split as it was), its adapter and a TRL
    /// script with the same hyperparameters, to take the run further on a GPU box.
    #[arg(long)]
    pub handoff: bool,
    /// The base model the TRL script loads (a hub id, an HF directory or a .gguf file); default
    /// --model as given.
    #[arg(long)]
    pub base_model: Option<String>,
}

/// A training command: the common arguments and the method's own knobs.
#[derive(Args)]
pub struct MethodArgs<C: Args + clap::FromArgMatches> {
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub method: C,
}

/// SFT has no knobs of its own.
#[derive(Args)]
pub struct NoKnobs {}

/// Where rewards come from: judges, or a reward model directory (from `alignlab reward`).
#[derive(Args, Clone)]
pub struct RewardSourceArgs {
    /// Judges (repeatable): sentiment, politeness, profanity, length=N, include=a+b, avoid=a+b,
    /// each optionally *WEIGHT.
    #[arg(long = "judge", value_parser = parse_judge)]
    pub judges: Vec<(JudgeSpec, f64)>,
    /// A reward model adapter directory (from `alignlab reward`) instead of judges. Repeat it
    /// for an ensemble (the member directories `alignlab ensemble` writes), combined by --combine.
    #[arg(long)]
    pub reward_model: Vec<PathBuf>,
    /// How an ensemble's rewards become one: mean, min, or mean-minus-spread (the mean less the
    /// members' standard deviation).
    #[arg(long, value_enum, default_value_t = Combine::Mean)]
    pub combine: Combine,
}

fn parse_judge(s: &str) -> Result<(JudgeSpec, f64), String> {
    JudgeSpec::parse_weighted(s).map_err(|e| e.to_string())
}

impl RewardSourceArgs {
    /// The reward source, with the reward model (if one is named) loaded into the session.
    fn spec(&self, session: &mut Session) -> Result<RewardSpec> {
        let mut heads = Vec::with_capacity(self.reward_model.len());
        for dir in &self.reward_model {
            let files = AdapterFiles::read_dir(dir)?;
            heads.push(session.read_reward_model(&files).with_context(|| format!("loading the reward model {}", dir.display()))?);
        }
        match heads.len() {
            0 if self.judges.is_empty() => bail!("say how to score completions: --judge sentiment (etc.) or --reward-model DIR"),
            0 => Ok(RewardSpec::Judges(self.judges.clone())),
            1 => {
                session.reward_model = heads.pop();
                Ok(RewardSpec::RewardModel)
            }
            n if n > MAX_MEMBERS => bail!("an ensemble has at most {MAX_MEMBERS} members; {n} --reward-model directories were given"),
            _ => {
                session.ensemble = heads;
                Ok(RewardSpec::Ensemble(self.combine))
            }
        }
    }

    /// For scoring finished texts: loads the reward model (if one is named) into the session and
    /// returns the judges, which may be none.
    pub fn load(&self, session: &mut Session) -> Result<Vec<(JudgeSpec, f64)>> {
        if !self.reward_model.is_empty() {
            self.spec(session)?;
        }
        Ok(self.judges.clone())
    }

    pub fn rewarder(&self, session: &mut Session) -> Result<Rewarder> {
        let spec = self.spec(session)?;
        Ok(session.rewarder(&spec)?)
    }
}

#[derive(Args)]
pub struct RlArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub reward: RewardSourceArgs,
    #[command(flatten)]
    pub rl: RlConfig,
}

/// Sampling for best-of-n, pairs and eval.
#[derive(Args, Clone)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub reward: RewardSourceArgs,
    #[command(flatten)]
    pub encoding: Encoding,
    #[command(flatten)]
    pub sampling: SamplingConfig,
}

#[derive(Args)]
pub struct PairsArgs {
    #[command(flatten)]
    pub s: SampleArgs,
    /// Prompts (JSONL with "prompt").
    #[arg(long)]
    pub prompts: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// Pairs per prompt: best vs worst, second best vs second worst, ...
    #[arg(long, default_value_t = 1)]
    pub pairs_per_prompt: usize,
}

#[derive(Args)]
pub struct BestOfNArgs {
    #[command(flatten)]
    pub s: SampleArgs,
    #[arg(long)]
    pub prompt: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub s: SampleArgs,
    #[arg(long)]
    pub prompts: PathBuf,
}

pub fn read_data<T: Record>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let got = data::import::<T>(&text);
    for e in &got.errors {
        eprintln!("warning: {}: {e} (line skipped)", path.display());
    }
    if got.records.is_empty() {
        bail!("{} holds no usable records (fields needed: {})", path.display(), T::FIELDS.join(", "));
    }
    eprintln!("{}: {} records, {} bad lines", path.display(), got.records.len(), got.errors.len());
    Ok(got.records)
}

pub fn dpo(a: MethodArgs<DpoConfig>) -> Result<()> {
    let data = TrainData { pairs: read_data::<Preference>(&a.train.data)?, ..Default::default() };
    train(a.train, Method::Dpo(a.method), data, None)
}

pub fn kto(a: MethodArgs<KtoConfig>) -> Result<()> {
    let data = TrainData { unpaired: read_data::<Unpaired>(&a.train.data)?, ..Default::default() };
    train(a.train, Method::Kto(a.method), data, None)
}

pub fn sft(a: MethodArgs<NoKnobs>) -> Result<()> {
    let data = TrainData { demos: read_data::<Demonstration>(&a.train.data)?, ..Default::default() };
    train(a.train, Method::Sft, data, None)
}

pub fn reward(a: MethodArgs<RewardConfig>) -> Result<()> {
    if a.train.resume_from.is_some() {
        bail!("--resume-from is not supported for reward models yet; start a new run");
    }
    let data = TrainData { pairs: read_data::<Preference>(&a.train.data)?, ..Default::default() };
    train(a.train, Method::Reward(a.method), data, None)
}

pub fn rl(a: RlArgs) -> Result<()> {
    let prompts = read_data::<PromptOnly>(&a.train.data)?.into_iter().map(|p| p.prompt).collect();
    let (cfg, reward) = (a.rl, a.reward);
    train(a.train, Method::Rl { cfg, reward: RewardSpec::RewardModel }, TrainData { prompts, ..Default::default() }, Some(&reward))
}

/// Runs one training command: the spec from the arguments, the run, its log and its files.
/// `reward` names RLHF's reward source once the session is open (it may load a reward model).
fn train(a: TrainArgs, mut method: Method, data: TrainData, reward: Option<&RewardSourceArgs>) -> Result<()> {
    let mut session = open_session(&a.model, true, false)?;
    if let (Method::Rl { cfg, reward: r }, Some(source)) = (&mut method, reward) {
        *r = source.spec(&mut session)?;
        cfg.seed = a.train.seed;
    }
    let mut done = 0;
    let mut restore = None;
    if let Some(from) = &a.resume_from {
        let dir = newest_checkpoint(from)?.unwrap_or_else(|| from.clone());
        let files = AdapterFiles::read_dir(&dir)?;
        let lm = session.lm.clone();
        session.policy.import_adapter(&lm, files.config_json.as_bytes(), &files.safetensors, AdapterFrom::File).with_context(|| format!("resuming from {}", dir.display()))?;
        match read_checkpoint_state(&dir)? {
            (Some(state), Some(optimizer)) => {
                done = state.step;
                eprintln!("resuming from {} at step {done} (adapter, optimizer state and batches as they were)", dir.display());
                restore = Some((state, optimizer));
            }
            (state, _) => {
                done = match state {
                    Some(s) => s.step,
                    None => last_logged_step(&dir)?,
                };
                eprintln!("resuming from {} at step {done}; it has no optimizer state, so AdamW's moments start afresh", dir.display());
            }
        }
    }
    let lora = (!a.full).then(|| LoraConfig { seed: a.train.seed, ..a.lora.clone() });
    let spec = RunSpec { method, train: a.train.clone(), lora, encoding: a.encoding.clone(), eval: a.eval.clone(), data };
    let described = RunSpec { data: TrainData::default(), ..spec.clone() };
    let mut run = Run::new(&session, spec)?;
    match &restore {
        Some((state, optimizer)) => run.restore(state, optimizer)?,
        None => run.resume_at(done),
    }
    // Written once the run can start: a refused resume leaves the output directory as it was.
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating {}", a.output_dir.display()))?;
    write_atomic(&a.output_dir.join("run.json"), serde_json::to_string_pretty(&described)?.as_bytes())?;
    eprintln!("{}: {} trainable parameters, {} examples ({} held out)", run.spec.method.name(), run.trainable(), run.examples(), run.held_out());
    let mut log = Log::new(&a.output_dir, run.total_steps(), done)?;
    let mut last = Metrics::new();
    while !run.is_done() {
        match block_on(run.step()) {
            Ok(m) => {
                log.step(&m)?;
                last = m;
                if a.save_steps > 0 && run.steps_done() % a.save_steps == 0 && !run.is_done() {
                    if !checkpoint(&a.output_dir, &run, &mut session)? {
                        // Reward models and full fine-tunes save their weights only (no exact resume yet).
                        save(&a, &run, &mut session, &Metrics::new())?;
                    }
                }
            }
            Err(e) => {
                log.finish();
                save(&a, &run, &mut session, &last)?;
                eprintln!("error: {e}");
                bail!("training stopped early at step {}; the last good weights are saved", run.steps_done());
            }
        }
    }
    log.finish();
    save(&a, &run, &mut session, &last)
}

/// Writes what the run trained so far into the output directory.
fn save(a: &TrainArgs, run: &Run, session: &mut Session, last: &Metrics) -> Result<()> {
    run.publish(session);
    let out = &a.output_dir;
    if let Method::Reward(_) = run.spec.method {
        let rm = block_on(session.export_reward_model())?;
        rm.write_dir(out)?;
        if a.handoff {
            handoff(a, run, session)?;
        }
        if let Some(acc) = last.get("eval/accuracy") {
            let report = json!({"eval_pairs": run.held_out(), "eval_accuracy": acc});
            println!("{report}");
            write_atomic(&out.join("eval.json"), report.to_string().as_bytes())?;
        }
        eprintln!("reward model saved to {} (PEFT layout, SEQ_CLS with score head)", out.display());
        return Ok(());
    }
    let write_hf = |dir: &Path| -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for (name, bytes) in block_on(save_hf(&session.policy.model, &session.lm.config, &session.lm.tokenizer))? {
            write_atomic(&dir.join(name), &bytes)?;
        }
        Ok(())
    };
    if session.policy.lora().is_some() {
        let adapter = block_on(session.policy.export_adapter(&session.model_name()))?;
        adapter.write_dir(out)?;
        eprintln!("adapter saved to {} (PEFT layout)", out.display());
        if a.handoff {
            handoff(a, run, session)?;
        }
    } else {
        write_hf(&out.join("model"))?;
        eprintln!("model saved to {} (HF safetensors)", out.join("model").display());
        if a.handoff {
            handoff(a, run, session)?;
        }
    }
    if a.merge {
        write_hf(&out.join("merged"))?;
        eprintln!("merged model saved to {} (HF safetensors)", out.join("merged").display());
    }
    Ok(())
}

/// Writes OUTPUT_DIR/trl: the run handed off to TRL (`lab::handoff`).
fn handoff(a: &TrainArgs, run: &Run, session: &Session) -> Result<()> {
    let base_model = a.base_model.clone().unwrap_or_else(|| a.model.model.display().to_string());
    let h = block_on(Handoff::from_session(session, &run.spec, base_model))?;
    let dir = a.output_dir.join("trl");
    for (name, bytes) in h.files()? {
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
        write_atomic(&path, &bytes)?;
    }
    eprintln!("TRL hand-off written to {} (see its README.md)", dir.display());
    Ok(())
}


pub fn pairs(a: PairsArgs) -> Result<()> {
    if a.s.sampling.num_samples < 2 {
        bail!("pairs compares samples: ask for at least 2 per prompt (-n 4, say)");
    }
    let mut session = open_session(&a.s.model, false, false)?;
    let rewarder = a.s.reward.rewarder(&mut session)?;
    let prompts = read_data::<PromptOnly>(&a.prompts)?;
    let mut out = Vec::new();
    let bar = ProgressBar::new(prompts.len() as u64);
    // The prompts' samples decoded together, each prompt's ranked as it is done.
    let mut answers = session.answers(Which::Policy, &a.s.encoding, &seeded_each(prompts.iter().map(|p| p.prompt.as_str()), &a.s.sampling, 0))?;
    while let Some((i, samples)) = block_on(answers.next(&mut || true))? {
        let prompt = prompts[i].prompt.as_str();
        let ranked = block_on(alignlab::lab::label::rank(prompt, answers.ids(i), samples, &rewarder))?;
        out.extend(alignlab::lab::pairs_from_ranking(prompt, &ranked, a.pairs_per_prompt));
        bar.inc(1);
    }
    bar.finish_and_clear();
    std::fs::write(&a.output, data::export(&out)).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("{} pairs from {} prompts written to {}", out.len(), prompts.len(), a.output.display());
    Ok(())
}

pub fn best_of_n(a: BestOfNArgs) -> Result<()> {
    let mut session = open_session(&a.s.model, false, false)?;
    let rewarder = a.s.reward.rewarder(&mut session)?;
    let ranked = block_on(alignlab::lab::best_of_n(&session, Which::Policy, &a.s.encoding, &a.prompt, &a.s.sampling, &rewarder, &mut || true))?;
    if a.json {
        println!("{}", json!({"prompt": a.prompt, "ranked": ranked}));
    } else {
        for (i, r) in ranked.iter().enumerate() {
            println!("#{} score {:+.4}\n{}\n", i + 1, r.score, r.text.trim());
        }
    }
    Ok(())
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let mut session = open_session(&a.s.model, false, false)?;
    let rewarder = a.s.reward.rewarder(&mut session)?;
    let prompts: Vec<String> = read_data::<PromptOnly>(&a.prompts)?.into_iter().map(|p| p.prompt).collect();
    let (policy, reference) = (session.model(Which::Policy), session.model(Which::Reference));
    let (enc, s) = (&a.s.encoding, &a.s.sampling);
    let trained = session.policy.is_trained().then_some(&reference);
    let r = block_on(alignlab::lab::evaluate(&session, &policy, trained, enc, &prompts, s, &rewarder))?;
    let mut report = json!({"prompts": prompts.len(), "samples_per_prompt": s.num_samples, "mean_score": r.mean_score, "kl": r.kl, "mean_length": r.mean_length});
    if session.policy.is_trained() {
        let base = block_on(alignlab::lab::evaluate(&session, &reference, None, enc, &prompts, s, &rewarder))?;
        report["base_mean_score"] = json!(base.mean_score);
        report["base_mean_length"] = json!(base.mean_length);
    }
    println!("{report}");
    Ok(())
}
