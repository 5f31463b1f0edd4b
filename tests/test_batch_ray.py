"""``ecgd batch --engine ray`` on a real local Ray cluster (a head and a second node, both
processes on this machine), with a model actor SIGKILLed part-way."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from batch_helpers import (assert_exactly_once, batch_command, committed_shards, events,
                           kill, read_table, run_batch, run_folder, shards_in, wait_for,
                           write_window_archive)
from model_helpers import write_tiny_model

pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head node and a second node (2 CPUs each), started once for this module."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2,
                                                           "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


def _model_actor_pids() -> List[int]:
    """Processes on this machine running a model actor (Ray titles them ray::...ModelActor)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            if title.startswith(b"ray::") and b"ModelActor" in title:
                pids.append(int(entry.name))
    return pids


def test_ray_batch_with_a_killed_actor_commits_every_input_once(
        tmp_path, shared_data, ecgfounder_labels, ray_cluster) -> None:
    """A model actor SIGKILLed mid-batch is restarted by Ray and its work redone; the
    tables hold every input exactly once, the same rows as the one-machine engine."""
    count = 160
    write_window_archive(shared_data, tmp_path / "archive", count)
    manifest = write_tiny_model(tmp_path / "model", tuple(
        ecgfounder_labels.read_text().splitlines()))
    out = tmp_path / "out"
    common = [tmp_path / "archive", "--model", manifest, "--format", "jsonl", "--batch", "4",
              "--shard-windows", "8"]
    env = dict(os.environ, RAY_ADDRESS=ray_cluster)
    batch = subprocess.Popen(batch_command(*common, "--out", out, "--engine", "ray",
                                           "--address", ray_cluster, "--workers", "2"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        wait_for(lambda: bool(_model_actor_pids()), 180, "a model actor")
        wait_for(lambda: shards_in(out) >= 1, 180, "a first shard")
        shards_at_kill = shards_in(out)
        kill(_model_actor_pids()[0])
        _, stderr = batch.communicate(timeout=300)
    finally:
        kill(batch.pid)
    assert batch.returncode == 0, stderr
    assert shards_at_kill < committed_shards(run_folder(out))  # the kill landed part-way
    finished, = events(stderr, "batch_finished")
    assert finished["analysed"] == count and finished["failed"] == 0
    assert_exactly_once(run_folder(out), count)
    ray_rows = read_table(run_folder(out), "windows")

    local = run_batch(*common, "--out", tmp_path / "local", "--workers", "2")
    assert local.returncode == 0, local.stderr
    local_rows = read_table(run_folder(tmp_path / "local"), "windows")
    assert {row["report_id"] for row in ray_rows} == {row["report_id"] for row in local_rows}
