"""The daemon's state file, which ``ecgd status`` reads: written by one, judged by the other.

The daemon rewrites the file atomically every ``[status] interval_s`` and at READY, STOPPING
and exit; systemd's ``RuntimeDirectory=`` gives it a folder in /run that exists only while
the service does. It holds counters, queues, the last window's time and latency, host
health and free disk: nothing about a patient or an input's name (a report id is a UUID).

Document (``format_version`` 1)::

    {"format_version": 1, "state": "ready" | "stopping" | "stopped", "pid": 1234,
     "version": "0.1.0", "started_at": ISO, "updated_at": ISO, "updated_unix_s": 1.7e9,
     "interval_s": 2.0, "counters": {...}, "queue": {...}, "last_window": {...} | null,
     "model": {...}, "live_source": bool, "host": {..., "summary": str},
     "disk": {"reports": {"path", "free_bytes"}, "spool": {"path", "free_bytes"}}}

A state file is judged by its age and its process: older than :data:`STALE_INTERVALS`
intervals, or written by a process that is gone, it no longer describes a running daemon.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ecgd import durable
from ecgd.wording import duration

FORMAT_VERSION = 1
STALE_INTERVALS = 3
_MODE = 0o640
_MAX_BYTES = 1 << 20


def free_bytes(path: Path) -> Optional[int]:
    """Bytes free for an unprivileged writer on the filesystem of ``path``; None if unknown."""
    try:
        info = os.statvfs(path)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def write_state(path: Path, document: Dict[str, Any]) -> None:
    """Replace the state file atomically (readers never see half a file); OSError on failure."""
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    durable.write_durable(path.parent, path.name, data, mode=_MODE)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process (the daemon runs as ecgd)
        return True
    return True


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a state file says about the daemon: ``running`` (READY or STOPPING, fresh),
    ``condition`` (``running``, ``stopped``, ``gone``, ``stale``, ``absent``,
    ``unreadable``), one ``message`` line, and the ``state`` document when there is one."""

    running: bool
    condition: str
    message: str
    state: Optional[Dict[str, Any]] = None


def read_verdict(path: Path, now_unix_s: Optional[float] = None) -> Verdict:
    """Read the state file at ``path`` and judge whether it describes a running daemon."""
    now_unix_s = time.time() if now_unix_s is None else now_unix_s
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_BYTES)
    except FileNotFoundError:
        return Verdict(False, "absent", f"{path}: no state file: the daemon is not running "
                                        f"(or its [status] file is elsewhere)")
    except OSError as exc:
        return Verdict(False, "unreadable", f"{path}: cannot read the state file: "
                                            f"{exc.strerror or exc} (run as root or as a "
                                            f"member of the service's group)")
    try:
        state = json.loads(data.decode("utf-8"))
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError("format_version")
        name, pid = state["state"], int(state["pid"])
        updated_unix_s, interval_s = float(state["updated_unix_s"]), float(state["interval_s"])
        updated_at = state["updated_at"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return Verdict(False, "unreadable", f"{path}: not an ecgd state file of format "
                                            f"{FORMAT_VERSION}")
    age_s = max(0.0, now_unix_s - updated_unix_s)
    if name == "stopped":
        return Verdict(False, "stopped", f"stopped at {updated_at} ({duration(age_s)} ago)",
                       state)
    if not _process_exists(pid):
        return Verdict(False, "gone", f"not running: pid {pid} ended without stopping "
                                      f"(killed or crashed); last update {updated_at} "
                                      f"({duration(age_s)} ago)", state)
    if age_s > STALE_INTERVALS * interval_s:
        return Verdict(False, "stale", f"not responding: pid {pid} has not updated its state "
                                       f"for {duration(age_s)} (every {interval_s:g} s "
                                       f"expected); it may be hung", state)
    return Verdict(True, "running", f"{name} (pid {pid}), updated {duration(age_s)} ago",
                   state)
