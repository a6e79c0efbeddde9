#!/usr/bin/env python3
"""Do alignlab's per-token log-probabilities agree with PyTorch's on the same weights and tokens?

    alignlab logprobs --model DIR --backend wgpu --prompt P --completion C --json > a.json
    python3 scripts/agree_torch.py --model DIR a.json [--device cuda] [--tol 1e-3]

It reads the token ids and log-probabilities `alignlab logprobs --json` printed, scores the same
ids with transformers in float32 (eager attention) on --device, and prints one JSON line with the
largest difference per token and in the sum. Exit status 1 when a difference is over --tol: for
checking a backend where the pinned tests cannot run (a real GPU), not a test itself.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("scored", type=Path, help="the output of `alignlab logprobs --json`")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()

    a = json.loads(args.scored.read_text())
    prompt, completion = a["prompt_tokens"], a["completion_tokens"]
    dev = torch.device(args.device)
    # Full float32 products: PyTorch's default on CUDA, said outright so TF32 cannot creep in.
    torch.backends.cuda.matmul.allow_tf32 = False
    model = AutoModelForCausalLM.from_pretrained(str(args.model), dtype=torch.float32, attn_implementation="eager").to(dev).eval()
    ids = torch.tensor([prompt + completion], device=dev)
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].double(), -1)
    start = len(prompt)
    ours = [logps[start - 1 + i, t].item() for i, t in enumerate(completion)]
    diffs = [abs(x - y) for x, y in zip(ours, a["logprobs"])]
    row = {"what": "agree", "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU",
           "tokens": len(completion), "max_abs_diff": max(diffs), "sum_alignlab": a["sum"], "sum_torch": sum(ours),
           "sum_abs_diff": abs(sum(ours) - a["sum"]), "tol": args.tol}
    print(json.dumps(row))
    return 0 if max(diffs) <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
