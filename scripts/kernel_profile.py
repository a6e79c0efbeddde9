#!/usr/bin/env python3
"""Kernel launches and kernel time per decoding step, by kind, from two cubecl profile logs.

    export CUBECL_DEBUG_OPTION=profile-medium
    CUBECL_DEBUG_LOG=/tmp/c1.log alignlab bench generate --backends wgpu --decode device --tokens 1 --repeats 1
    CUBECL_DEBUG_LOG=/tmp/c9.log alignlab bench generate --backends wgpu --decode device --tokens 9 --repeats 1
    python3 scripts/kernel_profile.py /tmp/c1.log /tmp/c9.log 16

With profiling on, cubecl writes one line per launch, `| <duration> | <kernel name>`. The longer run
minus the shorter leaves only decoding steps (the prompt, the first run's compiles and the warm-up
fall out); STEPS is how many: (9 - 1) new tokens × 2 runs (the warm-up and the timed one) = 16.
Names lose their hash suffixes so that one kind sums over its shapes. Sorted by time.
"""

import collections
import re
import sys

UNITS = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
LINE = re.compile(r"^\| ([0-9.]+)(ns|µs|us|ms|s)\s*\| (.*)$")


def parse(path):
    """Launch count and summed microseconds per kernel kind."""
    count, micros = collections.Counter(), collections.Counter()
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.rstrip())
            if not m:
                continue
            kind = re.sub(r"\s+", " ", re.sub(r"_[0-9a-f]{8}", "", m.group(3))).strip()
            count[kind] += 1
            micros[kind] += float(m.group(1)) * UNITS[m.group(2)]
    return count, micros


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    (c0, t0), (c1, t1), steps = parse(sys.argv[1]), parse(sys.argv[2]), int(sys.argv[3])
    n = (sum(c1.values()) - sum(c0.values())) / steps
    ms = (sum(t1.values()) - sum(t0.values())) / steps / 1000
    print(f"per step: {n:.1f} launches, {ms:.3f} ms of kernel time")
    for kind in sorted(c1, key=lambda k: -(t1[k] - t0[k])):
        launches, us = (c1[kind] - c0[kind]) / steps, (t1[kind] - t0[kind]) / steps
        print(f"{launches:8.1f} launches {us:10.1f} µs {us / launches if launches else 0:8.2f} µs/launch  {kind[:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
