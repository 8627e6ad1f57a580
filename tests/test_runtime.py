"""tune_malloc: freed buffers, however large, are reused instead of mapped afresh."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

_PROBE = """
import resource, sys, torch
from weightmanifold.experiments.runtime import tune_malloc
if sys.argv[1] == "tuned":
    assert tune_malloc()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(11):
    before = faults()
    x = torch.ones(64 << 20 >> 2)  # 64 MiB: above glibc's largest mmap threshold
    del x
    counts.append(faults() - before)
print(sorted(counts[1:])[5])  # the median after the first allocation
"""


@pytest.mark.skipif(sys.platform != "linux" or ctypes.util.find_library("c") is None,
                    reason="glibc's mallopt")
def test_tune_malloc_reuses_a_64_mib_buffer_instead_of_faulting_it_in_again():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True,
                             text=True, check=True).stdout
        return int(out.split()[-1])

    pages = (64 << 20) // 4096
    assert faults("default") > pages // 2  # mapped and faulted in on every allocation
    assert faults("tuned") < pages // 20   # the same heap block, already resident


def test_run_clock_sums_sessions_and_keeps_an_unknown_total_unknown():
    from weightmanifold.experiments.runtime import RunClock

    now = [100.0]
    clock = RunClock(clock=lambda: now[0])
    clock.tick()  # before start: only sets the mark, counts nothing
    assert clock.total == 0.0
    clock.start()
    now[0] += 7.0
    assert clock.tick() == 7.0
    now[0] += 50.0  # a session's time between ticks counts
    assert clock.tick() == 57.0
    # a resumed session starts from the recorded total; the time before start is lost
    resumed = RunClock(clock.total, clock=lambda: now[0])
    now[0] += 1000.0
    resumed.start()
    now[0] += 3.0
    assert resumed.tick() == 60.0
    # resumed from a record without the total: unknown, never a part of it
    unknown = RunClock(None, clock=lambda: now[0])
    unknown.start()
    now[0] += 5.0
    assert unknown.tick() is None and unknown.total is None
