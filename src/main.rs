//! `alignlab`: the native command line over the lab. Arguments are the engine's own settings
//! (flattened from the same structs the page edits); every command opens a [`Session`] and
//! blocks once, here at the edge, on the lab's async code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use alignlab::align::Encoding;
use alignlab::backend::{self, BackendKind, block_on};
use alignlab::generate::{DecodePath, Route, SamplingConfig, generate_on};
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
    Bench(BenchArgs),
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

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Bench {
    /// Prefill + decode tokens/s.
    Generate,
    /// Log-prob batches/s.
    Score,
    /// Seconds per LoRA DPO step (--batch pairs of 128 tokens).
    Dpo,
    /// Seconds to load the model: parse and dequantize the file (read from memory), then weights
    /// to the device (what the page does between download and ready).
    Load,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(value_enum)]
    what: Bench,
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Comma-separated backends.
    #[arg(long, value_delimiter = ',', default_value = "ndarray,flex,wgpu")]
    backends: Vec<BackendKind>,
    /// Tokens to decode (generate) or sequence length (score).
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// generate: tokens of the prompt, up to 700 (llama.cpp's script takes 32).
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Batch size (samples decoded together, sequences scored together, or DPO pairs).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// DPO: keep the reference log-probabilities after the first step (false: the reference pass
    /// runs every step, as TRL's default and the PyTorch benchmark do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    precompute_ref_log_probs: bool,
    /// DPO: run each pair's prompt once for both answers (false: twice, as TRL and the PyTorch
    /// benchmark do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    share_prompt: bool,
    /// generate: where the decoding steps run (device: burn's forward pass in f32, the path
    /// before the host decoder; half: the same with the products' weights in f16, on a GPU).
    #[arg(long, value_enum, default_value = "auto")]
    decode: DecodePath,
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
        Command::Bench(a) => cmd_bench(a),
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

/// `alignlab bench load`: the file is read once; each run parses and dequantizes it
/// (`Checkpoint::from_bytes`) and puts the weights on the device (`into_model`), timed apart.
fn bench_load(a: &BenchArgs) -> Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let bytes = read(&a.model)?;
    let tokenizer = a.tokenizer.as_deref().map(read).transpose()?;
    for kind in a.backends.iter().copied() {
        let dev = match backend::open(kind) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{kind}: skipped ({e:#})");
                continue;
            }
        };
        let mut stages = Vec::new();
        let (_, best, median) = timed(a.repeats, &mut || {
            let t = Instant::now();
            let ckpt = alignlab::io::Checkpoint::from_bytes(&bytes, tokenizer.as_deref(), &mut |_, _| {})?;
            let parsed = t.elapsed().as_secs_f64();
            ckpt.into_model(&dev.device, &mut |_, _| {})?;
            stages.push((parsed, t.elapsed().as_secs_f64() - parsed));
            Ok(())
        })?;
        // The stages of the best run. The first run (the warm-up) is the page's case: a fresh
        // process, whose memory the system hands out page by page.
        let &(parse, upload) = stages[1..].iter().min_by(|x, y| (x.0 + x.1).total_cmp(&(y.0 + y.1))).unwrap();
        let (first_parse, first_upload) = stages[0];
        let first = first_parse + first_upload;
        let row = json!({"backend": kind.name(), "device": dev.description, "what": "load", "file_bytes": bytes.len(),
                         "seconds": best, "seconds_median": median, "parse_seconds": parse, "upload_seconds": upload,
                         "first_seconds": first, "first_parse_seconds": first_parse, "first_upload_seconds": first_upload});
        if a.json {
            println!("{row}");
        } else {
            println!("{:8} load       {best:>8.3} s (median {median:.3}; parse and dequantize {parse:.3}, to the device {upload:.3}); \
                      first {first:.3} s ({first_parse:.3} + {first_upload:.3})  {}", kind.name(), dev.description);
        }
    }
    Ok(())
}

/// The best and median of `repeats` timed runs of `f`, after one warm-up run whose result is kept.
/// `f`'s first result and its time (a warm-up, not counted), then the best and median time of
/// `repeats` more calls.
fn timed<T>(repeats: usize, f: &mut dyn FnMut() -> Result<T>) -> Result<((T, f64), f64, f64)> {
    let t = Instant::now();
    let first = (f()?, t.elapsed().as_secs_f64());
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((first, times[0], times[times.len() / 2]))
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    if a.what == Bench::Load {
        return bench_load(&a);
    }
    let mut ran = 0;
    for kind in a.backends.iter().copied() {
        let m = ModelArgs { model: a.model.clone(), tokenizer: a.tokenizer.clone(), backend: kind, adapter: None };
        // The DPO benchmark trains, so its model lives on the autodiff device.
        let session = match open_session(&m, a.what == Bench::Dpo, true) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{kind}: skipped ({e:#})");
                continue;
            }
        };
        let desc = backend::open(kind)?.description;
        let mut ids = session.lm.tokenizer.encode(&"The quick brown fox jumps over the lazy dog. ".repeat(64), true)?;
        let (lm, model) = (&session.lm, session.model(Which::Policy));
        let row = match a.what {
            Bench::Generate => {
                let route = match a.decode.on(&lm.device) {
                    Ok(route) => route,
                    Err(e) => {
                        eprintln!("{kind}: skipped ({e})");
                        continue;
                    }
                };
                if a.prompt_tokens == 0 || a.prompt_tokens > ids.len() {
                    bail!("--prompt-tokens takes 1 to {} (the benchmark's text is that long)", ids.len());
                }
                ids.truncate(a.prompt_tokens);
                let cfg = SamplingConfig { num_samples: a.batch, ..SamplingConfig::greedy(a.tokens) };
                // Each run's time to its first token (the prompt), kept to split the best run as
                // llama.cpp's script does: prefill, then the other tokens' decode rate.
                let mut prefills = Vec::new();
                let ((produced, first_seconds), best, _) = timed(a.repeats, &mut || {
                    let (start, mut first) = (Instant::now(), None);
                    let s = block_on(generate_on(a.decode, &model, &lm.tokenizer, &ids, &cfg, &mut |_| {
                        first.get_or_insert_with(|| start.elapsed().as_secs_f64());
                        true
                    }))?;
                    let total = start.elapsed().as_secs_f64();
                    prefills.push((total, first.unwrap_or(total)));
                    Ok(s.iter().map(|s| s.tokens.len()).sum::<usize>())
                })?;
                // The warm-up's run is the first; the best is the shortest of the rest.
                let (total, prefill) =
                    prefills.iter().skip(1).copied().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap_or((best, best));
                let later = produced.saturating_sub(a.batch) as f64;
                let weights = if route == Route::Host {
                    let base = block_on(alignlab::decode::host_base(&model))?;
                    let (bytes, formats) = base.summary();
                    json!({"bytes_per_token": bytes, "from_file": base.from_file(),
                           "formats": formats.iter().map(|(f, n)| json!({"format": f, "params": n})).collect::<Vec<_>>()})
                } else {
                    json!(null)
                };
                json!({"backend": kind.name(), "device": desc, "what": "generate", "decode": route.name(),
                       "decode_weights": weights, "prompt_tokens": ids.len(),
                       "batch": a.batch, "new_tokens": produced, "seconds": best, "tokens_per_s": produced as f64 / best,
                       "prefill_seconds": prefill, "decode_tokens_per_s": later / (total - prefill),
                       "first_seconds": first_seconds})
            }
            Bench::Score => {
                ids.truncate(a.tokens);
                let half = ids.len() / 2;
                let pairs: Vec<_> = (0..a.batch).map(|_| (ids[..half].to_vec(), ids[half..].to_vec())).collect();
                let ((_, first_seconds), best, _) = timed(a.repeats, &mut || Ok(block_on(completion_logps(&model, session.pad(), &pairs))?))?;
                json!({"backend": kind.name(), "device": desc, "what": "score", "batch": a.batch, "seq_len": ids.len(),
                       "seconds": best, "tokens_per_s": (a.batch * ids.len()) as f64 / best, "first_seconds": first_seconds})
            }
            Bench::Dpo => {
                let mut run = train_cli::bench_dpo_run(&session, a.batch.max(1), alignlab::align::dpo::DpoConfig {
                    precompute_ref_log_probs: a.precompute_ref_log_probs,
                    share_prompt: a.share_prompt,
                    ..Default::default()
                })?;
                let ((first, first_seconds), best, median) = timed(a.repeats, &mut || Ok(block_on(run.step())?))?;
                let pairs = a.batch.max(1);
                // The first step is not counted: it also computes the kept reference values.
                json!({"backend": kind.name(), "device": desc, "what": "dpo", "pairs": pairs, "seq_len": 128, "lora_r": 8,
                       "precompute_ref_log_probs": a.precompute_ref_log_probs, "share_prompt": a.share_prompt,
                       "first_loss": first["loss"], "first_seconds": first_seconds, "seconds": best, "seconds_median": median,
                       "tokens_per_s": (pairs * 2 * 128) as f64 / best})
            }
            Bench::Load => unreachable!("handled by bench_load"),
        };
        if a.json {
            println!("{row}");
        } else if a.what == Bench::Dpo {
            println!("{:8} dpo        {:>8.2} s/step (median {:.2}, first {:.2})  {desc}", kind.name(), row["seconds"].as_f64().unwrap(),
                row["seconds_median"].as_f64().unwrap(), row["first_seconds"].as_f64().unwrap());
        } else {
            println!("{:8} {:10} {:>8.1} tokens/s  ({:.3} s)  {desc}", kind.name(), row["what"].as_str().unwrap(),
                row["tokens_per_s"].as_f64().unwrap(), row["seconds"].as_f64().unwrap());
        }
        ran += 1;
    }
    if ran == 0 {
        bail!("no backend could run the benchmark");
    }
    Ok(())
}
