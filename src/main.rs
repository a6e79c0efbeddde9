//! `alignlab`: the native command line over the lab. Arguments are the engine's own settings
//! (flattened from the same structs the page edits); every command opens a [`Session`] and
//! blocks once, here at the edge, on the lab's async code.

use std::io::Write;
use std::path::{Path, PathBuf};

use alignlab::align::Encoding;
use alignlab::backend::{self, BackendKind, block_on};
use alignlab::generate::SamplingConfig;
use alignlab::io::load_checkpoint;
use alignlab::io::peft::AdapterFiles;
use alignlab::judges::JudgeData;
use alignlab::lab::{AdapterFrom, Session, Which};
use alignlab::logps::completion_logps;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

/// Training allocates and frees tensors of the same few sizes at every step (the logits alone are
/// ~100 MB). The system allocator maps each large block fresh and unmaps it on free, so every step
/// page-faults its memory in again (2.9 M faults in `alignlab bench dpo`); mimalloc, told never to
/// purge (see [`keep_freed_memory`]), hands it to the next tensor (3 k faults).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc.h's `mi_option_purge_delay` (the same in its v2 and v3), which libmimalloc-sys does
/// not name: milliseconds before freed memory goes back to the OS, -1 for never. Any delay still
/// purged the big blocks between one step's use and the next (18 s of system time in the bench).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's integer options; valid at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

mod bench_cli;
mod checkpoint_cli;
mod constitution_cli;
mod distill_cli;
mod docs_cli;
mod ensemble_cli;
mod groups_cli;
mod lab_cli;
mod pipeline_cli;
mod probes_cli;
mod prompts_cli;
mod train_cli;

#[derive(Parser)]
#[command(name = "alignlab", version, about = "An alignment lab for small LLMs, on burn")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Generate(GenerateArgs),
    /// Per-token log-probabilities of a completion given a prompt.
    Logprobs(LogprobsArgs),
    /// Describe a checkpoint: architecture, parameters, tensor types, tokenizer, chat template.
    Info(InfoArgs),
    /// Measure throughput (a benchmark, not a test).
    Bench(bench_cli::BenchArgs),
    /// Sample N answers per prompt, score them with judges or a reward model, write best-vs-worst pairs (JSONL).
    Pairs(train_cli::PairsArgs),
    /// Direct Preference Optimization on prompt/chosen/rejected pairs.
    Dpo(train_cli::MethodArgs<alignlab::align::dpo::DpoConfig>),
    /// KTO on unpaired thumbs-up/down data (prompt/completion/label).
    Kto(train_cli::MethodArgs<alignlab::align::kto::KtoConfig>),
    /// Train a reward model (Bradley-Terry) on preference pairs.
    Reward(train_cli::MethodArgs<alignlab::align::reward::RewardConfig>),
    /// Supervised fine-tuning on prompt/completion demonstrations.
    Sft(train_cli::MethodArgs<train_cli::NoKnobs>),
    /// Online RL (GRPO/RLOO with PPO clipping and a KL leash) against judges or a reward model.
    Rl(train_cli::RlArgs),
    /// Generate N answers and rank them by judges or a reward model.
    BestOfN(train_cli::BestOfNArgs),
    /// Mean judge/reward score of fresh samples, and KL to the reference.
    Eval(train_cli::EvalArgs),
    /// One question under prompt variants (system prompt, examples, step by step), side by side.
    Prompts(prompts_cli::PromptsArgs),
    /// Retrieval over local documents (BM25): search, answer with and without them, a fact set.
    Docs(docs_cli::DocsArgs),
    /// Adversarial probes before and after alignment (the --adapter), judged; pairs against what triggers.
    Probes(probes_cli::ProbesArgs),
    /// Whose preferences: rater groups' agreement, one DPO adapter per group and one merged, each on every group's held-out pairs.
    Groups(groups_cli::GroupsArgs),
    /// Distillation: SFT on a teacher's answers (a second model, a file, the best of N), the gap recovered on held-out prompts.
    Distill(distill_cli::DistillArgs),
    /// Weak-to-strong: a weak critic picks among the model's samples; how good its picks are by the judges.
    WeakToStrong(distill_cli::WeakToStrongArgs),
    /// A curriculum: preference pairs ordered by a reward source's margin (easy or hard first), for --in-order training.
    Curriculum(pipeline_cli::CurriculumArgs),
    /// Stages one after another on one policy (sft, reward, rl, dpo, kto), each measured on held-out prompts and saved.
    Pipeline(pipeline_cli::PipelineArgs),
    /// Reward-model ensembles: several reward models (seeds or bootstrap), held-out accuracy alone and combined, where they disagree.
    Ensemble(ensemble_cli::EnsembleArgs),
    /// Self-alignment: the model judges its own answers against written principles (P(yes)); pairs by self-score.
    Constitution(constitution_cli::ConstitutionArgs),
    /// Lab files (lessons): list the built-in ones, check a teacher's, show one as text.
    Lab(lab_cli::LabArgs),
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A .gguf file, an HF directory (config.json + model.safetensors + tokenizer.json), or a
    /// llama2.c .bin (then --tokenizer).
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// Tokenizer file (tokenizer.json or llama2.c tokenizer.bin) replacing the model's own.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Compute backend: ndarray, flex (CPU) or wgpu (Vulkan; lavapipe without a GPU).
    #[arg(long, default_value = "flex")]
    pub backend: BackendKind,
    /// A LoRA adapter directory in PEFT's layout (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct PromptArgs {
    #[arg(long)]
    prompt: String,
    /// Format the prompt with the model's chat template (as the user turn).
    #[arg(long)]
    chat: bool,
    /// System message for --chat (otherwise the template's default).
    #[arg(long, default_value = "")]
    system: String,
}

impl PromptArgs {
    fn encoding(&self) -> Encoding {
        Encoding::untruncated(self.chat, &self.system)
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    sampling: SamplingConfig,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LogprobsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[arg(long)]
    completion: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct InfoArgs {
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Generate(a) => cmd_generate(a),
        Command::Logprobs(a) => cmd_logprobs(a),
        Command::Info(a) => cmd_info(a),
        Command::Bench(a) => bench_cli::bench(a),
        Command::Pairs(a) => train_cli::pairs(a),
        Command::Dpo(a) => train_cli::dpo(a),
        Command::Kto(a) => train_cli::kto(a),
        Command::Reward(a) => train_cli::reward(a),
        Command::Sft(a) => train_cli::sft(a),
        Command::Rl(a) => train_cli::rl(a),
        Command::BestOfN(a) => train_cli::best_of_n(a),
        Command::Eval(a) => train_cli::eval(a),
        Command::Lab(a) => lab_cli::lab(a),
        Command::Prompts(a) => prompts_cli::prompts(a),
        Command::Docs(a) => docs_cli::docs(a),
        Command::Probes(a) => probes_cli::probes(a),
        Command::Groups(a) => groups_cli::groups(a),
        Command::Constitution(a) => constitution_cli::constitution(a),
        Command::Ensemble(a) => ensemble_cli::ensemble(a),
        Command::Curriculum(a) => pipeline_cli::curriculum(a),
        Command::Pipeline(a) => pipeline_cli::pipeline(a),
        Command::Distill(a) => distill_cli::distill(a),
        Command::WeakToStrong(a) => distill_cli::weak_to_strong(a),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn progress_bar(quiet: bool) -> impl FnMut(&str, f32) {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(1000) };
    bar.set_style(ProgressStyle::with_template("{msg:>12} [{bar:40}] {percent:>3}%").unwrap().progress_chars("=> "));
    move |stage: &str, frac: f32| {
        bar.set_message(stage.to_string());
        bar.set_position((frac * 1000.0) as u64);
        if stage == "upload" && frac >= 1.0 {
            bar.finish_and_clear();
        }
    }
}

/// Opens a session on `m` (on the autodiff device for training), with its adapter installed and
/// the judges' word lists from models/judges. Every command starts here.
pub fn open_session(m: &ModelArgs, autodiff: bool, quiet: bool) -> Result<Session> {
    if !m.model.exists() {
        bail!("model '{}' not found; run scripts/setup to fetch the default model, or pass --model", m.model.display());
    }
    let dev = backend::open(m.backend)?;
    let device = if autodiff { dev.device.autodiff() } else { dev.device };
    let mut progress = progress_bar(quiet);
    let ckpt = load_checkpoint(&m.model, m.tokenizer.as_deref(), &mut progress).with_context(|| format!("loading {}", m.model.display()))?;
    let mut lm = ckpt.into_model(&device, &mut progress)?;
    lm.info.name.get_or_insert_with(|| m.model.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    if !quiet {
        eprintln!("{} on {}", m.model.display(), dev.description);
        for w in &lm.tokenizer.warnings {
            eprintln!("warning: {w}");
        }
    }
    let mut session = Session::new(lm, std::rc::Rc::new(JudgeData::load(Path::new("models/judges"))?));
    if let Some(dir) = &m.adapter {
        let files = AdapterFiles::read_dir(dir)?;
        let lm = session.lm.clone();
        let cfg = session.policy.import_adapter(&lm, files.config_json.as_bytes(), &files.safetensors, AdapterFrom::File).with_context(|| format!("loading adapter {}", dir.display()))?;
        if !quiet {
            eprintln!("adapter {}: LoRA r={} on {}", dir.display(), cfg.r, cfg.target_modules.join(","));
        }
    }
    Ok(session)
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let session = open_session(&a.model, false, a.json)?;
    if a.prompt.chat && session.lm.chat_template.is_none() {
        eprintln!("warning: this model has no chat template; the prompt is used as plain text");
    }
    let stream = !a.json && a.sampling.num_samples == 1;
    let mut out = std::io::stdout();
    let (prompt, samples) = block_on(session.generate(Which::Policy, &a.prompt.encoding(), &a.prompt.prompt, &a.sampling, &mut |ev| {
        if stream {
            let _ = write!(out, "{}", ev.text_delta);
            let _ = out.flush();
        }
        true
    }))?;
    if a.json {
        let samples: Vec<_> = samples.iter().map(|s| json!({"tokens": s.tokens, "text": s.text, "finish_reason": s.finish_reason})).collect();
        println!("{}", json!({"prompt_tokens": prompt, "samples": samples}));
    } else if stream {
        println!();
    } else {
        for (i, s) in samples.iter().enumerate() {
            println!("--- sample {} ({} tokens) ---\n{}", i + 1, s.tokens.len(), s.text);
        }
    }
    Ok(())
}

fn cmd_logprobs(a: LogprobsArgs) -> Result<()> {
    let session = open_session(&a.model, false, a.json)?;
    let prompt = session.prompt_ids(&a.prompt.encoding(), &a.prompt.prompt)?;
    let completion = session.lm.tokenizer.encode(&a.completion, false)?;
    if completion.is_empty() {
        bail!("the completion is empty; give some text to score");
    }
    let pairs = [(prompt.clone(), completion.clone())];
    let scored = block_on(completion_logps(&session.model(Which::Policy), session.pad(), &pairs))?.remove(0);
    if a.json {
        println!("{}", json!({"prompt_tokens": prompt, "completion_tokens": completion, "logprobs": scored.logprobs, "sum": scored.sum}));
    } else {
        for (t, lp) in completion.iter().zip(&scored.logprobs) {
            println!("{:>8} {:>10.4}  {:?}", t, lp, session.lm.tokenizer.decode(&[*t]));
        }
        println!("sum {:.4}", scored.sum);
    }
    Ok(())
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let ckpt = load_checkpoint(&a.model, a.tokenizer.as_deref(), &mut |_, _| {})?;
    if a.json {
        println!("{}", ckpt.describe_json());
    } else {
        println!("{}", ckpt.describe());
    }
    Ok(())
}

