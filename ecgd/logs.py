"""structlog, configured once: JSON lines for the journal, readable lines on a terminal.

Events are past-tense facts (``window_analyzed``, ``report_written``). A log line never
holds a patient identifier or a file name that could hold one: log the pseudonym or the
input's name hash instead.
"""
from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info",
                      stream: Optional[TextIO] = None) -> None:
    """Route structlog to ``stream`` (stdout by default) as JSON or console lines.

    ``auto`` means JSON when the stream is not a terminal (systemd's journal) and console
    rendering on a terminal.
    """
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer = (structlog.processors.JSONRenderer() if use_json
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**context: object) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to ``context`` (component names, never patient data)."""
    return structlog.get_logger().bind(**context)
