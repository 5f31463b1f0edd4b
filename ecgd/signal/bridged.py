"""How much of a window a live source filled in, and the quality rule that limits it.

The serial windower bridges short gaps of known size with a straight line
(``ecgd.sources.windowing``). A few such stretches in a 10-s window do not change what the
model reads; many would make it read an ECG partly drawn by ecgd. This rule sits beside
the per-lead checks of ``ecgd.signal.quality`` (it looks at no sample, only at where the
samples came from) and is applied in ``Analyzer.prepare`` right after ``assess_window``:
a window with more than ``max_fraction`` of its samples filled in is rejected with the
window-level reason ``bridged``.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

BRIDGED_REASON = "bridged"


@dataclasses.dataclass(frozen=True)
class BridgedStretches:
    """Samples of a recording that were filled in, and how much of a window may be.

    ``gaps`` are ``[start, end)`` sample indices into the recording, at its own rate.
    """

    gaps: Tuple[Tuple[int, int], ...]
    max_fraction: float

    def samples_in(self, start: int, stop: int) -> int:
        """How many samples of ``[start, stop)`` were filled in."""
        return sum(max(0, min(end, stop) - max(begin, start)) for begin, end in self.gaps)

    def reasons(self, start: int, stop: int) -> Tuple[str, ...]:
        """``("bridged",)`` when the window ``[start, stop)`` holds too much filled-in
        signal, else ``()``."""
        if stop <= start:
            return ()
        too_much = self.samples_in(start, stop) > self.max_fraction * (stop - start)
        return (BRIDGED_REASON,) if too_much else ()
