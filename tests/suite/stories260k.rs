//! llama2.c's stories260K (from ../shared/models) reproduces its known greedy story, on every
//! backend and every decoding path.

use alignlab::backend::{BackendKind, block_on};
use alignlab::generate::{DecodePath, SamplingConfig, generate_on};
use alignlab::io::load_model;
use crate::common::{device, stories260k};

const KNOWN: &str = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. \
One day, she saw a big, red ball. She wanted to play with it, but it was too high.";

#[test]
fn greedy_story_matches_llama2c() {
    let Some((model, tok)) = stories260k() else { return };
    // Flex decodes on the host, NdArray through burn in f32, wgpu from the decoding copy in f16
    // and in f32 (the browser tests decode from the f32 copy on WebGPU: SwiftShader has no f16).
    let paths = [
        (BackendKind::Flex, DecodePath::Auto),
        (BackendKind::Ndarray, DecodePath::Auto),
        (BackendKind::Wgpu, DecodePath::Half),
        (BackendKind::Wgpu, DecodePath::Fused),
    ];
    for (kind, path) in paths {
        let lm = load_model(&model, Some(&tok), &device(kind), &mut |_: &str, _: f32| {}).unwrap();
        assert_eq!(lm.config.vocab_size, 512);
        assert_eq!(lm.config.num_key_value_heads, 4);
        // From BOS alone, as run.c does with an empty prompt.
        let bos = lm.tokenizer.bos_id.unwrap();
        // On the GPU three greedy samples at once, each of them the story: a decoding step of
        // three rows takes the copy's few-rows product (`linear_t`), as one row does.
        let samples = if kind == BackendKind::Wgpu { 3 } else { 1 };
        let cfg = SamplingConfig { num_samples: samples, ..SamplingConfig::greedy(60) };
        let outs = block_on(generate_on(path, &lm.model, &lm.tokenizer, &[bos], &cfg, &mut |_| true)).unwrap();
        assert_eq!(outs.len(), samples);
        for (i, out) in outs.iter().enumerate() {
            let text = out.text.replace('\n', " ");
            let n = KNOWN.len().min(text.len());
            assert!(n > 100, "{kind} {path:?}: sample {i}: story too short: {text:?}");
            assert_eq!(&text[..n], &KNOWN[..n], "{kind} {path:?}: sample {i}: greedy text diverged");
        }
    }
}

#[test]
fn tokenizer_round_trips_and_merges() {
    let Some((model, tok)) = stories260k() else { return };
    let lm = load_model(&model, Some(&tok), &device(BackendKind::Flex), &mut |_: &str, _: f32| {}).unwrap();
    let text = "Once upon a time, there was a little girl named Lily.";
    let ids = lm.tokenizer.encode(text, true).unwrap();
    assert_eq!(ids[0], 1, "BOS first");
    assert!(ids.len() < text.len() / 2, "merges should compress: {} ids", ids.len());
    assert_eq!(lm.tokenizer.decode(&ids), text);
    // Characters outside the 512-token vocabulary fall back to bytes and survive decoding.
    let odd = "naïve café ☃";
    assert_eq!(lm.tokenizer.decode(&lm.tokenizer.encode(odd, false).unwrap()), odd);
}
