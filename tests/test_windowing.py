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


def _line(before, after, n):
    """What a bridged gap of ``n`` samples holds: the straight line between its neighbours."""
    steps = np.arange(1, n + 1) / (n + 1)
    return before[:, None] + (after - before)[:, None] * steps


def test_short_counted_gap_bridged_by_a_line(record):
    """A counted gap of at most max_bridge_ms is filled by a straight line per lead; the
    window keeps its stream position, says where it was bridged and counts the loss."""
    windower = Windower(500.0, NAMES, 2.0, 2.0, max_bridge_ms=40.0)
    windows = _feed_in_blocks(windower, record[:, :700], 100)
    assert windower.feed(Gap("lost", 20, counted=True)) == []
    windows += _feed_in_blocks(windower, record[:, 720:2500], 100, index0=720)
    assert [w.sample_start for w in windows] == [0, 1000] and windower.segment == 0
    first, second = windows
    assert first.bridged_gaps == ((700, 720),) and first.bridged_samples == 20
    assert first.lost_samples == 20 and second.bridged_gaps == ()
    np.testing.assert_allclose(first.recording.samples_mv[:, 700:720],
                               _line(record[:, 699], record[:, 720], 20), atol=1e-6)
    np.testing.assert_array_equal(first.recording.samples_mv[:, 720:], record[:, 720:1000])
    assert windower.bridged_gaps == 1 and windower.bridged_samples == 20


def test_long_or_uncounted_gap_closes_segment(record):
    """A counted gap one sample over max_bridge_ms, or a small gap of unknown size (text
    line, device restart), closes the segment as before; nothing is bridged."""
    for gap in (Gap("lost", 21, counted=True), Gap("malformed", 1), Gap("resync", 0)):
        windower = Windower(500.0, NAMES, 1.0, 1.0, max_bridge_ms=40.0)
        _feed_in_blocks(windower, record[:, :700], 100)
        windower.feed(gap)
        after = 700 + gap.lost_samples
        windows = _feed_in_blocks(windower, record[:, after:after + 600], 100, index0=after)
        assert [(w.segment, w.sample_start) for w in windows] == [(1, after)]
        assert windows[0].bridged_gaps == () and windower.bridged_gaps == 0
        assert windower.segments_closed == {"gap": 1, "layout_change": 0, "reconnect": 0}


def test_gaps_in_a_row_bridged_only_up_to_the_limit_together(record):
    """Two counted gaps before the next block add up: 20 + 20 samples bridge at 80 ms,
    but not at 40 ms."""
    for max_bridge_ms, segments in ((80.0, [0]), (40.0, [1])):
        windower = Windower(500.0, NAMES, 1.0, 1.0, max_bridge_ms=max_bridge_ms)
        windows = _feed_in_blocks(windower, record[:, :300], 100)
        windower.feed(Gap("lost", 20, counted=True))
        windower.feed(Gap("resync", 20, counted=True))
        windows += _feed_in_blocks(windower, record[:, 340:900], 20, index0=340)
        assert [w.segment for w in windows] == segments


def test_wrapping_counter_gap_bridged_only_when_clock_rules_out_a_wrap(record):
    """A Cyton-style gap (8-bit counter, 256 samples per wrap) is bridged when it arrives
    soon after the last samples, and cut when enough time passed to hide a whole wrap."""
    for delay_s, segments in ((0.05, [0, 0]), (0.6, [1])):
        windower = Windower(250.0, NAMES, 1.0, 1.0, max_bridge_ms=40.0)
        last = 1_700_000_000.0
        windower.feed(SampleBlock(record[:, :100], 250.0, NAMES), last)
        windower.feed(Gap("lost", 3, counted=True, counter_period_samples=256), last + delay_s)
        windows = windower.feed(SampleBlock(record[:, 103:500], 250.0, NAMES), last + delay_s)
        assert [w.segment for w in windows] == segments


def test_rails_reach_the_window_and_a_scale_change_closes_the_segment(record):
    """The block's declared digital range becomes the window's rails_mv; a new scale (the
    device changed its gain) closes the segment, and a bridge never spans it."""
    rails = np.tile([[-2147.483648, 2147.483647]], (8, 1))
    windower = Windower(500.0, NAMES, 1.0, 1.0, max_bridge_ms=40.0)
    windows = windower.feed(SampleBlock(record[:, :700], 500.0, NAMES, None, rails), 1e9)
    windower.feed(Gap("lost", 10, counted=True))
    windows += windower.feed(SampleBlock(record[:, 710:1300], 500.0, NAMES, None, rails / 2),
                             1e9)
    assert [(w.segment, w.sample_start) for w in windows] == [(0, 0), (1, 710)]
    np.testing.assert_array_equal(windows[0].recording.rails_mv, rails)
    np.testing.assert_array_equal(windows[1].recording.rails_mv, rails / 2)
    assert windows[1].bridged_gaps == () and windower.format_changes == 1


def test_bridged_gap_split_between_overlapping_windows(record):
    """With overlapping windows a bridged gap on a window edge is reported, clipped, by
    each window holding part of it."""
    windower = Windower(500.0, NAMES, 1.0, 0.5, max_bridge_ms=40.0)
    windows = _feed_in_blocks(windower, record[:, :490], 10)
    windower.feed(Gap("lost", 20, counted=True))
    windows += _feed_in_blocks(windower, record[:, 510:1500], 10, index0=510)
    by_start = {w.sample_start: w.bridged_gaps for w in windows}
    assert by_start[0] == ((490, 500),) and by_start[250] == ((490, 510),)
    assert by_start[500] == ((500, 510),) and by_start[750] == ()


def test_reconnect_drops_a_pending_bridge(record):
    """A gap waiting to be bridged when the device reconnects is not bridged: the new
    segment starts at the next sample."""
    windower = Windower(500.0, NAMES, 1.0, 1.0, max_bridge_ms=40.0)
    _feed_in_blocks(windower, record[:, :700], 100)
    windower.feed(Gap("lost", 10, counted=True))
    windower.new_segment()
    windows = _feed_in_blocks(windower, record[:, 710:1300], 100, index0=710)
    assert [(w.segment, w.sample_start, w.bridged_gaps) for w in windows] == [(1, 710, ())]
    assert windower.bridged_gaps == 0 and windower.segments_closed["reconnect"] == 1
