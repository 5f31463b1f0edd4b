"""SerialSource on real pseudo-terminals fed by the simulator: windows, faults, reconnects."""
from __future__ import annotations

import os
import select
import threading
import time
import tty
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

from ecgd.commands import simulate
from ecgd.config import SerialConfig, WindowConfig
from ecgd.records.reader import read_recording
from ecgd.sources import wire
from ecgd.sources.serial_source import SerialSource
from ecgd.sources.windowing import WindowQueue

SPEED = 20.0


def wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    """Poll ``condition`` until true or ``timeout_s`` passed; returns its last value."""
    deadline = time.monotonic() + timeout_s
    tick = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        tick.wait(0.02)
    return True


@pytest.fixture(scope="module")
def recording(shared_data: Path):
    """A real 10-s 12-lead recording at 500 Hz."""
    return read_recording(shared_data / "cinc2021" / "E07502.hea", 10 ** 8)


def segments_between(cuts: List[Tuple[int, int]], end: int) -> List[Tuple[int, int]]:
    """Contiguous ``[start, end)`` runs of stream samples between the gaps that cut them."""
    segments, cursor = [], 0
    for start, stop in sorted(cuts):
        if start > cursor:
            segments.append((cursor, start))
        cursor = max(cursor, stop)
    if end > cursor:
        segments.append((cursor, end))
    return segments


def check_bridged_windows(windows, sig, result, max_bridge_n: int, tolerance: float) -> None:
    """Each window's bridged gaps are exactly the simulator's dropped runs inside it (none
    longer than ``max_bridge_n``), filled by a straight line; every other sample is the
    signal's own."""
    runs = result.dropped_runs()
    for w in windows:
        touching = [(a, b) for a, b in runs if b > w.sample_start and a < w.sample_end]
        assert all(b - a <= max_bridge_n for a, b in touching)
        inside = [(max(a, w.sample_start), min(b, w.sample_end)) for a, b in touching]
        assert list(w.bridged_gaps) == inside
        assert w.bridged_samples == sum(b - a for a, b in inside)
        expected = sig.samples_mv[:, w.sample_start:w.sample_end].copy()
        for (a, b), (run_start, run_end) in zip(inside, touching):
            before, after = sig.samples_mv[:, run_start - 1], sig.samples_mv[:, run_end]
            steps = (np.arange(a, b) - run_start + 1) / (run_end - run_start + 1)
            expected[:, a - w.sample_start:b - w.sample_start] = (
                before[:, None] + (after - before)[:, None] * steps)
        np.testing.assert_allclose(w.recording.samples_mv, expected, atol=tolerance)


def window_starts(segments, window_n, stride_n):
    """Where windows must start: every stride inside each segment, whole windows only."""
    return [s + k * stride_n for s, e in segments for k in range(max(0, (e - s - window_n)
                                                                   // stride_n + 1))]


class Harness:
    """A pty at a symlink, a SerialSource reading it, a queue collecting its windows."""

    def __init__(self, tmp_path: Path, fmt: str, window_s: float = 1.0, queue_windows: int = 100,
                 stall_s: float = 2.0, **options) -> None:
        self.link = tmp_path / "ttyECG"
        self.device = simulate.PtyDevice(self.link)
        self.config = SerialConfig(port=str(self.link), format=fmt, stall_s=stall_s,
                                   backoff_initial_s=0.05, backoff_max_s=0.2,
                                   queue_windows=queue_windows, **options)
        self.queue = WindowQueue(queue_windows)
        self.source = SerialSource(self.config, WindowConfig(window_s, window_s), self.queue,
                                   structlog.get_logger())
        self.source.start()
        assert wait_for(lambda: self.source.stats()["port_open"])

    def drain(self, expected: int) -> list:
        windows: list = []
        wait_for(lambda: self.source.stats()["windows"] >= expected)
        while True:
            window = self.queue.get(0.3)
            if window is None:
                return windows
            windows.append(window)

    def close(self) -> None:
        self.source.stop()
        assert not self.source.is_alive()


@pytest.mark.parametrize("fmt", ["ecgd-frame", "openbci-cyton", "text"])
def test_each_format_gives_expected_windows(tmp_path, recording, fmt):
    """A clean stream in each format yields back-to-back 1-s windows with the record's
    samples at the device rate, from the first sample on (text: its first line is skipped,
    as a receiver joining mid-line must)."""
    harness = Harness(tmp_path, fmt)
    with capture_logs() as logs:
        sig = simulate.prepare_signal(recording, fmt, 8 if fmt == "openbci-cyton" else 12)
        result = simulate.stream(harness.device, sig, fmt, speed=SPEED)
        skipped = 1 if fmt == "text" else 0
        n = result.samples_streamed - skipped
        fs = int(sig.fs_hz)
        expected = window_starts([(0, n)], fs, fs)
        windows = harness.drain(len(expected))
        harness.close()
    assert [w.sample_start for w in windows] == expected
    tolerance = {"ecgd-frame": 1e-6, "openbci-cyton": 1e-4, "text": 1e-4}[fmt]
    for w in windows:
        assert w.recording.fs_hz == sig.fs_hz and w.recording.lead_names == sig.lead_names
        np.testing.assert_allclose(
            w.recording.samples_mv,
            sig.samples_mv[:, w.sample_start + skipped:w.sample_end + skipped], atol=tolerance)
        assert w.segment == 0 and w.lost_samples == 0
    events = [e["event"] for e in logs if e["event"].startswith(("device_", "link_"))]
    assert events[0] == "device_connected" and "device_reconnected" not in events
    assert not [e for e in logs if e["event"].startswith("link_")]
    first_line = wire.encode_text_line(sig.samples_mv[:, 0].tolist())
    stats = harness.source.stats()
    assert stats["join_bytes"] == (len(first_line) if fmt == "text" else 0)
    assert stats["garbage_bytes"] == 0


@pytest.mark.parametrize("fmt,seed,max_bridge_ms", [("ecgd-frame", 1, 20.0),
                                                    ("openbci-cyton", 2, 12.0)])
def test_short_drops_bridged_long_ones_cut(tmp_path, recording, fmt, seed, max_bridge_ms):
    """Runs of dropped frames up to max_bridge_ms are filled by a straight line inside the
    window and counted; longer runs close the segment, and windows fall exactly inside the
    runs of samples between them; garbage between intact frames costs nothing."""
    harness = Harness(tmp_path, fmt, max_bridge_ms=max_bridge_ms)
    sig = simulate.prepare_signal(recording, fmt, 8)
    fs = int(sig.fs_hz)
    max_bridge_n = int(max_bridge_ms * fs / 1000)
    result = simulate.stream(harness.device, sig, fmt, speed=SPEED, drop_rate=0.2,
                             garbage_rate=0.01, seed=seed, frame_samples=5)
    runs = result.dropped_runs()
    assert result.garbage_bytes > 0 and all(start > 0 for start, _ in runs)
    cuts = [(a, b) for a, b in runs if b - a > max_bridge_n]
    assert cuts and len(cuts) < len(runs)
    expected = window_starts(segments_between(cuts, result.samples_streamed), fs, fs)
    windows = harness.drain(len(expected))
    stats = harness.source.stats()
    harness.close()
    assert expected and [w.sample_start for w in windows] == expected
    assert sum(w.bridged_samples > 0 for w in windows) > 0
    check_bridged_windows(windows, sig, result, max_bridge_n, tolerance=1e-4)
    # frames dropped at the very end are followed by nothing that could reveal them
    seen = [(a, b) for a, b in runs if b < result.samples_streamed]
    dropped_samples = sum(stop - start for start, stop in seen)
    per_frame = 5 if fmt == "ecgd-frame" else 1
    assert stats["garbage_bytes"] == result.garbage_bytes
    assert stats["dropped_frames"] == dropped_samples // per_frame
    assert stats["lost_samples"] == dropped_samples
    bridged_runs = [(a, b) for a, b in seen if b - a <= max_bridge_n]
    assert stats["bridged_gaps"] == len(bridged_runs)
    assert stats["bridged_samples"] == sum(b - a for a, b in bridged_runs)
    assert stats["segments_closed"] == len(cuts)
    assert sum(w.lost_samples for w in windows) <= dropped_samples


def test_reconnect_at_same_symlink_starts_new_segment(tmp_path, recording):
    """The device end hung up and a new pty at the same symlink is reopened: logged once
    each way, the next windows are a new segment after the old ones."""
    harness = Harness(tmp_path, "ecgd-frame")
    sig = simulate.prepare_signal(recording, "ecgd-frame", 12)
    with capture_logs() as logs:
        first = simulate.stream(harness.device, sig, "ecgd-frame", speed=SPEED,
                                disconnect_after_s=3.2)
        assert first.disconnected and first.samples_streamed == 1600
        assert wait_for(lambda: harness.source.stats()["state"] == "disconnected")
        second_device = simulate.PtyDevice(harness.link)
        assert wait_for(lambda: harness.source.stats()["port_open"])
        simulate.stream(second_device, sig, "ecgd-frame", speed=SPEED)
        windows = harness.drain(3 + 10)
        stats = harness.source.stats()
        harness.close()
    assert [(w.segment, w.sample_start) for w in windows] == \
        [(0, 0), (0, 500), (0, 1000)] + [(1, 1600 + 500 * k) for k in range(10)]
    events = [e["event"] for e in logs if e["event"].startswith(("device_", "stream_"))]
    assert events[:3] == ["device_connected", "device_disconnected", "device_reconnected"]
    assert stats["reconnects"] == 1


def test_stalled_stream_recovers(tmp_path, recording):
    """No samples for stall_s is logged as a stall; when samples come back they start a
    new segment and windows resume."""
    harness = Harness(tmp_path, "ecgd-frame", stall_s=0.5)
    sig = simulate.prepare_signal(recording, "ecgd-frame", 12)
    frames = list(simulate.encode_frames(sig, "ecgd-frame"))
    with capture_logs() as logs:
        harness.device.write(b"".join(data for _, _, data in frames[:120]))
        assert wait_for(lambda: harness.source.stats()["state"] == "stalled")
        assert wait_for(lambda: harness.source.stats()["port_open"])
        harness.device.write(b"".join(data for _, _, data in frames[120:]))
        windows = harness.drain(2 + 7)
        harness.close()
    assert [(w.segment, w.sample_start) for w in windows] == \
        [(0, 0), (0, 500)] + [(1, 1200 + 500 * k) for k in range(7)]
    events = [e["event"] for e in logs if e["event"].startswith(("device_", "stream_"))]
    assert events[:3] == ["device_connected", "stream_stalled", "device_reconnected"]


def test_slow_consumer_drops_whole_windows_counted(tmp_path, recording):
    """A consumer slower than the stream loses whole windows, counted on the next window
    it gets, while acquisition cuts every window and loses no sample."""
    harness = Harness(tmp_path, "ecgd-frame", window_s=0.2, queue_windows=2)
    sig = simulate.prepare_signal(recording, "ecgd-frame", 12)
    got: list = []
    done = threading.Event()

    def slow_model() -> None:
        while not done.is_set():
            window = harness.queue.get(0.1)
            if window is not None:
                got.append(window)
                done.wait(0.15)  # inference far slower than 0.2 s of signal / SPEED

    consumer = threading.Thread(target=slow_model)
    consumer.start()
    simulate.stream(harness.device, sig, "ecgd-frame", speed=SPEED)
    assert wait_for(lambda: harness.source.stats()["windows"] == 50)
    stats = harness.source.stats()
    harness.close()
    harness.queue.close()
    done.set()
    consumer.join(5)
    while True:
        window = harness.queue.get(0)
        if window is None:
            break
        got.append(window)
    starts = [w.sample_start for w in got]
    assert stats["lost_samples"] == 0 and stats["windows"] == 50
    assert stats["dropped_windows"] > 0
    assert len(got) + stats["dropped_windows"] == 50
    assert sum(w.dropped_windows for w in got) == stats["dropped_windows"]
    assert starts == sorted(starts) and all(s % 100 == 0 for s in starts)
    assert [s // 100 for s in starts] != list(range(len(got)))


def test_cyton_handshake_and_stop_command(tmp_path):
    """The source sends 'v', waits for '$$$', sends 'b', and sends 's' when stopped."""
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / "cyton"
    os.symlink(os.ttyname(slave), link)
    config = SerialConfig(port=str(link), format="openbci-cyton", stall_s=5.0)
    queue = WindowQueue(4)
    source = SerialSource(config, WindowConfig(0.2, 0.2), queue, structlog.get_logger())
    source.start()
    received = b""

    def read_master() -> bytes:
        nonlocal received
        if select.select([master], [], [], 0.05)[0]:
            received += os.read(master, 64)
        return received

    try:
        assert wait_for(lambda: b"v" in read_master())
        assert b"b" not in received
        os.write(master, simulate.CYTON_BANNER)
        assert wait_for(lambda: read_master().endswith(b"vb"))
        packets = b"".join(wire.encode_cyton_packet([k * 100] * 8, k) for k in range(60))
        os.write(master, packets)
        window = queue.get(10)
        assert window is not None and window.sample_start == 0
        assert window.recording.samples_mv.shape == (8, 50)
        source.stop()
        assert wait_for(lambda: read_master().endswith(b"vbs"))
        assert not source.is_alive()
    finally:
        source.stop()
        os.close(master)
        os.close(slave)


def test_missing_port_retries_without_raising(tmp_path):
    """A port that does not exist yet is logged once and retried until it appears."""
    link = tmp_path / "later"
    config = SerialConfig(port=str(link), format="ecgd-frame", backoff_initial_s=0.05,
                          backoff_max_s=0.1)
    source = SerialSource(config, WindowConfig(1.0, 1.0), WindowQueue(2), structlog.get_logger())
    with capture_logs() as logs:
        source.start()
        assert wait_for(lambda: source.stats()["state"] == "disconnected")
        threading.Event().wait(0.4)  # several retries
        device = simulate.PtyDevice(link)
        assert wait_for(lambda: source.stats()["port_open"])
        source.stop()
        device.close(drain_s=0)
    assert [e["event"] for e in logs] == ["device_disconnected"]
    assert not source.is_alive()


def test_lossy_link_keeps_nine_in_ten_windows(tmp_path, recording):
    """ecgd-frame at 500 Hz with 1 % of frames dropped and garbage before 1 % of frames (the
    README's simulator faults): at least 90 % of the fault-free stream's 10-s windows come
    out, none across a gap longer than max_bridge_ms."""
    sig = simulate.prepare_signal(recording, "ecgd-frame", 12)
    sig = simulate.Signal(np.tile(sig.samples_mv, 12), sig.fs_hz, sig.lead_names)
    clean_windows = sig.samples_mv.shape[1] // 5000
    harness = Harness(tmp_path, "ecgd-frame", window_s=10.0)
    result = simulate.stream(harness.device, sig, "ecgd-frame", speed=40, drop_rate=0.01,
                             garbage_rate=0.01, seed=3)
    assert result.frames_dropped > 0 and result.garbage_bytes > 0
    windows = harness.drain(int(0.9 * clean_windows))
    harness.close()
    assert len(windows) >= 0.9 * clean_windows
    assert all(w.sample_end - w.sample_start == 5000 for w in windows)
    assert sum(w.bridged_samples for w in windows) > 0
    check_bridged_windows(windows, sig, result, max_bridge_n=20, tolerance=1e-5)


def _frames(samples_mv: np.ndarray, fs_hz: int, first_sequence: int, per_frame: int = 10):
    """ecgd-frames of ``samples_mv`` (1000 nV per count) with consecutive sequence numbers."""
    counts = np.round(samples_mv * 1000).astype(np.int32)
    return [wire.encode_ecgd_frame(counts[:, s:s + per_frame], first_sequence + k, fs_hz, 1000)
            for k, s in enumerate(range(0, counts.shape[1] - per_frame + 1, per_frame))]


def _link_events(logs, name: str) -> list:
    return [e for e in logs if e["event"] == name]


def test_garbage_flood_counted_logged_once_and_never_spanned(tmp_path, recording):
    """A device that floods 64 kB of random bytes mid-stream (frames lost meanwhile): the
    garbage is counted, the loss closes the segment (too long to bridge), windows resume
    after it, and the journal gets one link_degraded for the whole flood."""
    harness = Harness(tmp_path, "ecgd-frame")
    frames = _frames(recording.samples_mv, 500, 0)
    flood = np.random.default_rng(7).bytes(64 * 1024)
    with capture_logs() as logs:
        harness.device.write(b"".join(frames[:150]))
        for start in range(0, len(flood), 4096):
            harness.device.write(flood[start:start + 4096])
        harness.device.write(b"".join(frames[300:]))
        windows = harness.drain(3 + 4)
        stats = harness.source.stats()
        harness.close()
    assert [(w.segment, w.sample_start) for w in windows] == \
        [(0, 0), (0, 500), (0, 1000)] + [(1, 3000 + 500 * k) for k in range(4)]
    assert stats["garbage_bytes"] >= len(flood) - 64 and stats["lost_samples"] == 1500
    assert stats["segments_closed"] == 1 and stats["bridged_gaps"] == 0
    assert len(_link_events(logs, "link_degraded")) == 1


def test_format_changes_close_segments_and_flapping_logs_once(tmp_path, recording):
    """Frames that switch from 12 leads at 500 Hz to 8 leads, then to 250 Hz, each start a
    new segment with the new layout (no window mixes two), and a device flapping between
    rates on every frame is counted, logged once, and never crashes the source."""
    harness = Harness(tmp_path, "ecgd-frame")
    mv = recording.samples_mv
    eight = mv[[0, 1, 6, 7, 8, 9, 10, 11]]
    frames = (_frames(mv[:, :1200], 500, 0) + _frames(eight[:, :1200], 500, 120)
              + _frames(mv[:, :600], 250, 240))
    flapping = [_frames(mv[:, 10 * k:10 * k + 10], 250 if k % 2 else 500, 300 + k)[0]
                for k in range(100)]
    with capture_logs() as logs:
        harness.device.write(b"".join(frames + flapping))
        windows = harness.drain(2 + 2 + 2)
        stats = harness.source.stats()
        alive = harness.source.is_alive()
        harness.close()
    layouts = [(w.segment, w.recording.fs_hz, len(w.recording.lead_names), w.sample_start)
               for w in windows]
    assert layouts == [(0, 500.0, 12, 0), (0, 500.0, 12, 500), (1, 500.0, 8, 1200),
                       (1, 500.0, 8, 1700), (2, 250.0, 12, 2400), (2, 250.0, 12, 2650)]
    assert stats["format_changes"] == 2 + 100 and stats["lost_samples"] == 0
    assert len(_link_events(logs, "link_degraded")) == 1
    assert alive and stats["state"] == "connected"


def test_text_device_with_wrong_lead_count(tmp_path, recording):
    """A text device configured for 12 leads that sends 8 values a line: every line is
    counted as malformed and logged once, no window comes out of it; 12-value lines then
    give windows again."""
    harness = Harness(tmp_path, "text")
    eight = recording.samples_mv[[0, 1, 6, 7, 8, 9, 10, 11]]
    wrong = b"".join(wire.encode_text_line(eight[:, k].tolist()) for k in range(600))
    right = b"".join(wire.encode_text_line(recording.samples_mv[:, k].tolist())
                     for k in range(1100))
    with capture_logs() as logs:
        harness.device.write(wrong + right)
        windows = harness.drain(2)
        stats = harness.source.stats()
        harness.close()
    assert stats["malformed_lines"] == 599 and stats["join_bytes"] > 0
    assert [len(w.recording.lead_names) for w in windows] == [12, 12]
    assert all(w.bridged_gaps == () for w in windows)
    assert len(_link_events(logs, "link_degraded")) == 1


def test_device_stopping_mid_frame(tmp_path, recording):
    """Half a frame and then silence: a stall, logged once; when the device resumes with the
    rest of that frame and later frames, the torn frame is skipped and windows start in a
    new segment after it, never across the silence."""
    harness = Harness(tmp_path, "ecgd-frame", stall_s=0.5)
    frames = _frames(recording.samples_mv, 500, 0)
    torn = frames[120]
    with capture_logs() as logs:
        harness.device.write(b"".join(frames[:120]) + torn[:len(torn) // 2])
        assert wait_for(lambda: harness.source.stats()["state"] == "stalled")
        assert wait_for(lambda: harness.source.stats()["port_open"])
        harness.device.write(torn[len(torn) // 2:] + b"".join(frames[121:]))
        windows = harness.drain(2 + 7)
        harness.close()
    assert [(w.segment, w.sample_start) for w in windows] == \
        [(0, 0), (0, 500)] + [(1, 1200 + 500 * k) for k in range(7)]
    events = [e["event"] for e in logs if e["event"].startswith(("device_", "stream_"))]
    assert events == ["device_connected", "stream_stalled", "device_reconnected"]
