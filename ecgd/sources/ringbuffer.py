"""A preallocated ring buffer of multi-lead samples, addressed by absolute sample index.

Live acquisition writes every decoded block here and the windower reads whole windows back
out. The buffer holds samples at the DEVICE rate in millivolts, in the device's lead order:
resampling to the model's rate and deriving the missing limb leads happen later, per window,
in the pipeline. Memory is allocated once; a push only copies into it, so weeks of
acquisition never grow the process.
"""
from __future__ import annotations

import numpy as np


class RingBuffer:
    """float32 ``[n_leads, capacity]`` storage; the oldest samples are overwritten.

    Sample indices are absolute: the first sample ever pushed is index 0 and ``end`` is the
    index the next pushed sample will get. ``read(start, stop)`` returns a copy of
    ``[start, stop)`` while those samples are still held.
    """

    def __init__(self, n_leads: int, capacity: int) -> None:
        if n_leads < 1 or capacity < 1:
            raise ValueError("a ring buffer needs at least one lead and one sample")
        self._data = np.zeros((n_leads, capacity), dtype=np.float32)
        self._capacity = capacity
        self._end = 0

    @property
    def n_leads(self) -> int:
        return int(self._data.shape[0])

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def end(self) -> int:
        """Absolute index one past the newest sample (= samples pushed so far)."""
        return self._end

    @property
    def start(self) -> int:
        """Absolute index of the oldest sample still held."""
        return max(0, self._end - self._capacity)

    def push(self, block: np.ndarray) -> None:
        """Append ``block`` ``[n_leads, n]`` (mV); only the newest ``capacity`` survive."""
        if block.ndim != 2 or block.shape[0] != self.n_leads:
            raise ValueError(f"block shape {block.shape} does not fit {self.n_leads} leads")
        n = block.shape[1]
        if n > self._capacity:
            block = block[:, n - self._capacity:]
            self._end += n - self._capacity
            n = self._capacity
        head = self._end % self._capacity
        first = min(n, self._capacity - head)
        self._data[:, head:head + first] = block[:, :first]
        if first < n:
            self._data[:, :n - first] = block[:, first:]
        self._end += n

    def read(self, start: int, stop: int) -> np.ndarray:
        """A float32 copy of samples ``[start, stop)``; ValueError if not (or no longer) held."""
        if not self.start <= start <= stop <= self._end:
            raise ValueError(f"samples [{start}, {stop}) are not held (buffer holds "
                             f"[{self.start}, {self._end}))")
        n = stop - start
        out = np.empty((self.n_leads, n), dtype=np.float32)
        head = start % self._capacity
        first = min(n, self._capacity - head)
        out[:, :first] = self._data[:, head:head + first]
        if first < n:
            out[:, first:] = self._data[:, :n - first]
        return out
