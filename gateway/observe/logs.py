"""Structured logging: one JSON line per event, never query text, document text or keys."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog


def configure_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """`stream`: a binary stream for the lines (default stdout; the CLI uses stderr)."""
    renderers: list[structlog.typing.Processor]
    if fmt == "json":
        renderers = [structlog.processors.JSONRenderer(serializer=orjson.dumps)]
    else:
        renderers = [structlog.dev.ConsoleRenderer(colors=False), _encode]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # Each line goes out in one write of bytes, so workers sharing stdout (a pipe)
        # never interleave parts of their lines.
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )


def _encode(_logger: Any, _name: str, line: Any) -> bytes:
    # The console renderer hands over a str; the bytes logger writes bytes.
    return str(line).encode("utf-8", "replace")


def _add_pid(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Several workers share one stdout; the pid tells their lines apart.
    event["pid"] = _PID
    return event


_PID = os.getpid()
access_log = structlog.get_logger("rerank_gateway.access")
log = structlog.get_logger("rerank_gateway")
# Who created, rotated or revoked which API key, and when (never the key itself).
audit_log = structlog.get_logger("rerank_gateway.audit")


class ThrottledWarning:
    """A warning logged at most once per interval, saying how many times it happened.

    For failures that repeat on every request during an outage (Redis down): one line
    every `interval_s` instead of thousands per second.
    """

    def __init__(
        self, event: str, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.event = event
        self.interval_s = interval_s
        self.clock = clock
        self._next = float("-inf")
        self._unlogged = 0

    def __call__(self, **fields: Any) -> None:
        self._unlogged += 1
        now = self.clock()
        if now < self._next:
            return
        log.warning(self.event, failures=self._unlogged, **fields)
        self._unlogged = 0
        self._next = now + self.interval_s
