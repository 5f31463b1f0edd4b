"""Run ``ecgd run`` as a real subprocess with a real NOTIFY_SOCKET, for end-to-end tests."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]


def wait_for(condition: Callable[[], object], timeout_s: float, what: str,
             interval_s: float = 0.05) -> object:
    """Poll ``condition`` until it is truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


class NotifySocket:
    """A Unix datagram socket standing in for systemd's notify socket; records messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: List[Dict[str, str]] = []
        self._times: List[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-socket")
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append(fields)
                self._times.append(time.monotonic())

    def has(self, key: str, value: Optional[str] = None) -> bool:
        with self._lock:
            return any(key in m and (value is None or m[key] == value) for m in self.messages)

    def count(self, key: str) -> int:
        with self._lock:
            return sum(1 for m in self.messages if key in m)

    def last(self, key: str) -> Optional[str]:
        with self._lock:
            for message in reversed(self.messages):
                if key in message:
                    return message[key]
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class DaemonProcess:
    """``python -m ecgd run --config FILE`` with NOTIFY_SOCKET pointing at a NotifySocket.

    ``subcommand`` runs another service the same way (``forward``).
    """

    def __init__(self, config_path: Path, workdir: Path, watchdog_s: Optional[float] = None,
                 extra_env: Optional[Dict[str, str]] = None, subcommand: str = "run") -> None:
        self.notify = NotifySocket(workdir / f"notify-{time.monotonic_ns()}.sock")
        self.log_path = workdir / f"daemon-{time.monotonic_ns()}.log"
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = str(self.notify.path)
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("CREDENTIALS_DIRECTORY", None)
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        env.update(extra_env or {})
        self._log_file = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ecgd", subcommand, "--config", str(config_path)],
            stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        wait_for(lambda: self.notify.has("READY", "1") or self.process.poll() is not None,
                 timeout_s, "READY=1")
        if not self.notify.has("READY", "1"):
            raise AssertionError(f"daemon exited {self.process.returncode} before READY=1:\n"
                                 + self.log_text())

    def log_text(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._log_file.close()
        self.notify.close()


@contextlib.contextmanager
def full_filesystem(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` and filled up; yields the filler file
    (delete it to make room). Skips the test where mounting needs root and is refused."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mount.stderr.strip()}")
    try:
        filler = folder / "filler"
        try:
            with open(filler, "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        except OSError:
            pass  # full: what the caller wants
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
