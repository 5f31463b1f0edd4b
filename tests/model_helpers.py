"""Helpers for the model tests: run ``ecgd model`` in-process, tiny models, torch checkpoints."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ecgd.cli import main
from ecgd.model.build import write_model
from ecgd.model.net1d import Net1DSpec
from ecgd.model.onnx_graph import build_graph, random_weights

# A small Net1D that still has the model contract (12 leads x 5000 samples -> 150 labels),
# for tests of manifests and bad input that do not need the full 30.8 M parameters.
TINY_SPEC = Net1DSpec(filter_list=(32, 48), m_blocks_list=(1, 2), base_filters=16)


def run_model_command(argv: List[str]) -> Tuple[int, str, str]:
    """Run ``ecgd model ARGV`` in-process through cli.main: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["model", *argv])
    return code, out.getvalue(), err.getvalue()


def write_tiny_model(out_dir: Path, labels: Tuple[str, ...], seed: int = 0) -> Path:
    """A tiny fp32 Net1D with a valid manifest; returns the manifest path."""
    onnx_bytes = build_graph(TINY_SPEC, random_weights(TINY_SPEC, seed)).SerializeToString()
    return write_model(out_dir, "tiny", onnx_bytes, spec=TINY_SPEC, labels=labels,
                       trained=False, precision="fp32", provenance={"source": "test"})


def cinc_windows(shared_data: Path, count: int) -> np.ndarray:
    """``count`` real 12 x 5000 windows (CinC 2021, 500 Hz, mV), globally z-scored."""
    import wfdb

    windows = []
    for header in sorted((shared_data / "cinc2021").glob("*.hea"))[:count]:
        record = wfdb.rdrecord(str(header.with_suffix("")))
        x = record.p_signal.T[:, :5000].astype(np.float64)
        windows.append(((x - x.mean()) / (x.std() + 1e-8)).astype(np.float32))
    return np.stack(windows)


def upstream_checkpoint(state_dict: Dict, with_optimizer: bool = True) -> Dict:
    """A checkpoint dict in the upstream layout around ``state_dict`` (torch tensors)."""
    import torch

    checkpoint = {"epoch": 7, "step": 12345, "state_dict": state_dict,
                  "val_auroc": np.float64(0.9125)}
    if with_optimizer:
        params = [torch.nn.Parameter(v.clone()) for k, v in state_dict.items()
                  if v.is_floating_point()]
        optimizer = torch.optim.Adam(params, lr=1e-3)
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
        checkpoint["optimizer"] = optimizer.state_dict()
        checkpoint["scheduler"] = scheduler.state_dict()
    else:
        checkpoint["optimizer"] = {}
        checkpoint["scheduler"] = {}
    return checkpoint
