"""The ecgd error tree.

Every failure ecgd expects is one of these; anything else is a bug. Foreign exceptions
(OSError, ValueError from numpy, onnxruntime's errors, ...) are translated once, at the
edge where they happen, with ``raise ... from exc``.

    EcgdError                  base; ``exit_code`` is what a command exits with
      ConfigError        78    bad config or key material: refuse to start; systemd does
                               not restart-loop (RestartPreventExitStatus=78); may hold
                               several problems, one line each
      ModelError         65    bad / mismatched model, manifest or checkpoint: refuse
        CheckpointError  65    a checkpoint that is not a Net1D state dict, or unsafe
      RecordError         1    a bad input recording: report it, quarantine it, keep running
      SourceError        69    live device gone / protocol broken: reconnect with backoff
      SealError          74    cannot encrypt or durably write a report: keep the input,
                               retry, alert
        TamperedError    65    a sealed report that fails a check when opened or received
                               (unsigned, unknown signer, modified, not sealed to this key)
      DeliveryError      69    the reading station did not take a report: keep it, retry
        StationUnavailable     down, hung, refusing TLS, or answering garbage: back off
        ReportRefused          the station refused this one report: keep it, retry later
      UsageError          2    a command line argparse cannot judge alone (contradicting
                               arguments, a public key where the identity is needed)
      ExportError         1    reading station: a report cannot be expressed in the format
                               asked for (a DICOM ECG without a tracing)
      OutputError        74    reading station: a rendered page or an export cannot be
                               written
      BatchError          2    ``ecgd batch`` refuses to start: its --out folder holds another
                               batch's results, the model or config changed (without
                               --new-run), another batch runs there, or an extra is missing

A window that fails quality control is not an error: it is a normal result
(``QualityVerdict``) that still produces a report.
"""
from __future__ import annotations

from typing import Sequence, Tuple


class EcgdError(Exception):
    """Base of every error ecgd raises on purpose. ``str(err)`` is one line per problem."""

    exit_code = 1

    def lines(self) -> Tuple[str, ...]:
        """One line per problem, as a command prints them."""
        return tuple(str(self).splitlines())


class ConfigError(EcgdError):
    """The configuration (or key material it names) is invalid.

    ``problems`` holds every problem found (one line each), so that one run of ``ecgd
    check`` or ``ecgd run`` names them all; a single message is one problem.
    """

    exit_code = 78

    def __init__(self, message: str = "", problems: Sequence[str] = ()) -> None:
        self.problems: Tuple[str, ...] = tuple(problems) or (message,)
        super().__init__("\n".join(self.problems))


class ModelError(EcgdError):
    """A model, manifest or checkpoint is missing, mismatched or malformed."""

    exit_code = 65


class CheckpointError(ModelError):
    """A checkpoint is not a loadable Net1D state dict (or is unsafe to load)."""


class RecordError(EcgdError):
    """An input recording cannot be read or is not a usable ECG."""

    exit_code = 1


class SourceError(EcgdError):
    """A live source failed (device vanished, unreadable, protocol broken)."""

    exit_code = 69


class SealError(EcgdError):
    """A report could not be encrypted or durably written."""

    exit_code = 74


class TamperedError(SealError):
    """A sealed report failed authentication or is not an ecgd container."""

    exit_code = 65


class DeliveryError(EcgdError):
    """A report could not be delivered to the reading station; it stays on the appliance."""

    exit_code = 69


class StationUnavailable(DeliveryError):
    """The station is down, hung, refused the TLS handshake, or did not acknowledge."""


class ReportRefused(DeliveryError):
    """The station answered, and refused this one report (e.g. its signature check)."""


class UsageError(EcgdError):
    """The command line is wrong in a way argparse cannot see: arguments that contradict
    each other, a file of the wrong kind (a ``.pub`` as ``--key``); exit 2, as argparse's."""

    exit_code = 2


class ExportError(EcgdError):
    """One report cannot be expressed in the asked format; the others still can."""

    exit_code = 1


class OutputError(EcgdError):
    """A rendered page or an exported file cannot be written."""

    exit_code = 74


class BatchError(EcgdError):
    """``ecgd batch`` refuses to start (or go on) with these arguments; nothing was changed."""

    exit_code = 2
