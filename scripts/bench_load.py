"""Shared by the comparison benchmarks: how busy the rest of the machine was while one ran, and
the text the decoding benchmarks take their prompt from."""

import os
import time

# Repeated, tokenized, and cut to the prompt's length: what `alignlab bench generate` does (src/bench_cli.rs).
TEXT = "The quick brown fox jumps over the lazy dog. "


class OtherLoad:
    """Cores kept busy by other processes while a block runs: the machine's busy time from
    /proc/stat minus this process's own CPU time, over the wall time. On a 2-core machine a
    2-thread benchmark is only meaningful when this is near 0 (Linux only; None elsewhere)."""

    @staticmethod
    def _busy():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except OSError:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        return (sum(v[:8]) - v[3] - v[4]) / hz  # all but idle and iowait

    def __enter__(self):
        self.b0, self.c0, self.t0 = self._busy(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        b1, c1, t1 = self._busy(), time.process_time(), time.perf_counter()
        self.cores = None if b1 is None else max(0.0, ((b1 - self.b0) - (c1 - self.c0)) / (t1 - self.t0))
