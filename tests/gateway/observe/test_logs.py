"""Library log records (aiohttp's, asyncio's) become the gateway's JSON lines: with the
request id bound for the request, and without the exception text that quotes raw bytes."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage

from gateway.observe.logs import FOREIGN_LOGGERS, _BytesLineHandler, configure_logging
from tests.conftest import TEAM_KEY


@pytest.fixture
def stdout_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """configure_logging as the server runs it, writing to a buffer instead of stdout."""
    buffer = io.BytesIO()

    class FakeStdout:
        def __init__(self) -> None:
            self.buffer = buffer

    monkeypatch.setattr("sys.stdout", FakeStdout())
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("info", "json")
    yield buffer
    root.handlers[:], root.level = saved
    structlog.reset_defaults()


def test_aiohttp_exceptions_are_json_lines_without_their_text(stdout_lines: io.BytesIO) -> None:
    raw = b"Authorization: Bearer " + TEAM_KEY.encode() + b"\x01"
    try:
        raise BadHttpMessage(f"Invalid header value char:\n\n  {raw!r}\n  ^")
    except BadHttpMessage:
        with structlog.contextvars.bound_contextvars(request_id="rid-1"):
            logging.getLogger("aiohttp.server").exception("Error handling request %s", raw)
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    lines = stdout_lines.getvalue().splitlines()
    entries = [orjson.loads(line) for line in lines]  # every line is JSON
    assert len(entries) == 2
    first, second = entries
    assert first["logger"] == "aiohttp.server" and first["level"] == "error"
    assert first["request_id"] == "rid-1"
    assert first["error"] == "BadHttpMessage"
    assert first["event"] == "Error handling request b'<redacted>'"
    assert "traceback" in first and "Traceback" not in first["traceback"]
    assert second["logger"] == "asyncio" and "request_id" not in second
    assert TEAM_KEY.encode() not in stdout_lines.getvalue()


def test_library_loggers_have_no_handler_of_their_own(stdout_lines: io.BytesIO) -> None:
    for name in FOREIGN_LOGGERS:
        assert logging.getLogger(name).handlers == []
    assert [type(h) for h in logging.getLogger().handlers].count(_BytesLineHandler) == 1
