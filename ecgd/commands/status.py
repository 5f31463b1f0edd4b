"""``ecgd status``: the running daemon's state, from the state file it keeps."""
from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List

from ecgd.commands import add_config_option
from ecgd.config import load_config
from ecgd.daemon_state import read_verdict
from ecgd.wording import counted, size

EXIT_NOT_RUNNING = 1

DESCRIPTION = """Show the daemon's state (ready or stopping), its counters, queues, the live
link's health, whether spool intake is paused for disk space, last window, host health and
free disk, from the state file it rewrites every few seconds
([status] file of the config, in the service's runtime folder). Exit 0 while the daemon
runs; 1, with one line saying why, when it is not running or its state file is stale (not
updated for three intervals: hung or killed). Readable by root and the service's group."""


def register(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--json", action="store_true",
                        help='print {"running", "condition", "message", "state"} as JSON')
    parser.set_defaults(handler=run)


def _free(disk: Dict[str, Any]) -> str:
    free = disk.get("free_bytes")
    return f"{'unknown' if free is None else size(free)} free ({disk['path']})"


def describe(state: Dict[str, Any]) -> List[str]:
    """The state document as aligned lines for a person."""
    counters, queue, model = state["counters"], state["queue"], state["model"]
    last = state["last_window"]
    lines = [
        ("windows", f"{counters['windows_done']} done, {counters['windows_rejected']} rejected"),
        ("inputs", f"{counters['inputs_done']} done, {counters['inputs_failed']} failed, "
                   f"{queue['spool_waiting']} waiting in the spool"),
        ("pipeline", f"{counted(queue['windows_prepared'], 'window')} prepared, "
                     f"{queue['windows_to_write']} to write"),
        ("live", (f"queue {queue['live_queue']}, {queue['live_dropped']} dropped; "
                  f"{state.get('live_link') or 'link state not reported'}"
                  if state["live_source"] else "no live source")),
        ("intake", state.get("intake_paused") or "running"),
        ("last", ("no window yet" if last is None else
                  f"window at {last['at']}: {last['qc']}, {last['latency_ms']:g} ms")),
        ("model", f"{model['name']} ({model['precision']}, "
                  f"{'trained' if model['trained'] else 'UNTRAINED: findings meaningless'})"),
        ("host", state["host"]["summary"]),
        ("disk", f"reports {_free(state['disk']['reports'])}; "
                 f"spool {_free(state['disk']['spool'])}"),
        ("since", f"{state['started_at']}, ecgd {state['version']}"),
    ]
    return [f"  {name:<9} {text}" for name, text in lines]


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    verdict = read_verdict(config.status.file)
    if args.json:
        print(json.dumps({"running": verdict.running, "condition": verdict.condition,
                          "message": verdict.message, "state": verdict.state}, indent=2))
    else:
        print(f"ecgd: {verdict.message}")
        if verdict.state is not None:
            print("\n".join(describe(verdict.state)))
    return 0 if verdict.running else EXIT_NOT_RUNNING
