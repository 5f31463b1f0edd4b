"""Windower (segments, gaps, stride, times, lead-off) and WindowQueue (drop-oldest policy)."""
from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pytest

from ecgd.records.reader import read_recording
from ecgd.sources.wire import Gap, SampleBlock
from ecgd.sources.windowing import Windower, WindowQueue

NAMES = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


@pytest.fixture(scope="module")
def record(shared_data: Path):
    """A real 10-s 12-lead record, 8 leads kept (mV, 500 Hz)."""
    rec = read_recording(shared_data / "cinc2021" / "E07501.hea", 10 ** 8)
    return rec.samples_mv[[0, 1, 6, 7, 8, 9, 10, 11]]


def _feed_in_blocks(windower, samples, block_n, t0=1_700_000_000.0, fs=500.0, lead_off=None,
                    index0=0):
    out = []
    for s in range(0, samples.shape[1], block_n):
        block = samples[:, s:s + block_n]
        arrival = t0 + (index0 + s + block.shape[1] - 1) / fs
        out += windower.feed(SampleBlock(block, fs, NAMES, lead_off), arrival)
    return out


def test_windows_back_to_back_and_overlapping(record):
    """10 s cut into 2-s windows gives 5 back to back or 9 at 1-s stride, samples exact."""
    for stride_s, starts in ((2.0, [0, 1000, 2000, 3000, 4000]),
                             (1.0, [k * 500 for k in range(9)])):
        windower = Windower(500.0, NAMES, 2.0, stride_s, device="/dev/x",
                            wire_format="ecgd-frame")
        windows = _feed_in_blocks(windower, record, 37)
        assert [w.sample_start for w in windows] == starts
        for w in windows:
            np.testing.assert_array_equal(w.recording.samples_mv,
                                          record[:, w.sample_start:w.sample_end])
            assert w.recording.format == "serial:ecgd-frame" and w.device == "/dev/x"


def test_window_start_time_is_arrival_of_first_sample(record):
    """start_time is the UTC arrival time of the window's first sample."""
    windower = Windower(500.0, NAMES, 2.0, 2.0)
    windows = _feed_in_blocks(windower, record, 50, t0=1_700_000_000.0)
    expected = dt.datetime.fromtimestamp(1_700_000_000.0 + 1000 / 500.0, dt.timezone.utc)
    assert windows[1].recording.start_time == expected
    assert windows[1].recording.start_time.tzinfo == dt.timezone.utc


def test_gap_closes_segment_and_counts_lost(record):
    """A gap of 30 lost samples ends the segment; the next window starts after it, in
    stream indices that count the lost samples, and carries the loss."""
    windower = Windower(500.0, NAMES, 2.0, 2.0)
    first = _feed_in_blocks(windower, record[:, :2500], 100)
    assert windower.feed(Gap("lost", 30)) == []
    second = _feed_in_blocks(windower, record[:, 2530:], 100, index0=2530)
    assert [w.sample_start for w in first] == [0, 1000]
    assert [w.sample_start for w in second] == [2530, 3530]
    assert [w.segment for w in first + second] == [0, 0, 1, 1]
    assert [w.lost_samples for w in first + second] == [0, 0, 30, 0]
    np.testing.assert_array_equal(second[0].recording.samples_mv, record[:, 2530:3530])


def test_new_segment_discards_partial_window(record):
    """new_segment() (a reconnect) drops the partial window: none spans the reconnect."""
    windower = Windower(500.0, NAMES, 2.0, 2.0)
    first = _feed_in_blocks(windower, record[:, :1500], 100)
    windower.new_segment()
    windows = _feed_in_blocks(windower, record[:, 1500:3400], 100)
    assert [w.sample_start for w in first] == [0]
    assert [w.sample_start for w in windows] == [1500]


def test_lead_off_or_over_window(record):
    """A lead-off flag seen in any block of a window is set on the window, only there."""
    windower = Windower(500.0, NAMES, 1.0, 1.0)
    off = (False, True) + (False,) * 6
    on = (False,) * 8
    windows = _feed_in_blocks(windower, record[:, :500], 100, lead_off=on)
    windows += windower.feed(SampleBlock(record[:, 500:600], 500.0, NAMES, off), 1e9)
    windows += _feed_in_blocks(windower, record[:, 600:1500], 100, lead_off=on)
    assert [w.lead_off for w in windows] == [on, off, on]


def test_huge_block_still_cut_completely(record):
    """One block far longer than the ring buffer still yields every window."""
    windower = Windower(500.0, NAMES, 1.0, 0.5)
    windows = windower.feed(SampleBlock(record, 500.0, NAMES, None), 1e9)
    assert [w.sample_start for w in windows] == [k * 250 for k in range(19)]
    np.testing.assert_array_equal(windows[-1].recording.samples_mv, record[:, 4500:5000])


def test_format_change_starts_new_segment(record):
    """A block at another rate closes the segment and the windower follows the device."""
    windower = Windower(500.0, NAMES, 1.0, 1.0)
    _feed_in_blocks(windower, record[:, :700], 100)
    windows = windower.feed(SampleBlock(record[:, :300], 250.0, NAMES, None), 1e9)
    assert len(windows) == 1 and windows[0].recording.fs_hz == 250.0
    assert windows[0].sample_start == 700 and windows[0].segment == 1


def test_queue_drops_oldest_and_carries_count(record):
    """A full queue drops the oldest windows; the next window got carries the count."""
    windower = Windower(500.0, NAMES, 1.0, 1.0)
    windows = windower.feed(SampleBlock(record, 500.0, NAMES, None), 1e9)
    queue = WindowQueue(3)
    for w in windows[:7]:
        queue.put(w)
    got = [queue.get(0) for _ in range(3)]
    assert [w.sample_start for w in got] == [2000, 2500, 3000]
    assert [w.dropped_windows for w in got] == [4, 0, 0]
    assert queue.dropped_total == 4 and queue.get(0) is None


def test_queue_close_wakes_blocked_get(record):
    """close() wakes a consumer blocked in get(); remaining windows still drain."""
    windower = Windower(500.0, NAMES, 1.0, 1.0)
    windows = windower.feed(SampleBlock(record[:, :500], 500.0, NAMES, None), 1e9)
    queue = WindowQueue(2)
    results = []
    consumer = threading.Thread(target=lambda: results.append(queue.get(None)))
    consumer.start()
    queue.close()
    consumer.join(5)
    assert not consumer.is_alive() and results == [None]
    queue2 = WindowQueue(2)
    queue2.put(windows[0])
    queue2.close()
    assert queue2.get(None) is windows[0] and queue2.get(None) is None
