//! What the page learns of a loaded model: its shape, its name, and where its load's time went.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model's own name (a GGUF's `general.name`), else its file's: what saved adapters are
    /// matched by.
    pub name: String,
    /// The name shown: the file's, when it names the model better than its metadata does.
    #[serde(default)]
    pub title: String,
    pub format: String,
    pub parameters: usize,
    pub layers: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub context: usize,
    pub chat_template: bool,
    /// Each part of the load and its wall time, in order: what a slow load is waiting on.
    #[serde(default)]
    pub stages: Vec<LoadStage>,
    /// The file came from the browser's cache, not the network.
    pub from_cache: bool,
    /// The background training warm-up's own time in ms, once it has ended (the page sets it
    /// from [`super::Event::TrainingWarmed`]; not part of the load).
    #[serde(default)]
    pub training_warm_up_ms: Option<f64>,
    /// The background making of the deferred f32 weights, in ms, once it has ended (from
    /// [`super::Event::WeightsMade`]; not part of the load).
    #[serde(default)]
    pub weights_made_ms: Option<f64>,
    /// The last reference scored ahead of a run: pairs and ms (from
    /// [`super::Event::ReferenceScored`]).
    #[serde(default)]
    pub scored_ahead: Option<(usize, f64)>,
}

/// One part of a model's load and its wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoadPart {
    /// Fetching the file (network or the browser's cache), or reading the one picked.
    Download,
    /// Waiting for the compute device to open once the file was in.
    Device,
    /// Parsing the file: header, tokenizer, weights as stored.
    Parse,
    /// The weights onto the device, as the model trains them.
    Weights,
    /// The judges' word lists, fetched once.
    Judges,
    /// One token through the model (on WebGPU it compiles the kernels).
    WarmUp,
}

impl LoadPart {
    pub fn label(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Device => "device",
            Self::Parse => "parse",
            Self::Weights => "weights",
            Self::Judges => "judges",
            Self::WarmUp => "warm-up",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadStage {
    pub part: LoadPart,
    pub ms: f64,
}

impl ModelSummary {
    /// The whole load, in ms: its parts' sum.
    pub fn load_ms(&self) -> f64 {
        self.stages.iter().map(|s| s.ms).sum()
    }

    /// "download 0.62 s · device 0.00 s · parse 0.31 s · …", in order.
    pub fn stages_line(&self) -> String {
        let mut line = self.stages.iter().map(|s| format!("{} {:.2} s", s.part.label(), s.ms / 1000.0)).collect::<Vec<_>>().join(" · ");
        if let Some(ms) = self.weights_made_ms {
            line.push_str(&format!("; then, in the background, the f32 weights training reads {:.2} s", ms / 1000.0));
        }
        if let Some(ms) = self.training_warm_up_ms {
            line.push_str(&format!("; then, in the background, training warm-up {:.2} s", ms / 1000.0));
        }
        if let Some((pairs, ms)) = self.scored_ahead {
            line.push_str(&format!("; the reference model's scores of {pairs} new pairs, ahead of training, {:.2} s", ms / 1000.0));
        }
        line
    }
}

#[cfg(feature = "engine")]
impl ModelSummary {
    pub fn of(lm: &crate::io::LoadedModel, name: String, file: &str, stages: Vec<LoadStage>, from_cache: bool) -> Self {
        let c = &lm.config;
        Self {
            title: title(&name, file),
            name,
            format: lm.info.format.clone(),
            parameters: c.num_parameters(),
            layers: c.num_hidden_layers,
            hidden: c.hidden_size,
            vocab: c.vocab_size,
            context: c.max_position_embeddings,
            chat_template: lm.chat_template.is_some(),
            stages,
            from_cache,
            training_warm_up_ms: None,
            weights_made_ms: None,
            scored_ahead: None,
        }
    }
}

/// What to call a model: a GGUF file's name says it as its makers wrote it
/// ("SmolLM2-135M-Instruct.Q4_1.gguf" → "SmolLM2-135M-Instruct (Q4_1)"), where the metadata's
/// `general.name` is often machine-made ("Smollm2 135M 8k Lc100K Mix1 Ep2").
pub fn title(name: &str, file: &str) -> String {
    let file = file.rsplit('/').next().unwrap_or(file).split(['?', '#']).next().unwrap_or(file);
    let Some(stem) = file.strip_suffix(".gguf").filter(|s| !s.is_empty()) else { return name.to_string() };
    match stem.rsplit_once('.') {
        Some((model, quant)) if quant.len() <= 8 && quant.starts_with(['Q', 'q', 'F', 'f', 'I', 'B']) && !model.is_empty() => format!("{model} ({quant})"),
        _ => stem.to_string(),
    }
}
