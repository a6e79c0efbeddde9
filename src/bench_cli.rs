//! `alignlab bench`: what `scripts/bench-compare` times beside its references. Decoding (prefill,
//! then tokens/s), scoring, a LoRA DPO step as `scripts/bench_dpo_torch.py` runs it, and a model's
//! load. Each figure is the best (and median) of `--repeats` runs after one warm-up run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use alignlab::align::Encoding;
use alignlab::align::dpo::{DpoConfig, EncodedPair};
use alignlab::align::train::TrainConfig;
use alignlab::backend::{self, BackendKind, block_on};
use alignlab::generate::{DecodePath, Route, SamplingConfig, generate_on};
use alignlab::lab::run::Examples;
use alignlab::lab::{EvalConfig, Method, Run, RunSpec, Session, TrainData, Which};
use alignlab::logps::completion_logps;
use alignlab::model::LoraConfig;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::{ModelArgs, open_session};

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
pub struct BenchArgs {
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
        // Each run's stages: parse, to the device, then the deferred weights.
        let load = || -> Result<(f64, f64, f64)> {
            let t = Instant::now();
            let ckpt = alignlab::io::Checkpoint::from_bytes(&bytes, tokenizer.as_deref(), &mut |_, _| {})?;
            let parsed = t.elapsed().as_secs_f64();
            let lm = ckpt.into_model(&dev.device, &mut |_, _| {})?;
            let loaded = t.elapsed().as_secs_f64();
            // On the CPU a quantized model's f32 weights wait for the first pass that reads them
            // (training, a long prompt): timed apart, as the page makes them after ready.
            let t = Instant::now();
            while lm.model.make_next_weight() {}
            Ok((parsed, loaded - parsed, t.elapsed().as_secs_f64()))
        };
        // A warm-up run, then `repeats`.
        let stages = (0..=a.repeats.max(1)).map(|_| load()).collect::<Result<Vec<_>>>()?;
        // The stages of the best run. The first run (the warm-up) is the page's case: a fresh
        // process, whose memory the system hands out page by page.
        // Load to a ready model: parse and device, not the deferred weights made after.
        let mut ready: Vec<f64> = stages[1..].iter().map(|s| s.0 + s.1).collect();
        ready.sort_by(f64::total_cmp);
        let (best, median) = (ready[0], ready[ready.len() / 2]);
        let &(parse, upload, later) = stages[1..].iter().min_by(|x, y| (x.0 + x.1).total_cmp(&(y.0 + y.1))).unwrap();
        let (first_parse, first_upload, first_later) = stages[0];
        let first = first_parse + first_upload;
        let row = json!({"backend": kind.name(), "device": dev.description, "what": "load", "file_bytes": bytes.len(),
                         "seconds": best, "seconds_median": median, "parse_seconds": parse, "upload_seconds": upload,
                         "first_seconds": first, "first_parse_seconds": first_parse, "first_upload_seconds": first_upload,
                         "deferred_seconds": later, "first_deferred_seconds": first_later});
        if a.json {
            println!("{row}");
        } else {
            println!("{:8} load       {best:>8.3} s (median {median:.3}; parse and dequantize {parse:.3}, to the device {upload:.3}, \
                      deferred f32 weights {later:.3} after); first {first:.3} s ({first_parse:.3} + {first_upload:.3}, then {first_later:.3})  {}",
                     kind.name(), dev.description);
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

pub fn bench(a: BenchArgs) -> Result<()> {
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
                let mut run = dpo_run(&session, a.batch.max(1), DpoConfig {
                    precompute_ref_log_probs: a.precompute_ref_log_probs,
                    share_prompt: a.share_prompt,
                    ..Default::default()
                })?;
                let ((first, first_seconds), best, median) = timed(a.repeats, &mut || Ok(block_on(run.step())?))?;
                let pairs = a.batch.max(1);
                // The first step is not counted: it warms the allocator up (with fresh adapters it
                // takes the kept reference values from its own pass, so it runs no reference pass).
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

/// The DPO run `alignlab bench dpo` times: `pairs` pairs of 64-token prompts with 64-token
/// chosen and rejected completions, LoRA r=8 on q_proj,v_proj, as scripts/bench_dpo_torch.py.
fn dpo_run(session: &Session, pairs: usize, dpo: DpoConfig) -> Result<Run> {
    let tok = |i: usize| (i * 7919 % 40000 + 100) as u32 % session.lm.config.vocab_size as u32;
    let seq = |p: usize, off: usize| (0..64).map(|i| tok(p * 1000 + off + i)).collect::<Vec<u32>>();
    let examples = Examples::Pairs((0..pairs).map(|p| EncodedPair { prompt: seq(p, 0), chosen: seq(p, 100), rejected: seq(p, 200) }).collect());
    let spec = RunSpec {
        method: Method::Dpo(dpo),
        train: TrainConfig { max_steps: 1000, per_device_train_batch_size: pairs, ..Default::default() },
        lora: Some(LoraConfig { lora_dropout: 0.0, ..Default::default() }),
        encoding: Encoding::default(),
        eval: EvalConfig { eval_fraction: 0.0, ..Default::default() },
        data: TrainData::default(),
    };
    Ok(Run::from_examples(session, spec, examples)?)
}
