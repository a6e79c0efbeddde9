#!/usr/bin/env python3
"""Comparison benchmark: greedy decode speed of llama.cpp (via llama-cpp-python) on the CPU.

Run from the repository root, after `scripts/setup` (model) and `scripts/setup-bench` (venv):

    .venv-llamacpp/bin/python scripts/bench_llamacpp.py [--threads 2] [--repeats 3]

It loads models/SmolLM2-135M-Instruct.Q4_1.gguf as llama.cpp runs it (Q4_1 weights kept quantized,
llama.cpp's own kernels), takes a 32-token prompt ("The quick brown fox jumps over the lazy dog. "
repeated, tokenized without BOS, as the GGUF's add_bos_token=false says and as `alignlab bench
generate` does, truncated to 32 tokens), and decodes 64 new tokens greedily, never stopping on EOS.
It prints one JSON line.

How it is timed. It drives the low-level API, not create_completion: `Llama.eval(tokens)` runs one
llama_decode over the tokens (the prompt in one batch of 32, then one token at a time), and the next
token is the argmax of the last position's logits, read straight from llama.cpp
(`llama_get_logits_ith(ctx, -1)`, a view of 49152 floats; no copy). That is greedy decoding with no
sampler chain and no EOS check, so exactly 64 tokens come out every time and the Python around each
step is an argmax and a few attribute look-ups (a few microseconds against milliseconds per step).
create_completion adds detokenization, stop-string scanning and a sampler rebuilt per call, and stops
at EOS; it is run once, untimed, only to check that the low-level loop yields the same 64 tokens
(when it stops early at EOS, the common prefix is compared).

- prefill_s: llama_decode of the 32 prompt tokens plus the argmax that gives the first new token
  (time to first token), best of the repeats.
- decode_tokens_per_s: the other 63 new tokens each need one single-token llama_decode of the
  previous token; 63 / (time of those 63 steps), best of the repeats.
- end_to_end_tokens_per_s: 64 / (prefill + decode) of the best repeat, comparable to
  `alignlab bench generate --tokens 64` (which times prompt + decode together).
Each repeat starts from an empty KV cache (`Llama.reset()`); one untimed warm-up run comes first.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
from bench_load import TEXT, OtherLoad  # noqa: E402  (this folder is on sys.path when a script runs)

MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_TOKENS = 32
NEW_TOKENS = 64


def greedy_run(llm, prompt, n_vocab, new_tokens):
    """One timed greedy generation from an empty cache. Returns (tokens, prefill_s, decode_s)."""
    ctx = llm.ctx

    def argmax_last():
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).argmax())

    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    tok = argmax_last()
    t1 = time.perf_counter()
    out = [tok]
    for _ in range(new_tokens - 1):
        llm.eval([tok])
        tok = argmax_last()
        out.append(tok)
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-check", action="store_true", help="skip the create_completion cross-check")
    args = ap.parse_args()

    t = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,  # prompt processing too (it defaults to every core)
        logits_all=False,
        verbose=False,
    )
    load_s = time.perf_counter() - t
    n_vocab = llm.n_vocab()

    ids = llm.tokenize(TEXT.encode() * 16, add_bos=False, special=False)
    assert len(ids) >= PROMPT_TOKENS, len(ids)
    prompt = ids[:PROMPT_TOKENS]

    greedy_run(llm, prompt, n_vocab, 8)  # warm-up: page in weights, repack, grow buffers
    best_prefill = best_decode = float("inf")
    best_total = None
    tokens = None
    other = []
    for _ in range(args.repeats):
        with OtherLoad() as load:
            toks, pre, dec = greedy_run(llm, prompt, n_vocab, NEW_TOKENS)
        other.append(load.cores)
        if tokens is None:
            tokens = toks
        elif toks != tokens:
            print("bench_llamacpp: warning: greedy output differed between repeats", file=sys.stderr)
        best_prefill = min(best_prefill, pre)
        best_decode = min(best_decode, dec)
        if best_total is None or pre + dec < best_total:
            best_total = pre + dec

    other_max = None if None in other else round(max(other), 2)
    if other_max is not None and other_max > 0.2:
        # ggml's worker threads meet at a spinning barrier after every op: when another process
        # holds a core, a descheduled worker stalls the others (2 threads next to one busy
        # process measured 2.4 tokens/s against 95 on an idle machine).
        print(f"bench_llamacpp: warning: other processes kept {other_max} cores busy during a repeat; "
              "the numbers are not comparable (run on an idle machine)", file=sys.stderr)

    check = None
    if not args.no_check:
        llm.reset()
        res = llm.create_completion(prompt, max_tokens=NEW_TOKENS, temperature=0.0, top_k=1,
                                    repeat_penalty=1.0, logprobs=None)
        # create_completion returns text, not ids: compare the detokenized text.
        mine = llm.detokenize(tokens).decode("utf-8", errors="replace")
        theirs = res["choices"][0]["text"]
        check = mine.startswith(theirs) and len(theirs) > 0
        if not check:
            print(f"bench_llamacpp: create_completion disagrees:\n  low-level: {mine!r}\n  completion: {theirs!r}",
                  file=sys.stderr)
    print(f"bench_llamacpp: output: {llm.detokenize(tokens).decode('utf-8', errors='replace')!r}", file=sys.stderr)

    row = {
        "engine": "llama-cpp-python",
        "version": llama_cpp.__version__,
        "threads": args.threads,
        "prompt_tokens": len(prompt),
        "new_tokens": len(tokens),
        "decode_tokens_per_s": round((len(tokens) - 1) / best_decode, 2),
        "prefill_s": round(best_prefill, 5),
        "end_to_end_tokens_per_s": round(len(tokens) / best_total, 2),
        "repeats": args.repeats,
        "model": Path(args.model).name,
        "load_s": round(load_s, 3),
        "matches_create_completion": check,
        "other_cpu_cores": other_max,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
