//! "Take this run further": everything a run needs to continue in Hugging Face TRL on a GPU box
//! or a cluster, as files: the data in TRL's JSONL (split into train and held-out exactly as the
//! run split it), the trained adapter (PEFT layout) to start from, a ready `train_trl.py` whose
//! `DPOConfig` / `KTOConfig` / `RewardConfig` / `SFTConfig` / `GRPOConfig` carries the run's
//! hyperparameters under TRL's own names, and a README with the commands
//! (`python train_trl.py`, or `accelerate launch train_trl.py` on several GPUs).
//!
//! The script's body is one static file (`trl_handoff.py`); only its head, the settings, is
//! written here, so what runs in TRL is plain to read.

use serde_json::{Value, json};

use super::run::split_indices;
use super::session::Session;
use super::spec::{Method, MethodKind, RewardSpec, RunSpec};
use crate::align::dpo::DpoLossType;
use crate::align::rl::{Advantage, KlEstimator, KlPlacement};
use crate::align::train::Schedule;
use crate::data::{Demonstration, Preference, Unpaired, export};
use crate::io::peft::AdapterFiles;
use crate::judges::{JudgeData, JudgeSpec, Judges};
use crate::{Error, Result};

const SCRIPT_BODY: &str = include_str!("trl_handoff.py");

/// The TRL release the script was written and checked against (`scripts/interop-trl`).
pub const TRL_VERSION: &str = "1.16.0";

/// What a hand-off is made of.
pub struct Handoff<'a> {
    pub spec: &'a RunSpec,
    /// The base model as the script loads it: a hub id, a local HF directory, or a `.gguf` file
    /// (transformers dequantizes it). The script's `--model` replaces it.
    pub base_model: String,
    /// The run's adapter (the policy's, or the reward model's), which the script continues from.
    pub adapter: Option<AdapterFiles>,
    /// RLHF against the session's reward model: that reward model, in PEFT's SEQ_CLS layout.
    pub reward_model: Option<AdapterFiles>,
    /// The judges' word lists, to write alignlab's own scores beside the texts they score so the
    /// script can check that its Python judges agree before it trains.
    pub judge_data: &'a JudgeData,
    /// Whether the model has a chat template: the run applied it only then (with `chat` on).
    pub has_chat_template: bool,
}

/// Texts the judges' check scores besides the run's own prompts: each judge fires on some.
const JUDGE_PROBES: &[&str] = &[
    "Thank you so much, I am happy to help! This is a wonderful idea.",
    "This is a terrible, awful answer and I hate it.",
    "Could you please tell me more? Sorry for the trouble.",
    "What the hell is this crap",
    "The cat sat on the mat.",
    "",
];

impl<'a> Handoff<'a> {
    /// What `session` holds for a run of `spec`: the adapter the run trained (the policy's, or the
    /// reward model for a reward-model run), the reward model an RLHF run scored with, the judges'
    /// data. Both front ends hand off through this.
    pub async fn from_session(session: &'a Session, spec: &'a RunSpec, base_model: String) -> Result<Self> {
        let adapter = match spec.method.kind() {
            MethodKind::Reward if session.reward_model.is_some() => Some(session.export_reward_model().await?),
            MethodKind::Reward => None,
            _ if session.policy.lora().is_some() => Some(session.policy.export_adapter(&session.model_name()).await?),
            _ => None,
        };
        let reward_model = match &spec.method {
            Method::Rl { reward: RewardSpec::RewardModel, .. } => Some(session.export_reward_model().await?),
            _ => None,
        };
        let has_chat_template = session.lm.chat_template.is_some();
        Ok(Self { spec, base_model, adapter, reward_model, judge_data: &session.judge_data, has_chat_template })
    }

    /// The files, by relative path.
    pub fn files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let spec = self.spec;
        if matches!(spec.method, Method::Rl { reward: RewardSpec::Ensemble(_), .. }) {
            return Err(Error::Unsupported("TRL has no reward-model ensemble to hand this run to: hand off a run rewarded by judges or by one reward model".into()));
        }
        if matches!(spec.method, Method::Rl { reward: RewardSpec::RewardModel, .. }) && self.reward_model.is_none() {
            return Err(Error::Invalid("this RLHF run used the reward model: export needs it, train or load one first".into()));
        }
        let mut files = self.data_files()?;
        if let Some(a) = &self.adapter {
            files.push(("adapter/adapter_config.json".into(), a.config_json.clone().into_bytes()));
            files.push(("adapter/adapter_model.safetensors".into(), a.safetensors.clone()));
        }
        if let Some(rm) = &self.reward_model {
            files.push(("reward_model/adapter_config.json".into(), rm.config_json.clone().into_bytes()));
            files.push(("reward_model/adapter_model.safetensors".into(), rm.safetensors.clone()));
        }
        if let Method::Rl { reward: RewardSpec::Judges(judges), .. } = &spec.method {
            files.push(("judges_check.jsonl".into(), self.judges_check(judges)?.into_bytes()));
        }
        files.push(("train_trl.py".into(), self.script().into_bytes()));
        files.push(("README.md".into(), self.readme().into_bytes()));
        Ok(files)
    }

    /// `train.jsonl` and `eval.jsonl` (when the run held examples out), in TRL's formats:
    /// conversational (lists of role/content messages) when the run used the chat template, so
    /// TRL applies the same template; plain text otherwise.
    fn data_files(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let spec = self.spec;
        let d = &spec.data;
        let kind = spec.method.kind();
        let rows: Vec<Value> = match kind {
            MethodKind::Dpo | MethodKind::Reward => d.pairs.iter().map(|p| self.pair_row(p)).collect(),
            MethodKind::Kto => d.unpaired.iter().map(|u| self.unpaired_row(u)).collect(),
            MethodKind::Sft => d.demos.iter().map(|x| self.demo_row(x)).collect(),
            MethodKind::Rl => d.prompts.iter().map(|p| json!({ "prompt": self.prompt(p) })).collect(),
        };
        if rows.is_empty() {
            return Err(Error::Invalid(format!("this run has no data to hand off: {}", kind.needs())));
        }
        let min = if kind == MethodKind::Kto { 2 } else { 1 };
        let (train, held) = split_indices(rows.len(), spec, min);
        let pick = |idx: &[usize]| export(&idx.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>()).into_bytes();
        let mut files = vec![("train.jsonl".to_string(), pick(&train))];
        if !held.is_empty() {
            files.push(("eval.jsonl".into(), pick(&held)));
        }
        Ok(files)
    }

    /// Whether the run formatted prompts with the chat template.
    fn chat(&self) -> bool {
        self.spec.encoding.chat && self.has_chat_template
    }

    fn prompt(&self, prompt: &str) -> Value {
        if !self.chat() {
            return json!(prompt);
        }
        let system = self.spec.encoding.system.trim();
        let mut msgs = Vec::new();
        if !system.is_empty() {
            msgs.push(json!({ "role": "system", "content": self.spec.encoding.system }));
        }
        msgs.push(json!({ "role": "user", "content": prompt }));
        Value::Array(msgs)
    }

    fn answer(&self, text: &str) -> Value {
        if self.chat() { json!([{ "role": "assistant", "content": text }]) } else { json!(text) }
    }

    fn pair_row(&self, p: &Preference) -> Value {
        let mut row = json!({ "prompt": self.prompt(&p.prompt), "chosen": self.answer(&p.chosen), "rejected": self.answer(&p.rejected) });
        // TRL's RewardTrainer reads a per-row `margin` column; alignlab's margin is one number.
        if let Method::Reward(c) = &self.spec.method
            && c.margin != 0.0
        {
            row["margin"] = json!(c.margin);
        }
        row
    }

    fn unpaired_row(&self, u: &Unpaired) -> Value {
        json!({ "prompt": self.prompt(&u.prompt), "completion": self.answer(&u.completion), "label": u.label })
    }

    fn demo_row(&self, x: &Demonstration) -> Value {
        json!({ "prompt": self.prompt(&x.prompt), "completion": self.answer(&x.completion) })
    }

    /// alignlab's score of each judge on a few texts and the run's prompts, one line per text.
    fn judges_check(&self, judges: &[(JudgeSpec, f64)]) -> Result<String> {
        let j = Judges::new(judges.to_vec(), self.judge_data)?;
        let texts = JUDGE_PROBES.iter().copied().chain(self.spec.data.prompts.iter().map(String::as_str).take(32));
        let rows: Vec<Value> = texts
            .map(|t| {
                let scores: Vec<f64> = j.items.iter().map(|(spec, _)| j.score_one(spec, t)).collect();
                json!({ "text": t, "scores": scores, "total": j.score(t) })
            })
            .collect();
        Ok(export(&rows))
    }

    /// The script: its settings written from the run, then the static body.
    pub fn script(&self) -> String {
        let spec = self.spec;
        let t = &spec.train;
        let e = &spec.encoding;
        let kind = spec.method.kind();
        let mut args: Vec<(&str, String)> = vec![
            ("learning_rate", py_f64(t.learning_rate)),
            ("weight_decay", py_f64(t.weight_decay)),
            ("adam_beta1", py_f64(t.adam_beta1)),
            ("adam_beta2", py_f64(t.adam_beta2)),
            ("adam_epsilon", py_f64(t.adam_epsilon)),
            // transformers 5 reads a float below 1 as the warm-up's share of the steps.
            ("warmup_steps", py_f64(t.warmup_ratio)),
            ("lr_scheduler_type", py_str(schedule(t.lr_scheduler_type))),
            ("max_grad_norm", py_f64(t.max_grad_norm)),
            ("gradient_accumulation_steps", t.gradient_accumulation_steps.to_string()),
            ("per_device_train_batch_size", t.per_device_train_batch_size.to_string()),
            ("max_steps", t.max_steps.to_string()),
            ("seed", t.seed.to_string()),
        ];
        let max_length = e.max_prompt_length.checked_add(e.max_completion_length).filter(|&n| n < 1 << 24);
        if let (true, Some(n)) = (kind != MethodKind::Rl, max_length) {
            args.push(("max_length", n.to_string()));
        }
        let mut notes: Vec<String> = Vec::new();
        if spec.train.in_order {
            notes.push("alignlab took the training examples in the order of train.jsonl (a curriculum); TRL's trainer shuffles them".into());
        }
        match &spec.method {
            Method::Dpo(c) => {
                args.push(("beta", py_f64(c.beta)));
                args.push(("loss_type", py_str(dpo_loss(c.loss_type))));
                args.push(("label_smoothing", py_f64(c.label_smoothing)));
            }
            Method::Kto(c) => {
                args.push(("beta", py_f64(c.beta)));
                args.push(("desirable_weight", py_f64(c.desirable_weight)));
                args.push(("undesirable_weight", py_f64(c.undesirable_weight)));
            }
            Method::Reward(c) => {
                args.push(("center_rewards_coefficient", py_f64(c.center_rewards_coefficient)));
                if c.margin != 0.0 {
                    notes.push(format!("the margin {} is written into every row of the data (TRL's `margin` column)", c.margin));
                }
            }
            Method::Sft => args.push(("completion_only_loss", "True".into())),
            Method::Rl { cfg, .. } => {
                // TRL counts completions per device batch and optimizer steps; a round here is
                // `prompts_per_step` prompts × `num_generations` samples, reused `num_iterations` times.
                let round = cfg.prompts_per_step * cfg.num_generations;
                args.retain(|(k, _)| *k != "per_device_train_batch_size" && *k != "max_steps");
                args.push(("per_device_train_batch_size", round.to_string()));
                args.push(("max_steps", (t.max_steps * cfg.num_iterations).to_string()));
                args.push(("num_generations", cfg.num_generations.to_string()));
                args.push(("max_completion_length", cfg.max_new_tokens.to_string()));
                args.push(("temperature", py_f64(cfg.temperature as f64)));
                args.push(("top_p", py_f64(cfg.top_p as f64)));
                args.push(("num_iterations", cfg.num_iterations.to_string()));
                args.push(("epsilon", py_f64(cfg.epsilon)));
                args.push(("beta", py_f64(cfg.beta)));
                if cfg.advantage == Advantage::Grpo {
                    // alignlab averages each sample's tokens, then the samples: TRL's "grpo".
                    args.push(("loss_type", py_str("grpo")));
                    args.push(("scale_rewards", py_str("group")));
                }
                if cfg.kl_estimator != KlEstimator::K3 || (cfg.advantage == Advantage::Grpo && cfg.kl_in != KlPlacement::Loss) {
                    notes.push(format!(
                        "this run put a {:?} KL estimate in the {:?}; TRL's {} puts {} there",
                        cfg.kl_estimator,
                        cfg.kl_in,
                        rl_trainer(cfg.advantage),
                        if cfg.advantage == Advantage::Grpo { "k3 in the loss" } else { "the sequence KL in the reward" }
                    ));
                }
            }
        }
        let lora = spec.lora.as_ref().map_or("None".to_string(), |l| {
            let modules: Vec<String> = l.target_modules.iter().map(|m| py_str(m)).collect();
            format!(
                "dict(r={}, lora_alpha={}, lora_dropout={}, target_modules=[{}], use_rslora={})",
                l.r,
                py_f64(l.lora_alpha),
                py_f64(l.lora_dropout),
                modules.join(", "),
                py_bool(l.use_rslora)
            )
        });
        let reward = match &spec.method {
            Method::Rl { reward: RewardSpec::Judges(j), .. } => {
                let items: Vec<String> = j.iter().map(|(s, w)| format!("({}, {})", py_json(&serde_json::to_value(s).unwrap_or(Value::Null)), py_f64(*w))).collect();
                format!("[{}]", items.join(", "))
            }
            Method::Rl { reward: RewardSpec::RewardModel, .. } => py_str("reward_model"),
            _ => "None".into(),
        };
        let config = trl_config(spec);
        let args: Vec<String> = args.iter().map(|(k, v)| format!("    {k}={v},")).collect();
        let notes: String = notes.iter().map(|n| format!("# Differs from the alignlab run: {n}.\n")).collect();
        format!(
            "#!/usr/bin/env python3\n\
             # Written by alignlab: continue a {name} run in Hugging Face TRL {TRL_VERSION} with the same settings.\n\
             #   python train_trl.py                      (one GPU, or the CPU)\n\
             #   accelerate launch train_trl.py           (several GPUs; `accelerate config` first)\n\
             # --model replaces the base model (a hub id, an HF directory or a .gguf file);\n\
             # --fresh starts a new adapter instead of continuing from ./adapter.\n\
             {notes}\
             METHOD = {method}\n\
             BASE_MODEL = {base}\n\
             CHAT = {chat}\n\
             CONFIG = {config}\n\
             ARGS = dict(\n{args}\n)\n\
             EVAL_STEPS = {eval_steps}\n\
             ENCODING = dict(max_prompt_length={mpl}, max_completion_length={mcl})\n\
             LORA = {lora}\n\
             REWARD = {reward}\n\
             \n{SCRIPT_BODY}",
            name = spec.method.name(),
            method = py_str(kind.id()),
            base = py_str(&self.base_model),
            chat = py_bool(self.chat()),
            config = py_str(config),
            args = args.join("\n"),
            eval_steps = spec.eval.eval_steps,
            mpl = e.max_prompt_length.min(1 << 24),
            mcl = e.max_completion_length.min(1 << 24),
        )
    }

    fn readme(&self) -> String {
        let spec = self.spec;
        let kind = spec.method.kind();
        let data = if kind == MethodKind::Rl { "prompts" } else { "examples" };
        let adapter = match (&self.adapter, kind) {
            (Some(_), MethodKind::Reward) => "- `adapter/`: the reward model this run trained (PEFT, SEQ_CLS with its score head); the script continues from it.\n",
            (Some(_), _) => "- `adapter/`: the LoRA adapter this run trained (PEFT layout); the script continues from it (`--fresh` starts anew).\n",
            (None, _) => "- no adapter: this run trained every weight (full fine-tuning); the script trains a LoRA adapter on the base model.\n",
        };
        let rm = if self.reward_model.is_some() { "- `reward_model/`: the reward model the run used as its reward (PEFT, SEQ_CLS).\n" } else { "" };
        let judges = if matches!(spec.method, Method::Rl { reward: RewardSpec::Judges(_), .. }) {
            "- `judges_check.jsonl`: alignlab's judge scores on some texts; the script's Python judges must agree before training starts (they read the same VADER lexicon and profanity list, from PyPI).\n"
        } else {
            ""
        };
        format!(
            "# Take this run further: {name} in TRL\n\n\
             What this folder holds:\n\n\
             - `train.jsonl`, `eval.jsonl`: the run's {data} in TRL's JSONL ({form}), split as the run split them.\n\
             {adapter}{rm}{judges}\
             - `train_trl.py`: TRL {TRL_VERSION} with this run's hyperparameters under TRL's names ({config}).\n\n\
             ## Run it\n\n\
             ```sh\n\
             pip install \"trl=={TRL_VERSION}\" peft datasets accelerate{extra}\n\
             python train_trl.py --model {base}\n\
             # several GPUs: accelerate config, then\n\
             accelerate launch train_trl.py --model {base}\n\
             ```\n\n\
             `--model` takes a hub id (the unquantized model the run's file was made from trains best), a\n\
             local HF directory, or the same `.gguf` file (transformers dequantizes it). `--max-steps N`\n\
             and `--output-dir DIR` override the run's values. The trained adapter lands in `trl-output/`\n\
             and loads back into alignlab (Data tab, or `alignlab generate --adapter trl-output`).\n",
            name = spec.method.name(),
            form = if self.chat() { "conversational: TRL applies the model's chat template, as the run did" } else { "plain text, no chat template, as the run used" },
            config = trl_config(spec),
            extra = if judges.is_empty() { "" } else { " vaderSentiment==3.3.2 better-profanity==0.7.0" },
            base = self.base_model,
        )
    }
}

/// The TRL config class a run of `spec` continues under.
fn trl_config(spec: &RunSpec) -> &'static str {
    match spec.method.kind() {
        MethodKind::Dpo => "DPOConfig",
        MethodKind::Kto => "KTOConfig",
        MethodKind::Reward => "RewardConfig",
        MethodKind::Sft => "SFTConfig",
        MethodKind::Rl => rl_config(spec),
    }
}

fn rl_config(spec: &RunSpec) -> &'static str {
    match &spec.method {
        Method::Rl { cfg, .. } if cfg.advantage == Advantage::Rloo => "RLOOConfig",
        _ => "GRPOConfig",
    }
}

fn rl_trainer(a: Advantage) -> &'static str {
    match a {
        Advantage::Grpo => "GRPOTrainer",
        Advantage::Rloo => "RLOOTrainer",
    }
}

fn schedule(s: Schedule) -> &'static str {
    match s {
        // alignlab's constant schedule warms up first (when warmup_ratio > 0).
        Schedule::Constant => "constant_with_warmup",
        Schedule::Linear => "linear",
        Schedule::Cosine => "cosine",
    }
}

fn dpo_loss(l: DpoLossType) -> &'static str {
    match l {
        DpoLossType::Sigmoid => "sigmoid",
        DpoLossType::Robust => "robust",
        DpoLossType::Ipo => "ipo",
        DpoLossType::Hinge => "hinge",
    }
}

/// A Python float literal: Rust's shortest round-trip form is one (`0.1`, `1e-5`, `2.0`).
fn py_f64(v: f64) -> String {
    if v.is_finite() { format!("{v:?}") } else { "float('nan')".into() }
}

fn py_bool(b: bool) -> String {
    if b { "True" } else { "False" }.into()
}

/// A Python string literal: a JSON string is one.
fn py_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A JSON value as a Python literal (`true`/`false`/`null` spelt as Python spells them).
fn py_json(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => py_bool(*b),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_json).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!("{{{}}}", o.iter().map(|(k, v)| format!("{}: {}", py_str(k), py_json(v))).collect::<Vec<_>>().join(", ")),
    }
}

/// Without the `zip` feature (the fuzzing build of the loaders) there is no archive writer.
#[cfg(not(feature = "zip"))]
pub fn zip(_files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    Err(Error::Unsupported("this build has no zip writer (cargo feature `zip`)".into()))
}

/// The files as one zip archive (deflated), for a single download in the page.
#[cfg(feature = "zip")]
pub fn zip(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let fail = |e: &dyn std::fmt::Display| Error::Invalid(format!("could not build the zip: {e}"));
    for (name, bytes) in files {
        w.start_file(name.as_str(), opts).map_err(|e| fail(&e))?;
        w.write_all(bytes).map_err(|e| fail(&e))?;
    }
    Ok(w.finish().map_err(|e| fail(&e))?.into_inner())
}
