//! The worker's router: takes the page's requests, runs each as a job on the lab, and posts
//! events back. It knows nothing of the browser: a [`Host`] posts events, fetches files and opens
//! the device (the Web Worker in `web/`, or a test natively), so the same message handling is
//! tested natively.
//!
//! State is never borrowed across an `.await`: a job clones the session (weights are shared,
//! clones are cheap) and puts back only what it changed.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use burn::tensor::Device;

use super::protocol::*;
use crate::backend::BackendKind;
use crate::generate::SamplingConfig;
use crate::io::Checkpoint;
use crate::io::peft::AdapterFiles;
use crate::judges::JudgeData;
use crate::lab::handoff::{Handoff, zip};
use crate::lab::{AdapterFrom, Run, RunSpec, Session};
use crate::{Error, Result};

/// A device the host opened, and how to describe it.
pub struct OpenedDevice {
    pub device: Device,
    pub kind: BackendKind,
    pub adapter: String,
    pub software: bool,
    /// Why the preferred device was not used, if it was not.
    pub fallback: Option<String>,
    /// The adapter's largest storage buffer (WebGPU), to refuse models that cannot fit.
    pub max_binding: Option<u64>,
}

/// What the router needs from where it runs.
#[allow(async_fn_in_trait)]
pub trait Host {
    fn post(&self, ev: Event);
    /// The bytes at `url` and whether they came from a cache; progress is reported as `stage`.
    async fn fetch(&self, url: &str, stage: Option<&str>) -> Result<(Vec<u8>, bool)>;
    /// Opens the preferred device, or falls back to the CPU and says why.
    async fn open_device(&self, pref: BackendPref) -> OpenedDevice;
    /// Gives the event loop a turn for `ms` milliseconds.
    async fn sleep(&self, ms: u32);
    /// Milliseconds on a monotonic clock.
    fn now_ms(&self) -> f64;
    /// Whether the code runs under a JIT that optimizes a function only once it has run hot (V8's
    /// tiering of wasm in the threaded CPU worker): the router then warms the training code up
    /// in the background after a model loads ([`super::warm`]).
    fn tiers_up(&self) -> bool {
        false
    }
}

#[derive(Default)]
pub(super) struct State {
    device: Option<(Device, Option<u64>)>,
    judges_base: String,
    /// The judges' word lists, fetched at the first model load and kept for later ones.
    judge_data: Option<Rc<JudgeData>>,
    pub(super) session: Option<Session>,
    /// A paused run, its job and its training time so far.
    pub(super) paused: Option<(JobId, Run, f64)>,
    pub(super) cancelled: HashSet<JobId>,
    /// A second model loaded to teach from (distillation).
    pub(super) teacher: Option<Rc<crate::io::LoadedModel>>,
    pub(super) control: Option<(JobId, RunControl)>,
    /// Requests being served now.
    pub(super) busy: usize,
    /// Of those, the ones working in the background (the training warm-up, the reference scored
    /// ahead): they wait until the others are done.
    pub(super) background: usize,
    /// When the last request ended, or the last model became ready ([`Host::now_ms`]).
    pub(super) idle_since: f64,
    /// Models loaded so far: a warm-up for an older one stops.
    pub(super) loads: u64,
    /// The training warm-up has run in this worker (V8 keeps what it optimized for every model).
    pub(super) warmed: bool,
    /// `ScoreReference` requests so far: an older one stops for the newest.
    pub(super) scorings: u64,
    /// The training warm-up is under way: the reference scored ahead waits for it.
    pub(super) warming: bool,
}

/// How long the worker must have had no request but background ones before background work
/// steps: the page has shown what the last request did, and a quick click gets the cores to itself.
pub(super) const QUIET_MS: f64 = 1_000.0;
/// How often background work looks whether the worker is quiet.
const IDLE_POLL_MS: u32 = 100;

impl State {
    /// Whether background work may step now ([`QUIET_MS`]).
    fn quiet(&self, now: f64) -> bool {
        self.busy == self.background && now - self.idle_since >= QUIET_MS
    }
}

pub struct Router<H: Host> {
    pub(super) host: H,
    pub(super) state: RefCell<State>,
}

impl<H: Host> Router<H> {
    pub fn new(host: H) -> Rc<Self> {
        Rc::new(Self { host, state: RefCell::default() })
    }

    pub(super) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.borrow_mut())
    }

    /// A copy of the session, or the error the page shows when no model is loaded yet.
    pub(super) fn session(&self) -> Result<Session> {
        self.with(|s| s.session.clone())
            .ok_or_else(|| Error::Invalid("no model is loaded yet: wait for loading to finish, or pick a model".into()))
    }

    /// Waits until background work may step: the worker quiet ([`State::quiet`]) and `yields` false
    /// (background work that goes first); false if `current` stops holding first (the work is
    /// stale: a new model, a newer request).
    pub(super) async fn wait_quiet(&self, current: impl Fn(&State) -> bool, yields: impl Fn(&State) -> bool) -> bool {
        while self.with(|s| current(s) && (!s.quiet(self.host.now_ms()) || yields(s))) {
            self.host.sleep(IDLE_POLL_MS).await;
        }
        self.with(|s| current(s))
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Session)) {
        self.with(|s| s.session.as_mut().map(f));
    }

    pub(super) fn cancelled(&self, job: JobId) -> bool {
        self.with(|s| s.cancelled.contains(&job))
    }

    pub(super) fn post_error(&self, job: Option<JobId>, e: &Error) {
        self.host.post(Event::Error { job, kind: ErrorKind::of(e), message: e.to_string() });
    }

    /// Serves one request; its errors become an Error event for its job.
    pub async fn handle(self: Rc<Self>, req: Request) {
        let job = req.job();
        self.with(|s| s.busy += 1);
        let res = match req {
            Request::Init { backend, judges_base } => self.init(backend, judges_base).await,
            Request::Load { source } => self.load(source).await,
            Request::Generate { job, prompt, encoding, sampling, which } => self.generate(job, prompt, encoding, sampling, which).await,
            Request::Logprobs { job, prompt, encoding, completion } => self.logprobs(job, prompt, encoding, completion).await,
            Request::Judge { job, prompt, encoding, completions, judges } => self.judge(job, prompt, encoding, completions, judges).await,
            Request::AutoLabel { job, prompts, encoding, sampling, reward } => self.auto_label(job, prompts, encoding, sampling, reward).await,
            Request::Train { job, run } => self.train(job, run).await,
            Request::ScoreReference { run } => {
                self.score_ahead(run).await;
                Ok(())
            }
            Request::Control { job, action } => self.control(job, action).await,
            Request::Cancel { job } => {
                self.with(|s| s.cancelled.insert(job));
                Ok(())
            }
            Request::Export { job, what } => self.export(Some(job), what).await,
            Request::Handoff { job, run, base_model } => self.handoff(job, run, base_model).await,
            Request::Import { what, config_json, safetensors, from } => self.import(what, AdapterFiles { config_json, safetensors }, from),
            Request::Fetch { job, url } => self.fetch_small(job, &url).await,
            Request::Variants { job, question, encoding, sampling, variants, reference, judges } => {
                self.variants(job, question, encoding, sampling, variants, reference, judges).await
            }
            Request::Ask { job, question, encoding, sampling, docs, k } => self.ask(job, question, encoding, sampling, docs, k).await,
            Request::CheckFacts { job, facts, encoding, sampling, docs, k } => self.check_facts(job, facts, encoding, sampling, docs, k).await,
            Request::Probes { job, probes, encoding, sampling } => self.probes(job, probes, encoding, sampling).await,
            Request::Groups { job, groups, run } => self.groups(job, groups, run).await,
            Request::SelfLabel { job, constitution, prompts, encoding, sampling, judges, pairs_per_prompt } => {
                self.self_label(job, constitution, prompts, encoding, sampling, judges, pairs_per_prompt).await
            }
            Request::Ensemble { job, run, members, resample } => self.ensemble(job, run, members, resample).await,
            Request::EnsembleScore { job, prompt, encoding, completions } => self.ensemble_score(job, prompt, encoding, completions).await,
            Request::LoadTeacher { job, source } => self.load_teacher(job, source).await,
            Request::Distill { job, teacher, judges, run, prompts, eval_prompts, sampling } => {
                self.distill(job, teacher, judges, run, prompts, eval_prompts, sampling).await
            }
            Request::WeakToStrong { job, prompts, encoding, sampling, weak, truth } => self.weak_to_strong(job, prompts, encoding, sampling, weak, truth).await,
            Request::Pipeline { job, stages, eval_prompts, encoding, sampling, judges } => {
                self.pipeline(job, stages, eval_prompts, encoding, sampling, judges).await
            }
            Request::OrderPairs { job, pairs, encoding, reward, order } => self.order_pairs(job, pairs, encoding, reward, order).await,
            Request::ResetAdapter => {
                self.with(|s| s.paused = None);
                self.update(|s| {
                    let lm = s.lm.clone();
                    s.policy.reset(&lm)
                });
                self.post_policy_state();
                Ok(())
            }
        };
        let now = self.host.now_ms();
        self.with(|s| {
            s.busy -= 1;
            s.idle_since = now;
        });
        if let Err(e) = res {
            self.post_error(job, &e);
        }
    }

    async fn init(&self, pref: BackendPref, judges_base: String) -> Result<()> {
        // Before the first await: the Load sent right after Init fetches the judges' lists while
        // the device opens (seconds for a WebGPU adapter).
        self.with(|s| s.judges_base = judges_base);
        let d = self.host.open_device(pref).await;
        let half = crate::model::Llama::decodes_in_half(&d.device);
        self.with(|s| s.device = Some((d.device.autodiff(), d.max_binding)));
        self.host.post(Event::Backend { kind: d.kind, adapter: d.adapter, software: d.software, half, fallback: d.fallback });
        Ok(())
    }

    /// The judges' word lists, fetched quietly once (a judge whose list is missing says so when
    /// used).
    async fn judge_data(&self) -> Rc<JudgeData> {
        if let Some(d) = self.with(|s| s.judge_data.clone()) {
            return d;
        }
        let base = self.with(|s| s.judges_base.clone());
        let text = |r: Result<(Vec<u8>, bool)>| r.ok().and_then(|(b, _)| String::from_utf8(b).ok());
        let vader = text(self.host.fetch(&format!("{base}vader_lexicon.txt"), None).await);
        let profanity = text(self.host.fetch(&format!("{base}profanity_wordlist.txt"), None).await);
        let data = Rc::new(JudgeData::from_texts(vader.as_deref(), profanity.as_deref()).unwrap_or_default());
        self.with(|s| s.judge_data = Some(data.clone()));
        data
    }

    async fn load(&self, source: ModelSource) -> Result<()> {
        self.with(|s| s.loads += 1);
        let t0 = self.host.now_ms();
        // Each part's wall time, for the model bar and the page bench.
        let (mut stages, mut last) = (Vec::new(), t0);
        let mut mark = |part: LoadPart| {
            let now = self.host.now_ms();
            stages.push(LoadStage { part, ms: now - last });
            last = now;
        };
        // The model downloads while the device opens (WebGPU's adapter, the CPU's threads): a
        // Load sent right after Init waits for the device only once it has the bytes.
        // The judges' word lists (half a megabyte) come beside it, not after it.
        let (read, judge_data) = futures_util::future::join(self.read_source(source), self.judge_data()).await;
        let (name, model, tokenizer, from_cache) = read?;
        mark(LoadPart::Download);
        let (device, max_binding) = loop {
            if let Some(d) = self.with(|s| s.device.clone()) {
                break d;
            }
            if self.host.now_ms() - t0 > 120_000.0 {
                return Err(Error::Device("the compute device did not open within 2 minutes; reload the page, or add ?backend=cpu".into()));
            }
            self.host.sleep(20).await;
        };
        mark(LoadPart::Device);
        let mut progress = |stage: &str, fraction: f32| {
            let stage = if stage == "upload" { "upload to device" } else { stage };
            self.host.post(Event::Progress { stage: stage.into(), fraction, loaded: 0, total: None, from_cache });
        };
        let ckpt = Checkpoint::from_bytes(&model, tokenizer.as_deref(), &mut progress)?;
        drop(model);
        let biggest = ckpt.config.largest_weight_bytes();
        if let Some(limit) = max_binding {
            if biggest > limit {
                return Err(Error::Invalid(format!(
                    "this model is too big for the GPU adapter: one weight needs {:.0} MB but the adapter allows {:.0} MB per buffer. \
                     Pick a smaller model, or run on the CPU (?backend=cpu)",
                    biggest as f64 / 1e6,
                    limit as f64 / 1e6
                )));
            }
        }
        mark(LoadPart::Parse);
        let mut lm = ckpt.into_model(&device, &mut progress)?;
        mark(LoadPart::Weights);
        let file = name.clone();
        let name = lm.info.name.get_or_insert(name).clone();
        let session = Session::new(lm, judge_data);
        mark(LoadPart::Judges);
        // On a GPU the warm-up compiles the kernels, seconds on some adapters: before the model is
        // called ready, so that the first answer does not wait for them.
        let kernels = !crate::backend::is_cpu(&device);
        if kernels {
            progress("warm-up", 0.0);
            warm_up(&session).await?;
            progress("warm-up", 1.0);
            mark(LoadPart::WarmUp);
        }
        let info = ModelSummary::of(&session.lm, name, &file, stages, from_cache);
        self.with(|s| {
            s.session = Some(session.clone());
            s.paused = None;
            s.teacher = None;
        });
        self.host.post(Event::ModelReady { info });
        self.post_policy_state();
        if !kernels {
            // The CPU has none to compile, but the browser optimizes a wasm function only once it
            // has run hot: warmed here, while the student reads and types, the first answer comes
            // a tenth of a second sooner. A failure here is the first answer's to report.
            let _ = warm_up(&session).await;
            // The f32 weights training reads, left as blocks at load: made while the student reads.
            self.make_deferred_weights(&session).await;
            // Then the training code, while the worker has nothing else to do; a failure here
            // is the first run's to report.
            if self.host.tiers_up() && !self.with(|s| s.warmed) {
                let now = self.host.now_ms();
                self.with(|s| s.idle_since = now);
                let _ = self.warm_training(&session).await;
            }
        }
        Ok(())
    }

    /// The model's (and tokenizer's) bytes, its name, and whether they came from the cache.
    pub(super) async fn read_source(&self, source: ModelSource) -> Result<(String, Vec<u8>, Option<Vec<u8>>, bool)> {
        Ok(match source {
            ModelSource::Url { model, tokenizer } => {
                let name = model.rsplit('/').next().unwrap_or(&model).split('?').next().unwrap_or("model").to_string();
                let (m, from_cache) = self.host.fetch(&model, Some("download")).await?;
                let t = match tokenizer {
                    Some(t) => Some(self.host.fetch(&t, Some("download tokenizer")).await?.0),
                    None => None,
                };
                (name, m, t, from_cache)
            }
            ModelSource::Files { name, model, tokenizer } => (name, model, tokenizer.map(|t| t.into_vec()), false),
        })
    }

    pub(super) fn post_policy_state(&self) {
        let state = self.with(|s| s.session.as_ref().map(|s| (s.policy.kind.clone(), s.policy.describe(), s.reward_model.is_some(), s.ensemble.len())));
        if let Some((kind, description, reward_model, ensemble)) = state {
            self.host.post(Event::PolicyState { kind, description, reward_model, ensemble });
        }
    }

    /// Exported files for `what`; `job: None` hands them to the page to keep.
    pub(super) async fn export(&self, job: Option<JobId>, what: Artifact) -> Result<()> {
        let session = self.session()?;
        let files = match what {
            Artifact::Adapter => peft_files(session.policy.export_adapter(&session.model_name()).await?),
            Artifact::RewardModel => peft_files(session.export_reward_model().await?),
            Artifact::Merged => {
                let files = crate::io::hf::save_hf(&session.policy.model, &session.lm.config, &session.lm.tokenizer).await?;
                files.into_iter().map(|(name, bytes)| FileOut { name, bytes }).collect()
            }
        };
        self.host.post(Event::Files { job, what, files });
        Ok(())
    }

    /// A lab file a link names, refused past the size a lab file may have.
    async fn fetch_small(&self, job: JobId, url: &str) -> Result<()> {
        let (bytes, _) = self.host.fetch(url, None).await?;
        if bytes.len() > crate::lab::lesson::MAX_LAB_BYTES {
            return Err(Error::Invalid(format!("{url} is {} bytes, more than a lab file may hold (1 MiB)", bytes.len())));
        }
        self.host.post(Event::Fetched { job, bytes });
        Ok(())
    }

    /// The run handed off to TRL as one zip: its data, what it trained (the policy's adapter, or
    /// the reward model for a reward-model run), the reward model RLHF used, and the script.
    async fn handoff(&self, job: JobId, run: RunSpec, base_model: String) -> Result<()> {
        run.validate()?;
        let session = self.session()?;
        let bytes = zip(&Handoff::from_session(&session, &run, base_model).await?.files()?)?;
        let name = format!("alignlab-{}-trl.zip", run.method.kind().id());
        self.host.post(Event::Handoff { job, zip: FileOut { name, bytes } });
        Ok(())
    }

    fn import(&self, what: Artifact, files: AdapterFiles, from: AdapterFrom) -> Result<()> {
        let mut session = self.session()?;
        match what {
            Artifact::Adapter => {
                let lm = session.lm.clone();
                session.policy.import_adapter(&lm, files.config_json.as_bytes(), &files.safetensors, from)?;
            }
            Artifact::RewardModel => session.import_reward_model(&files)?,
            Artifact::Merged => {
                let lm = session.lm.clone();
                session.policy.import_weights(&lm, files.config_json.as_bytes(), &files.safetensors)?;
            }
        }
        self.update(|s| {
            s.policy = session.policy;
            s.reward_model = session.reward_model;
        });
        self.post_policy_state();
        Ok(())
    }
}

pub(super) fn peft_files(f: AdapterFiles) -> Vec<FileOut> {
    vec![
        FileOut { name: "adapter_config.json".into(), bytes: f.config_json.into_bytes() },
        FileOut { name: "adapter_model.safetensors".into(), bytes: f.safetensors },
    ]
}

/// One greedy token from BOS, the first run of the engine's code for this model.
async fn warm_up(session: &Session) -> Result<()> {
    let bos = session.lm.tokenizer.bos_id.unwrap_or(0);
    crate::generate::generate(&session.lm.model, &session.lm.tokenizer, &[bos], &SamplingConfig::greedy(1), &mut |_| true).await?;
    Ok(())
}
