//! One tokenizer type over the three sources: an HF `tokenizers::Tokenizer` (from `tokenizer.json`
//! or built from GGUF's byte-level BPE), or a scored SentencePiece vocabulary (llama2.c, GGUF
//! `llama`), plus the special ids generation needs.

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::spm::SpmTokenizer;
use crate::{Error, Result};

/// The special tokens an HF checkpoint names outside `tokenizer.json`.
#[derive(Clone, Debug, Default)]
pub struct HfSpecials {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Used when the token names are absent (`config.json`'s `bos_token_id`/`eos_token_id`).
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
}

#[derive(Clone)]
enum Inner {
    Hf(Box<tokenizers::Tokenizer>),
    Spm(SpmTokenizer),
}

#[derive(Clone)]
pub struct Tokenizer {
    inner: Inner,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    /// Whether encoding with special tokens prepends BOS (llama2.c and Llama-2 do; SmolLM2 not).
    pub add_bos: bool,
    /// Ids that end a generated turn: EOS plus end-of-turn markers such as `<|im_end|>`.
    pub stop_ids: Vec<u32>,
    /// Where the vocabulary came from, for `alignlab info`.
    pub kind: String,
    /// Notes on approximations taken while building it (e.g. an unknown GGUF pre-tokenizer).
    pub warnings: Vec<String>,
    /// The largest id the vocabulary can produce.
    max_id: u32,
    /// The longest token's text in bytes (capped): no token covers more of the input than this.
    max_piece_bytes: usize,
}

/// Pieces longer than this are treated as this long when bounding how much text to tokenize.
const MAX_PIECE_BYTES: usize = 256;

/// End-of-turn markers of common chat formats; any present in the vocabulary stops generation.
const END_OF_TURN: [&str; 5] = ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"];

impl Tokenizer {
    fn finish(inner: Inner, bos_id: Option<u32>, eos_id: Option<u32>, add_bos: bool, kind: String) -> Self {
        let (max_id, max_piece_bytes) = match &inner {
            Inner::Hf(t) => {
                let vocab = t.get_vocab(true);
                (vocab.values().copied().max().unwrap_or(0), vocab.keys().map(String::len).max().unwrap_or(1))
            }
            Inner::Spm(t) => ((t.vocab_size() - 1) as u32, t.max_piece_bytes()),
        };
        let max_piece_bytes = max_piece_bytes.clamp(1, MAX_PIECE_BYTES);
        let mut t = Self {
            inner,
            bos_id,
            eos_id,
            add_bos,
            stop_ids: Vec::new(),
            kind,
            warnings: Vec::new(),
            max_id,
            max_piece_bytes,
        };
        t.stop_ids.extend(eos_id);
        for marker in END_OF_TURN {
            if let Some(id) = t.token_to_id(marker) {
                if !t.stop_ids.contains(&id) {
                    t.stop_ids.push(id);
                }
            }
        }
        t
    }

    /// From an HF `tokenizer.json` (bytes). `tokenizer.json` does not say which tokens are BOS and
    /// EOS: `specials` does (from `tokenizer_config.json`, else `config.json`'s ids).
    pub fn from_hf_json(bytes: &[u8], specials: &HfSpecials) -> Result<Self> {
        // tokenizers 0.22 fails badly on three kinds of input, so all are refused here first: JSON
        // it cannot read inside some sections (a panic, `expect("Helper")`: a string that is not
        // UTF-8 or a lone surrogate, found by fuzzing), a `Precompiled` normalizer whose fields do
        // not parse (a panic, `expect("Precompiled")`), and one whose size header makes it reserve
        // gigabytes before reading (`check_trie_size`, found by fuzzing).
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json is not valid JSON: {e}")))?;
        check_precompiled(&json)?;
        let tk = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json could not be parsed: {e}")))?;
        let id = |name: &Option<String>, fallback: Option<u32>| name.as_deref().and_then(|n| tk.token_to_id(n)).or(fallback);
        let bos_id = id(&specials.bos_token, specials.bos_id);
        let eos_id = id(&specials.eos_token, specials.eos_id);
        Ok(Self::finish(Inner::Hf(Box::new(tk)), bos_id, eos_id, specials.add_bos, "hf tokenizer.json".into()))
    }

    /// GGUF `tokenizer.ggml.model = gpt2`: byte-level BPE from the embedded vocabulary and merges.
    pub fn from_gguf_bpe(
        tokens: &[String],
        token_types: &[i32],
        merges: &[String],
        pre: &str,
        bos_id: Option<u32>,
        eos_id: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("GGUF merge #{i} '{m}' is not two tokens separated by a space")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::Tokenizer(format!("GGUF BPE vocabulary is invalid: {e}")))?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        let (pre_tok, warning) = byte_level_pre_tokenizer(pre);
        tk.with_pre_tokenizer(Some(pre_tok));
        tk.with_decoder(Some(ByteLevel::default()));
        // Control (3) and user-defined (4) tokens are matched whole before BPE, as llama.cpp does.
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(token_types)
            .filter(|(_, ty)| **ty == 3 || **ty == 4)
            .map(|(t, ty)| AddedToken::from(t.clone(), *ty == 3))
            .collect();
        tk.add_special_tokens(&added);
        let mut t = Self::finish(Inner::Hf(Box::new(tk)), bos_id, eos_id, add_bos, format!("gguf gpt2 BPE (pre: {pre})"));
        t.warnings.extend(warning);
        Ok(t)
    }

    /// A scored SentencePiece vocabulary (llama2.c `tokenizer.bin`, GGUF `llama`).
    pub fn from_spm(spm: SpmTokenizer, bos_id: Option<u32>, eos_id: Option<u32>, kind: &str) -> Self {
        Self::finish(Inner::Spm(spm), bos_id, eos_id, true, kind.into())
    }

    pub fn vocab_size(&self) -> usize {
        match &self.inner {
            Inner::Hf(t) => t.get_vocab_size(true),
            Inner::Spm(t) => t.vocab_size(),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Hf(t) => t.token_to_id(token),
            Inner::Spm(t) => t.token_to_id(token),
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Inner::Hf(t) => t.id_to_token(id),
            Inner::Spm(t) => t.id_to_token(id).map(str::to_string),
        }
    }

    /// Token ids of `text`. Special-token strings in the text (e.g. `<|im_start|>`) map to their
    /// ids. With `add_special`, BOS is prepended when the model expects it.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let mut ids = match &self.inner {
            Inner::Hf(t) => t
                .encode(text, false)
                .map_err(|e| Error::Tokenizer(format!("could not encode text: {e}")))?
                .get_ids()
                .to_vec(),
            Inner::Spm(t) => t.encode(text),
        };
        if add_special && self.add_bos {
            if let Some(bos) = self.bos_id {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Bytes of text certain to hold more than `max_tokens` tokens: text beyond it can be cut
    /// before tokenizing without changing the first (or last) `max_tokens` ids, so a 10 MB line
    /// costs no more than a short one. A margin of 16 tokens covers the pieces that straddle the cut.
    pub fn text_budget(&self, max_tokens: usize) -> usize {
        max_tokens.saturating_add(16).saturating_mul(self.max_piece_bytes)
    }

    /// The id that pads batches: EOS, as TRL does for models without a pad token (padding is
    /// masked out, so which id it is only has to be a valid row).
    pub fn pad_id(&self) -> u32 {
        self.eos_id.unwrap_or(0)
    }

    /// The token that ends an assistant turn (appended to training completions).
    pub fn end_of_turn(&self) -> u32 {
        self.stop_ids.first().copied().unwrap_or_else(|| self.pad_id())
    }

    /// Text of `ids`, with special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.inner {
            Inner::Hf(t) => t.decode(ids, true).unwrap_or_default(),
            Inner::Spm(t) => t.decode(ids),
        }
    }

    /// The HF `tokenizer.json` text, when this is an HF tokenizer (GGUF BPE included).
    pub fn to_hf_json(&self) -> Option<String> {
        match &self.inner {
            Inner::Hf(t) => t.to_string(false).ok(),
            Inner::Spm(_) => None,
        }
    }

    /// Checks the tokenizer can address every row of a model's embedding, so a tokenizer from
    /// another model is caught at load rather than as garbage text.
    pub fn check_fits(&self, model_vocab: usize) -> Result<()> {
        let n = self.vocab_size();
        let specials = [self.bos_id, self.eos_id].into_iter().flatten().chain(self.stop_ids.iter().copied());
        if let Some(id) = specials.chain([self.max_id]).find(|&id| id as usize >= model_vocab) {
            return Err(Error::Tokenizer(format!(
                "the tokenizer can produce token id {id} but the model's embedding has only {model_vocab} \
                 rows: they do not belong together; pass the tokenizer that shipped with this model"
            )));
        }
        if n > model_vocab {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {n} tokens but the model's embedding has only {model_vocab} rows: \
                 they do not belong together; pass the tokenizer that shipped with this model"
            )));
        }
        if n + 1024 < model_vocab {
            return Err(Error::Tokenizer(format!(
                "the tokenizer has {n} tokens but the model expects {model_vocab}: \
                 they do not belong together; pass the tokenizer that shipped with this model"
            )));
        }
        Ok(())
    }
}

/// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`, as an HF pipeline.
fn byte_level_pre_tokenizer(pre: &str) -> (PreTokenizerWrapper, Option<String>) {
    let byte_level = |regex: bool| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, regex));
    match pre {
        // SmolLM / StarCoder: every digit on its own, then GPT-2's split.
        "smollm" | "starcoder" | "refact" => (
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(true),
            ])),
            None,
        ),
        "gpt2" | "default" | "gpt-2" => (byte_level(true), None),
        "llama3" | "llama-v3" | "llama-bpe" => {
            let pattern = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
            match Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false) {
                Ok(split) => (
                    PreTokenizerWrapper::Sequence(Sequence::new(vec![PreTokenizerWrapper::Split(split), byte_level(false)])),
                    None,
                ),
                Err(_) => (byte_level(true), Some("llama3 split regex failed to compile; using GPT-2's".into())),
            }
        }
        other => (
            byte_level(true),
            Some(format!("unknown GGUF pre-tokenizer '{other}': using GPT-2's split, tokens may differ slightly")),
        ),
    }
}

/// Every `{"type": "Precompiled", ...}` object in a tokenizer.json must parse as a precompiled
/// normalizer: tokenizers panics on one that does not. Nesting is bounded by serde_json's
/// recursion limit, so the walk is too.
fn check_precompiled(v: &serde_json::Value) -> Result<()> {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("type").and_then(|t| t.as_str()) == Some("Precompiled") {
                check_trie_size(o.get("precompiled_charsmap"))?;
                // As tokenizers reads it: through the JSON text.
                serde_json::from_str::<tokenizers::normalizers::Precompiled>(&v.to_string()).map_err(|e| {
                    Error::Tokenizer(format!("tokenizer.json has a Precompiled normalizer that cannot be read: {e}"))
                })?;
            }
            o.values().try_for_each(check_precompiled)
        }
        serde_json::Value::Array(a) => a.iter().try_for_each(check_precompiled),
        _ => Ok(()),
    }
}

/// A precompiled charsmap (base64) starts with its trie's size in bytes (u32, little-endian), and
/// the reader allocates room for the whole trie before reading it: a 4-byte header could ask for
/// 4 GiB (found by fuzzing). The trie must fit in the map after its header. A map that is not
/// base64 or shorter than a header is left to the reader's own error.
fn check_trie_size(charsmap: Option<&serde_json::Value>) -> Result<()> {
    let Some(Ok(map)) = charsmap.and_then(|m| m.as_str()).map(base64::decode) else { return Ok(()) };
    let Some((&header, rest)) = map.split_first_chunk::<4>() else { return Ok(()) };
    let trie = u64::from(u32::from_le_bytes(header));
    if trie > rest.len() as u64 {
        return Err(Error::Tokenizer(format!(
            "tokenizer.json has a Precompiled normalizer whose charsmap declares a {trie}-byte trie in {} bytes: the file is damaged; use the tokenizer.json the model came with",
            rest.len()
        )));
    }
    Ok(())
}
