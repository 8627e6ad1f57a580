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
