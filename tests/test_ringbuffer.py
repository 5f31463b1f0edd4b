"""RingBuffer: absolute indexing, wrap-around, overwrite-oldest, no growth."""
from __future__ import annotations

import numpy as np
import pytest

from ecgd.sources.ringbuffer import RingBuffer


def _ramp(start, n, leads=3):
    return np.tile(np.arange(start, start + n, dtype=np.float32), (leads, 1)) \
        + np.arange(leads, dtype=np.float32)[:, None] * 1000


def test_read_across_wrap():
    """Samples pushed across the wrap point read back in order by absolute index."""
    ring = RingBuffer(3, 10)
    for start in range(0, 23, 7):
        ring.push(_ramp(start, 7))
    assert ring.end == 28 and ring.start == 18
    np.testing.assert_array_equal(ring.read(19, 27), _ramp(19, 8))


def test_overwritten_range_refused():
    """A range that was overwritten or not yet written is refused, not returned stale."""
    ring = RingBuffer(3, 10)
    ring.push(_ramp(0, 15))
    with pytest.raises(ValueError):
        ring.read(4, 8)
    with pytest.raises(ValueError):
        ring.read(10, 16)


def test_block_larger_than_capacity_keeps_newest():
    """A block larger than the buffer keeps its newest samples at the right indices."""
    ring = RingBuffer(3, 10)
    ring.push(_ramp(0, 4))
    ring.push(_ramp(4, 25))
    assert ring.end == 29
    np.testing.assert_array_equal(ring.read(19, 29), _ramp(19, 10))


def test_push_writes_in_place():
    """Pushes reuse the one preallocated array and read returns copies."""
    ring = RingBuffer(2, 8)
    storage = ring._data
    for start in range(0, 40, 5):
        ring.push(_ramp(start, 5, leads=2))
    assert ring._data is storage
    window = ring.read(35, 40)
    window[:] = -1
    np.testing.assert_array_equal(ring.read(35, 40), _ramp(35, 5, leads=2))


def test_wrong_shape_refused():
    """A block with the wrong number of leads is refused."""
    with pytest.raises(ValueError):
        RingBuffer(3, 10).push(np.zeros((2, 4), dtype=np.float32))
