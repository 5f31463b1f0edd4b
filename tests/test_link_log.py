"""LinkLog: link faults become a few log lines per episode, never one per fault."""
from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from ecgd.sources.link_log import FAULT_COUNTERS, LinkLog


def _counters(**changes: int):
    counters = dict.fromkeys(FAULT_COUNTERS, 0)
    counters["windows"] = 0  # not a fault: must never start an episode
    counters.update(changes)
    return counters


def test_episode_first_fault_summaries_then_recovery():
    """One lost frame a second for 10 s with a 3-s interval: link_degraded at once,
    link_faults every 3 s with the counts since the previous line, link_recovered 3 s after
    the last fault with the episode's totals."""
    counters = _counters()
    link = LinkLog(structlog.get_logger(), "/dev/ttyECG", 3.0, counters)
    with capture_logs() as logs:
        for half_s in range(0, 31):
            now_s = half_s / 2
            if half_s % 2 == 0 and now_s < 10:
                counters["lost_samples"] += 10
                counters["bridged_gaps"] += 1
                counters["bridged_samples"] += 10
            counters["windows"] += 1
            link.observe(counters, now_s)
    lines = [(e["event"], e.get("lost_samples"), e.get("bridged_gaps")) for e in logs]
    assert lines == [("link_degraded", 10, 1), ("link_faults", 30, 3), ("link_faults", 30, 3),
                     ("link_faults", 30, 3), ("link_recovered", 100, 10)]
    assert logs[-1]["duration_s"] == 9.0 and logs[-1]["device"] == "/dev/ttyECG"
    assert not link.degraded


def test_quiet_link_and_new_episode():
    """A link without faults logs nothing however long it runs; a fault after a recovery
    starts a new episode with its own link_degraded."""
    counters = _counters(garbage_bytes=7)  # what happened before the log was made
    link = LinkLog(structlog.get_logger(), "dev", 1.0, counters)
    with capture_logs() as logs:
        for second in range(5):
            counters["windows"] += 1
            link.observe(counters, float(second))
        assert logs == []
        counters["segments_closed"] += 1
        link.observe(counters, 5.0)
        link.observe(counters, 6.5)
        counters["malformed_lines"] += 2
        link.observe(counters, 7.0)
        link.observe(counters, 8.5)
    events = [(e["event"], {k: v for k, v in e.items() if k in FAULT_COUNTERS})
              for e in logs]
    assert events == [("link_degraded", {"segments_closed": 1}),
                      ("link_recovered", {"segments_closed": 1}),
                      ("link_degraded", {"malformed_lines": 2}),
                      ("link_recovered", {"malformed_lines": 2})]
