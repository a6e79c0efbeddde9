#!/usr/bin/env python3
"""Writes DIR/model.safetensors: random weights for the Llama config in DIR/config.json, drawn the
way transformers initialises a fresh model (normal(0, initializer_range), norms at one), seed fixed.

    python3 scripts/random_checkpoint.py DIR [--seed 0]

For speed measurements on a machine a real checkpoint cannot reach (the GPU machine takes 64 MiB
and SmolLM2-135M's GGUF is 98 MB): a kernel's time depends on the shapes, not on the values, so a
model of SmolLM2's shapes measures what SmolLM2 would. DIR needs config.json and tokenizer.json
(`alignlab sft ... --merge` writes both beside a merged model). config.json is left as it is (the
file transformers would write changes how RoPE is stored), and a tied head is not written twice
(safetensors refuses shared tensors, and both loaders tie it again).
"""

import argparse
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.dir / "config.json").is_file():
        print(f"random_checkpoint: {args.dir}/config.json is missing", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    config = AutoConfig.from_pretrained(str(args.dir))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, str(args.dir / "model.safetensors"), metadata={"format": "pt"})
    params = sum(v.numel() for v in state.values())
    print(f"random_checkpoint: {params} parameters (seed {args.seed}) written to {args.dir}/model.safetensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
