"""structlog set-up: JSON lines in production, readable console output in a terminal."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(verbosity: int = 0, *, json: bool | None = None, stream=None) -> None:  # type: ignore[no-untyped-def]
    """Configure structlog once for the process.

    verbosity 0 logs info and above, 1 or more adds debug. `json` defaults to "not a terminal".
    """
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
