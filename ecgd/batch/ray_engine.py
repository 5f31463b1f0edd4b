"""The Ray engine: the same work as a Ray Data pipeline, from a laptop to a cluster.

    paths ─ from_items ─▶ map_batches(ModelActor, N)   actors: one ORT session each; per
                                                       call key, skip, read, QC, preprocess
                                                       and batched inference of a block of
                                                       paths, then rows
                        ─▶ iter_batches, in this process ─▶ Committer (ledger + shards)

Only the address changes between a laptop and a cluster. Writing stays in this (driver)
process: it is the ledger's single committer, so exactly-once holds whatever Ray retries
(Ray Data restarts a killed actor and re-runs its task; a result whose key is committed or
pending already is dropped). Results are small (about 2 KB a window). The inputs are read
by the actors: on a cluster the SOURCE folders must be mounted at the same paths on every
node. The model reaches the actors as the verified file's bytes through the object store
(read once here); each actor hashes them again in memory (~0.1 s, no disk) before use,
because they crossed the network.

Why one stage, as the local engine's workers do it: a separate prepare stage (tasks of a
quarter CPU feeding the actors) ran at 0.40x the local engine on one 2-CPU node. Every
task built its own analyzer and paid Ray's per-task cost, the prepared windows (240 KB each)
went through the object store between the stages, and the CPU split between the stages was
a guess. Fused, only paths go in and rows come out, every actor's CPU does all the work of
its inputs, and a node's actors still scale with its CPUs. ``PATHS_PER_CALL`` batches of the
model's batch size go to an actor per call, so Ray's per-call cost is shared by that many
inputs.
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
from ecgd.batch.work import CommittedKeys, WorkSettings, analyse_inputs, refused_input
from ecgd.errors import BatchError
from ecgd.model.manifest import Manifest
from ecgd.model.session import VerifiedModel, start_from_bytes
from ecgd.records.companions import FoundRecording

# Model batches per actor call: Ray's per-call cost (scheduling, a block through the object
# store, a result batch to the driver) shared by this many inputs, while a killed actor
# redoes at most this much work.
PATHS_PER_CALL = 4


class ModelActor:
    """The Ray Data stage (an actor pool): one ONNX Runtime session; each call reads,
    prepares and infers a block of paths, in batches of the model's batch size."""

    def __init__(self, manifest: Manifest, model: Any, settings: WorkSettings,
                 committed: CommittedKeys, threads: int) -> None:
        import ray

        onnx_bytes = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self._analyzer = settings.analyzer(start_from_bytes(manifest, onnx_bytes, threads))
        del onnx_bytes  # ORT holds its own copy of the weights
        self._settings = settings
        self._committed = committed
        self._pid = os.getpid()

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from pathlib import Path

        results = analyse_inputs([Path(path) for path in batch["path"]], self._analyzer,
                                 self._settings, self._committed)
        count = len(results)
        return {"result": np.array([pickle.dumps(result, protocol=5) for result in results],
                                   dtype=object),
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
        paths_per_call = PATHS_PER_CALL * self._settings.batch_max
        dataset = ray.data.from_items([{"path": path} for path in paths],
                                      override_num_blocks=max(1, -(-len(paths)
                                                                   // paths_per_call)))
        dataset = dataset.map_batches(
            ModelActor, batch_size=paths_per_call,
            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=self._threads,
            fn_constructor_kwargs={"manifest": manifest, "model": model_ref,
                                   "settings": self._settings, "committed": self._committed,
                                   "threads": self._threads})
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
