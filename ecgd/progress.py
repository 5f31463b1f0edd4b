"""Progress of a long command on a terminal: one line on stderr, rewritten in place.

Only a terminal gets it: when stderr is a file or a pipe (a log, a script), nothing is
written at all, so no control characters reach it. Redrawn at most every
``min_interval_s``, so that a fast run is not slowed down by its own progress line.
"""
from __future__ import annotations

import time
from typing import TextIO

from ecgd.wording import counted

_CLEAR_LINE = "\r\x1b[K"


class ProgressLine:
    """``ecgd: 3/10 files, 27 windows, 12.3 windows/s`` while working; the same line with
    the elapsed time when done. Messages printed with :meth:`message` appear above it."""

    def __init__(self, stream: TextIO, total_files: int, min_interval_s: float = 0.25) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._total_files = total_files
        self._min_interval_s = min_interval_s
        self._started_s = time.monotonic()
        self._drawn_s = -float("inf")
        self._files = 0
        self._windows = 0
        self._shown = False

    def _text(self) -> str:
        elapsed_s = max(time.monotonic() - self._started_s, 1e-9)
        return (f"ecgd: {self._files}/{counted(self._total_files, 'file')}, "
                f"{counted(self._windows, 'window')}, {self._windows / elapsed_s:.1f} windows/s")

    def _draw(self) -> None:
        self._stream.write(_CLEAR_LINE + self._text())
        self._stream.flush()
        self._shown = True
        self._drawn_s = time.monotonic()

    def advance(self, files: int = 0, windows: int = 0) -> None:
        """Count work done; redraw if the line is due."""
        self._files += files
        self._windows += windows
        if self._enabled and time.monotonic() - self._drawn_s >= self._min_interval_s:
            self._draw()

    def message(self, line: str) -> None:
        """Print ``line`` on the stream (on a terminal: above the progress line)."""
        if self._shown:
            self._stream.write(_CLEAR_LINE)
        self._stream.write(line + "\n")
        self._stream.flush()
        if self._shown:
            self._draw()

    def finish(self) -> None:
        """Leave the final counts and the elapsed time on the terminal."""
        if self._enabled:
            elapsed_s = time.monotonic() - self._started_s
            self._stream.write(f"{_CLEAR_LINE}{self._text()}, {elapsed_s:.1f} s\n")
            self._stream.flush()
