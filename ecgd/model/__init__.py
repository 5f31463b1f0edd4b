"""The model layer: ECGFounder's Net1D as ONNX, built and converted without PyTorch.

- ``net1d``: the architecture as data (hyper-parameters, state-dict keys and shapes)
- ``onnx_graph``: the one builder, weights dict -> ONNX graph (Conv2d layout)
- ``checkpoint``: restricted, never-executing reader of PyTorch zip checkpoints
- ``manifest``: ``NAME.json`` beside ``NAME.onnx``, every hash and field verified on load
- ``build``: seeded reference model and checkpoint conversion
- ``session``: ONNX Runtime session for a verified model
- ``quantize``: static QDQ INT8 with calibration on real ECG windows
"""
from __future__ import annotations
