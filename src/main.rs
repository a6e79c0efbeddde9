//! `alignlab`: the native command line over the engine.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use alignlab::backend::{self, BackendKind};
use alignlab::generate::{SamplingConfig, generate};
use alignlab::io::load_checkpoint;
use alignlab::{LoadedModel, score};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

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
    Dpo(train_cli::DpoArgs),
    /// KTO on unpaired thumbs-up/down data (prompt/completion/label).
    Kto(train_cli::KtoArgs),
    /// Train a reward model (Bradley-Terry) on preference pairs.
    Reward(train_cli::RewardArgs),
    /// Supervised fine-tuning on prompt/completion demonstrations.
    Sft(train_cli::SftArgs),
    /// Online RL (GRPO/RLOO with PPO clipping and a KL leash) against judges or a reward model.
    Rl(train_cli::RlArgs),
    /// Generate N answers and rank them by judges or a reward model.
    BestOfN(train_cli::BestOfNArgs),
    /// Mean judge/reward score of fresh samples, and KL to the reference.
    Eval(train_cli::EvalArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A .gguf file, an HF directory (config.json + model.safetensors + tokenizer.json), or a
    /// llama2.c .bin (then --tokenizer).
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// Tokenizer file (tokenizer.json or llama2.c tokenizer.bin) replacing the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Compute backend: ndarray, flex (CPU) or wgpu (Vulkan; lavapipe without a GPU).
    #[arg(long, default_value = "flex")]
    backend: BackendKind,
    /// A LoRA adapter directory in PEFT's layout (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    adapter: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct PromptArgs {
    #[arg(long)]
    prompt: String,
    /// Format the prompt with the model's chat template (as the user turn).
    #[arg(long)]
    chat: bool,
    /// System message for --chat (otherwise the template's default).
    #[arg(long)]
    system: Option<String>,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples, decoded together in one batch.
    #[arg(short = 'n', long = "num-samples", default_value_t = 1)]
    n: usize,
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

#[derive(Args)]
struct BenchArgs {
    /// What to measure: `generate` (prefill + decode tokens/s), `score` (log-prob batches/s) or
    /// `dpo` (seconds per LoRA DPO step; --batch pairs of 128 tokens).
    what: String,
    #[arg(long, default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Comma-separated backends.
    #[arg(long, default_value = "ndarray,flex,wgpu")]
    backends: String,
    /// Tokens to decode (generate) or sequence length (score).
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Batch size (samples decoded together, or sequences scored together).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long)]
    json: bool,
}

fn main() {
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
        Command::BestOfN(a) => train_cli::best_of_n_cmd(a),
        Command::Eval(a) => train_cli::eval(a),
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

fn load_with_adapter(m: &ModelArgs, quiet: bool) -> Result<LoadedModel> {
    let mut lm = load(&m.model, m.tokenizer.as_deref(), m.backend, false, quiet)?;
    apply_adapter(&mut lm, m.adapter.as_deref(), quiet)?;
    Ok(lm)
}

/// Installs a PEFT adapter from `dir`, if one is given.
fn apply_adapter(lm: &mut LoadedModel, dir: Option<&Path>, quiet: bool) -> Result<()> {
    if let Some(dir) = dir {
        let cfg = alignlab::io::peft::load_adapter_dir(&mut lm.model, dir).with_context(|| format!("loading adapter {}", dir.display()))?;
        if !quiet {
            eprintln!("adapter {}: LoRA r={} on {}", dir.display(), cfg.r, cfg.target_modules.join(","));
        }
    }
    Ok(())
}

/// Loads a model onto `kind`'s device (with autodiff for training), with a progress bar unless
/// `quiet`. Every subcommand loads through here.
fn load(model: &Path, tokenizer: Option<&Path>, kind: BackendKind, autodiff: bool, quiet: bool) -> Result<LoadedModel> {
    if !model.exists() {
        bail!(
            "model '{}' not found; run scripts/setup to fetch the default model, or pass --model",
            model.display()
        );
    }
    let dev = backend::open(kind)?;
    let device = if autodiff { dev.device.autodiff() } else { dev.device };
    let mut progress = progress_bar(quiet);
    let ckpt = load_checkpoint(model, tokenizer, &mut progress).with_context(|| format!("loading {}", model.display()))?;
    let lm = ckpt.into_model(&device, &mut progress)?;
    if !quiet {
        eprintln!("{} on {}", model.display(), dev.description);
        for w in &lm.tokenizer.warnings {
            eprintln!("warning: {w}");
        }
    }
    Ok(lm)
}

fn prompt_ids(lm: &LoadedModel, p: &PromptArgs) -> Result<Vec<u32>> {
    Ok(lm.prompt_ids(&p.prompt, p.system.as_deref(), p.chat)?)
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let lm = load_with_adapter(&a.model, a.json)?;
    let prompt = prompt_ids(&lm, &a.prompt)?;
    let cfg = SamplingConfig {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
        num_samples: a.n,
    };
    let stream = !a.json && a.n == 1;
    let mut out = std::io::stdout();
    let samples = generate(&lm, &prompt, &cfg, &mut |ev| {
        if stream {
            let _ = write!(out, "{}", ev.text_delta);
            let _ = out.flush();
        }
        true
    })?;
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
    let lm = load_with_adapter(&a.model, a.json)?;
    let prompt = prompt_ids(&lm, &a.prompt)?;
    let completion = lm.tokenizer.encode(&a.completion, false)?;
    if completion.is_empty() {
        bail!("the completion is empty; give some text to score");
    }
    let scored = score::score(&lm, &[(prompt.clone(), completion.clone())])?.remove(0);
    if a.json {
        println!(
            "{}",
            json!({"prompt_tokens": prompt, "completion_tokens": completion, "logprobs": scored.logprobs, "sum": scored.sum})
        );
    } else {
        for (t, lp) in completion.iter().zip(&scored.logprobs) {
            println!("{:>8} {:>10.4}  {:?}", t, lp, lm.tokenizer.decode(&[*t]));
        }
        println!("sum {:.4}", scored.sum);
    }
    Ok(())
}

fn cmd_info(a: InfoArgs) -> Result<()> {
    let mut quiet = |_: &str, _: f32| {};
    let ckpt = load_checkpoint(&a.model, a.tokenizer.as_deref(), &mut quiet)?;
    let c = &ckpt.config;
    let tok = ckpt.tokenizer.as_ref();
    let special = |id: Option<u32>| id.and_then(|i| tok?.id_to_token(i).map(|s| format!("{s} ({i})")));
    let v = json!({
        "format": ckpt.info.format,
        "name": ckpt.info.name,
        "architecture": "llama",
        "parameters": c.num_parameters(),
        "config": c,
        "tensor_types": ckpt.info.tensor_types,
        "file_bytes": ckpt.info.file_bytes,
        "tokenizer": tok.map(|t| json!({
            "kind": t.kind, "vocab_size": t.vocab_size(), "bos": special(t.bos_id), "eos": special(t.eos_id),
            "add_bos": t.add_bos, "stop_ids": t.stop_ids, "warnings": t.warnings,
        })),
        "chat_template": ckpt.chat_template.as_ref().map(|t| t.source.clone()),
    });
    if a.json {
        println!("{v}");
        return Ok(());
    }
    println!("format        {}", ckpt.info.format);
    if let Some(n) = &ckpt.info.name {
        println!("name          {n}");
    }
    println!("architecture  llama: {} layers, hidden {}, ffn {}, heads {} (kv {}), head dim {}",
        c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    println!("              rope theta {}, rms eps {:e}, context {}, head {}", c.rope_theta, c.rms_norm_eps,
        c.max_position_embeddings, if c.tie_word_embeddings { "tied" } else { "separate" });
    println!("parameters    {} ({:.1} M)", c.num_parameters(), c.num_parameters() as f64 / 1e6);
    let types: Vec<String> = ckpt.info.tensor_types.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    println!("tensors       {} ({:.1} MB file)", types.join(", "), ckpt.info.file_bytes as f64 / 1e6);
    match tok {
        Some(t) => println!("tokenizer     {}, {} tokens, bos {}, eos {}, stops {:?}", t.kind, t.vocab_size(),
            special(t.bos_id).unwrap_or("-".into()), special(t.eos_id).unwrap_or("-".into()), t.stop_ids),
        None => println!("tokenizer     none embedded (pass --tokenizer)"),
    }
    match &ckpt.chat_template {
        Some(t) => println!("chat template\n{}", t.source),
        None => println!("chat template none"),
    }
    Ok(())
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let kinds: Vec<BackendKind> = a.backends.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for kind in kinds {
        // The DPO benchmark trains, so its model lives on the autodiff device.
        let lm = match load(&a.model, a.tokenizer.as_deref(), kind, a.what == "dpo", true) {
            Ok(lm) => lm,
            Err(e) => {
                eprintln!("{kind}: skipped ({e:#})");
                continue;
            }
        };
        let desc = backend::open(kind)?.description;
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(64);
        let mut ids = lm.tokenizer.encode(&text, true)?;
        let row = match a.what.as_str() {
            "generate" => {
                ids.truncate(32);
                let cfg = SamplingConfig { max_new_tokens: a.tokens, num_samples: a.batch, ..SamplingConfig::greedy(a.tokens) };
                // Warm-up compiles kernels (wgpu) and fills caches.
                generate(&lm, &ids, &SamplingConfig { max_new_tokens: 4, ..cfg.clone() }, &mut |_| true)?;
                let mut best = f64::MAX;
                let mut produced = 0;
                for _ in 0..a.repeats {
                    let t = Instant::now();
                    let s = generate(&lm, &ids, &cfg, &mut |_| true)?;
                    best = best.min(t.elapsed().as_secs_f64());
                    produced = s.iter().map(|s| s.tokens.len()).sum();
                }
                json!({"backend": kind.name(), "device": desc, "what": "generate", "prompt_tokens": ids.len(),
                       "batch": a.batch, "new_tokens": produced, "seconds": best, "tokens_per_s": produced as f64 / best})
            }
            "score" => {
                ids.truncate(a.tokens);
                let half = ids.len() / 2;
                let pairs: Vec<_> = (0..a.batch).map(|_| (ids[..half].to_vec(), ids[half..].to_vec())).collect();
                score::score(&lm, &pairs)?;
                let mut best = f64::MAX;
                for _ in 0..a.repeats {
                    let t = Instant::now();
                    score::score(&lm, &pairs)?;
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let toks = a.batch * ids.len();
                json!({"backend": kind.name(), "device": desc, "what": "score", "batch": a.batch, "seq_len": ids.len(),
                       "seconds": best, "tokens_per_s": toks as f64 / best})
            }
            "dpo" => {
                // 4 pairs of 64-token prompts with 64-token chosen and rejected completions
                // (128 tokens a sequence), LoRA r=8 on q_proj,v_proj: as scripts/bench_dpo_torch.py.
                use alignlab::align::{Reference, dpo, train};
                let tok = |i: usize| (i * 7919 % 40000 + 100) as u32;
                let pairs: Vec<dpo::EncodedPair> = (0..a.batch.max(1))
                    .map(|p| dpo::EncodedPair {
                        prompt: (0..64).map(|i| tok(p * 1000 + i)).collect(),
                        chosen: (0..64).map(|i| tok(p * 1000 + 100 + i)).collect(),
                        rejected: (0..64).map(|i| tok(p * 1000 + 200 + i)).collect(),
                    })
                    .collect();
                let mut model = lm.model.clone();
                model.add_lora(&alignlab::model::LoraConfig { lora_dropout: 0.0, ..Default::default() })?;
                let reference = Reference::for_policy(&model);
                let mut tr = train::Trainer::new(model, train::TrainConfig { max_steps: 1000, ..Default::default() })?;
                let cfg = dpo::DpoConfig::default();
                let mut step = || tr.step(&mut |p, _| dpo::dpo_step(&cfg, p, &reference.model(p), &pairs, 0));
                let first = step()?;
                let mut times = Vec::new();
                for _ in 0..a.repeats {
                    let t = Instant::now();
                    step()?;
                    times.push(t.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                json!({"backend": kind.name(), "device": desc, "what": "dpo", "pairs": pairs.len(), "seq_len": 128,
                       "lora_r": 8, "first_loss": first["loss"], "seconds": times[0],
                       "seconds_median": times[times.len() / 2], "tokens_per_s": (pairs.len() * 2 * 128) as f64 / times[0]})
            }
            other => bail!("unknown benchmark '{other}'; use generate, score or dpo"),
        };
        if a.json {
            println!("{row}");
        } else if a.what == "dpo" {
            println!("{:8} dpo        {:>8.2} s/step (median {:.2})  {}", row["backend"].as_str().unwrap(),
                row["seconds"].as_f64().unwrap(), row["seconds_median"].as_f64().unwrap(), desc);
        } else {
            println!("{:8} {:10} {:>8.1} tokens/s  ({:.3} s)  {}", row["backend"].as_str().unwrap(), a.what,
                row["tokens_per_s"].as_f64().unwrap(), row["seconds"].as_f64().unwrap(), desc);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("no backend could run the benchmark");
    }
    Ok(())
}
