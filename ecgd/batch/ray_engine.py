"""The Ray engine: the same work as a Ray Data pipeline, from a laptop to a cluster.

    paths ─ from_items ─▶ map_batches(prepare_paths)      tasks: key, skip, read, QC, preprocess
                        ─▶ map_batches(ModelActor, N)       actors: one ORT session each,
                                                            batched inference, rows
                        ─▶ iter_batches, in this process ─▶ Committer (ledger + shards)

Only the address changes between a laptop and a cluster. Writing stays in this (driver)
process: it is the ledger's single committer, so exactly-once holds whatever Ray retries
(Ray Data restarts a killed actor and re-runs its task; a result whose key is committed or
pending already is dropped). Results are small (about 2 KB a window). The inputs are read
by the tasks: on a cluster the SOURCE folders must be mounted at the same paths on every
node. The model reaches the actors as the verified file's bytes through the object store
(read once here); each actor hashes them again in memory (~0.1 s, no disk) before use,
because they crossed the network.

Logical CPUs: a model actor asks for ``0.75 x threads`` CPUs and a prepare task for 0.25, so
the default of one actor per ``threads`` CPUs leaves a quarter of the cluster for reading and
preparing (about the share of CPU time they take next to FP32 inference).
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from ecgd.batch.local import EngineStats, peak_rss_mb
from ecgd.batch.progress import Progress
from ecgd.batch.run import Committer
from ecgd.batch.work import (CommittedKeys, PreparedInput, WorkSettings, finish_inputs,
                             prepare_input, refused_input)
from ecgd.errors import BatchError
from ecgd.model.manifest import Manifest
from ecgd.model.session import VerifiedModel, start_from_bytes
from ecgd.records.companions import FoundRecording

ACTOR_CPU_SHARE = 0.75
PREPARE_CPUS = 0.25


def prepare_paths(batch: Dict[str, np.ndarray], manifest: Manifest, settings: WorkSettings,
                  committed: CommittedKeys) -> Dict[str, np.ndarray]:
    """Ray Data stage 1 (a task): each path's prepared input or final result, pickled."""
    from pathlib import Path

    analyzer = settings.analyzer(None, manifest)
    outcomes = [pickle.dumps(prepare_input(Path(path), analyzer, settings, committed),
                             protocol=5) for path in batch["path"]]
    return {"outcome": np.array(outcomes, dtype=object)}


class ModelActor:
    """Ray Data stage 2 (an actor pool): one ONNX Runtime session, batched inference."""

    def __init__(self, manifest: Manifest, model: Any, settings: WorkSettings,
                 threads: int) -> None:
        import ray

        onnx_bytes = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self._analyzer = settings.analyzer(start_from_bytes(manifest, onnx_bytes, threads))
        del onnx_bytes  # ORT holds its own copy of the weights
        self._pid = os.getpid()

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outcomes = [pickle.loads(item) for item in batch["outcome"]]
        finished = iter(finish_inputs(self._analyzer, [outcome for outcome in outcomes
                                                       if isinstance(outcome, PreparedInput)]))
        results = [next(finished) if isinstance(outcome, PreparedInput) else outcome
                   for outcome in outcomes]
        count = len(results)
        return {"result": np.array([pickle.dumps(result) for result in results], dtype=object),
                "pid": np.full(count, self._pid), "peak_rss_mb": np.full(count, peak_rss_mb())}


class RayEngine:
    """Runs a batch's inputs as a Ray Data pipeline on the cluster at ``address``."""

    def __init__(self, verified: VerifiedModel, settings: WorkSettings,
                 committed: CommittedKeys, address: Optional[str], actors: Optional[int],
                 threads: int) -> None:
        self._verified = verified
        self._settings = settings
        self._committed = committed
        self._address = address
        self._actors = actors
        self._threads = threads

    def run(self, found: Iterator[FoundRecording], committer: Committer,
            progress: Progress) -> EngineStats:
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise BatchError("--engine ray needs Ray Data: pip install 'ecgd[cluster]'") \
                from exc
        paths = self._paths(found, committer, progress)
        starting_here = self._address is None and "RAY_ADDRESS" not in os.environ
        options: Dict[str, Any] = {"include_dashboard": False} if starting_here else {}
        ray.init(address=self._address, logging_level=logging.WARNING, log_to_driver=False,
                 configure_logging=False, **options)
        try:
            cpus = float(ray.cluster_resources().get("CPU", 1.0))
            actors = self._actors or max(1, int(cpus // self._threads))
            stats = EngineStats(actors, self._threads)
            if paths:
                self._pipeline(ray, paths, actors, committer, progress, stats)
            committer.commit()
        finally:
            ray.shutdown()
        return stats

    def _paths(self, found: Iterator[FoundRecording], committer: Committer,
               progress: Progress) -> List[str]:
        """Every input path (the driver lists them; Ray Data splits them into tasks);
        refused entries become error rows here."""
        paths = []
        for entry in found:
            progress.found += 1
            if entry.refusal is None:
                paths.append(str(entry.path))
                continue
            committer.add(refused_input(entry.path, entry.refusal, self._settings,
                                        self._committed))
        progress.total = progress.found
        return paths

    def _pipeline(self, ray: Any, paths: List[str], actors: int, committer: Committer,
                  progress: Progress, stats: EngineStats) -> None:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        manifest = self._verified.manifest
        model_ref = ray.put(self._verified.read_bytes())
        batch = self._settings.batch_max
        dataset = ray.data.from_items([{"path": path} for path in paths])
        dataset = dataset.map_batches(
            prepare_paths, batch_size=batch, num_cpus=PREPARE_CPUS,
            fn_kwargs={"manifest": manifest, "settings": self._settings,
                       "committed": self._committed})
        dataset = dataset.map_batches(
            ModelActor, batch_size=batch, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=ACTOR_CPU_SHARE * self._threads,
            fn_constructor_kwargs={"manifest": manifest, "model": model_ref,
                                   "settings": self._settings, "threads": self._threads})
        peak_by_pid: Dict[int, float] = {}
        for output in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for item in output["result"]:
                committer.add(pickle.loads(item))
            for pid, rss_mb in zip(output["pid"], output["peak_rss_mb"]):
                peak_by_pid[int(pid)] = max(peak_by_pid.get(int(pid), 0.0), float(rss_mb))
            if committer.due():
                committer.commit()
            progress.update(committer.counts)
        stats.worker_peak_rss_mb = list(peak_by_pid.values())
