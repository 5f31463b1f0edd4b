"""Every station command opens sealed reports here: the file, its verified origin, its JSON.

``ecgd decrypt``, ``ecgd render`` and ``ecgd export`` go through :class:`ReportOpener`,
which reads each file and hands it to ``ecgd.security.unseal.open_sealed_report`` (appliance
signature against the enrolled appliances, decryption with the station's age identity,
signer and report id checked against the signature). A file that cannot be opened is named
on stderr with the failed check, the others are still opened, and ``exit_code`` keeps the
worst outcome: 1 for a file that cannot be read, 65 for one that fails a check.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator

from ecgd.errors import TamperedError
from ecgd.security.keys import load_enrolled_appliances, load_identity
from ecgd.security.origin import Origin
from ecgd.security.unseal import open_sealed_report, read_sealed

EXIT_UNREADABLE = 1


@dataclasses.dataclass(frozen=True)
class ReportFile:
    """A verified report, the file it came from, and the enrolled appliance that sealed it."""

    path: Path
    report: Dict[str, Any]
    origin: Origin

    @property
    def signer(self) -> str:
        """The signing appliance, for people: its enrolled name and key id."""
        return self.origin.describe()

    def signer_fields(self) -> Dict[str, str]:
        """The signer as ``ecgd decrypt`` prints it."""
        return {"appliance": self.origin.appliance.name,
                "key_id": self.origin.appliance.key_id}


class ReportOpener:
    """Opens sealed reports with the station's identity, trusting the enrolled appliances
    (ConfigError if either cannot be loaded)."""

    def __init__(self, identity_path: Path, appliances_dir: Path) -> None:
        self._identity = load_identity(identity_path)
        self._enrolled = load_enrolled_appliances(appliances_dir)
        self.exit_code = 0

    def open_each(self, paths: Iterable[Path]) -> Iterator[ReportFile]:
        """Each report that opens, in order; every other file gets one line on stderr."""
        for path in paths:
            try:
                opened = open_sealed_report(read_sealed(path), self._identity, self._enrolled)
            except OSError as exc:
                self.refuse(path, f"cannot read: {exc.strerror or exc}", EXIT_UNREADABLE)
                continue
            except TamperedError as exc:
                self.refuse(path, str(exc), exc.exit_code)
                continue
            yield ReportFile(Path(path), opened.report, opened.origin)

    def refuse(self, path: Path, reason: str, exit_code: int) -> None:
        """Name a file that cannot be used on stderr and keep the worst exit code."""
        print(f"ecgd: {path}: {reason}", file=sys.stderr, flush=True)
        self.exit_code = max(self.exit_code, exit_code)
