#!/usr/bin/env python3
"""Parity of ecgd's ONNX Net1D with an independent PyTorch Net1D on real ECGs.

Without --checkpoint: seeds the PyTorch model (tests/torch_net1d.py), saves it with
torch.save in the upstream checkpoint layout, converts it with ecgd's restricted reader and
builder, and compares logits on every CinC 2021 record. With --checkpoint (e.g. the real
12_lead_ECGFounder.pth): loads its weights into the PyTorch model and compares the same way.
Prints max |logit difference| (the bar is 1e-4; the edge-cds write-up reported 0.249).

    python3 tools/torch_parity.py [--checkpoint PTH] [--data ../shared/data/cinc2021]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", type=Path,
                        default=REPO.parent / "shared" / "data" / "cinc2021")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from ecgd.model.build import convert
    from ecgd.model.checkpoint import load_checkpoint
    from ecgd.model.net1d import ECGFOUNDER_12LEAD
    from ecgd.model.session import ModelSession
    from ecgd.signal.preprocess import make_preprocessor
    from ecgd.records.reader import read_recording
    from model_helpers import upstream_checkpoint
    from torch_net1d import Net1D

    model = Net1D().eval()
    with tempfile.TemporaryDirectory(prefix="ecgd-parity-") as tmp:
        labels = Path(tmp) / "labels.txt"
        labels.write_text("".join(f"label {i}\n" for i in range(150)))
        checkpoint = args.checkpoint
        if checkpoint is None:
            torch.manual_seed(0)
            model = Net1D().eval()
            with torch.no_grad():
                model.dense.weight.mul_(40.0)  # logits in a trained-like range
            checkpoint = Path(tmp) / "seeded.pth"
            torch.save(upstream_checkpoint(model.state_dict()), checkpoint)
        else:
            weights = load_checkpoint(checkpoint, ECGFOUNDER_12LEAD).weights
            missing, _ = model.load_state_dict(
                {k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
            if any("bn" not in k for k in missing):
                raise SystemExit(f"weights missing from the torch model: {missing[:3]}")
        manifest_path, _ = convert(checkpoint, labels, Path(tmp) / "model", name="parity")
        session = ModelSession.open(manifest_path, threads=args.threads)
        m = session.manifest
        pre = make_preprocessor(m.preprocessing_profile, m.preprocessing_params, m.fs_hz, 50)
        headers = sorted(args.data.glob("*.hea"))
        windows = pre(np.stack([read_recording(h, 1 << 26).samples_mv[:, :5000]
                                for h in headers]))
        onnx_logits = session.predict_logits(windows)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(windows)).numpy()
    diff = np.abs(onnx_logits - torch_logits)
    print(f"{len(windows)} real windows from {args.data}; logits std "
          f"{torch_logits.std():.2f}; max |logit diff| {diff.max():.2e}, mean "
          f"{diff.mean():.2e} (bar 1e-4): {'PASS' if diff.max() <= 1e-4 else 'FAIL'}")
    return 0 if diff.max() <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
