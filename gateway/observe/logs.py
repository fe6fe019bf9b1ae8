"""Structured logging: one JSON line per event, never query text, document text or keys."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
import structlog

# The loggers of aiohttp and asyncio (and any library's) that would otherwise print
# plain text and tracebacks; they all reach the root logger.
FOREIGN_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.client", "asyncio")


def configure_logging(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
    """`stream`: a binary stream for the lines (default stdout; the CLI uses stderr)."""
    renderers: list[structlog.typing.Processor]
    foreign_renderers: list[structlog.typing.Processor]  # the stdlib formatter wants str
    if fmt == "json":
        renderers = [structlog.processors.JSONRenderer(serializer=_dumps)]
        foreign_renderers = [structlog.processors.JSONRenderer(serializer=_dumps_str)]
    else:
        renderers = [structlog.dev.ConsoleRenderer(colors=False), _encode]
        foreign_renderers = renderers[:1]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_pid,
        IsoStamper(),
    ]
    structlog.configure(
        processors=[*shared, *renderers],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # Each line goes out in one write of bytes, so workers sharing stdout (a pipe)
        # never interleave parts of their lines.
        logger_factory=structlog.BytesLoggerFactory(stream or sys.stdout.buffer),
        cache_logger_on_first_use=True,
    )
    route_stdlib_logging(level, [*shared, _foreign_fields], foreign_renderers)


def route_stdlib_logging(
    level: str,
    pre_chain: list[structlog.typing.Processor],
    renderers: list[structlog.typing.Processor],
    stream: BinaryIO | None = None,
) -> None:
    """Send every stdlib log record (aiohttp's, asyncio's, boto's) through structlog's
    processors as one JSON line on stdout, the way the gateway's own lines go.

    A foreign record keeps its logger name, level and message; an exception becomes
    its class and the frames it passed through, never its text: aiohttp's parser
    errors quote the raw header bytes they choked on, Authorization included.
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderers],
    )
    handler = _BytesLineHandler(stream or sys.stdout.buffer)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _BytesLineHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.getLevelNamesMapping()[level.upper()])
    for name in FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()  # no plain-text handler of their own
        foreign.propagate = True


class _BytesLineHandler(logging.Handler):
    """One write of bytes per record, as structlog's BytesLogger does."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            data = line if isinstance(line, bytes) else line.encode("utf-8", "replace")
            self.stream.write(data + b"\n")
            self.stream.flush()
        except Exception:  # pragma: no cover - as logging.StreamHandler
            self.handleError(record)


def _foreign_fields(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A stdlib record's fields, with exception text replaced by its class and frames."""
    record = event.get("_record")
    if isinstance(record, logging.LogRecord):
        event["logger"] = record.name
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            event["error"] = _summary(exc)
            event["traceback"] = "".join(traceback.format_tb(exc.__traceback__))
            record.exc_info = None  # never formatted with its message
            record.exc_text = None
        event.pop("exc_info", None)
    event["event"] = _scrub(str(event.get("event", "")))
    return event


def _summary(exc: BaseException) -> str:
    # Class names only: an aiohttp parser error's text holds the bytes it could not parse.
    cause = exc.__cause__ or exc.__context__
    name = type(exc).__name__
    return f"{name} (from {type(cause).__name__})" if cause is not None else name


_BYTES_REPR = re.compile(r"b(['\"]).*?\1", re.DOTALL)


def _scrub(message: str) -> str:
    """A foreign message without quoted bytes (b'...'): those are raw request data."""
    return _BYTES_REPR.sub("b'<redacted>'", message)[:500]


def _dumps(event: Any, **_kw: Any) -> bytes:
    try:
        return orjson.dumps(event, default=repr)
    except TypeError:  # a lone surrogate (undecodable request bytes): json escapes it
        return json.dumps(event, default=repr).encode()


def _dumps_str(event: Any, **kw: Any) -> str:
    return _dumps(event, **kw).decode()


def _encode(_logger: Any, _name: str, line: Any) -> bytes:
    # The console renderer hands over a str; the bytes logger writes bytes.
    return str(line).encode("utf-8", "replace")


def _add_pid(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Several workers share one stdout; the pid tells their lines apart.
    event["pid"] = _PID
    return event


_PID = os.getpid()


class IsoStamper:
    """structlog's `TimeStamper(fmt="iso", utc=True)`, the same text
    (`2026-12-07T08:55:00.123456Z`, no fraction on a whole second, as `isoformat` writes
    it) at about a third of its cost: the date and the time of day are formatted once per
    second, the microseconds per line. Every request writes a line, so this is per request.
    Both read the system clock in nanoseconds and round down to the microsecond."""

    __slots__ = ("_clock", "_prefix", "_second")

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._second: int | None = None
        self._prefix = ""

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        second, nanos = divmod(self._clock(), 1_000_000_000)
        if second != self._second:
            self._prefix = datetime.fromtimestamp(second, UTC).isoformat()[:19]
            self._second = second
        micros = nanos // 1000
        event["timestamp"] = f"{self._prefix}.{micros:06d}Z" if micros else f"{self._prefix}Z"
        return event
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
