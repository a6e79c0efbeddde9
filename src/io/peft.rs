//! LoRA adapters in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors`, so an
//! adapter trained here loads in PEFT (`PeftModel.from_pretrained`) and the other way round.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::backend::read_f32;
use crate::model::{Llama, LoraConfig};
use crate::{Error, Result};

/// PEFT's `LoraConfig` as it is written to `adapter_config.json` (fields we do not use keep
/// PEFT's defaults so PEFT reads the file without surprises).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default = "none")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "yes")]
    pub inference_mode: bool,
    #[serde(default = "yes")]
    pub init_lora_weights: bool,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub use_dora: bool,
}

fn none() -> String {
    "none".into()
}
fn yes() -> bool {
    true
}

/// PEFT writes `target_modules` as a list, but accepts (and some tools write) a single string.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    One(String),
}

impl AdapterConfig {
    pub fn from_lora(cfg: &LoraConfig, base_model: &str) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: cfg.r,
            lora_alpha: cfg.lora_alpha,
            lora_dropout: cfg.lora_dropout,
            target_modules: TargetModules::List(cfg.target_modules.clone()),
            use_rslora: cfg.use_rslora,
            bias: "none".into(),
            fan_in_fan_out: false,
            base_model_name_or_path: Some(base_model.into()),
            inference_mode: true,
            init_lora_weights: true,
            modules_to_save: None,
            use_dora: false,
        }
    }

    pub fn to_lora(&self) -> Result<LoraConfig> {
        let unsupported = |m: String| Err(Error::Unsupported(format!("adapter_config.json: {m}")));
        if self.peft_type != "LORA" {
            return unsupported(format!("peft_type '{}' is not supported (only LORA)", self.peft_type));
        }
        if self.bias != "none" {
            return unsupported(format!("bias '{}' is not supported (only none)", self.bias));
        }
        if self.fan_in_fan_out {
            return unsupported("fan_in_fan_out adapters (GPT-2 Conv1D) are not supported".into());
        }
        if self.use_dora {
            return unsupported("DoRA adapters are not supported".into());
        }
        if self.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return unsupported("modules_to_save (fully trained extra layers) is not supported".into());
        }
        let target_modules = match &self.target_modules {
            TargetModules::List(v) => v.clone(),
            TargetModules::One(s) if s == "all-linear" => crate::model::lora::TARGETS.iter().map(|s| s.to_string()).collect(),
            TargetModules::One(s) => return unsupported(format!("target_modules regex '{s}' is not supported; list the modules")),
        };
        let cfg = LoraConfig {
            r: self.r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            target_modules,
            use_rslora: self.use_rslora,
            seed: 0,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The two files of an adapter, in memory.
#[derive(Clone, Debug)]
pub struct AdapterFiles {
    pub config_json: String,
    pub safetensors: Vec<u8>,
}

/// Serialises the model's adapters (`cfg` as they were created) in PEFT's layout.
pub async fn save_adapter(model: &Llama, cfg: &LoraConfig, base_model: &str) -> Result<AdapterFiles> {
    save_adapter_with(model, cfg, base_model, "CAUSAL_LM", Vec::new()).await
}

/// [`save_adapter`] with a task type and extra fully-trained tensors (PEFT's `modules_to_save`,
/// e.g. a reward model's `score` head), given as `(module name, PEFT key, tensor)`.
pub async fn save_adapter_with(
    model: &Llama,
    cfg: &LoraConfig,
    base_model: &str,
    task_type: &str,
    extra: Vec<(String, String, burn::tensor::Tensor<2>)>,
) -> Result<AdapterFiles> {
    if !model.has_lora() {
        return Err(Error::Invalid("the model has no LoRA adapter to save".into()));
    }
    let mut ac = AdapterConfig::from_lora(cfg, base_model);
    ac.task_type = Some(task_type.into());
    if !extra.is_empty() {
        ac.modules_to_save = Some(extra.iter().map(|(m, _, _)| m.clone()).collect());
    }
    let mut tensors = Vec::new();
    let all = model.lora_tensors().into_iter().chain(extra.into_iter().map(|(_, k, t)| (k, t)));
    for (name, t) in all {
        let shape = t.dims().to_vec();
        let data = read_f32(t).await?;
        tensors.push((name, shape, data.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| Error::format(e.to_string()))?)))
        .collect::<Result<_>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let safetensors = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::format(e.to_string()))?;
    let config_json = serde_json::to_string_pretty(&ac).unwrap();
    Ok(AdapterFiles { config_json, safetensors })
}

/// Installs a PEFT adapter into `model` (replacing any adapter it had). Returns its config.
pub fn load_adapter(model: &mut Llama, config_json: &[u8], safetensors_bytes: &[u8]) -> Result<LoraConfig> {
    load_adapter_with(model, config_json, safetensors_bytes, &[], &mut |_, _| Ok(()))
}

/// [`load_adapter`] accepting `modules_to_save` entries listed in `allowed_extra`, whose tensors
/// are handed to `extra(key, (shape, data))`.
pub fn load_adapter_with(
    model: &mut Llama,
    config_json: &[u8],
    safetensors_bytes: &[u8],
    allowed_extra: &[&str],
    extra: &mut dyn FnMut(&str, (Vec<usize>, Vec<f32>)) -> Result<()>,
) -> Result<LoraConfig> {
    let mut ac: AdapterConfig = serde_json::from_slice(config_json)
        .map_err(|e| Error::format(format!("adapter_config.json is not a PEFT adapter config: {e}")))?;
    let extras = ac.modules_to_save.take().unwrap_or_default();
    if let Some(m) = extras.iter().find(|m| !allowed_extra.contains(&m.as_str())) {
        return Err(Error::Unsupported(format!(
            "adapter_config.json: modules_to_save '{m}' is not supported here (a reward model adapter loaded as a policy?)"
        )));
    }
    if !allowed_extra.is_empty() && extras.is_empty() {
        return Err(Error::format("this adapter has no trained head (modules_to_save); is it a reward model?"));
    }
    let cfg = ac.to_lora()?;
    let st = SafeTensors::deserialize(safetensors_bytes)
        .map_err(|e| Error::format(format!("adapter_model.safetensors is corrupt: {e}")))?;
    let mut get = |key: &str| -> Option<(Vec<usize>, Vec<f32>)> {
        // PEFT files from some versions name the adapter (`lora_A.default.weight`).
        let view = st.tensor(key).or_else(|_| st.tensor(&key.replace(".weight", ".default.weight"))).ok()?;
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::F16 => view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => view.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            _ => return None,
        };
        Some((view.shape().to_vec(), data))
    };
    model.load_lora(&cfg, &mut get)?;
    for m in &extras {
        let key = format!("base_model.model.{m}.weight");
        let t = get(&key).ok_or_else(|| Error::format(format!("adapter file lacks '{key}'")))?;
        extra(&key, t)?;
    }
    Ok(cfg)
}

impl AdapterFiles {
    /// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`, each written whole
    /// beside its name and then renamed, so a crash never leaves half a file.
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        write_atomic(&dir.join("adapter_model.safetensors"), &self.safetensors)?;
        write_atomic(&dir.join("adapter_config.json"), self.config_json.as_bytes())
    }

    /// Reads the two files of an adapter directory.
    pub fn read_dir(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| Error::io(p.display(), e))
        };
        let config_json = String::from_utf8(read("adapter_config.json")?)
            .map_err(|_| Error::format(format!("{}: adapter_config.json is not UTF-8 text", dir.display())))?;
        Ok(Self { config_json, safetensors: read("adapter_model.safetensors")? })
    }
}

/// Writes `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
}
