#!/usr/bin/env python3
"""Independent reference values for the Rust engine, computed with HF transformers on CPU.

Run from the repository root, after `scripts/setup` (model) and `scripts/setup-reference` (venv):

    .venv-ref/bin/python scripts/reference.py

It loads models/SmolLM2-135M-Instruct.Q4_1.gguf with transformers' GGUF loader, which dequantizes
every tensor to float32 with the `gguf` package (`gguf.dequantize`) and undoes llama.cpp's Q/K row
permutation (`LlamaTensorProcessor._reverse_permute_weights` in transformers/modeling_gguf_pytorch_utils.py),
then runs the model in float32 with eager attention. It writes tests/data/smollm2_reference.json.

The output is deterministic: re-running it on the same versions gives the same file byte for byte
(it records no dates or timings). Nothing here needs a network: HF_HUB_OFFLINE is forced on.

One deliberate correction to transformers (recorded in the JSON under "notes"): the GGUF says
`tokenizer.ggml.pre = "smollm"`, which transformers' GGUF tokenizer builder does not know, so it falls
back to the plain GPT-2 byte-level pre-tokenizer. SmolLM2's own tokenizer.json and llama.cpp's
"smollm" pre-tokenizer both split every digit off first (`Digits(individual_digits=True)`, i.e. the
regex `\\p{N}`) and then apply the GPT-2 regex. We install that pre-tokenizer. It matters only around
digits, e.g. runs of spaces before a number; those cases record the uncorrected ids too.
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF loader's own progress bar

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import pre_tokenizers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = ROOT / "tests" / "data" / "smollm2_reference.json"

GREEDY_NEW_TOKENS = 32

# Strings tokenized with add_special_tokens=False.
TOKENIZE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading and trailing spaces  ",
    "12345 and 3.14",
    "Hello, world! (yes) -- \"quoted\"; a/b: [x] {y} @#$%^&*",
    "don't I'm you're we'll they've it's",
    "first line\n\nsecond line\n",
    "café naïve — 日本語 🙂",
    "<|im_start|>user\nHi<|im_end|>",
    # Digits after a run of spaces / letters: where the "smollm" pre-tokenizer differs from GPT-2's.
    "Total:   42 items, x2 and  7",
]

USER_Q = "What is the capital of France?"
SYSTEM = "You are a friendly tutor."

CHAT_CASES = {
    "user_only": [{"role": "user", "content": USER_Q}],
    "with_system": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER_Q}],
}

# (name, prompt kind, completion) for the log-probability checks.
LOGPROB_CASES = [
    ("paris_short", "user_only", "Paris."),
    ("paris_sentence", "user_only", "The capital of France is Paris."),
    ("berlin_unsure", "with_system", "I don't know, maybe Berlin?"),
    (
        "paris_long",
        "user_only",
        "The capital of France is Paris, a city on the Seine river that is famous for the Eiffel Tower, "
        "the Louvre museum, its cafés and its long history as a centre of art, fashion and science.",
    ),
]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def floats(t: torch.Tensor) -> list[float]:
    """float32 values as Python floats (exact: every float32 is a float64)."""
    return [float(x) for x in t.detach().to(torch.float32).reshape(-1).tolist()]


def smollm_pre_tokenizer():
    """What SmolLM2's tokenizer.json and llama.cpp's "smollm" pre-tokenizer do: digits first, then GPT-2."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def encode(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


@torch.no_grad()
def logits_of(model, ids: list[int]) -> torch.Tensor:
    """[len(ids), vocab] float32 logits of one full forward pass, no KV cache."""
    out = model(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0].to(torch.float32)


@torch.no_grad()
def greedy_decode(model, prompt_ids: list[int], n: int, pad_id: int):
    """n greedy tokens from model.generate (KV cache), EOS not stopping it, checked by one full pass.

    The check re-runs prompt + generated ids without a cache and requires the argmax at every
    position to be the token that followed: the same sequence the naive "recompute everything each
    step" definition of greedy decoding gives. It also yields, per step, the gap between the best and
    second-best logit: small gaps mark steps where another correct implementation may pick differently.
    """
    out = model.generate(
        torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=n,
        repetition_penalty=1.0,
        eos_token_id=None,
        pad_token_id=pad_id,
    )
    gen = out[0, len(prompt_ids):].tolist()
    assert len(gen) == n
    logits = logits_of(model, prompt_ids + gen)[len(prompt_ids) - 1 : -1]
    top = torch.topk(logits, 2, dim=-1)
    recomputed = top.indices[:, 0].tolist()
    assert recomputed == gen, f"generate() {gen} != full-pass argmax {recomputed}"
    margins = (top.values[:, 0] - top.values[:, 1]).tolist()
    return gen, [float(m) for m in margins]


def capture_activations(model, ids: list[int]) -> dict:
    """First 8 values of the last position's hidden state at a few points, via forward hooks."""
    points = {
        "embeddings": model.model.embed_tokens,
        "after_layer_0": model.model.layers[0],
        "after_layer_1": model.model.layers[1],
        f"after_layer_{len(model.model.layers) - 1}": model.model.layers[-1],
        "final_norm": model.model.norm,
    }
    seen: dict[str, list[float]] = {}
    hooks = []
    for name, module in points.items():

        def hook(_m, _inp, out, name=name):
            hs = out[0] if isinstance(out, tuple) else out
            seen[name] = floats(hs[0, -1, :8])

        hooks.append(module.register_forward_hook(hook))
    try:
        logits_of(model, ids)
    finally:
        for h in hooks:
            h.remove()
    return {name: seen[name] for name in points}


def dequant_samples(path: Path) -> dict:
    """A few raw tensors dequantized with gguf-py alone, in the file's own layout (no Q/K un-permute).

    `first_row` is the first 8 values of row 0 (GGUF's innermost dimension is ne[0]), `sum` a float64
    sum of every value, as a checksum for a dequantizer.
    """
    reader = gguf.GGUFReader(str(path))
    wanted = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight",
              "blk.0.attn_norm.weight", "output_norm.weight"]
    out = {}
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        w = gguf.dequantize(t.data, t.tensor_type).astype(np.float32)
        rows = w.reshape(-1, int(t.shape[0]))
        out[t.name] = {
            "ggml_type": t.tensor_type.name,
            "ne": [int(x) for x in t.shape],
            "first_row": [float(x) for x in rows[0, :8]],
            "second_row": [float(x) for x in rows[1, :8]] if rows.shape[0] > 1 else None,
            "sum": float(w.astype(np.float64).sum()),
        }
    return {name: out[name] for name in wanted}


def main() -> int:
    t0 = time.time()

    def stage(what: str) -> None:
        print(f"reference: {what} ({time.time() - t0:.1f}s)", file=sys.stderr)

    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    model_path = MODEL_DIR / MODEL_FILE
    if not model_path.is_file():
        print(f"reference: {model_path} missing; run scripts/setup first", file=sys.stderr)
        return 1

    # --- tokenizer ------------------------------------------------------------------------------
    tok_default = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE)
    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR), gguf_file=MODEL_FILE)
    default_pre = str(tok.backend_tokenizer.pre_tokenizer)
    tok.backend_tokenizer.pre_tokenizer = smollm_pre_tokenizer()
    stage("tokenizer loaded")

    # --- model ----------------------------------------------------------------------------------
    model = AutoModelForCausalLM.from_pretrained(
        str(MODEL_DIR), gguf_file=MODEL_FILE, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    cfg = model.config
    # The GGUF has no output.weight, so lm_head must be the (Q8_0-dequantized) token embedding.
    assert cfg.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    stage("model loaded")
    config = {
        "architecture": type(model).__name__,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads),
        "rope_theta": float(
            getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta")
        ),
        "rope_scaling": getattr(cfg, "rope_scaling", None),
        "rms_norm_eps": float(cfg.rms_norm_eps),
        "tie_word_embeddings": bool(cfg.tie_word_embeddings),
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": cfg.hidden_act,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "tokenizer": {
            "bos_token": tok.bos_token,
            "eos_token": tok.eos_token,
            "unk_token": tok.unk_token,
            "pad_token": tok.pad_token,
            "len": len(tok),
            "pre_tokenizer_transformers_default": default_pre,
            "pre_tokenizer_used": str(tok.backend_tokenizer.pre_tokenizer),
        },
    }
    eos_id = tok.convert_tokens_to_ids("<|im_end|>")

    # --- tokenize -------------------------------------------------------------------------------
    tokenize = []
    for text in TOKENIZE_TEXTS:
        ids = encode(tok, text)
        entry = {"text": text, "ids": ids, "tokens": tok.convert_ids_to_tokens(ids)}
        assert tok.decode(ids) == text, (text, tok.decode(ids))
        default_ids = encode(tok_default, text)
        if default_ids != ids:
            entry["ids_transformers_gguf_default"] = default_ids
        tokenize.append(entry)

    # --- chat template --------------------------------------------------------------------------
    chat = {}
    for name, messages in CHAT_CASES.items():
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = encode(tok, text)
        via_template = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        assert list(via_template["input_ids"]) == ids
        chat[name] = {"messages": messages, "add_generation_prompt": True, "text": text, "ids": ids}

    stage("tokenize + chat done")

    # --- greedy ---------------------------------------------------------------------------------
    greedy_prompts = [
        ("chat_user_only", chat["user_only"]["text"], chat["user_only"]["ids"]),
        ("chat_with_system", chat["with_system"]["text"], chat["with_system"]["ids"]),
        ("raw_once_upon", "Once upon a time", encode(tok, "Once upon a time")),
    ]
    greedy = []
    for name, text, prompt_ids in greedy_prompts:
        gen, margins = greedy_decode(model, prompt_ids, GREEDY_NEW_TOKENS, tok.pad_token_id)
        stop = gen.index(eos_id) if eos_id in gen else None
        greedy.append(
            {
                "name": name,
                "prompt_text": text,
                "prompt_ids": prompt_ids,
                "generated_ids": gen,
                "eos_index": stop,
                "text_until_eos": tok.decode(gen[:stop] if stop is not None else gen),
                "text_all": tok.decode(gen),
                "top1_top2_logit_margins": margins,
                "min_margin": min(margins),
            }
        )

    stage("greedy done")

    # --- log-probabilities of given completions -------------------------------------------------
    logprobs = []
    for name, chat_name, completion in LOGPROB_CASES:
        prompt_ids = chat[chat_name]["ids"]
        comp_ids = encode(tok, completion)
        ids = prompt_ids + comp_ids
        logp = torch.log_softmax(logits_of(model, ids), dim=-1)  # float32
        n = len(prompt_ids)
        per_token = [float(logp[n - 1 + i, tid]) for i, tid in enumerate(comp_ids)]
        logprobs.append(
            {
                "name": name,
                "prompt": chat_name,
                "prompt_ids": prompt_ids,
                "completion": completion,
                "completion_ids": comp_ids,
                "logprobs": per_token,
                "sum": float(np.sum(np.array(per_token, dtype=np.float64))),
            }
        )

    stage("logprobs done")

    # --- logits sanity check --------------------------------------------------------------------
    head_ids = encode(tok, "Once upon a time")
    last = logits_of(model, head_ids)[-1]
    logits_head = {
        "prompt": "Once upon a time",
        "ids": head_ids,
        "first8": floats(last[:8]),
        "argmax": int(torch.argmax(last)),
        "max": float(last.max()),
        "logsumexp": float(torch.logsumexp(last, dim=-1)),
        "activations_last_position_first8": capture_activations(model, head_ids),
    }

    stage("logits + activations done")
    result = {
        "model": {"file": MODEL_FILE, "sha256": sha256_of(model_path)},
        "generator": {
            "script": "scripts/reference.py",
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
            "numpy": np.__version__,
            "dtype": "float32",
            "attn_implementation": "eager",
        },
        "notes": [
            "Weights: dequantized to float32 by gguf-py via transformers' legacy GGUF loader; Q/K rows "
            "un-permuted by LlamaTensorProcessor._reverse_permute_weights; transformers applies RoPE with "
            "rotate_half (NeoX layout) on the un-permuted weights, equivalent to llama.cpp's normal RoPE on "
            "the file's permuted weights.",
            "No output.weight in the GGUF: lm_head is tied to token_embd.weight (stored as Q8_0).",
            "Tokenizer: GGUF pre-tokenizer 'smollm' is unknown to transformers, which falls back to the GPT-2 "
            "pre-tokenizer; replaced by Digits(individual_digits=True) + ByteLevel(use_regex=True), as in "
            "SmolLM2's tokenizer.json and llama.cpp. 'ids_transformers_gguf_default' shows the fallback's ids "
            "where they differ.",
            "greedy: 32 tokens from model.generate(do_sample=False), EOS (<|im_end|>, id 2) not stopping; eos_index "
            "is where a generation that stops on EOS would end. Checked equal to the argmax of one uncached "
            "float32 pass over prompt+generated ids; margins (top1-top2 logit) come from that pass.",
            "logprobs: log_softmax (float32) of the logits at the position before each completion token; "
            "completion tokenized on its own without special tokens and appended to the prompt ids.",
            "dequant: gguf-py only, the file's layout (Q/K still permuted); first_row = first 8 of row 0.",
        ],
        "config": config,
        "tokenize": tokenize,
        "chat": chat,
        "greedy": greedy,
        "logprobs": logprobs,
        "logits_head": logits_head,
        "dequant": dequant_samples(model_path),
    }

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"reference: wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes) in {time.time() - t0:.1f}s",
          file=sys.stderr)
    return 0


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
