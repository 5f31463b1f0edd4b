"""Wire decoders against the documented bytes: round trips, garbage, losses, splits."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from ecgd.records.reader import read_recording
from ecgd.records.recording import STANDARD_LEADS
from ecgd.sources import wire
from ecgd.sources.wire import Gap, SampleBlock


@pytest.fixture(scope="module")
def record_mv(shared_data: Path) -> np.ndarray:
    """First 200 samples of a real 12-lead record (mV, 500 Hz)."""
    rec = read_recording(shared_data / "cinc2021" / "E07500.hea", 10 ** 8)
    return rec.samples_mv[:, :200]


def _blocks(events):
    return [e for e in events if isinstance(e, SampleBlock)]


def _gaps(events):
    return [e for e in events if isinstance(e, Gap)]


def _frames(record_mv, n_per_frame=10, first_seq=0, lead_off_bits=0):
    counts = np.round(record_mv * 1000).astype(np.int32)  # 1000 nV per LSB
    return [wire.encode_ecgd_frame(counts[:, s:s + n_per_frame], first_seq + k, 500, 1000,
                                   lead_off_bits)
            for k, s in enumerate(range(0, counts.shape[1], n_per_frame))]


def test_frame_layout_matches_wire_doc():
    """An encoded ecgd-frame has the documented header fields, payload order and CRC."""
    counts = np.arange(24, dtype=np.int32).reshape(12, 2)
    frame = wire.encode_ecgd_frame(counts, 7, 500, 2500, lead_off_bits=0b101)
    assert frame[:2] == b"\xec\xd1" and frame[2] == 1 and frame[3] == 12
    assert struct.unpack_from("<IHHIHH", frame, 4) == (7, 2, 500, 2500, 0b101, 0)
    assert struct.unpack_from("<3i", frame, 20) == (0, 2, 4)  # sample 0 of leads I, II, III
    assert struct.unpack("<I", frame[-4:])[0] == zlib.crc32(frame[:-4])
    assert len(frame) == 20 + 2 * 12 * 4 + 4


def test_frame_round_trip_byte_by_byte(record_mv):
    """Frames fed one byte at a time decode to the same millivolts, with lead-off flags."""
    decoder = wire.FrameDecoder()
    events = []
    for byte in b"".join(_frames(record_mv, lead_off_bits=0b10)):
        events += decoder.feed(bytes([byte]))
    samples = np.concatenate([b.samples for b in _blocks(events)], axis=1)
    np.testing.assert_allclose(samples, record_mv, atol=6e-4)
    assert _gaps(events) == []
    assert _blocks(events)[0].lead_names == STANDARD_LEADS
    assert _blocks(events)[0].lead_off == (False, True) + (False,) * 10
    assert decoder.garbage_bytes == 0
    np.testing.assert_allclose(_blocks(events)[0].rails_mv,
                               np.tile([[-2 ** 31 * 1e-3, (2 ** 31 - 1) * 1e-3]], (12, 1)))


def test_frame_sequence_jump_counts_lost_samples(record_mv):
    """Two missing frames of 10 samples give one counted Gap of 20 lost samples before the
    next (bridgeable: the sequence number says exactly what is missing)."""
    frames = _frames(record_mv)
    decoder = wire.FrameDecoder()
    events = decoder.feed(b"".join(frames[:3] + frames[5:]))
    assert _gaps(events) == [Gap("lost", 20, counted=True)]
    assert decoder.dropped_frames == 2 and decoder.lost_samples == 20
    assert sum(b.samples.shape[1] for b in _blocks(events)) == 200 - 20


def test_frame_garbage_and_bad_crc_resync(record_mv):
    """Garbage and a corrupted frame are skipped and counted; decoding resumes after them.
    Garbage between frames whose sequence follows on is no gap; the corrupted frame is a
    counted gap of its 10 samples."""
    frames = _frames(record_mv)
    corrupt = bytearray(frames[4])
    corrupt[30] ^= 0xFF
    stream = b"".join(frames[:2]) + b"\xec\xd1junk\x00" + b"".join(frames[2:4]) + bytes(corrupt) \
        + b"".join(frames[5:])
    decoder = wire.FrameDecoder()
    events = decoder.feed(stream)
    assert _gaps(events) == [Gap("resync", 10, counted=True)]
    assert decoder.garbage_bytes == 7 + len(corrupt)
    assert sum(b.samples.shape[1] for b in _blocks(events)) == 190


def test_frame_impossible_header_and_wrap(record_mv):
    """A 32-bit sequence wrap is not a loss; a header with a bad version is garbage (before
    the first good frame: bytes skipped joining the stream)."""
    frames = _frames(record_mv[:, :30], first_seq=2 ** 32 - 2)
    bad = bytearray(frames[0])
    bad[2] = 9
    decoder = wire.FrameDecoder()
    events = decoder.feed(bytes(bad[:24]) + frames[0] + bytes(bad[:24]) + frames[1] + frames[2])
    assert _gaps(events) == []
    assert decoder.join_bytes == 24 and decoder.garbage_bytes == 24


def test_cyton_round_trip_and_counter(record_mv):
    """Cyton packets decode to mV at 250 Hz; the 8-bit counter wraps without a loss and a
    jump counts lost packets."""
    vpc_mv = wire.cyton_volts_per_count(24) * 1000
    counts = np.round(record_mv[:8, :40] / vpc_mv).astype(np.int64)
    packets = [wire.encode_cyton_packet(counts[:, k].tolist(), 250 + k) for k in range(40)]
    assert len(packets[0]) == 33 and packets[0][0] == 0xA0 and packets[0][-1] == 0xC0
    decoder = wire.CytonDecoder()
    events = decoder.feed(b"".join(packets[:20]))
    events += decoder.feed(b"\x01\xa0\x02" + b"".join(packets[20:25] + packets[28:]))
    blocks = _blocks(events)
    assert blocks[0].fs_hz == 250.0 and blocks[0].lead_names == wire.EIGHT_LEADS
    got = np.concatenate([b.samples for b in blocks], axis=1)
    expected = np.concatenate([record_mv[:8, :25], record_mv[:8, 28:40]], axis=1)
    np.testing.assert_allclose(got, expected, atol=vpc_mv)
    # Reported although nothing seems lost after the garbage: the 8-bit counter may have
    # wrapped under it, which only the windower's clock can rule out.
    assert _gaps(events) == [Gap("resync", 0, True, 256), Gap("lost", 3, True, 256)]
    rails = blocks[0].rails_mv
    assert rails.shape == (8, 2)
    np.testing.assert_allclose(rails[0], [-2 ** 23 * vpc_mv, (2 ** 23 - 1) * vpc_mv])
    assert decoder.garbage_bytes == 3 and decoder.dropped_frames == 3


def test_cyton_wrong_stop_byte_dropped():
    """A packet whose stop byte is not 0xC0-0xC6 is dropped as garbage."""
    good = wire.encode_cyton_packet([1000] * 8, 0)
    bad = wire.encode_cyton_packet([1000] * 8, 1, stop=0xB0)
    decoder = wire.CytonDecoder()
    events = decoder.feed(good + bad + wire.encode_cyton_packet([-5] * 8, 2))
    assert decoder.garbage_bytes == 33
    assert [g.reason for g in _gaps(events)] == ["resync"]
    assert _gaps(events)[0].lost_samples == 1
    assert _blocks(events)[-1].samples[0, 0] == pytest.approx(-5 * 4.5 / 24 / (2 ** 23 - 1) * 1e3)


def test_text_units_comments_and_malformed():
    """Text lines in counts scale by lsb_uv; comments are ignored; a malformed line is
    counted and becomes a one-sample Gap; a partial first line is skipped."""
    names = wire.EIGHT_LEADS
    decoder = wire.TextDecoder(names, 250.0, units="counts", lsb_uv=2.0)
    lines = [wire.encode_text_line([k] * 8, 0) for k in range(6)]
    stream = b"5,6\n" + lines[0] + b"# lead check\r\n" + lines[1] + b"1,2,x\n" + lines[2] \
        + lines[3][:5]
    events = decoder.feed(stream)
    events += decoder.feed(lines[3][5:] + lines[4].replace(b"\n", b"\r\n"))
    assert _gaps(events) == [Gap("malformed", 1)]
    got = np.concatenate([b.samples for b in _blocks(events)], axis=1)
    np.testing.assert_allclose(got[0], [0.0, 0.002, 0.004, 0.006, 0.008])
    assert decoder.malformed_lines == 1 and decoder.join_bytes == 4
    assert decoder.garbage_bytes == 0
    assert _blocks(events)[0].rails_mv is None


def test_text_round_trip_mv(record_mv):
    """12-lead text lines in mV round-trip to 4 decimals."""
    decoder = wire.TextDecoder(STANDARD_LEADS, 500.0)
    data = b"\n" + b"".join(wire.encode_text_line(record_mv[:, k].tolist()) for k in range(50))
    got = np.concatenate([b.samples for b in _blocks(decoder.feed(data))], axis=1)
    np.testing.assert_allclose(got, record_mv[:, :50], atol=6e-5)


def test_decoders_never_raise_on_random_bytes():
    """Random bytes never raise out of any decoder; they are counted."""
    rng = np.random.default_rng(3)
    for fmt in wire.FORMATS:
        decoder = wire.make_decoder(fmt, fs_hz=500.0)
        for _ in range(50):
            decoder.feed(rng.bytes(int(rng.integers(0, 3000))))
        assert decoder.join_bytes + decoder.garbage_bytes + decoder.malformed_lines > 0


def test_frame_ending_in_first_magic_byte_is_not_garbage(record_mv):
    """A read that ends exactly after a frame whose CRC ends in 0xEC (the first magic byte)
    counts no garbage, not -1 now and +1 on the next read."""
    frames = _frames(record_mv, n_per_frame=1)
    assert any(frame.endswith(wire.FRAME_MAGIC[:1]) for frame in frames)
    decoder = wire.FrameDecoder()
    for frame in frames:
        decoder.feed(frame)
        assert decoder.garbage_bytes == 0 and decoder.join_bytes == 0
