//! The knobs the page remembers between visits, and how an older version's saved shape is read.

use serde::{Deserialize, Serialize};

use crate::align::Encoding;
use crate::generate::SamplingConfig;
use crate::lab::RunSettings;

/// Knobs the page remembers between visits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub system: String,
    pub prompt: String,
    pub chat: bool,
    #[serde(deserialize_with = "or_default")]
    pub sampling: SamplingConfig,
    pub judges: Vec<(String, f64, bool)>,
    #[serde(deserialize_with = "or_default")]
    pub train: RunSettings,
}

/// A part of the saved settings that an older version stored in another shape comes back as its
/// default; the rest of the settings are kept.
fn or_default<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned + Default>(d: D) -> Result<T, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(crate::lab::from_value(v).unwrap_or_default())
}

/// A saved field read through a JSON value, as lab files' settings are: the page's download then
/// holds one reader of the type (run settings are large), not one for each way in.
pub(super) fn via_value<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    crate::lab::from_value(v).map_err(|e| serde::de::Error::custom(format!("{}: {}", e.path(), e.inner())))
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            system: String::new(),
            prompt: "Write a short, friendly note to a neighbour.".into(),
            chat: true,
            // A class compares a few short answers.
            sampling: SamplingConfig { max_new_tokens: 48, temperature: 0.8, top_p: 0.95, seed: 1, num_samples: 4, ..SamplingConfig::default() },
            judges: vec![
                ("sentiment".into(), 1.0, true),
                ("politeness".into(), 1.0, false),
                ("profanity".into(), 1.0, false),
                ("length=30".into(), 1.0, false),
                ("neutral".into(), 1.0, false),
            ],
            train: RunSettings::default(),
        }
    }
}

impl Settings {
    /// How Generate, Compare and the judges turn a prompt into tokens.
    pub fn encoding(&self) -> Encoding {
        Encoding::untruncated(self.chat, &self.system)
    }

    /// The judges switched on, parsed (`sentiment`, `length=30`, `include=a+b`...), with weights.
    pub fn judge_specs(&self) -> Result<Vec<(crate::judges::JudgeSpec, f64)>, String> {
        self.judges
            .iter()
            .filter(|(_, _, on)| *on)
            .map(|(s, w, _)| crate::judges::JudgeSpec::parse_weighted(s).map(|(j, _)| (j, *w)).map_err(|e| e.to_string()))
            .collect()
    }
}
