//! The training and evaluation subcommands: `pairs`, `dpo`, `kto`, `reward`, `sft`, `rl`,
//! `best-of-n`, `eval`. Each training command writes `metrics.jsonl` (one line per step, TRL's
//! names), `run.json` (its configuration) and its adapter in PEFT's layout under `--output-dir`.

use std::io::Write;
use std::path::{Path, PathBuf};

use alignlab::align::best_of_n::{Candidate, best_of_n};
use alignlab::align::dpo::{DpoConfig, DpoLossType, dpo_step, encode_pairs};
use alignlab::align::kto::{KtoConfig, encode_examples, kto_step};
use alignlab::align::reward::{RewardConfig, RewardModel, load_reward_model, reward_step, save_reward_model};
use alignlab::align::rl::{Advantage, KlEstimator, KlPlacement, RlConfig, rl_round};
use alignlab::align::sft::{encode_demos, sft_step};
use alignlab::align::train::{Batches, Metrics, Schedule, TrainConfig, Trainer};
use alignlab::align::{Encoding, Reference};
use alignlab::backend::BackendKind;
use alignlab::data::{self, Demonstration, Preference, PromptOnly, Record, Unpaired};
use alignlab::generate::{SamplingConfig, generate_with};
use alignlab::io::peft;
use alignlab::judges::{JudgeData, JudgeSpec, Judges};
use alignlab::model::{Llama, LoraConfig};
use alignlab::score::{ScoringBatch, sequence_logps};
use alignlab::LoadedModel;
use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::json;

#[derive(Args, Clone)]
pub struct Common {
    /// Model: .gguf, HF directory, or llama2.c .bin (then --tokenizer).
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long, default_value = "flex")]
    pub backend: BackendKind,
    /// Format prompts as chat user turns with the model's template (default when it has one).
    #[arg(long)]
    pub no_chat: bool,
    #[arg(long, default_value_t = 128)]
    pub max_prompt_length: usize,
    #[arg(long, default_value_t = 128)]
    pub max_completion_length: usize,
}

#[derive(Args, Clone)]
pub struct LoraArgs {
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    #[arg(long, default_value_t = 0.05)]
    pub lora_dropout: f64,
    /// Comma-separated: q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.
    #[arg(long, default_value = "q_proj,v_proj")]
    pub target_modules: String,
    #[arg(long)]
    pub use_rslora: bool,
    /// Train every weight instead of adapters (tiny models only).
    #[arg(long)]
    pub full: bool,
}

#[derive(Args, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Training data (TRL JSONL).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub output_dir: PathBuf,
    #[arg(long, default_value_t = 5e-5)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 50)]
    pub max_steps: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1)]
    pub gradient_accumulation_steps: usize,
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// constant, linear or cosine.
    #[arg(long, default_value = "linear")]
    pub lr_scheduler_type: String,
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue a stopped run: load the adapter saved in DIR and go on from its last logged step
    /// (the learning-rate schedule continues; AdamW's moments start afresh).
    #[arg(long)]
    pub resume_from: Option<PathBuf>,
}

#[derive(Args)]
pub struct DpoArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// sigmoid, robust, ipo or hinge.
    #[arg(long, default_value = "sigmoid")]
    pub loss_type: DpoLossType,
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
}

#[derive(Args)]
pub struct KtoArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    #[arg(long, default_value_t = 1.0)]
    pub desirable_weight: f64,
    #[arg(long, default_value_t = 1.0)]
    pub undesirable_weight: f64,
}

#[derive(Args)]
pub struct RewardArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    #[arg(long, default_value_t = 0.0)]
    pub margin: f64,
    #[arg(long, default_value_t = 0.0)]
    pub center_rewards_coefficient: f64,
    /// Fraction of pairs held out to report accuracy on.
    #[arg(long, default_value_t = 0.2)]
    pub eval_fraction: f64,
}

#[derive(Args)]
pub struct SftArgs {
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Args, Clone)]
pub struct RewardSource {
    /// Judges (repeatable): sentiment, politeness, profanity, length=N, include=a+b, avoid=a+b,
    /// each optionally *WEIGHT.
    #[arg(long = "judge")]
    pub judges: Vec<String>,
    /// A reward model adapter directory (from `alignlab reward`) instead of judges.
    #[arg(long)]
    pub reward_model: Option<PathBuf>,
}

#[derive(Args)]
pub struct RlArgs {
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub reward: RewardSource,
    #[arg(long, default_value_t = 4)]
    pub num_generations: usize,
    #[arg(long, default_value_t = 2)]
    pub prompts_per_step: usize,
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 2)]
    pub num_iterations: usize,
    #[arg(long, default_value_t = 0.2)]
    pub epsilon: f64,
    #[arg(long, default_value_t = 0.04)]
    pub beta: f64,
    /// grpo or rloo.
    #[arg(long, default_value = "grpo")]
    pub advantage: String,
    /// k1 or k3.
    #[arg(long, default_value = "k3")]
    pub kl_estimator: String,
    /// loss (GRPO) or reward (PPO/RLOO).
    #[arg(long, default_value = "loss")]
    pub kl_in: String,
}

#[derive(Args)]
pub struct PairsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub reward: RewardSource,
    /// Prompts (JSONL with "prompt").
    #[arg(long)]
    pub prompts: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    #[arg(short = 'n', long = "num-samples", default_value_t = 4)]
    pub n: usize,
    /// Pairs per prompt: best vs worst, second best vs second worst, ...
    #[arg(long, default_value_t = 1)]
    pub pairs_per_prompt: usize,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args)]
pub struct BestOfNArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub reward: RewardSource,
    #[arg(long)]
    pub prompt: String,
    /// A PEFT adapter to apply to the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(short = 'n', long = "num-samples", default_value_t = 8)]
    pub n: usize,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub reward: RewardSource,
    #[arg(long)]
    pub prompts: PathBuf,
    /// A PEFT adapter: evaluates the adapted policy and, for comparison, the base model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(short = 'n', long = "num-samples", default_value_t = 4)]
    pub n: usize,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
}

// ---- shared helpers ----------------------------------------------------------------------------

fn load(c: &Common, autodiff: bool) -> Result<LoadedModel> {
    crate::load(&c.model, c.tokenizer.as_deref(), c.backend, autodiff, false)
}

fn encoding(c: &Common) -> Encoding {
    Encoding { chat: !c.no_chat, max_prompt_length: c.max_prompt_length, max_completion_length: c.max_completion_length }
}

fn read_data<T: Record>(path: &Path) -> Result<Vec<T>> {
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

fn lora_config(a: &LoraArgs, seed: u64) -> LoraConfig {
    LoraConfig {
        r: a.lora_r,
        lora_alpha: a.lora_alpha,
        lora_dropout: a.lora_dropout,
        target_modules: a.target_modules.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        use_rslora: a.use_rslora,
        seed,
    }
}

fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let schedule = match a.lr_scheduler_type.as_str() {
        "constant" => Schedule::Constant,
        "linear" => Schedule::Linear,
        "cosine" => Schedule::Cosine,
        o => bail!("unknown --lr-scheduler-type '{o}'; use constant, linear or cosine"),
    };
    Ok(TrainConfig {
        learning_rate: a.learning_rate,
        weight_decay: a.weight_decay,
        warmup_ratio: a.warmup_ratio,
        lr_scheduler_type: schedule,
        max_grad_norm: a.max_grad_norm,
        gradient_accumulation_steps: a.gradient_accumulation_steps,
        per_device_train_batch_size: a.batch_size,
        max_steps: a.max_steps,
        seed: a.seed,
        ..TrainConfig::default()
    })
}

/// Prepares the policy: adapters (or full training), and the output directory.
fn prepare(a: &TrainArgs, model: &mut Llama) -> Result<Option<LoraConfig>> {
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating {}", a.output_dir.display()))?;
    if let Some(dir) = &a.resume_from {
        let cfg = peft::load_adapter_dir(model, dir).with_context(|| format!("resuming from {}", dir.display()))?;
        eprintln!("resuming from {} at step {}", dir.display(), resumed_step(a)?);
        return Ok(Some(cfg));
    }
    if a.lora.full {
        eprintln!("full fine-tuning: every weight trains");
        return Ok(None);
    }
    let cfg = lora_config(&a.lora, a.seed);
    model.add_lora(&cfg)?;
    eprintln!("LoRA r={} alpha={} on {}: {} trainable parameters", cfg.r, cfg.lora_alpha, cfg.target_modules.join(","), model.num_trainable());
    Ok(Some(cfg))
}

/// The last step logged in `--resume-from`'s metrics.jsonl (0 without one).
fn resumed_step(a: &TrainArgs) -> Result<usize> {
    let Some(dir) = &a.resume_from else { return Ok(0) };
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let last = text.lines().filter(|l| !l.trim().is_empty()).last();
    Ok(last
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["step"].as_f64())
        .map_or(0, |s| s as usize))
}

struct Log {
    file: std::fs::File,
    bar: ProgressBar,
}

impl Log {
    /// Starts `metrics.jsonl` (appending when a run resumes into the same directory).
    fn new(dir: &Path, steps: usize, done: usize) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(done > 0)
            .write(true)
            .truncate(done == 0)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let bar = ProgressBar::new(steps as u64);
        bar.set_position(done as u64);
        bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed} < {eta}] {msg}").unwrap());
        Ok(Self { file, bar })
    }
    fn step(&mut self, m: &Metrics, keys: &[&str]) -> Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(m)?)?;
        let msg: Vec<String> = keys.iter().filter_map(|k| m.get(*k).map(|v| format!("{k} {v:.4}"))).collect();
        self.bar.set_message(msg.join("  "));
        self.bar.inc(1);
        Ok(())
    }
    fn finish(&self) {
        self.bar.finish();
    }
}

fn write_run(dir: &Path, method: &str, extra: serde_json::Value) -> Result<()> {
    std::fs::write(dir.join("run.json"), serde_json::to_string_pretty(&json!({"method": method, "config": extra}))?)?;
    Ok(())
}

fn save_policy(a: &TrainArgs, lm: &LoadedModel, model: &Llama, lora: &Option<LoraConfig>) -> Result<()> {
    let base = a.common.model.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    match lora {
        Some(cfg) => {
            peft::save_adapter_dir(model, cfg, &base, &a.output_dir)?;
            eprintln!("adapter saved to {} (PEFT layout)", a.output_dir.display());
        }
        None => {
            let dir = a.output_dir.join("model");
            alignlab::io::hf::save_hf_dir(model, &lm.config, &lm.tokenizer, &dir)?;
            eprintln!("model saved to {} (HF safetensors)", dir.display());
        }
    }
    Ok(())
}

/// Runs `max_steps` trainer steps, logging each; on a training failure saves what was good.
fn run_loop<M: burn::module::Module>(
    tr: &mut Trainer<M>,
    log: &mut Log,
    keys: &[&str],
    step: &mut dyn FnMut(&mut Trainer<M>) -> alignlab::Result<Metrics>,
) -> Result<()> {
    while !tr.done() {
        match step(tr) {
            Ok(m) => log.step(&m, keys)?,
            Err(e) => {
                log.finish();
                eprintln!("error: {e}");
                return Err(anyhow::anyhow!("training stopped early at step {}; the last good weights are saved", tr.step));
            }
        }
    }
    log.finish();
    Ok(())
}

// ---- commands -------------------------------------------------------------------------------------

/// The part every policy-training command shares: adapters, trainer, shuffled micro-batches of
/// `examples`, metrics log, and saving what was trained (also when training stops early).
fn fit<T: Clone>(
    t: &TrainArgs,
    lm: &LoadedModel,
    method: &str,
    method_cfg: serde_json::Value,
    examples: &[T],
    keys: &[&str],
    loss: &mut dyn FnMut(&Llama, &Reference, &[T], u32) -> alignlab::Result<alignlab::align::train::LossOutput>,
) -> Result<()> {
    let mut model = lm.model.clone();
    let lora = prepare(t, &mut model)?;
    let reference = Reference::for_policy(&model);
    write_run(&t.output_dir, method, json!({method: method_cfg, "train": train_config(t)?, "lora": lora}))?;
    let mut tr = Trainer::new(model, train_config(t)?)?;
    tr.step = resumed_step(t)?;
    let mut batches = Batches::new(examples.len(), t.batch_size, t.seed.wrapping_add(tr.step as u64));
    let mut log = Log::new(&t.output_dir, t.max_steps, tr.step)?;
    let pad = lm.tokenizer.eos_id.unwrap_or(0);
    let res = run_loop(&mut tr, &mut log, keys, &mut |tr| {
        tr.step(&mut |p, _| {
            let batch: Vec<T> = batches.next().into_iter().map(|i| examples[i].clone()).collect();
            loss(p, &reference, &batch, pad)
        })
    });
    save_policy(t, lm, &tr.model, &lora)?;
    res
}

pub fn dpo(a: DpoArgs) -> Result<()> {
    let t = &a.train;
    let lm = load(&t.common, true)?;
    let pairs = encode_pairs(&lm, &encoding(&t.common), &read_data::<Preference>(&t.data)?)?;
    let cfg = DpoConfig { beta: a.beta, loss_type: a.loss_type, label_smoothing: a.label_smoothing };
    fit(t, &lm, "dpo", json!(cfg), &pairs, &["loss", "rewards/margins", "rewards/accuracies"], &mut |p, r, batch, pad| {
        dpo_step(&cfg, p, &r.model(p), batch, pad)
    })
}

pub fn kto(a: KtoArgs) -> Result<()> {
    let t = &a.train;
    if t.batch_size < 2 {
        bail!("KTO needs --batch-size of at least 2 (its KL estimate pairs mismatched examples)");
    }
    let lm = load(&t.common, true)?;
    let ex = encode_examples(&lm, &encoding(&t.common), &read_data::<Unpaired>(&t.data)?)?;
    let cfg = KtoConfig { beta: a.beta, desirable_weight: a.desirable_weight, undesirable_weight: a.undesirable_weight };
    fit(t, &lm, "kto", json!(cfg), &ex, &["loss", "rewards/margins", "kl"], &mut |p, r, batch, pad| {
        kto_step(&cfg, p, &r.model(p), batch, pad)
    })
}

pub fn sft(a: SftArgs) -> Result<()> {
    let t = &a.train;
    let lm = load(&t.common, true)?;
    let demos = encode_demos(&lm, &encoding(&t.common), &read_data::<Demonstration>(&t.data)?)?;
    fit(t, &lm, "sft", json!({}), &demos, &["loss", "mean_token_accuracy"], &mut |p, _, batch, pad| sft_step(p, batch, pad))
}

pub fn reward(a: RewardArgs) -> Result<()> {
    let t = &a.train;
    if t.lora.full {
        bail!("reward models train with LoRA adapters here (drop --full)");
    }
    if t.resume_from.is_some() {
        bail!("--resume-from is not supported for reward models yet; start a new run");
    }
    let lm = load(&t.common, true)?;
    let mut pairs = encode_pairs(&lm, &encoding(&t.common), &read_data::<Preference>(&t.data)?)?;
    pairs.shuffle(&mut rand::rngs::StdRng::seed_from_u64(t.seed));
    let n_eval = ((pairs.len() as f64 * a.eval_fraction).round() as usize).min(pairs.len().saturating_sub(1));
    let eval = pairs.split_off(pairs.len() - n_eval);
    let mut backbone = lm.model.clone();
    let lora = prepare(t, &mut backbone)?.expect("LoRA");
    let cfg = RewardConfig { margin: a.margin, center_rewards_coefficient: a.center_rewards_coefficient };
    write_run(&t.output_dir, "reward", json!({"reward": cfg, "train": train_config(t)?, "lora": lora}))?;
    let mut tr = Trainer::new(RewardModel::new(backbone, t.seed), train_config(t)?)?;
    let mut batches = Batches::new(pairs.len(), t.batch_size, t.seed);
    let mut log = Log::new(&t.output_dir, t.max_steps, 0)?;
    let pad = lm.tokenizer.eos_id.unwrap_or(0);
    let res = run_loop(&mut tr, &mut log, &["loss", "accuracy", "margin"], &mut |tr| {
        tr.step(&mut |rm, _| {
            let batch: Vec<_> = batches.next().into_iter().map(|i| pairs[i].clone()).collect();
            reward_step(&cfg, rm, &batch, pad)
        })
    });
    let base = t.common.model.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let files = save_reward_model(&tr.model, &lora, &base)?;
    std::fs::write(t.output_dir.join("adapter_config.json"), files.config_json)?;
    std::fs::write(t.output_dir.join("adapter_model.safetensors"), files.safetensors)?;
    if !eval.is_empty() {
        let mut correct = 0;
        for p in &eval {
            let r = tr.model.score_pairs(&[(p.prompt.clone(), p.chosen.clone()), (p.prompt.clone(), p.rejected.clone())], pad)?;
            correct += usize::from(r[0] > r[1]);
        }
        let acc = correct as f64 / eval.len() as f64;
        println!("{}", json!({"eval_pairs": eval.len(), "eval_accuracy": acc}));
        std::fs::write(t.output_dir.join("eval.json"), json!({"eval_pairs": eval.len(), "eval_accuracy": acc}).to_string())?;
    }
    eprintln!("reward model saved to {} (PEFT layout, SEQ_CLS with score head)", t.output_dir.display());
    res
}

/// The judges or a reward model as one scoring function.
struct Scorer {
    data: JudgeData,
    specs: Vec<(JudgeSpec, f64)>,
    rm: Option<RewardModel>,
    pad: u32,
}

impl Scorer {
    fn new(src: &RewardSource, lm: &LoadedModel) -> Result<Self> {
        let pad = lm.tokenizer.eos_id.unwrap_or(0);
        if let Some(dir) = &src.reward_model {
            let read = |n: &str| std::fs::read(dir.join(n)).with_context(|| format!("reading {}", dir.join(n).display()));
            let backbone = burn::module::Module::no_grad(lm.model.clone());
            let (rm, _) = load_reward_model(backbone, &read("adapter_config.json")?, &read("adapter_model.safetensors")?)?;
            return Ok(Self { data: JudgeData::from_texts(None, None)?, specs: vec![], rm: Some(rm), pad });
        }
        if src.judges.is_empty() {
            bail!("say how to score completions: --judge sentiment (etc.) or --reward-model DIR");
        }
        let specs = src.judges.iter().map(|s| JudgeSpec::parse_weighted(s)).collect::<alignlab::Result<Vec<_>>>()?;
        let data = JudgeData::load(Path::new("models/judges"))?;
        Judges::new(specs.clone(), &data)?; // validates the data is there
        Ok(Self { data, specs, rm: None, pad })
    }

    fn score(&self, cands: &[Candidate]) -> alignlab::Result<Vec<f64>> {
        match &self.rm {
            Some(rm) => {
                let pairs: Vec<_> = cands.iter().map(|c| (c.prompt_ids.to_vec(), c.completion_ids.to_vec())).collect();
                Ok(rm.score_pairs(&pairs, self.pad)?.into_iter().map(f64::from).collect())
            }
            None => {
                let j = Judges::new(self.specs.clone(), &self.data)?;
                Ok(cands.iter().map(|c| j.score(c.completion)).collect())
            }
        }
    }
}

pub fn rl(a: RlArgs) -> Result<()> {
    let t = &a.train;
    let lm = load(&t.common, true)?;
    let enc = encoding(&t.common);
    let prompts: Vec<(String, Vec<u32>)> = read_data::<PromptOnly>(&t.data)?
        .into_iter()
        .map(|p| Ok((p.prompt.clone(), enc.prompt(&lm, &p.prompt)?)))
        .collect::<alignlab::Result<_>>()?;
    let scorer = Scorer::new(&a.reward, &lm)?;
    let mut model = lm.model.clone();
    let lora = prepare(t, &mut model)?;
    let reference = Reference::for_policy(&model);
    let cfg = RlConfig {
        num_generations: a.num_generations,
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: 1.0,
        num_iterations: a.num_iterations,
        epsilon: a.epsilon,
        beta: a.beta,
        advantage: match a.advantage.as_str() {
            "grpo" => Advantage::Grpo,
            "rloo" => Advantage::Rloo,
            o => bail!("unknown --advantage '{o}'; use grpo or rloo"),
        },
        kl_estimator: match a.kl_estimator.as_str() {
            "k1" => KlEstimator::K1,
            "k3" => KlEstimator::K3,
            o => bail!("unknown --kl-estimator '{o}'; use k1 or k3"),
        },
        kl_in: match a.kl_in.as_str() {
            "loss" => KlPlacement::Loss,
            "reward" => KlPlacement::Reward,
            o => bail!("unknown --kl-in '{o}'; use loss or reward"),
        },
        seed: t.seed,
    };
    let mut tc = train_config(t)?;
    // --max-steps counts rounds of sampling; each round takes num_iterations optimizer steps.
    tc.max_steps = t.max_steps * cfg.num_iterations.max(1);
    write_run(&t.output_dir, "rl", json!({"rl": cfg, "train": tc, "lora": lora, "judges": a.reward.judges}))?;
    let mut tr = Trainer::new(model, tc)?;
    let rounds_done = resumed_step(t)? / cfg.num_iterations.max(1);
    tr.step = rounds_done * cfg.num_iterations.max(1);
    let mut batches = Batches::new(prompts.len(), a.prompts_per_step, t.seed.wrapping_add(rounds_done as u64));
    let mut log = Log::new(&t.output_dir, t.max_steps, rounds_done)?;
    let mut result = Ok(());
    for _ in rounds_done..t.max_steps {
        let batch: Vec<_> = batches.next().into_iter().map(|i| prompts[i].clone()).collect();
        match rl_round(&cfg, &mut tr, &reference, &lm.tokenizer, &batch, &mut |c| scorer.score(c)) {
            Ok(m) => log.step(&m, &["reward", "kl", "clip_ratio"])?,
            Err(e) => {
                eprintln!("error: {e}");
                result = Err(anyhow::anyhow!("training stopped early; the last good weights are saved"));
                break;
            }
        }
    }
    log.finish();
    save_policy(t, &lm, &tr.model, &lora)?;
    result
}

fn sampling(n: usize, max_new_tokens: usize, temperature: f32, seed: u64) -> SamplingConfig {
    SamplingConfig { max_new_tokens, temperature, top_p: 1.0, top_k: 0, repetition_penalty: 1.0, seed, num_samples: n }
}

pub fn pairs(a: PairsArgs) -> Result<()> {
    let lm = load(&a.common, false)?;
    let enc = encoding(&a.common);
    let scorer = Scorer::new(&a.reward, &lm)?;
    let prompts = read_data::<PromptOnly>(&a.prompts)?;
    let mut out = Vec::new();
    let bar = ProgressBar::new(prompts.len() as u64);
    for (i, p) in prompts.iter().enumerate() {
        let ids = enc.prompt(&lm, &p.prompt)?;
        let s = sampling(a.n, a.max_new_tokens, a.temperature, a.seed.wrapping_add(i as u64));
        let ranked = best_of_n(&lm.model, &lm.tokenizer, &p.prompt, &ids, &s, &mut |c| scorer.score(c))?;
        for k in 0..a.pairs_per_prompt.min(ranked.len() / 2) {
            let (best, worst) = (&ranked[k], &ranked[ranked.len() - 1 - k]);
            if best.score > worst.score && !best.text.trim().is_empty() && !worst.text.trim().is_empty() {
                out.push(Preference { prompt: p.prompt.clone(), chosen: best.text.clone(), rejected: worst.text.clone() });
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    std::fs::write(&a.output, data::export(&out)).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!("{} pairs from {} prompts written to {}", out.len(), prompts.len(), a.output.display());
    Ok(())
}

pub fn best_of_n_cmd(a: BestOfNArgs) -> Result<()> {
    let mut lm = load(&a.common, false)?;
    crate::apply_adapter(&mut lm, a.adapter.as_deref(), false)?;
    let scorer = Scorer::new(&a.reward, &lm)?;
    let ids = encoding(&a.common).prompt(&lm, &a.prompt)?;
    let s = sampling(a.n, a.max_new_tokens, a.temperature, a.seed);
    let ranked = best_of_n(&lm.model, &lm.tokenizer, &a.prompt, &ids, &s, &mut |c| scorer.score(c))?;
    if a.json {
        println!("{}", json!({"prompt": a.prompt, "ranked": ranked}));
    } else {
        for (i, r) in ranked.iter().enumerate() {
            println!("#{} score {:+.4}\n{}\n", i + 1, r.score, r.text.trim());
        }
    }
    Ok(())
}

/// Mean score of fresh samples, and the mean sequence KL(policy || reference) on them.
fn evaluate(lm: &LoadedModel, model: &Llama, reference: &Llama, a: &EvalArgs, prompts: &[PromptOnly], scorer: &Scorer) -> Result<(f64, f64, f64)> {
    let enc = encoding(&a.common);
    let pad = lm.tokenizer.eos_id.unwrap_or(0);
    let (mut scores, mut kls, mut lens) = (Vec::new(), Vec::new(), Vec::new());
    for (i, p) in prompts.iter().enumerate() {
        let ids = enc.prompt(lm, &p.prompt)?;
        let samples = generate_with(model, &lm.tokenizer, &ids, &sampling(a.n, a.max_new_tokens, a.temperature, a.seed + i as u64), &mut |_| true)?;
        let cands: Vec<Candidate> = samples.iter().map(|s| Candidate { prompt: &p.prompt, prompt_ids: &ids, completion: &s.text, completion_ids: &s.tokens }).collect();
        scores.extend(scorer.score(&cands)?);
        let pairs: Vec<_> = samples.iter().filter(|s| !s.tokens.is_empty()).map(|s| (ids.clone(), s.tokens.clone())).collect();
        if !pairs.is_empty() {
            let sb = ScoringBatch::new(&pairs, pad, &lm.device)?;
            let kl = alignlab::backend::read_f32(sequence_logps(model, &sb) - sequence_logps(reference, &sb))?;
            kls.extend(kl.into_iter().map(f64::from));
        }
        lens.extend(samples.iter().map(|s| s.tokens.len() as f64));
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    Ok((mean(&scores), mean(&kls), mean(&lens)))
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let mut lm = load(&a.common, false)?;
    crate::apply_adapter(&mut lm, a.adapter.as_deref(), false)?;
    let scorer = Scorer::new(&a.reward, &lm)?;
    let prompts = read_data::<PromptOnly>(&a.prompts)?;
    let reference = lm.model.reference();
    let (score, kl, len) = evaluate(&lm, &lm.model, &reference, &a, &prompts, &scorer)?;
    let mut report = json!({"prompts": prompts.len(), "samples_per_prompt": a.n, "mean_score": score, "kl": kl, "mean_length": len});
    if a.adapter.is_some() {
        let (base_score, _, base_len) = evaluate(&lm, &reference, &reference, &a, &prompts, &scorer)?;
        report["base_mean_score"] = json!(base_score);
        report["base_mean_length"] = json!(base_len);
    }
    println!("{report}");
    Ok(())
}
