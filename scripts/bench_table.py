#!/usr/bin/env python3
"""Prints scripts/bench-compare's bench.jsonl as a table: each alignlab row beside its reference,
the ratio, and issue 11's target for it.

    python3 scripts/bench_table.py runs/bench/bench.jsonl

Ratios are alignlab's over the reference's: tokens/s for decoding (higher is better, target at
least 1.0), seconds a step for DPO (lower is better). Each side's figure is its best of the
repeats, as each benchmark reports it; the medians follow in brackets. A file of several rounds
(`ROUNDS=N scripts/bench-compare`: both sides run one after the other, N times) gets a table per
round, each ratio taken within its round, then each ratio's median over the rounds: on a VM whose
speed drifts from one minute to the next, a ratio of runs made minutes apart says little.
"""

import json
import statistics
import sys


def rows(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"bench_table: cannot read {path} ({e}); give the bench.jsonl scripts/bench-compare wrote")


def rounds(data):
    """The file cut where alignlab's decoding rows start again: each round starts with them."""
    out, current = [], []
    for r in data:
        if r.get("what") == "generate" and current and current[-1].get("what") != "generate":
            out.append(current)
            current = []
        current.append(r)
    return out + [current] if current else out


def one(candidates, what):
    if not candidates:
        sys.exit(f"bench_table: no {what} row in a round; did scripts/bench-compare finish?")
    return candidates[-1]


def comparisons(data):
    """One round's (label, ours, reference, ratio, target) for each alignlab row with a reference,
    and the lines said beside them (figures without one, notes on the references' runs)."""
    llama = one([r for r in data if r.get("engine") == "llama-cpp-python"], "llama-cpp-python")
    torch = [r for r in data if r.get("engine") == "pytorch+peft"]
    same_ref = one([r for r in torch if r.get("logits_to_keep", 0) > 0], "PyTorch same-work")
    trl_ref = one([r for r in torch if r.get("logits_to_keep", 0) == 0], "TRL-defaults")
    pairs, lines = [], []
    for r in (r for r in data if "what" in r):
        backend = r["backend"]
        if r["what"] == "generate":
            pairs.append((
                f"greedy decode, {backend}",
                f"{r['tokens_per_s']:.1f} tokens/s",
                f"llama-cpp-python {llama['end_to_end_tokens_per_s']:.1f} tokens/s",
                r["tokens_per_s"] / llama["end_to_end_tokens_per_s"], ">= 1.0",
            ))
        elif r["what"] == "dpo":
            same_work = not r["precompute_ref_log_probs"] and not r["share_prompt"]
            ref = same_ref if same_work else trl_ref
            kind = "the same work" if same_work else "each side's defaults"
            pairs.append((
                f"DPO step, {kind}, {backend}",
                f"{r['seconds']:.2f} s ({r['seconds_median']:.2f})",
                f"{'PyTorch+PEFT' if same_work else 'TRL defaults'} {ref['seconds_per_step']:.2f} s "
                f"({ref['seconds_per_step_median']:.2f})",
                r["seconds"] / ref["seconds_per_step"], "<= 1.0" if same_work else "<= 0.5",
            ))
        elif r["what"] == "load":
            lines.append(f"{'model load, ' + backend:<36} {r['seconds']:.2f} s")
    for name, ref in (("llama-cpp-python", llama), ("PyTorch (same work)", same_ref), ("PyTorch (TRL defaults)", trl_ref)):
        if ref.get("other_cpu_cores", 0) > 0.1:
            lines.append(f"note: other processes took {ref['other_cpu_cores']:.2f} cores during {name}'s run")
    return pairs, lines


def verdict(ratio, target):
    return "met" if meets(ratio, target) else "NOT met"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    all_rounds = [comparisons(r) for r in rounds(rows(sys.argv[1]))]
    for i, (pairs, lines) in enumerate(all_rounds, 1):
        if len(all_rounds) > 1:
            print(f"round {i} of {len(all_rounds)}")
        print(f"{'':<36} {'alignlab':<34} {'reference':<40} {'ratio':>7}  target")
        for label, ours, theirs, ratio, target in pairs:
            print(f"{label:<36} {ours:<34} {theirs:<40} {ratio:>6.2f}x  {target} ({verdict(ratio, target)})")
        for line in lines:
            print(line)
    if len(all_rounds) > 1:
        print(f"over {len(all_rounds)} rounds: the median ratio, and the rounds that met the target")
        for label, _, _, _, target in all_rounds[0][0]:
            ratios = [c[3] for pairs, _ in all_rounds for c in pairs if c[0] == label]
            met = sum(meets(r, target) for r in ratios)
            median = statistics.median(ratios)
            print(f"{label:<36} {median:>6.2f}x  {target} ({verdict(median, target)}; {met} of {len(ratios)} rounds)")


def meets(ratio, target):
    """Whether `ratio` meets a target written `>= B` or `<= B`."""
    op, bound = target.split()
    return ratio >= float(bound) if op == ">=" else ratio <= float(bound)


if __name__ == "__main__":
    main()
