#!/usr/bin/env python3
"""Comparison benchmark: greedy decode tokens/s with transformers' `generate` (PyTorch, eager, KV cache).

    python3 scripts/bench_generate_torch.py --model DIR [--device cuda] [--dtype float16] [--tokens 64]

The same work as `alignlab bench generate`: a 32-token prompt (the start of "The quick brown fox
jumps over the lazy dog. " repeated), then --tokens new tokens, greedy, --batch samples at once.
Every run decodes exactly --tokens (min_new_tokens), so a model that says EOS early (random weights
can) is timed on the same work. One warm-up run (on a GPU: its kernels loaded, cuBLAS's handles
made) and --repeats timed runs; it prints one JSON line, tokens_per_s from the best run. The device
is synchronised before each clock read, so queued GPU work is counted.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from bench_load import TEXT  # noqa: E402  (this folder is on sys.path when a script runs)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an HF directory (config.json, model.safetensors, tokenizer.json)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    tok = AutoTokenizer.from_pretrained(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=DTYPES[args.dtype]).to(dev).eval()
    ids = tok(TEXT * 64, add_special_tokens=False)["input_ids"][:32]
    input_ids = torch.tensor([ids] * args.batch, device=dev)
    # No pad token in a bare tokenizer.json: pad with EOS, as generate would after a warning.
    pad = model.config.eos_token_id if model.config.pad_token_id is None else model.config.pad_token_id

    def run():
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 max_new_tokens=args.tokens, min_new_tokens=args.tokens, pad_token_id=pad, use_cache=True)
        sync()
        return out.shape[1] - input_ids.shape[1], time.perf_counter() - t

    _, first = run()
    times = []
    for _ in range(max(1, args.repeats)):
        new, dt = run()
        times.append(dt)
    best = min(times)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(json.dumps({
        "engine": "pytorch", "what": "generate", "torch": torch.__version__, "transformers": transformers.__version__,
        "device": name, "dtype": args.dtype, "prompt_tokens": len(ids), "batch": args.batch, "new_tokens": new * args.batch,
        "seconds": round(best, 4), "seconds_median": round(statistics.median(times), 4), "first_seconds": round(first, 4),
        "tokens_per_s": round(new * args.batch / best, 2),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
