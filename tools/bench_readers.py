"""Benchmark reading one recording of each supported format, against the .npz read.

What a spool drop costs before any signal processing: ``read_recording`` (size checks,
format detection, the format's reader, validation) on one real file per format from
../shared/data. The baseline is the .npz format the appliance benchmark drops (the same
12 x 5000 CinC window saved as .npz), read in the same run; the ratio says how much more
each vendor format costs. Reads alternate format by format, best of ``--repeats`` rounds of
10 reads, because these machines are noisy and shared. Usage:
    PYTHONPATH=. python tools/bench_readers.py [--repeats 5] [--data DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from ecgd.records.reader import read_recording

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MAX_BYTES = 1 << 28
READS_PER_ROUND = 10
# One real file per format; all hold 10 s of 12 leads except where noted.
FILES = {
    "WFDB (CinC 2021)": "cinc2021/E07500.hea",
    "DICOM (1000 Hz)": "dicom/waveform_ecg.dcm",
    "HL7 aECG": "hl7-aecg/Example aECG.xml",
    "GE MUSE (8 leads)": "ge-muse-xml/BRAVEHEART/example1.xml",
    "GE CardioSoft": "ge-cardiosoft-xml/example-XML1.xml",
    "Philips 1.03": "philips-xml/129DYPRG.XML",
    "Philips 1.04": "philips-xml/3191723_ZZDEMOPTONLY_1-04_orig.xml",
    "EDF (800 Hz, 47 s)": "edf/0000050.ECG.edf",
}


def _best_ms(path: Path) -> float:
    start = time.perf_counter()
    for _ in range(READS_PER_ROUND):
        read_recording(path, MAX_BYTES)
    return (time.perf_counter() - start) / READS_PER_ROUND * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ecgd-bench-readers-") as tmp:
        wfdb_recording = read_recording(args.data / FILES["WFDB (CinC 2021)"], MAX_BYTES)
        npz = Path(tmp) / "E07500.npz"
        np.savez(npz, signal=wfdb_recording.samples_mv, fs_hz=wfdb_recording.fs_hz,
                 lead_names=np.array(wfdb_recording.lead_names), units="mV")
        paths = {"baseline: .npz (same window)": npz}
        paths.update({name: args.data / relative for name, relative in FILES.items()})
        shapes = {name: read_recording(path, MAX_BYTES).samples_mv.shape
                  for name, path in paths.items()}  # also warms every reader up
        rounds: Dict[str, List[float]] = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, path in paths.items():
                rounds[name].append(_best_ms(path))
    best = {name: min(values) for name, values in rounds.items()}
    base = best["baseline: .npz (same window)"]
    print(f"read_recording, ms per file, best of {args.repeats} rounds of {READS_PER_ROUND}")
    print(f"{'format':30s} {'shape':>12s} {'ms':>7s} {'x .npz':>7s}")
    for name, ms in best.items():
        shape = "x".join(str(n) for n in shapes[name])
        print(f"{name:30s} {shape:>12s} {ms:7.2f} {ms / base:7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
