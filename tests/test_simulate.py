"""`ecgd simulate` as a command: real records through a real pty, decoded on the other end."""
from __future__ import annotations

import argparse
import os
import select
import threading
import tty
from pathlib import Path

import numpy as np
import pytest

from ecgd.commands import simulate
from ecgd.errors import SourceError
from ecgd.records.reader import read_recording
from ecgd.sources import wire
from ecgd.sources.wire import SampleBlock


def _run(argv):
    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(["simulate"] + argv)
    return args.handler(args)


def _collect(master: int, done: threading.Event) -> bytes:
    data = b""
    while True:
        if select.select([master], [], [], 0.05)[0]:
            try:
                data += os.read(master, 65536)
            except OSError:
                return data
        elif done.is_set():
            return data


def test_command_streams_record_to_port(shared_data: Path, capsys):
    """`ecgd simulate --port <pty>` writes the whole record as ecgd-frames, in order."""
    master, slave = os.openpty()
    tty.setraw(slave)
    record = shared_data / "cinc2021" / "E07503.hea"
    done = threading.Event()
    out: list = []
    reader = threading.Thread(target=lambda: out.append(_collect(master, done)))
    reader.start()
    try:
        code = _run(["--port", os.ttyname(slave), "--format", "ecgd-frame", "--record",
                     str(record), "--speed", "50", "--frame-samples", "25"])
    finally:
        done.set()
        reader.join(5)
        os.close(master)
        os.close(slave)
    assert code == 0
    decoder = wire.FrameDecoder()
    blocks = [e for e in decoder.feed(out[0]) if isinstance(e, SampleBlock)]
    got = np.concatenate([b.samples for b in blocks], axis=1)
    expected = read_recording(record, 10 ** 8).samples_mv
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert decoder.garbage_bytes == 0 and decoder.dropped_frames == 0
    assert "sent 200 frames (5000 samples" in capsys.readouterr().out


def test_faults_are_seeded():
    """The same seed injects the same drops and garbage; another seed differs."""
    rng = np.random.default_rng(0)
    sig = simulate.Signal(rng.normal(size=(8, 2000)).astype(np.float32), 500.0,
                          wire.EIGHT_LEADS)

    class Sink:
        def write(self, data):
            self.data = getattr(self, "data", b"") + data

        def read_available(self):
            return b""

        def close(self):
            pass

    runs = []
    for seed in (5, 5, 6):
        sink = Sink()
        result = simulate.stream(sink, sig, "ecgd-frame", speed=1e6, drop_rate=0.05,
                                 garbage_rate=0.05, seed=seed)
        runs.append((result.dropped, result.garbage_before, sink.data))
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert runs[0][0]


def test_eight_lead_record_for_cyton_and_missing_leads(shared_data: Path):
    """A 12-lead record is arranged into 8 leads at 250 Hz for the Cyton; a 2-lead
    record cannot feed a 12-lead stream and says which leads are missing."""
    sig = simulate.prepare_signal(read_recording(shared_data / "cinc2021" / "E07503.hea",
                                                 10 ** 8), "openbci-cyton", 8)
    assert sig.fs_hz == 250.0 and sig.samples_mv.shape == (8, 2500)
    assert sig.lead_names == wire.EIGHT_LEADS
    mitdb = read_recording(shared_data / "mitdb" / "100.hea", 10 ** 8)
    with pytest.raises(Exception, match="lacks leads"):
        simulate.prepare_signal(mitdb, "ecgd-frame", 12)


def test_bad_options_refused(shared_data: Path):
    """A drop rate outside [0, 1) is refused with a one-line error."""
    with pytest.raises(SourceError, match="--drop-rate"):
        _run(["--port", "loop://", "--format", "text", "--record",
              str(shared_data / "cinc2021" / "E07503.hea"), "--drop-rate", "1.5"])
