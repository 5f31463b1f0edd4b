"""Sealing a report on the appliance: sign, encrypt to the reading stations, write durably.

A sealed report is one age file (``ecgd.security.age_format``) encrypted to every configured
reading-station recipient and signed by this appliance (``ecgd.security.origin``). The
report inside names its signer (``signer_key_id``), so the station can tell that the
signature and the content belong together. The reading station opens it with
``ecgd.security.unseal``; the standard ``age`` tool opens it too.

Reports are written with ``write_durable``: a temporary file in the target directory, fsync,
rename, fsync of the directory, so a crash leaves either the whole old state or the whole
new file, never a torn one.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Mapping, Sequence

from ecgd import durable
from ecgd.errors import SealError
from ecgd.report import dumps_report
from ecgd.security import age_format
from ecgd.security.keys import RecipientKey, SigningKey
from ecgd.security.origin import signature_stanza

SIGNER_FIELD = "signer_key_id"


def seal_report(report: Mapping[str, Any], recipients: Sequence[RecipientKey],
                signing_key: SigningKey) -> bytes:
    """The sealed file of ``report``: signed by this appliance, encrypted to ``recipients``.

    The sealed JSON is the report with ``signer_key_id`` added, binding the signer inside
    the encryption as well as outside it.
    """
    plaintext = dumps_report({**report, SIGNER_FIELD: signing_key.key_id}).encode("utf-8")
    sign = functools.partial(signature_stanza, signing_key, report["report_id"])
    return age_format.encrypt(plaintext, [recipient.public_key for recipient in recipients],
                              sign)


def ensure_private_dir(path: Path) -> Path:
    """:func:`ecgd.durable.ensure_private_dir`, failures as SealError."""
    try:
        return durable.ensure_private_dir(path)
    except OSError as exc:
        raise SealError(f"{path}: cannot use as a private directory: "
                        f"{exc.strerror or exc}") from exc


def write_durable(directory: Path, name: str, data: bytes, mode: int = 0o600,
                  replace: bool = True) -> Path:
    """:func:`ecgd.durable.write_durable`, failures (disk full, unwritable) as SealError."""
    try:
        return durable.write_durable(directory, name, data, mode=mode, replace=replace)
    except ValueError as exc:
        raise SealError(str(exc)) from exc
    except OSError as exc:
        raise SealError(f"{Path(directory) / name}: cannot write: "
                        f"{exc.strerror or exc}") from exc
