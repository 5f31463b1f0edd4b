"""Shared by the seal and delivery tests: the standard age tool, and sealed test reports."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, List

from ecgd.report_store import report_file_name
from ecgd.security.keys import SigningKey, load_recipients
from ecgd.security.seal import seal_report, write_durable

# The X25519 key pair printed in the age specification (c2sp.org/age): an independent
# known answer for key encoding.
SPEC_IDENTITY = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
SPEC_RECIPIENT = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"


def age_tool(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """Run the standard `age` command (Debian package 'age', which .ci/run installs)."""
    executable = shutil.which(args[0])
    if executable is None:
        raise AssertionError(f"{args[0]} is not installed (Debian package 'age'; .ci/run "
                             f"installs it): the seal is checked against it")
    return subprocess.run([executable, *args[1:]], input=stdin, capture_output=True,
                          timeout=60)


def age_decrypt(sealed: Path, identity: Path) -> bytes:
    """What `age --decrypt -i IDENTITY FILE` prints; AssertionError with its stderr if it fails."""
    completed = age_tool("age", "--decrypt", "-i", str(identity), str(sealed))
    if completed.returncode != 0:
        raise AssertionError(f"age --decrypt failed: {completed.stderr.decode(errors='replace')}")
    return completed.stdout


def sample_report(index: int = 0) -> Dict[str, Any]:
    """A small report-shaped object with a fresh report id (the seal does not check schema)."""
    return {"report_id": str(uuid.uuid4()), "window": {"index": index},
            "findings": [{"label": "sinus rhythm", "probability": 0.93}]}


def write_sealed_reports(folder: Path, count: int, recipient_file: Path,
                         signing_key: SigningKey) -> List[Path]:
    """``count`` sealed, signed reports written into ``folder`` as the daemon names them."""
    recipients = load_recipients([recipient_file])
    paths = []
    for index in range(count):
        report = sample_report(index)
        paths.append(write_durable(folder, report_file_name(report["report_id"]),
                                   seal_report(report, recipients, signing_key)))
    return paths
