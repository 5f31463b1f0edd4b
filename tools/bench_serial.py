"""Benchmark live acquisition: CPU cost and window latency (run by hand, not in tests).

1. CPU: process CPU time to decode and window N seconds of 12 leads at 500 Hz, fed one
   wire unit per read as a device delivers it, as % of one core per second of signal;
   printed beside a baseline measured in the same run (copying the same bytes into a
   buffer) as a ratio.
2. Latency: a real pseudo-terminal at real-time pace into a running SerialSource; the time
   from writing the frame that holds a window's last sample to ``WindowQueue.get`` returning
   that window (median and max).

    python tools/bench_serial.py [--record ../shared/data/cinc2021/E07500.hea] [--seconds 300]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import structlog

from ecgd.commands import simulate
from ecgd.config import SerialConfig, WindowConfig
from ecgd.logs import configure_logging
from ecgd.records.reader import read_recording
from ecgd.sources.serial_source import SerialSource
from ecgd.sources.wire import make_decoder
from ecgd.sources.windowing import Windower, WindowQueue

DEFAULT_RECORD = Path(__file__).resolve().parents[2] / "shared/data/cinc2021/E07500.hea"


def measure_cpu(sig: simulate.Signal, fmt: str, seconds: float) -> None:
    units = []
    for start, n, data in simulate.encode_frames(sig, fmt, loop=True):
        if start >= seconds * sig.fs_hz:
            break
        units.append(data)
    t0 = time.process_time()
    sink = bytearray()
    for data in units:
        sink += data
        if len(sink) > 1 << 20:
            sink.clear()
    baseline_s = time.process_time() - t0
    decoder = make_decoder(fmt, sig.lead_names, fs_hz=sig.fs_hz)
    windower = Windower(sig.fs_hz, sig.lead_names, 10.0, 10.0, wire_format=fmt)
    windows = 0
    t0 = time.process_time()
    for data in units:
        for event in decoder.feed(data):
            windows += len(windower.feed(event, 0.0))
    cost_s = time.process_time() - t0
    print(f"{fmt:14s} {len(sig.lead_names)} leads @ {sig.fs_hz:g} Hz: "
          f"{100 * cost_s / seconds:.3f}% of one core ({windows} windows from {seconds:g} s); "
          f"{cost_s / max(baseline_s, 1e-9):.0f}x the byte-copy baseline "
          f"({100 * baseline_s / seconds:.4f}%)")


def measure_latency(sig: simulate.Signal, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        device = simulate.PtyDevice(Path(tmp) / "tty")
        queue = WindowQueue(8)
        source = SerialSource(SerialConfig(port=str(device.link), format="ecgd-frame"),
                              WindowConfig(1.0, 1.0), queue, structlog.get_logger())
        source.start()
        while not source.stats()["port_open"]:
            time.sleep(0.01)
        written: dict = {}
        latencies: list = []

        def consume() -> None:
            while True:
                window = queue.get(None)
                if window is None:
                    return
                latencies.append(time.monotonic() - written[window.sample_end])

        consumer = threading.Thread(target=consume)
        consumer.start()
        t0 = time.monotonic()
        for start, n, data in simulate.encode_frames(sig, "ecgd-frame", loop=True):
            if start >= seconds * sig.fs_hz:
                break
            delay = t0 + (start + n) / sig.fs_hz - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            written[start + n] = time.monotonic()
            device.write(data)
        time.sleep(0.5)
        source.stop()
        queue.close()
        consumer.join()
        device.close(drain_s=0)
    print(f"latency last sample written -> window got: median "
          f"{1000 * statistics.median(latencies):.2f} ms, max {1000 * max(latencies):.2f} ms "
          f"over {len(latencies)} windows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, default=DEFAULT_RECORD)
    parser.add_argument("--seconds", type=float, default=300.0, help="signal for the CPU part")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    args = parser.parse_args()
    configure_logging("console", "warning")
    recording = read_recording(args.record, 1 << 30)
    for fmt, n_leads in (("ecgd-frame", 12), ("text", 12), ("openbci-cyton", 8)):
        measure_cpu(simulate.prepare_signal(recording, fmt, n_leads), fmt, args.seconds)
    measure_latency(simulate.prepare_signal(recording, "ecgd-frame", 12), args.latency_seconds)


if __name__ == "__main__":
    main()
