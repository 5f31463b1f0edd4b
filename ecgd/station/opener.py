"""The one way the reading station opens sealed reports: key in, reports (and signer) out.

``ecgd decrypt``, ``ecgd render`` and ``ecgd export`` all open files through
:class:`ReportOpener`, so changing how reports are sealed or signed changes this module
alone. A file that cannot be opened is named on stderr with the reason, the others are still
opened, and ``exit_code`` keeps the worst outcome: 1 for a file that cannot be read, 65 for
one that fails authentication or is not a report.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional

from ecgd.errors import TamperedError
from ecgd.security.keys import load_private_key
from ecgd.security.seal import unseal

EXIT_UNREADABLE = 1
# Sealed reports are tens of kilobytes; a far larger file is not one and is not read whole.
_SEALED_MAX_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class OpenedReport:
    """An authenticated report and where it came from.

    ``signer`` names the appliance that signed the report once reports carry signatures;
    None means the container proves only that it was sealed to this station's key.
    """

    path: Path
    report: Dict[str, Any]
    signer: Optional[str] = None


class ReportOpener:
    """Opens sealed reports with one reading-station private key (ConfigError if unusable)."""

    def __init__(self, key_path: Path) -> None:
        self._private_key = load_private_key(key_path)
        self.exit_code = 0

    def open_each(self, paths: Iterable[Path]) -> Iterator[OpenedReport]:
        """Each report that opens, in order; every other file gets one line on stderr."""
        for path in paths:
            try:
                yield self.open(path)
            except OSError as exc:
                self.refuse(path, f"cannot read: {exc.strerror or exc}", EXIT_UNREADABLE)
            except TamperedError as exc:
                self.refuse(path, str(exc), exc.exit_code)

    def open(self, path: Path) -> OpenedReport:
        """One report; OSError if unreadable, TamperedError if not authentic or not a report."""
        with open(path, "rb") as handle:
            container = handle.read(_SEALED_MAX_BYTES + 1)
        if len(container) > _SEALED_MAX_BYTES:
            raise TamperedError(f"larger than {_SEALED_MAX_BYTES} bytes, not a sealed report")
        plaintext = unseal(container, self._private_key)
        try:
            report = json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # Authentic but not JSON: sealed by something other than ecgd's report writer.
            raise TamperedError("decrypted, but the content is not a JSON report") from exc
        if not isinstance(report, dict):
            raise TamperedError("decrypted, but the content is not a JSON report")
        return OpenedReport(Path(path), report)

    def refuse(self, path: Path, reason: str, exit_code: int) -> None:
        """Name a file that cannot be used on stderr and keep the worst exit code."""
        print(f"ecgd: {path}: {reason}", file=sys.stderr, flush=True)
        self.exit_code = max(self.exit_code, exit_code)
