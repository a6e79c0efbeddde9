//! The Web Worker that owns the engine: it opens the device, loads the model, and runs one job per
//! request (generate, score, judge, train), streaming events back. Jobs are async tasks on the
//! worker's event loop; every tensor read yields (`backend::read_f32_async`), so a Cancel or a
//! Pause gets in between steps and tokens.
//!
//! State lives in a thread-local `RefCell` and is never borrowed across an `.await`: a job clones
//! what it needs (models are reference-counted tensors, so clones are cheap) and puts results back.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use burn::module::Module;
use burn::tensor::Device;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};
use web_time::Instant;

use super::protocol::*;
use crate::align::dpo::{EncodedPair, dpo_step, encode_pairs};
use crate::align::kto::{EncodedExample, encode_examples, kto_step};
use crate::align::reward::{RewardModel, reward_step};
use crate::align::rl::{rl_sample, rl_update};
use crate::align::sft::{encode_demos, sft_step};
use crate::align::train::{Batches, LossOutput, Trainer};
use crate::align::{Encoding, Reference};
use crate::backend::BackendKind;
use crate::generate::{FinishReason, SamplingConfig, generate_async};
use crate::io::{Checkpoint, LoadedModel};
use crate::judges::{JudgeData, JudgeSpec, Judges};
use crate::model::{Llama, LoraConfig};
use crate::score::score_async;
use crate::{Error, Result};

/// Full fine-tuning keeps a frozen copy plus Adam's two moments: only for tiny models.
const FULL_FINETUNE_MAX_PARAMS: usize = 20_000_000;

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Sends an event to the page.
pub fn post(ev: &Event) {
    let ser = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
    match serde::Serialize::serialize(ev, &ser) {
        Ok(v) => {
            let _ = scope().post_message(&v);
        }
        Err(e) => web_sys::console::error_1(&format!("alignlab worker: cannot send {ev:?}: {e}").into()),
    }
}

fn post_error(job: Option<JobId>, e: &Error) {
    post(&Event::Error { job, kind: ErrorKind::of(e), message: e.to_string() });
}

/// What training left behind for later runs: the trained reward model, a paused run.
struct Worker {
    device: Option<Device>,
    max_binding: Option<u64>,
    judges_base: String,
    judges: Option<Rc<JudgeData>>,
    lm: Option<Rc<LoadedModel>>,
    /// The model Generate uses: the base plus whatever training changed.
    policy: Option<Llama>,
    /// The policy's adapter settings (None = no adapter or full fine-tune).
    lora: Option<LoraConfig>,
    full_finetuned: bool,
    history: Vec<String>,
    /// The reward model trained in this session (without gradient tracking).
    reward_model: Option<RewardModel>,
    paused: Option<Run>,
}

thread_local! {
    static W: RefCell<Worker> = const { RefCell::new(Worker {
        device: None, max_binding: None, judges_base: String::new(), judges: None, lm: None, policy: None,
        lora: None, full_finetuned: false, history: Vec::new(), reward_model: None, paused: None,
    }) };
    static CANCELLED: RefCell<HashSet<JobId>> = RefCell::new(HashSet::new());
    static CONTROL: RefCell<Option<(JobId, RunControl)>> = const { RefCell::new(None) };
}

fn with<R>(f: impl FnOnce(&mut Worker) -> R) -> R {
    W.with(|w| f(&mut w.borrow_mut()))
}

fn cancelled(job: JobId) -> bool {
    CANCELLED.with(|c| c.borrow().contains(&job))
}

/// The model and policy, or the error the page shows when none is loaded yet.
fn loaded() -> Result<(Rc<LoadedModel>, Llama)> {
    with(|w| match (&w.lm, &w.policy) {
        (Some(lm), Some(p)) => Ok((lm.clone(), p.clone())),
        _ => Err(Error::Invalid("no model is loaded yet: wait for loading to finish, or pick a model".into())),
    })
}

pub fn main() {
    std::panic::set_hook(Box::new(|info| {
        console_error_panic_hook::hook(info);
        post(&Event::Fatal { message: format!("the engine stopped: {info}") });
    }));
    let onmessage = Closure::<dyn FnMut(MessageEvent)>::new(|ev: MessageEvent| {
        match serde_wasm_bindgen::from_value::<Request>(ev.data()) {
            Ok(req) => spawn_local(handle(req)),
            Err(e) => post(&Event::Error { job: None, kind: ErrorKind::Invalid, message: format!("bad request: {e}") }),
        }
    });
    scope().set_onmessage(Some(onmessage.as_ref().unchecked_ref()));
    onmessage.forget();
    post(&Event::Hello);
}

async fn handle(req: Request) {
    let job = req.job();
    let res = match req {
        Request::Init { backend, judges_base } => init(backend, judges_base).await,
        Request::Load { source } => load(source).await,
        Request::Generate { job, prompting, sampling, which } => generate(job, prompting, sampling, which).await,
        Request::Score { job, prompting, completion } => score(job, prompting, completion).await,
        Request::Judge { job, prompting, completions, judges } => judge(job, prompting, completions, judges).await,
        Request::AutoLabel { job, prompts, system, chat, sampling, judges } => {
            auto_label(job, prompts, system, chat, sampling, judges).await
        }
        Request::Train { job, run } => train(job, run).await,
        Request::Control { job, action } => {
            if action == RunControl::Resume {
                resume(job).await
            } else {
                CONTROL.with(|c| *c.borrow_mut() = Some((job, action)));
                if action == RunControl::Stop && with(|w| w.paused.as_ref().is_some_and(|r| r.job == job)) {
                    with(|w| w.paused = None);
                    post(&Event::TrainEnded { job, state: RunState::Stopped, message: None });
                }
                Ok(())
            }
        }
        Request::Cancel { job } => {
            CANCELLED.with(|c| c.borrow_mut().insert(job));
            Ok(())
        }
        Request::ExportAdapter { job } => export_adapter(Some(job)).await,
        Request::ImportAdapter { config_json, safetensors } => import_adapter(&config_json, &safetensors),
        Request::ResetAdapter => {
            with(|w| {
                if let Some(lm) = &w.lm {
                    w.policy = Some(lm.model.clone());
                }
                w.lora = None;
                w.full_finetuned = false;
                w.history.clear();
                w.paused = None;
            });
            post_policy_state();
            Ok(())
        }
    };
    if let Err(e) = res {
        post_error(job, &e);
    }
}

// ---------------------------------------------------------------------------------------------
// Device and model

async fn init(pref: BackendPref, judges_base: String) -> Result<()> {
    with(|w| w.judges_base = judges_base);
    let cpu = |pref: BackendPref| {
        #[allow(deprecated)]
        if pref == BackendPref::Ndarray { (Device::ndarray(), BackendKind::Ndarray) } else { (Device::flex(), BackendKind::Flex) }
    };
    let (device, kind, adapter, software, fallback, max_binding) = match pref {
        BackendPref::Cpu | BackendPref::Ndarray => {
            let (d, k) = cpu(pref);
            (d, k, "WebAssembly on the CPU".to_string(), true, Some("chosen on the page (?backend=cpu)".to_string()), None)
        }
        BackendPref::Auto | BackendPref::Webgpu => {
            let has_gpu = js_sys::Reflect::get(&scope().navigator(), &"gpu".into()).is_ok_and(|g| !g.is_undefined() && !g.is_null());
            let opened = if has_gpu {
                Device::wgpu_options().init_with_setup_async().await.map_err(|e| format!("WebGPU gave no usable adapter ({e})"))
            } else {
                Err("this browser has no WebGPU (navigator.gpu is missing; Chrome/Edge 113+ or a flag in Firefox/Safari)".into())
            };
            match opened {
                Ok((device, setup)) => {
                    let info = setup.adapter.get_info();
                    let software = format!("{:?}", info.device_type) == "Cpu";
                    // Browsers often hide the adapter's name; show what they do tell.
                    let told: Vec<&str> = [info.name.as_str(), info.driver.as_str(), info.driver_info.as_str()]
                        .into_iter()
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .collect();
                    let name = if told.is_empty() { "adapter name hidden by the browser".to_string() } else { told.join(" ") };
                    let limit = setup.device.limits().max_storage_buffer_binding_size as u64;
                    (device, BackendKind::Wgpu, name, software, None, Some(limit))
                }
                Err(reason) => {
                    let (d, k) = cpu(BackendPref::Cpu);
                    (d, k, "WebAssembly on the CPU".to_string(), true, Some(reason), None)
                }
            }
        }
    };
    with(|w| {
        w.device = Some(device.autodiff());
        w.max_binding = max_binding;
    });
    post(&Event::Backend { kind, adapter, software, fallback });
    Ok(())
}

/// Fetches `url` from the Cache API when it is there (a reload does not download the model again),
/// else from the network, storing it. Reports progress as `stage` when given. Returns the bytes
/// and whether they came from the cache.
async fn fetch_cached(url: &str, stage: Option<&str>) -> Result<(Vec<u8>, bool)> {
    let report = |fraction: f32, loaded: u64, total: Option<u64>, from_cache: bool| {
        if let Some(stage) = stage {
            post(&Event::Progress { stage: stage.into(), fraction, loaded, total, from_cache });
        }
    };
    let net = |m: String| Error::Invalid(m);
    let js = |e: JsValue| format!("{e:?}");
    let cache: Option<web_sys::Cache> = match scope().caches() {
        Ok(storage) => match JsFuture::from(storage.open("alignlab-models-v1")).await {
            Ok(c) => Some(c.unchecked_into()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    if let Some(cache) = &cache {
        if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await {
            if let Ok(resp) = hit.dyn_into::<web_sys::Response>() {
                let buf = JsFuture::from(resp.array_buffer().map_err(|e| net(js(e)))?).await.map_err(|e| net(js(e)))?;
                let bytes = js_sys::Uint8Array::new(&buf).to_vec();
                let n = bytes.len() as u64;
                report(1.0, n, Some(n), true);
                return Ok((bytes, true));
            }
        }
    }
    let resp = JsFuture::from(scope().fetch_with_str(url))
        .await
        .map_err(|e| net(format!("could not fetch {url}: {} (is the server running, and is the URL right?)", js(e))))?;
    let resp: web_sys::Response = resp.unchecked_into();
    if !resp.ok() {
        return Err(net(format!("could not fetch {url}: HTTP {} {}", resp.status(), resp.status_text())));
    }
    let total = resp.headers().get("content-length").ok().flatten().and_then(|v| v.parse::<u64>().ok());
    let mut bytes: Vec<u8> = Vec::with_capacity(total.unwrap_or(0) as usize);
    let body = resp.body().ok_or_else(|| net(format!("{url}: the response has no body")))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut last_post = 0u64;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| net(format!("download of {url} broke off: {}", js(e))))?;
        let done = js_sys::Reflect::get(&chunk, &"done".into()).map(|d| d.is_truthy()).unwrap_or(true);
        if done {
            break;
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(|e| net(js(e)))?;
        bytes.extend(js_sys::Uint8Array::new(&value).to_vec());
        let n = bytes.len() as u64;
        if n - last_post > 1 << 20 {
            last_post = n;
            let fraction = total.map_or(0.0, |t| n as f32 / t.max(1) as f32);
            report(fraction, n, total, false);
        }
    }
    let n = bytes.len() as u64;
    report(1.0, n, Some(n), false);
    if let Some(cache) = &cache {
        // A full or refused cache only costs a download next time.
        let arr = js_sys::Uint8Array::from(bytes.as_slice());
        if let Ok(resp) = web_sys::Response::new_with_opt_buffer_source(Some(&arr)) {
            let _ = JsFuture::from(cache.put_with_str(url, &resp)).await;
        }
    }
    Ok((bytes, false))
}

async fn load(source: ModelSource) -> Result<()> {
    let t0 = Instant::now();
    // Opening WebGPU is async: a Load sent right after Init waits for it.
    let device = loop {
        if let Some(d) = with(|w| w.device.clone()) {
            break d;
        }
        if t0.elapsed().as_secs() > 120 {
            return Err(Error::Device("the compute device did not open within 2 minutes; reload the page, or add ?backend=cpu".into()));
        }
        gloo_timers::future::TimeoutFuture::new(20).await;
    };
    let (name, model, tokenizer, from_cache) = match source {
        ModelSource::Url { model, tokenizer } => {
            let name = model.rsplit('/').next().unwrap_or(&model).split('?').next().unwrap_or("model").to_string();
            let (m, from_cache) = fetch_cached(&model, Some("download")).await?;
            let t = match tokenizer {
                Some(t) => Some(fetch_cached(&t, Some("download tokenizer")).await?.0),
                None => None,
            };
            (name, m, t, from_cache)
        }
        ModelSource::Files { name, model, tokenizer } => (name, model, tokenizer.map(|t| t.into_vec()), false),
    };
    let mut progress = |stage: &str, fraction: f32| {
        let stage = if stage == "upload" { "upload to device" } else { stage };
        post(&Event::Progress { stage: stage.into(), fraction, loaded: 0, total: None, from_cache });
    };
    let ckpt = Checkpoint::from_bytes(&model, tokenizer.as_deref(), &mut progress)?;
    drop(model);
    if let Some(limit) = with(|w| w.max_binding) {
        let c = &ckpt.config;
        let biggest = (c.vocab_size.max(c.intermediate_size) * c.hidden_size * 4) as u64;
        if biggest > limit {
            return Err(Error::Invalid(format!(
                "this model is too big for the GPU adapter: one weight needs {:.0} MB but the adapter allows {:.0} MB per buffer. \
                 Pick a smaller model, or run on the CPU (?backend=cpu)",
                biggest as f64 / 1e6,
                limit as f64 / 1e6
            )));
        }
    }
    let mut lm = ckpt.into_model(&device, &mut progress)?;
    let name = lm.info.name.get_or_insert(name).clone();
    // Warm-up: one forward pass compiles the kernels (WebGPU) before the first real token.
    progress("warm-up", 0.0);
    let bos = lm.tokenizer.bos_id.unwrap_or(0);
    let warm = generate_async(&lm.model, &lm.tokenizer, &[bos], &SamplingConfig::greedy(1), &mut |_| true).await?;
    drop(warm);
    progress("warm-up", 1.0);
    let c = &lm.config;
    let info = ModelSummary {
        name,
        format: lm.info.format.clone(),
        parameters: lm.model.num_params(),
        layers: c.num_hidden_layers,
        hidden: c.hidden_size,
        vocab: c.vocab_size,
        context: c.max_position_embeddings,
        chat_template: lm.chat_template.is_some(),
        load_ms: t0.elapsed().as_secs_f64() * 1000.0,
        from_cache,
    };
    let policy = lm.model.clone();
    with(|w| {
        w.lm = Some(Rc::new(lm));
        w.policy = Some(policy);
        w.lora = None;
        w.full_finetuned = false;
        w.history.clear();
        w.reward_model = None;
        w.paused = None;
    });
    post(&Event::ModelReady { info });
    post_policy_state();
    Ok(())
}

fn post_policy_state() {
    let (adapter, description) = with(|w| {
        let what = match (&w.lora, w.full_finetuned) {
            (Some(l), _) => format!("LoRA r={} alpha={} on {}", l.r, l.lora_alpha, l.target_modules.join(",")),
            (None, true) => "fully fine-tuned weights".to_string(),
            (None, false) => "the base model".to_string(),
        };
        let trained = if w.history.is_empty() { String::new() } else { format!(" after {}", w.history.join(", then ")) };
        (w.lora.is_some() || w.full_finetuned, format!("{what}{trained}"))
    });
    post(&Event::PolicyState { adapter, description });
}

// ---------------------------------------------------------------------------------------------
// Generate, score, judge

/// Token ids of a prompt: the chat template is used when asked for and the model has one.
fn prompt_ids(lm: &LoadedModel, p: &Prompting) -> Result<Vec<u32>> {
    let system = Some(p.system.as_str()).filter(|s| !s.trim().is_empty());
    let ids = lm.prompt_ids(&p.prompt, system, p.chat && lm.chat_template.is_some())?;
    // An empty plain prompt starts from BOS alone (how llama2.c's stories begin).
    Ok(if ids.is_empty() { lm.tokenizer.bos_id.into_iter().collect() } else { ids })
}

async fn generate(job: JobId, prompting: Prompting, sampling: SamplingConfig, which: Which) -> Result<()> {
    let (lm, policy) = loaded()?;
    let model = if which == Which::Reference { policy.reference() } else { policy };
    let ids = prompt_ids(&lm, &prompting)?;
    let t0 = Instant::now();
    let mut first: Option<f64> = None;
    let mut n_tokens = 0usize;
    let samples = generate_async(&model, &lm.tokenizer, &ids, &sampling, &mut |ev| {
        first.get_or_insert_with(|| t0.elapsed().as_secs_f64() * 1000.0);
        n_tokens += 1;
        if !ev.text_delta.is_empty() {
            post(&Event::Token { job, sample: ev.sample, delta: ev.text_delta.to_string() });
        }
        !cancelled(job)
    })
    .await?;
    let millis = t0.elapsed().as_secs_f64() * 1000.0;
    let samples = samples
        .into_iter()
        .map(|s| SampleOut {
            text: s.text,
            tokens: s.tokens.len(),
            finish: match s.finish_reason {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
                FinishReason::Cancelled => "stopped",
            }
            .into(),
        })
        .collect();
    let first_token_ms = first.unwrap_or(millis);
    let tokens_per_s = n_tokens as f64 / ((millis - first_token_ms).max(1.0) / 1000.0);
    post(&Event::Generated { job, samples, millis, first_token_ms, tokens_per_s });
    CANCELLED.with(|c| c.borrow_mut().remove(&job));
    Ok(())
}

async fn score(job: JobId, prompting: Prompting, completion: String) -> Result<()> {
    let (lm, policy) = loaded()?;
    let p = prompt_ids(&lm, &prompting)?;
    let c = lm.tokenizer.encode(&completion, false)?;
    if c.is_empty() {
        return Err(Error::Invalid("there is no text to score: write or generate some first".into()));
    }
    let pad = lm.tokenizer.eos_id.unwrap_or(0);
    let pairs = vec![(p, c.clone())];
    let pol = score_async(&policy, pad, &pairs).await?.remove(0);
    let reference = score_async(&policy.reference(), pad, &pairs).await?.remove(0);
    // Each token's piece is what it adds to the decoded text (keeps leading spaces and bytes).
    let mut stream = crate::generate::TextStream::default();
    let pieces = c.iter().map(|&t| stream.push(&lm.tokenizer, t)).collect();
    post(&Event::Scored { job, pieces, policy: pol.logprobs, reference: reference.logprobs });
    Ok(())
}

async fn judge_data() -> Rc<JudgeData> {
    if let Some(d) = with(|w| w.judges.clone()) {
        return d;
    }
    let base = with(|w| w.judges_base.clone());
    // Quietly: the page's progress bar is the model's.
    let text = |(b, _): (Vec<u8>, bool)| String::from_utf8(b).ok();
    let vader = fetch_cached(&format!("{base}vader_lexicon.txt"), None).await.ok().and_then(text);
    let profanity = fetch_cached(&format!("{base}profanity_wordlist.txt"), None).await.ok().and_then(text);
    let data = Rc::new(JudgeData::from_texts(vader.as_deref(), profanity.as_deref()).unwrap_or_default());
    with(|w| w.judges = Some(data.clone()));
    data
}

async fn judge(job: JobId, prompting: Prompting, completions: Vec<String>, judges: Vec<(JudgeSpec, f64)>) -> Result<()> {
    let data = judge_data().await;
    let scores = if judges.is_empty() {
        vec![0.0; completions.len()]
    } else {
        let j = Judges::new(judges, &data)?;
        completions.iter().map(|c| j.score(c)).collect()
    };
    let rm = with(|w| w.reward_model.clone());
    let reward_model = match rm {
        Some(rm) => {
            let (lm, _) = loaded()?;
            let enc = Encoding { chat: prompting.chat, ..Default::default() };
            let p = enc.prompt(&lm, &prompting.prompt)?;
            let pairs: Vec<(Vec<u32>, Vec<u32>)> =
                completions.iter().map(|c| Ok((p.clone(), enc.completion(&lm, c)?))).collect::<Result<_>>()?;
            let pad = lm.tokenizer.eos_id.unwrap_or(0);
            Some(rm.score_pairs_async(&pairs, pad).await?.into_iter().map(|x| x as f64).collect())
        }
        None => None,
    };
    post(&Event::Judged { job, judges: scores, reward_model });
    Ok(())
}

async fn auto_label(
    job: JobId,
    prompts: Vec<String>,
    system: String,
    chat: bool,
    sampling: SamplingConfig,
    judges: Vec<(JudgeSpec, f64)>,
) -> Result<()> {
    if sampling.num_samples < 2 {
        return Err(Error::Invalid("auto-labelling compares samples: ask for at least 2 per prompt".into()));
    }
    let data = judge_data().await;
    let j = Judges::new(judges, &data)?;
    let total = prompts.len();
    for (i, prompt) in prompts.into_iter().enumerate() {
        if cancelled(job) {
            break;
        }
        let (lm, policy) = loaded()?;
        let prompting = Prompting { prompt: prompt.clone(), system: system.clone(), chat };
        let ids = prompt_ids(&lm, &prompting)?;
        let cfg = SamplingConfig { seed: sampling.seed.wrapping_add(i as u64), ..sampling.clone() };
        let samples = generate_async(&policy, &lm.tokenizer, &ids, &cfg, &mut |_| !cancelled(job)).await?;
        let mut scored: Vec<(f64, String)> = samples.into_iter().map(|s| (j.score(&s.text), s.text)).collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut pairs = Vec::new();
        let (best, worst) = (&scored[0], &scored[scored.len() - 1]);
        // Equal scores say nothing about which is better: no pair.
        if best.0 > worst.0 && best.1 != worst.1 {
            pairs.push(crate::data::Preference { prompt, chosen: best.1.clone(), rejected: worst.1.clone() });
        }
        post(&Event::Labelled { job, pairs, done: i + 1, total });
    }
    CANCELLED.with(|c| c.borrow_mut().remove(&job));
    post(&Event::Done { job });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Training

enum Examples {
    Pairs(Vec<EncodedPair>),
    Unpaired(Vec<EncodedExample>),
    Demos(Vec<(Vec<u32>, Vec<u32>)>),
    Prompts(Vec<(String, Vec<u32>)>),
}

impl Examples {
    fn len(&self) -> usize {
        match self {
            Self::Pairs(v) => v.len(),
            Self::Unpaired(v) => v.len(),
            Self::Demos(v) => v.len(),
            Self::Prompts(v) => v.len(),
        }
    }
}

enum Learner {
    Policy { trainer: Trainer<Llama>, reference: Reference },
    Reward { trainer: Trainer<RewardModel> },
}

impl Learner {
    /// Optimizer steps taken.
    fn steps(&self) -> usize {
        match self {
            Self::Policy { trainer, .. } => trainer.step,
            Self::Reward { trainer } => trainer.step,
        }
    }

    fn done(&self) -> bool {
        match self {
            Self::Policy { trainer, .. } => trainer.done(),
            Self::Reward { trainer } => trainer.done(),
        }
    }
}

struct Run {
    job: JobId,
    spec: RunSpec,
    examples: Examples,
    learner: Learner,
    batches: Batches,
    pad: u32,
    millis: f64,
}

fn take_control(job: JobId) -> Option<RunControl> {
    CONTROL.with(|c| {
        let mut c = c.borrow_mut();
        match *c {
            Some((j, a)) if j == job => {
                *c = None;
                Some(a)
            }
            _ => None,
        }
    })
}

async fn train(job: JobId, spec: RunSpec) -> Result<()> {
    let (lm, policy) = loaded()?;
    let device = lm.device.clone();
    if !device.is_autodiff() {
        return Err(Error::Invalid("the model is not on a training device".into()));
    }
    let enc = &spec.encoding;
    let d = &spec.data;
    let examples = match &spec.method {
        Method::Dpo(_) | Method::Reward(_) => Examples::Pairs(encode_pairs(&lm, enc, &d.pairs)?),
        Method::Kto(_) => Examples::Unpaired(encode_examples(&lm, enc, &d.unpaired)?),
        Method::Sft => Examples::Demos(encode_demos(&lm, enc, &d.demos)?),
        Method::Rl { .. } => {
            let mut prompts: Vec<String> = d.prompts.clone();
            if prompts.is_empty() {
                prompts = d.pairs.iter().map(|p| p.prompt.clone()).collect();
                prompts.dedup();
            }
            Examples::Prompts(prompts.into_iter().map(|p| Ok((p.clone(), enc.prompt(&lm, &p)?))).collect::<Result<_>>()?)
        }
    };
    let need = match &spec.method {
        Method::Dpo(_) | Method::Reward(_) => "preference pairs: rank some samples, auto-label, or import a JSONL file",
        Method::Kto(_) => "thumbs up/down ratings (at least 2): rate some samples or import a JSONL file",
        Method::Sft => "ideal answers: write one under a sample (\"Write the ideal answer\")",
        Method::Rl { .. } => "prompts: add some on the Data tab, or collect pairs (their prompts are used)",
    };
    let min = if matches!(spec.method, Method::Kto(_)) { 2 } else { 1 };
    if examples.len() < min {
        return Err(Error::Invalid(format!("{} needs {need}", spec.method.name())));
    }
    if let (Method::Rl { reward: RewardSource::RewardModel, .. }, None) = (&spec.method, with(|w| w.reward_model.clone())) {
        return Err(Error::Invalid("RLHF against the reward model needs one: train a reward model first, or use judges".into()));
    }
    let pad = lm.tokenizer.eos_id.unwrap_or(0);
    let seed = spec.train.seed;
    let learner = match &spec.method {
        Method::Reward(_) => {
            let cfg = spec.lora.clone().ok_or_else(|| Error::Invalid("the reward model trains a LoRA adapter: choose LoRA".into()))?;
            let mut backbone = lm.model.clone();
            backbone.add_lora(&cfg)?;
            let rm = RewardModel::new(backbone, seed);
            Learner::Reward { trainer: Trainer::new(rm, spec.train.clone())? }
        }
        _ => {
            let mut model = policy;
            let current = with(|w| w.lora.clone());
            match (&spec.lora, current) {
                // Same adapter settings: keep training the adapter the policy has.
                (Some(cfg), Some(cur)) if *cfg == cur => {}
                (Some(cfg), _) => {
                    model.remove_lora();
                    model.add_lora(cfg)?;
                }
                (None, _) => {
                    let n = model.num_params();
                    if n > FULL_FINETUNE_MAX_PARAMS {
                        return Err(Error::Invalid(format!(
                            "full fine-tuning keeps two extra copies of all {:.0} M weights: it is for tiny models \
                             (up to {} M). Use LoRA for this one",
                            n as f64 / 1e6,
                            FULL_FINETUNE_MAX_PARAMS / 1_000_000
                        )));
                    }
                    model.merge_lora();
                    model.remove_lora();
                }
            }
            let reference = Reference::for_policy(&model);
            Learner::Policy { trainer: Trainer::new(model, spec.train.clone())?, reference }
        }
    };
    let trainable = match &learner {
        Learner::Policy { trainer, .. } if trainer.model.has_lora() => trainer.model.num_trainable(),
        Learner::Policy { trainer, .. } => trainer.model.num_params(),
        Learner::Reward { trainer } => trainer.model.backbone.num_trainable() + trainer.model.score.num_params(),
    };
    let batch = if matches!(spec.method, Method::Rl { .. }) { 1 } else { spec.train.per_device_train_batch_size };
    let batches = Batches::new(examples.len(), batch, seed);
    // An RL step is a round: sample, then `num_iterations` optimizer steps on the samples.
    let total_steps = match &spec.method {
        Method::Rl { cfg, .. } => spec.train.max_steps.div_ceil(cfg.num_iterations.max(1)),
        _ => spec.train.max_steps,
    };
    post(&Event::TrainStarted { job, trainable, total_steps, examples: examples.len() });
    CONTROL.with(|c| *c.borrow_mut() = None);
    let run = Run { job, spec, examples, learner, batches, pad, millis: 0.0 };
    drive(run).await
}

async fn resume(job: JobId) -> Result<()> {
    let run = with(|w| w.paused.take()).ok_or_else(|| Error::Invalid("there is no paused run to resume".into()))?;
    if run.job != job {
        with(|w| w.paused = Some(run));
        return Err(Error::Invalid("that run is no longer paused".into()));
    }
    CONTROL.with(|c| *c.borrow_mut() = None);
    drive(run).await
}

/// Runs steps until done, paused, stopped or failed. After every step the policy the page
/// generates with is the updated one.
async fn drive(mut run: Run) -> Result<()> {
    let job = run.job;
    loop {
        if run.learner.done() {
            return finish(run, RunState::Finished, None).await;
        }
        match take_control(job) {
            Some(RunControl::Pause) => {
                publish(&run);
                post(&Event::TrainEnded { job, state: RunState::Paused, message: None });
                with(|w| w.paused = Some(run));
                return Ok(());
            }
            Some(RunControl::Stop) => return finish(run, RunState::Stopped, None).await,
            _ => {}
        }
        let t0 = Instant::now();
        match step(&mut run).await {
            Ok(mut metrics) => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                run.millis += ms;
                metrics.insert("step_seconds".into(), ms / 1000.0);
                post(&Event::Metrics { job, values: metrics, millis: run.millis });
                publish(&run);
            }
            Err(e) => {
                // The trainer rolled back to the last good weights; keep them and stop.
                let msg = e.to_string();
                post_error(Some(job), &e);
                return finish(run, RunState::Failed, Some(msg)).await;
            }
        }
    }
}

/// One optimizer step (one round for RL).
async fn step(run: &mut Run) -> Result<crate::align::train::Metrics> {
    let pad = run.pad;
    let Run { spec, examples, learner, batches, .. } = run;
    match learner {
        Learner::Reward { trainer } => {
            let Method::Reward(cfg) = &spec.method else { unreachable!() };
            let Examples::Pairs(pairs) = &*examples else { unreachable!() };
            trainer
                .step_async(&mut |m, _| {
                    let b: Vec<EncodedPair> = batches.next().into_iter().map(|i| pairs[i].clone()).collect();
                    reward_step(cfg, m, &b, pad)
                })
                .await
        }
        Learner::Policy { trainer, reference } => match (&spec.method, &*examples) {
            (Method::Rl { cfg, reward }, Examples::Prompts(prompts)) => {
                let (lm, _) = loaded()?;
                let pick: Vec<(String, Vec<u32>)> = batches.next().into_iter().map(|i| prompts[i].clone()).collect();
                let samples = rl_sample(cfg, trainer, &lm.tokenizer, &pick).await?;
                let rewards: Vec<f64> = match reward {
                    RewardSource::Judges(items) => {
                        let data = judge_data().await;
                        let j = Judges::new(items.clone(), &data)?;
                        samples.texts.iter().map(|t| j.score(t)).collect()
                    }
                    RewardSource::RewardModel => {
                        let rm = with(|w| w.reward_model.clone()).ok_or_else(|| Error::Invalid("no reward model".into()))?;
                        rm.score_pairs_async(&samples.pairs, pad).await?.into_iter().map(|x| x as f64).collect()
                    }
                };
                rl_update(cfg, trainer, reference, &lm.tokenizer, &samples, rewards).await
            }
            (method, ex) => {
                let mut micro = |m: &Llama, _: usize| -> Result<LossOutput> {
                    let idx = batches.next();
                    match (method, ex) {
                        (Method::Dpo(cfg), Examples::Pairs(v)) => {
                            let b: Vec<EncodedPair> = idx.into_iter().map(|i| v[i].clone()).collect();
                            dpo_step(cfg, m, &reference.model(m), &b, pad)
                        }
                        (Method::Kto(cfg), Examples::Unpaired(v)) => {
                            let mut idx = idx;
                            // KTO's KL estimate pairs mismatched examples: a batch needs two.
                            if idx.len() < 2 {
                                idx.push((idx[0] + 1) % v.len());
                            }
                            let b: Vec<EncodedExample> = idx.into_iter().map(|i| v[i].clone()).collect();
                            kto_step(cfg, m, &reference.model(m), &b, pad)
                        }
                        (Method::Sft, Examples::Demos(v)) => {
                            let b: Vec<(Vec<u32>, Vec<u32>)> = idx.into_iter().map(|i| v[i].clone()).collect();
                            sft_step(m, &b, pad)
                        }
                        _ => Err(Error::Invalid("this method does not fit this data".into())),
                    }
                };
                trainer.step_async(&mut micro).await
            }
        },
    }
}

/// Makes what the run has trained so far the page's policy (or reward model).
fn publish(run: &Run) {
    match &run.learner {
        Learner::Policy { trainer, .. } => {
            let model = trainer.model.clone();
            let lora = run.spec.lora.clone();
            with(|w| {
                w.full_finetuned = lora.is_none();
                w.lora = lora;
                w.policy = Some(model);
            });
        }
        Learner::Reward { trainer } => {
            // Scoring needs no gradients: keep a copy that does not track them.
            let rm = trainer.model.clone().no_grad();
            with(|w| w.reward_model = Some(rm));
        }
    }
}

async fn finish(run: Run, state: RunState, message: Option<String>) -> Result<()> {
    publish(&run);
    let steps = run.learner.steps();
    if steps > 0 && !matches!(run.learner, Learner::Reward { .. }) {
        with(|w| w.history.push(format!("{} ({steps} steps)", run.spec.method.name())));
    }
    post_policy_state();
    post(&Event::TrainEnded { job: run.job, state, message });
    // Hand the page a copy of the adapter so a reload or a lost device loses nothing.
    if with(|w| w.lora.is_some()) && !matches!(run.learner, Learner::Reward { .. }) {
        if let Err(e) = export_adapter(None).await {
            post_error(None, &e);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Adapters

async fn export_adapter(job: Option<JobId>) -> Result<()> {
    let (lm, policy) = loaded()?;
    let cfg = with(|w| w.lora.clone()).ok_or_else(|| {
        Error::Invalid("the policy has no LoRA adapter to export: train one first (full fine-tunes export from the CLI)".into())
    })?;
    let name = lm.info.name.clone().unwrap_or_default();
    let files = crate::io::peft::save_adapter_async(&policy, &cfg, &name).await?;
    post(&Event::Adapter { job, config_json: files.config_json, safetensors: files.safetensors });
    Ok(())
}

fn import_adapter(config_json: &str, safetensors: &[u8]) -> Result<()> {
    let (_, mut policy) = loaded()?;
    policy.remove_lora();
    let cfg = crate::io::peft::load_adapter(&mut policy, config_json.as_bytes(), safetensors)?;
    with(|w| {
        w.policy = Some(policy);
        w.lora = Some(cfg);
        w.full_finetuned = false;
        w.history = vec!["an imported adapter".into()];
    });
    post_policy_state();
    Ok(())
}
