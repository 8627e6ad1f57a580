"""Process-level settings for training on CPU: :func:`tune_malloc`; :func:`progress_bar`;
and :class:`RunClock`, a run's whole time across resumed sessions.

glibc's ``malloc`` gives large freed blocks back to the operating system: blocks
above the mmap threshold are unmapped on ``free``, and the top of the heap is
trimmed once more than the trim threshold is free. A training step allocates
and frees the same large activation buffers every time, so each step pays page
faults to map them again — measured here as 10–20 % of a step of the paper CNN
(``bench/README.md``). Blocks above glibc's largest mmap threshold (32 MiB) are
mapped afresh for every allocation whatever the threshold says: evaluation at
1 000 images a batch allocates such blocks in every layer, and a width-matched
CNN's evaluation spent half its time in page faults (725 against 450 ms a batch
with ``mmap`` off). Keeping freed memory in the process removes that cost at the
price of a resident size that stays at its peak. This is the in-process
equivalent of setting ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``,
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_MMAP_MAX_`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RunClock", "progress_bar", "tune_malloc"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4


def tune_malloc(trim_threshold: int = 1 << 30, top_pad: int = 256 << 20,
                mmap_threshold: int = 32 << 20, mmap: bool = False) -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it every step.

    Args:
        trim_threshold: free bytes at the top of the heap before it is trimmed.
        top_pad: extra bytes requested whenever the heap grows.
        mmap_threshold: blocks at least this large are mmap-ed (glibc's maximum,
            32 MiB, so buffers up to it come from the reusable heap).
        mmap: let glibc mmap blocks above ``mmap_threshold`` at all (``False``:
            every block comes from the heap and is reused, however large).

    Returns:
        ``True`` if the settings were applied, ``False`` where the C library is
        not glibc (nothing is changed there).

    Examples:
        >>> isinstance(tune_malloc(), bool)
        True
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = [mallopt(_M_TRIM_THRESHOLD, trim_threshold), mallopt(_M_TOP_PAD, top_pad),
          mallopt(_M_MMAP_THRESHOLD, mmap_threshold)]
    if not mmap:
        ok.append(mallopt(_M_MMAP_MAX, 0))
    return all(r == 1 for r in ok)


def progress_bar(total: int, desc: str, progress: bool | None, initial: int = 0) -> Any:
    """A ``tqdm`` bar of ``total`` steps (``progress=None``: only on a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, leave=False,
                disable=(not progress) if progress is not None else None)


class RunClock:
    """A run's whole time, every evaluation included, summed over resumed sessions.

    Each :meth:`tick` adds the time since the previous one (or since
    :meth:`start`) of this session to :attr:`total`. A session's time before
    :meth:`start` is not counted, so a run killed between two ticks loses only
    that stretch.

    Args:
        total: the seconds of the earlier sessions (``0.0`` for a new run);
            ``None`` when the run resumed from a record that did not keep them:
            the sum is unknown and stays ``None`` rather than report a part.
        clock: the time source in seconds (``time.perf_counter``).

    Examples:
        >>> readings = iter([10.0, 12.5, 20.0])
        >>> clock = RunClock(3.0, clock=lambda: next(readings))
        >>> clock.start()
        >>> clock.tick(), clock.tick()
        (5.5, 13.0)
        >>> unknown = RunClock(None, clock=lambda: 1.0)
        >>> unknown.start()
        >>> unknown.tick() is None
        True
    """

    def __init__(self, total: float | None = 0.0, *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self._clock = clock
        self._mark: float | None = None

    def start(self) -> None:
        """Begin counting this session's time from now."""
        self._mark = self._clock()

    def tick(self) -> float | None:
        """Add the time since the last tick (or :meth:`start`) and return the total."""
        now = self._clock()
        if self._mark is not None and self.total is not None:
            self.total += now - self._mark
        self._mark = now
        return self.total
