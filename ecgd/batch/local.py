"""The one-machine engine (the default): worker processes, each with its own ONNX Runtime
session, fed by one coordinator that commits their results.

    coordinator (this process, one thread)         N worker processes (forked)
      find_recordings ── path ──── pipe ──▶  prepare_input: key, skip, read, QC, preprocess
                                             ... until ``batch`` windows wait or none is queued
      Committer ◀──── rows / error ─ pipe ──  finish_inputs: batched inference, reports, rows

Every worker reads, prepares and infers, so all cores do all stages and only small rows
cross a pipe (preprocessed windows never do). Bounds, whatever the archive's size: a worker
is handed at most ``batch + 2`` inputs (paths) at a time and holds at most ``batch - 1``
prepared windows waiting for inference plus the windows of the input it is preparing; the
coordinator holds the rows of one uncommitted shard.

A worker that dies (a crash in a native library, the OOM killer, SIGKILL) is replaced. The
inputs it held are retried one at a time ("suspects"), so an input that kills a worker
again is pinpointed and becomes an error row instead of stopping the batch.

Workers are forked: they share the modules the coordinator imported and the model it
verified (:class:`VerifiedModel`: hashed once per run; each worker's session opens the same
unchanged file). The coordinator starts no thread, so forking it is safe.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional

from ecgd.batch.progress import Progress
from ecgd.batch.run import Committer
from ecgd.batch.work import (CommittedKeys, InputResult, WorkSettings, failed_input,
                             finish_inputs, input_key, input_name_hash, prepare_input,
                             refused_input)
from ecgd.errors import BatchError, EcgdError
from ecgd.model.session import VerifiedModel
from ecgd.records.companions import FoundRecording

_WAIT_S = 0.2
_COUNT_STEP = 256
_STOP_TIMEOUT_S = 30.0
# A suspect input (held by a worker that died) that kills its worker again is an error.
_MAX_ATTEMPTS = 2


@dataclasses.dataclass
class _Task:
    seq: int
    path: Path
    attempts: int = 0
    suspect: bool = False


@dataclasses.dataclass
class EngineStats:
    """What the engine reports besides the counts: workers' peak RSS, deaths."""

    workers: int
    threads: int
    worker_peak_rss_mb: List[float] = dataclasses.field(default_factory=list)
    worker_deaths: int = 0


class _Worker:
    def __init__(self, context: Any, target_args: tuple, others: List["_Worker"]) -> None:
        self.conn, child_conn = context.Pipe()
        # The fork copies the coordinator's ends of every pipe into the child: it must close
        # them, or a coordinator's death never reaches any worker as end-of-file.
        coordinator_ends = [self.conn] + [other.conn for other in others
                                          if not other.conn.closed]
        self.process = context.Process(target=_worker_main,
                                       args=(child_conn, coordinator_ends) + target_args,
                                       daemon=True)
        self.process.start()
        child_conn.close()
        self.ready = False
        self.assigned: Dict[int, _Task] = {}

    def holds_suspect(self) -> bool:
        return any(task.suspect for task in self.assigned.values())


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _worker_main(conn: Any, coordinator_ends: List[Any], verified: VerifiedModel,
                 settings: WorkSettings, committed: CommittedKeys, threads: int) -> None:
    """A worker: start a session, then prepare inputs and infer them in batches; it ends
    when told to stop or when the coordinator is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    for end in coordinator_ends:
        end.close()
    try:
        _serve(conn, verified, settings, committed, threads)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the coordinator is gone: nothing left to report to


def _serve(conn: Any, verified: VerifiedModel, settings: WorkSettings,
           committed: CommittedKeys, threads: int) -> None:
    """The worker's loop, until ``stop``; a lost coordinator surfaces as a pipe error."""
    try:
        analyzer = settings.analyzer(verified.start(threads))
        conn.send(("ready", os.getpid()))
        pending: List[Any] = []
        pending_windows = 0
        while True:
            if pending and (pending_windows >= settings.batch_max or not conn.poll()):
                for (seq, _), result in zip(pending, finish_inputs(
                        analyzer, [item for _, item in pending])):
                    conn.send(("result", seq, result))
                pending, pending_windows = [], 0
                continue
            message = conn.recv()
            if message[0] == "stop":
                conn.send(("stopped", peak_rss_mb()))
                return
            _, seq, path = message
            outcome = prepare_input(Path(path), analyzer, settings, committed)
            if isinstance(outcome, InputResult):
                conn.send(("result", seq, outcome))
            else:
                pending.append((seq, outcome))
                pending_windows += len(outcome.prepared.model_inputs())
    except EcgdError as exc:  # the model cannot run: the batch must stop, saying why
        conn.send(("fatal", exc))


class LocalEngine:
    """Runs a batch's inputs through ``workers`` processes of ``threads`` ORT threads."""

    def __init__(self, verified: VerifiedModel, settings: WorkSettings,
                 committed: CommittedKeys, workers: int, threads: int) -> None:
        self._target_args = (verified, settings, committed, threads)
        self._settings = settings
        self._committed = committed
        self._context = multiprocessing.get_context("fork")
        self._prefetch = settings.batch_max + 2
        self.stats = EngineStats(workers, threads)
        self._n_workers = workers
        self._workers: List[_Worker] = []
        self._retry: Deque[_Task] = collections.deque()
        self._seq = 0
        self._startup_deaths = 0

    def run(self, found: Iterator[FoundRecording], counting: Iterator[FoundRecording],
            committer: Committer, progress: Progress) -> EngineStats:
        """Analyse every input ``found`` yields and commit it; ``counting`` is a second
        walk of the same tree, advanced between events to learn the total."""
        self._found: Optional[Iterator[FoundRecording]] = found
        self._committer = committer
        self._progress = progress
        try:
            for _ in range(self._n_workers):
                self._workers.append(_Worker(self._context, self._target_args, self._workers))
            counter: Optional[Iterator[FoundRecording]] = counting
            counted = 0
            while True:
                self._feed()
                if self._found is None and not self._retry and not any(
                        worker.assigned for worker in self._workers):
                    break
                self._wait_and_collect()
                if committer.due():
                    committer.commit()
                if counter is not None:
                    steps = sum(1 for _ in zip(range(_COUNT_STEP), counter))
                    counted += steps
                    if steps < _COUNT_STEP:
                        counter, progress.total = None, counted
                progress.update(committer.counts)
            committer.commit()
            self._stop_workers()
        finally:
            for worker in self._workers:
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
        return self.stats

    # -- handing out inputs --------------------------------------------------------------
    def _feed(self) -> None:
        for worker in self._workers:
            while worker.ready and len(worker.assigned) < self._prefetch \
                    and not worker.holds_suspect():
                task = self._next_task(idle=not worker.assigned)
                if task is None:
                    break
                worker.assigned[task.seq] = task
                worker.conn.send(("input", task.seq, str(task.path)))

    def _next_task(self, idle: bool) -> Optional[_Task]:
        if self._retry and (idle or not self._retry[0].suspect):
            return self._retry.popleft()
        while self._found is not None:
            entry = next(self._found, None)
            if entry is None:
                self._found = None
                break
            self._progress.found += 1
            if entry.refusal is None:
                self._seq += 1
                return _Task(self._seq, entry.path)
            self._committer.add(refused_input(entry.path, entry.refusal, self._settings,
                                              self._committed))
        return None

    # -- results and deaths ------------------------------------------------------------------
    def _wait_and_collect(self) -> None:
        waitables: List[Any] = [worker.conn for worker in self._workers]
        waitables += [worker.process.sentinel for worker in self._workers]
        ready = multiprocessing.connection.wait(waitables, timeout=_WAIT_S)
        for worker in list(self._workers):
            if worker.conn in ready or worker.process.sentinel in ready:
                if not self._drain(worker):
                    self._replace(worker)

    def _drain(self, worker: _Worker) -> bool:
        """Handle every message waiting from ``worker``; False when it is dead."""
        try:
            while worker.conn.poll():
                kind, *payload = worker.conn.recv()
                if kind == "result":
                    seq, result = payload
                    worker.assigned.pop(seq)
                    self._committer.add(result)
                elif kind == "ready":
                    worker.ready = True
                elif kind == "fatal":
                    raise payload[0]
        except (EOFError, OSError):
            return False
        return worker.process.exitcode is None

    def _replace(self, dead: _Worker) -> None:
        dead.process.join()
        code = dead.process.exitcode or 0
        how = (f"killed by {signal.Signals(-code).name}" if code < 0
               else f"exit code {code}")
        self.stats.worker_deaths += 1
        if not dead.ready:
            self._startup_deaths += 1
            if self._startup_deaths > 3 * self._n_workers:
                raise BatchError(f"worker processes keep dying while starting ({how})")
        for task in dead.assigned.values():
            task.attempts += 1
            if task.attempts >= _MAX_ATTEMPTS:
                key = input_key(task.path, self._settings)
                reason = (f"{task.path.name}: the worker process analysing it died "
                          f"({how}) {task.attempts} times; not analysed")
                self._committer.add(failed_input(task.path, key, input_name_hash(
                    task.path, self._settings), reason))
            else:
                task.suspect = True
                self._retry.appendleft(task)
        dead.conn.close()
        self._workers[self._workers.index(dead)] = _Worker(self._context, self._target_args,
                                                           self._workers)

    def _stop_workers(self) -> None:
        for worker in self._workers:
            worker.conn.send(("stop",))
        for worker in self._workers:
            if worker.conn.poll(_STOP_TIMEOUT_S):
                try:
                    kind, *payload = worker.conn.recv()
                except EOFError:
                    continue
                if kind == "stopped":
                    self.stats.worker_peak_rss_mb.append(payload[0])
            worker.process.join(_STOP_TIMEOUT_S)
