"""A batch's output folder: its runs, the ledger that commits each input once, and shards.

Layout of ``--out DIR`` (created 0700; it holds what reports hold)::

    DIR/run-<id>/run.json           what the run is: sources, format, model, analysis config
    DIR/run-<id>/ledger.sqlite      committed shards and the key of every committed input
    DIR/run-<id>/windows/part-NNNNNN.parquet   one row per window   (committed shards only)
    DIR/run-<id>/errors/part-NNNNNN.parquet    one row per failed input
    DIR/run-<id>/.staging/          shards written but not yet committed

``<id>`` is a digest of the run's identity, so the same arguments, model and config find
the same run folder again. A shard is committed in three steps: (1) its files are written
durably into ``.staging`` (temporary name, fsync, rename, folder fsync); (2) one SQLite
transaction records the shard and the keys of its inputs (the commit point: the ledger is
written last); (3) the files are renamed into ``windows/`` and ``errors/``. A run killed
anywhere (SIGKILL or power loss included) is repaired when it is opened again: step-3
renames of committed shards are finished, staged files of uncommitted shards deleted, and
their inputs are analysed again. So ``windows/`` and ``errors/`` only ever hold whole,
committed shards, and every key appears in them once.

SQLite (the standard library's) holds the ledger because its transactions are atomic and
durable on power loss, and its key index answers "already committed?" without loading a
million keys; ``synchronous=FULL`` makes each commit durable before the shard is published.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Set, Tuple

from ecgd import __version__
from ecgd.batch.table import ERROR_COLUMNS, FILE_SUFFIX, Row, encode_shard, window_columns
from ecgd.batch.work import ERROR, SKIPPED, CommittedKeys, InputResult, WorkSettings
from ecgd.durable import ensure_private_dir, fsync_directory, write_durable
from ecgd.errors import BatchError, SealError
from ecgd.model.manifest import Manifest, sha256_of_file

RUN_PREFIX = "run-"
RUN_FILE = "run.json"
LEDGER_FILE = "ledger.sqlite"
LOCK_FILE = "lock"
STAGING_DIR = ".staging"
TABLES = ("windows", "errors")
RUN_FORMAT_VERSION = 1


def run_identity(sources: Sequence[Path], fmt: str, manifest: Manifest,
                 settings: WorkSettings) -> Dict[str, Any]:
    """What a run is: ``batch`` (which inputs, which format) and ``analysis`` (everything
    that changes a row: model, QC, windows, mains, input limits, pseudonym key, ecgd)."""
    key_id = None
    if settings.pseudonym_key is not None:  # which key, without anything that reveals it
        key_id = hmac.new(settings.pseudonym_key, b"ecgd batch pseudonym key id",
                          hashlib.sha256).hexdigest()[:16]
    return {
        "batch": {"sources": [str(source) for source in sources], "format": fmt},
        "analysis": {
            "ecgd_version": __version__,
            "model": {"name": manifest.name, "manifest_sha256": sha256_of_file(manifest.path),
                      "onnx_sha256": manifest.onnx_sha256, "precision": manifest.precision,
                      "trained": manifest.trained},
            "window": dataclasses.asdict(settings.window),
            "qc": dataclasses.asdict(settings.qc),
            "measurement": dataclasses.asdict(settings.measurement),
            "mains_hz": settings.mains_hz,
            "max_input_bytes": settings.max_input_bytes,
            "max_input_samples": settings.max_input_samples,
            "pseudonym_key_id": key_id,
        },
    }


def run_id(identity: Dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


class Ledger:
    """The run's commit record (SQLite): shards and the key of every committed input."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS shards (shard INTEGER PRIMARY KEY, "
                         "window_rows INTEGER NOT NULL, error_rows INTEGER NOT NULL, "
                         "inputs INTEGER NOT NULL, committed_at TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS inputs (key TEXT PRIMARY KEY, "
                         "shard INTEGER NOT NULL, outcome TEXT NOT NULL) WITHOUT ROWID")

    def shards(self) -> List[Tuple[int, int, int]]:
        """(shard, window rows, error rows) of every committed shard, in order."""
        return list(self._db.execute(
            "SELECT shard, window_rows, error_rows FROM shards ORDER BY shard"))

    def keys(self) -> List[str]:
        return [key for (key,) in self._db.execute("SELECT key FROM inputs")]

    def contains(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM inputs WHERE key = ?", (key,)).fetchone() is not None

    def totals(self) -> Tuple[int, int, int]:
        """Committed inputs, window rows and error rows."""
        inputs, = self._db.execute("SELECT COUNT(*) FROM inputs").fetchone()
        windows, errors = self._db.execute(
            "SELECT COALESCE(SUM(window_rows), 0), COALESCE(SUM(error_rows), 0) "
            "FROM shards").fetchone()
        return int(inputs), int(windows), int(errors)

    def commit(self, shard: int, outcomes: Sequence[Tuple[str, str]], window_rows: int,
               error_rows: int) -> None:
        """Record shard ``shard`` and its inputs' (key, outcome) in one transaction."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?)",
                             (shard, window_rows, error_rows, len(outcomes),
                              dt.datetime.now(dt.timezone.utc).isoformat()))
            self._db.executemany("INSERT INTO inputs VALUES (?, ?, ?)",
                                 [(key, shard, outcome) for key, outcome in outcomes])

    def close(self) -> None:
        self._db.close()


class RunFolder:
    """One run's folder, locked by this process, repaired and ready to commit shards."""

    def __init__(self, path: Path, document: Dict[str, Any], labels: Sequence[str]) -> None:
        self.path = path
        self.document = document
        self.fmt: str = document["identity"]["batch"]["format"]
        self._suffix = FILE_SUFFIX[self.fmt]
        self._window_columns = window_columns(labels)
        self._lock = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:  # a POSIX lock (not flock): worker processes forked from this one do not hold it
            fcntl.lockf(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock)
            raise BatchError(f"{path}: another ecgd batch is running on this run") from exc
        self.ledger = Ledger(path / LEDGER_FILE)
        self._repair()
        shards = self.ledger.shards()
        self._next_shard = shards[-1][0] + 1 if shards else 0

    def _staged(self, table: str, shard: int) -> Path:
        return self.path / STAGING_DIR / f"{table}-{shard:06d}{self._suffix}"

    def _published(self, table: str, shard: int) -> Path:
        return self.path / table / f"part-{shard:06d}{self._suffix}"

    def _repair(self) -> None:
        """Finish publishing committed shards; delete staged files nothing committed."""
        keep = set()
        for shard, window_rows, error_rows in self.ledger.shards():
            for table, rows in zip(TABLES, (window_rows, error_rows)):
                if not rows:
                    continue
                staged, published = self._staged(table, shard), self._published(table, shard)
                keep.add(staged.name)
                if staged.exists():
                    os.replace(staged, published)
                elif not published.exists():
                    raise BatchError(f"{self.path}: committed shard {shard} has no "
                                     f"{table} file; the run was altered outside ecgd")
        for leftover in (self.path / STAGING_DIR).iterdir():
            if leftover.name not in keep:
                leftover.unlink()
        for folder in (STAGING_DIR,) + TABLES:
            fsync_directory(self.path / folder)

    def commit_shard(self, results: Sequence[InputResult]) -> Tuple[int, int]:
        """Commit ``results`` as the next shard; returns its (window rows, error rows)."""
        shard = self._next_shard
        window_rows: List[Row] = [row for result in results for row in result.window_rows]
        error_rows: List[Row] = [result.error for result in results if result.error is not None]
        try:
            for table, rows, columns in (("windows", window_rows, self._window_columns),
                                         ("errors", error_rows, ERROR_COLUMNS)):
                if rows:
                    staged = self._staged(table, shard)
                    write_durable(staged.parent, staged.name,
                                  encode_shard(rows, columns, self.fmt))
            self.ledger.commit(shard, [(result.key, result.outcome) for result in results],
                               len(window_rows), len(error_rows))
            for table, rows in (("windows", window_rows), ("errors", error_rows)):
                if rows:
                    os.replace(self._staged(table, shard), self._published(table, shard))
                    fsync_directory(self._published(table, shard).parent)
        except (OSError, sqlite3.Error) as exc:
            raise SealError(f"{self.path}: results cannot be written: {exc}") from exc
        self._next_shard += 1
        return len(window_rows), len(error_rows)

    def committed_keys(self) -> CommittedKeys:
        return CommittedKeys(self.ledger.keys())

    def close(self) -> None:
        self.ledger.close()
        os.close(self._lock)


def open_run(out_dir: Path, identity: Dict[str, Any], labels: Sequence[str],
             new_run: bool) -> RunFolder:
    """The run folder for ``identity`` in ``out_dir``: resumed if it exists, else created.

    Refused (BatchError, nothing touched): ``out_dir`` holds anything but ecgd batch runs;
    its runs are of other sources or another format; or they used another model, analysis
    config or ecgd version and ``new_run`` is false (then a new run folder is made beside
    them, whose results never mix with theirs).
    """
    out_dir = Path(out_dir)
    try:
        ensure_private_dir(out_dir)
        entries = sorted(os.listdir(out_dir))
    except OSError as exc:
        raise BatchError(f"{out_dir}: cannot use as --out: {exc.strerror or exc}") from exc
    runs = {name: _read_run(out_dir / name) for name in entries
            if name.startswith(RUN_PREFIX) and (out_dir / name).is_dir()}
    leftovers = [name for name in entries if name.startswith(f".{RUN_PREFIX}")]
    foreign = [name for name in entries if name not in runs and name not in leftovers]
    if foreign:
        raise BatchError(f"{out_dir}: holds {len(foreign)} entries that are not ecgd batch "
                         f"runs; not touching it: give an empty or new --out")
    for document in runs.values():
        if document["identity"]["batch"] != identity["batch"]:
            raise BatchError(f"{out_dir}: holds the results of a batch over other sources "
                             f"or in another format; not overwritten: give another --out")
    name = RUN_PREFIX + run_id(identity)
    if name not in runs:
        if runs and not new_run:
            changed = _changes(identity, list(runs.values())[-1]["identity"])
            raise BatchError(f"{out_dir}: the {changed} differ from the run already there; "
                             f"give --new-run to start a new run beside it (its results "
                             f"are kept)")
        _create_run(out_dir, name, identity, labels)
    for leftover in leftovers:  # a run folder whose creation was cut short
        _remove_tree(out_dir / leftover)
    return RunFolder(out_dir / name, _read_run(out_dir / name), labels)


def _changes(identity: Dict[str, Any], other: Dict[str, Any]) -> str:
    what = {"model": "model", "ecgd_version": "ecgd version", "pseudonym_key_id":
            "pseudonym key"}
    changed = [what.get(key, f"[{key}] config") for key in identity["analysis"]
               if identity["analysis"][key] != other["analysis"].get(key)]
    return ", ".join(changed) or "analysis settings"


def _read_run(folder: Path) -> Dict[str, Any]:
    try:
        document = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
        if document.get("format_version") != RUN_FORMAT_VERSION:
            raise ValueError(f"format_version {document.get('format_version')!r}")
        document["identity"]["batch"]  # noqa: B018 - a KeyError means not a run document
        return document
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BatchError(f"{folder}: not an ecgd batch run folder ({exc}); not touching "
                         f"it: give another --out") from exc


def _create_run(out_dir: Path, name: str, identity: Dict[str, Any],
                labels: Sequence[str]) -> None:
    """Make the run folder under a hidden name, then rename it into place: a run folder
    either has its run.json or does not exist."""
    building = out_dir / f".{name}.{os.getpid()}.tmp"
    try:
        for folder in (building, building / STAGING_DIR) + tuple(building / t for t in TABLES):
            folder.mkdir(mode=0o700)
        document = {"format_version": RUN_FORMAT_VERSION, "identity": identity,
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                    "labels": list(labels)}
        write_durable(building, RUN_FILE,
                      (json.dumps(document, indent=2) + "\n").encode("utf-8"))
        Ledger(building / LEDGER_FILE).close()
        for table in (STAGING_DIR,) + TABLES:
            fsync_directory(building / table)
        os.rename(building, out_dir / name)
        fsync_directory(out_dir)
    except OSError as exc:
        raise BatchError(f"{out_dir}: cannot create a run folder: {exc.strerror or exc}") \
            from exc


def _remove_tree(folder: Path) -> None:
    for child in sorted(folder.rglob("*"), reverse=True):
        if child.is_dir() and not child.is_symlink():
            child.rmdir()
        else:
            child.unlink()
    folder.rmdir()


@dataclasses.dataclass
class Counts:
    """What this attempt did, input by input (``committed`` once their shard is)."""

    analysed: int = 0
    windows: int = 0
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    committed: int = 0
    unpseudonymized: int = 0


class Committer:
    """Collects input results and commits them as shards of about ``shard_windows`` rows,
    or every ``interval_s`` seconds of work, whichever comes first; an input whose key is
    committed or pending already (the same content found twice) is dropped."""

    def __init__(self, run: RunFolder, shard_windows: int, interval_s: float = 30.0) -> None:
        self.run = run
        self.counts = Counts()
        self._shard_rows = shard_windows
        self._interval_s = interval_s
        self._pending: List[InputResult] = []
        self._pending_keys: Set[str] = set()
        self._pending_rows = 0
        self._last_commit = time.monotonic()

    def add(self, result: InputResult) -> None:
        if result.outcome == SKIPPED:
            self.counts.skipped += 1
            return
        if result.key in self._pending_keys or self.run.ledger.contains(result.key):
            self.counts.duplicates += 1
            return
        self._pending.append(result)
        self._pending_keys.add(result.key)
        self._pending_rows += len(result.window_rows) + (result.outcome == ERROR)
        self.counts.analysed += 1
        self.counts.windows += len(result.window_rows)
        self.counts.failed += result.outcome == ERROR
        self.counts.unpseudonymized += result.unpseudonymized

    def due(self) -> bool:
        return bool(self._pending) and (
            self._pending_rows >= self._shard_rows
            or time.monotonic() - self._last_commit >= self._interval_s)

    def commit(self) -> None:
        """Commit everything pending (nothing to do when nothing is); a Ctrl-C that comes
        meanwhile is raised once the shard is committed."""
        with _ctrl_c_deferred():
            if self._pending:
                self.run.commit_shard(self._pending)
                self.counts.committed += len(self._pending)
            self._pending, self._pending_keys, self._pending_rows = [], set(), 0
            self._last_commit = time.monotonic()


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """SIGINT held back until the block ends, then raised as KeyboardInterrupt.

    A Ctrl-C that landed between a shard's ledger row and its renames left the shard
    committed but still pending, and the commit that the interrupted batch makes on its
    way out wrote it again and failed on the ledger ("results cannot be written", exit 74)
    instead of stopping with 130. Only the main thread can own signal handlers; elsewhere
    the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def describe_run(run: RunFolder) -> str:
    """One line on what the run folder holds now."""
    inputs, windows, errors = run.ledger.totals()
    return f"{run.path}: {inputs} inputs committed, {windows} window rows, {errors} error rows"
