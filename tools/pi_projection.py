"""What ecgd's inference should cost on a Raspberry Pi 4: a projection, not a measurement.

Counts the operations of one window from the ONNX graph (Conv and Gemm multiply-adds, as
2 FLOPs each, at batch 1 after ONNX shape inference; the element-wise ops are counted
apart), then divides by the Pi 4's Cortex-A72 throughput under stated assumptions.

    python tools/pi_projection.py MANIFEST.json [--markdown]

Every number this prints is either COUNTED (from the graph) or ASSUMED (the constants
below, each with its source); nothing here was measured on a Pi. README "Raspberry Pi 4:
a projection" explains the choices.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import onnx
from onnx import shape_inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ecgd.model.manifest import load_manifest  # noqa: E402

# ASSUMED: one 128-bit FMLA per cycle = 4 lanes x 2 FLOPs. Arm's Cortex-A72 Software
# Optimization Guide (UAN 0016A) gives two FP/ASIMD pipes, and descriptions of it (e.g.
# T. Bastian's thesis on the A72 front end) say only FP0 multiplies; if both pipes issued
# FMLA, the peak would double and the projected inference times halve.
A72_FP32_FLOP_PER_CYCLE = 8.0
PI4_CLOCK_HZ = 1.5e9  # BCM2711 default; boards since 2020 may run at 1.8 GHz
PI4_THREADS = 3  # README: [model] threads = 3 on a Pi 4, one core left for acquisition
# ASSUMED: fraction of peak that ONNX Runtime's MLAS NEON convolution kernels reach on
# these layers (im2col + SGEMM). No published A72 figure for MLAS was found; on x86 ecgd's
# FP32 graph runs near the core's peak (PERFORMANCE.md), NEON GEMMs on in-order-ish A72
# memory systems reach less. A range, not a point.
MLAS_EFFICIENCY_RANGE = (0.5, 0.8)
# ASSUMED: speed-up of 3 threads over 1 (shared 1 MB L2, LPDDR4); x86 measured 1.44x for
# 2 threads over 1 on this network (README, "Inference alone": 20.8 -> 14.4 ms).
THREAD_SCALING_RANGE = (2.0, 2.6)
# ASSUMED: INT8 time / FP32 time on the A72. It has no dot-product instructions (ARMv8.0),
# so MLAS's INT8 GEMM widens to 16 bits (UMULL/UADALP), and the QDQ graph adds
# (de)quantization; ArmNN reports INT8 2x slower than FP32 on a Pi 4 (ARM-software/armnn
# issue 511) and Arm says INT8 gains need the dot product (armnn issue 382).
INT8_OVER_FP32_RANGE = (0.7, 1.3)
# ASSUMED: Pi 4 core time / Zen 4 core time for ecgd's numpy/scipy signal stages (scalar
# and memory-bound code: clock 1.5 vs ~3.7 GHz, 3-wide in-order-ish vs 6-wide core).
SIGNAL_SLOWDOWN_RANGE = (4.0, 8.0)
# MEASURED on the x86 development machine (README, "Signal stages"): QC, R-peaks, the
# ecgfounder preprocessing, per 12 x 5000 window, in ms.
X86_SIGNAL_STAGES_MS = {"qc": 1.7, "r_peaks": 1.2, "preprocess": 4.0}
WINDOW_STRIDE_S = 10.0  # etc/ecgd.toml [window] stride_s: one window per 10 s when live


def count_flops(onnx_path: Path) -> Tuple[float, Dict[str, float]]:
    """(Conv + Gemm FLOPs, FLOPs by op type) of one window (batch 1)."""
    model = onnx.load(str(onnx_path))
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    batch.ClearField("dim_param")
    batch.dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    for initializer in model.graph.initializer:
        shapes[initializer.name] = list(initializer.dims)
    by_op: Dict[str, float] = {}
    for node in model.graph.node:
        out = shapes.get(node.output[0], [])
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]  # [out, in / groups, kH, kW]
            flops = 2.0 * float(np.prod(out)) * float(np.prod(weight[1:]))
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            flops = 2.0 * float(np.prod(out)) * a[-1]
        elif out:
            flops = float(np.prod(out))  # one operation per output element
        else:
            continue
        by_op[node.op_type] = by_op.get(node.op_type, 0.0) + flops
    return by_op.get("Conv", 0.0) + by_op.get("Gemm", 0.0), by_op


def projection_rows(gemm_flops: float) -> List[Tuple[str, str, str]]:
    """(quantity, value, COUNTED/ASSUMED/MEASURED/PROJECTED) rows."""
    core_peak = A72_FP32_FLOP_PER_CYCLE * PI4_CLOCK_HZ
    fp32_ms = sorted(gemm_flops / (core_peak * eff * scale) * 1e3
                     for eff in MLAS_EFFICIENCY_RANGE for scale in THREAD_SCALING_RANGE)
    fp32_range = (fp32_ms[0], fp32_ms[-1])
    int8_range = (fp32_range[0] * INT8_OVER_FP32_RANGE[0], fp32_range[1] * INT8_OVER_FP32_RANGE[1])
    signal_x86_ms = sum(X86_SIGNAL_STAGES_MS.values())
    signal_range = (signal_x86_ms * SIGNAL_SLOWDOWN_RANGE[0],
                    signal_x86_ms * SIGNAL_SLOWDOWN_RANGE[1])
    window_fp32 = (fp32_range[0] + signal_range[0], fp32_range[1] + signal_range[1])
    window_int8 = (int8_range[0] + signal_range[0], int8_range[1] + signal_range[1])

    def span(values: Tuple[float, float], unit: str = "ms") -> str:
        return f"{values[0]:.0f}-{values[1]:.0f} {unit}"

    budget_ms = WINDOW_STRIDE_S * 1e3
    return [
        ("Conv + Gemm operations per 10-s window", f"{gemm_flops / 1e9:.2f} GFLOP", "COUNTED"),
        ("Cortex-A72 FP32 peak per core", f"{core_peak / 1e9:.0f} GFLOP/s "
         f"({A72_FP32_FLOP_PER_CYCLE:g} FLOP/cycle x {PI4_CLOCK_HZ / 1e9:g} GHz)", "ASSUMED"),
        ("MLAS efficiency; 3-thread scaling",
         f"{MLAS_EFFICIENCY_RANGE[0]:g}-{MLAS_EFFICIENCY_RANGE[1]:g}; "
         f"{THREAD_SCALING_RANGE[0]:g}-{THREAD_SCALING_RANGE[1]:g}x", "ASSUMED"),
        (f"FP32 inference, {PI4_THREADS} threads", span(fp32_range), "PROJECTED"),
        ("INT8 inference / FP32 inference", f"{INT8_OVER_FP32_RANGE[0]:g}-"
         f"{INT8_OVER_FP32_RANGE[1]:g}", "ASSUMED"),
        (f"INT8 inference, {PI4_THREADS} threads", span(int8_range), "PROJECTED"),
        ("QC + R-peaks + preprocessing on x86", f"{signal_x86_ms:.1f} ms", "MEASURED (x86)"),
        ("Pi 4 / Zen 4 slowdown for the signal stages",
         f"{SIGNAL_SLOWDOWN_RANGE[0]:g}-{SIGNAL_SLOWDOWN_RANGE[1]:g}x", "ASSUMED"),
        ("QC + R-peaks + preprocessing on a Pi 4", span(signal_range), "PROJECTED"),
        ("one window, FP32 (signal stages + inference)", span(window_fp32), "PROJECTED"),
        ("one window, INT8", span(window_int8), "PROJECTED"),
        ("live stream: share of the 10-s window period, FP32",
         f"{100 * window_fp32[0] / budget_ms:.1f}-{100 * window_fp32[1] / budget_ms:.1f} %",
         "PROJECTED"),
        ("backlog: windows per second, FP32",
         f"{1e3 / window_fp32[1]:.1f}-{1e3 / window_fp32[0]:.1f}", "PROJECTED"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="an FP32 model manifest (NAME.json)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    manifest = load_manifest(args.manifest)
    gemm_flops, by_op = count_flops(Path(manifest.onnx_path))
    others = ", ".join(f"{op} {flops / 1e6:.1f} M" for op, flops in sorted(by_op.items())
                       if op not in ("Conv", "Gemm"))
    print(f"{manifest.name}: Conv {by_op.get('Conv', 0) / 1e9:.3f} GFLOP, "
          f"Gemm {by_op.get('Gemm', 0) / 1e6:.1f} MFLOP; element-wise: {others}")
    rows = projection_rows(gemm_flops)
    if args.markdown:
        print("| quantity | value | kind |\n|---|---|---|")
        for row in rows:
            print(f"| {row[0]} | {row[1]} | {row[2]} |")
    else:
        for quantity, value, kind in rows:
            print(f"{kind:15s} {quantity}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
