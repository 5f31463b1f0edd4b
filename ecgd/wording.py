"""How ecgd words numbers for people: a count with its noun, a duration, a size."""
from __future__ import annotations

from typing import Optional


def counted(number: int, noun: str, plural: Optional[str] = None) -> str:
    """``1 window``, ``2 windows`` (``plural`` for nouns that do not just add an s)."""
    return f"{number} {noun if number == 1 else (plural or noun + 's')}"


def duration(seconds: float) -> str:
    """``45 s``, ``12 min 5 s``, ``3 h 20 min``, ``2 d 4 h``: the two largest units."""
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def size(n_bytes: int) -> str:
    """Bytes in the largest binary unit that keeps a leading digit: ``12.3 GiB``."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
