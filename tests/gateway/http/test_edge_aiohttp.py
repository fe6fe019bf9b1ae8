"""The private aiohttp API that gateway/http/edge.py relies on, one test per use, so an
aiohttp upgrade that changes any of them fails here, by name, instead of silently
switching an edge limit off."""

from __future__ import annotations

import inspect

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.web_protocol import RequestHandler

from gateway.http import edge


def test_apprunner_make_server_builds_the_server_whose_protocol_we_swap() -> None:
    """edge.GatewayRunner overrides `AppRunner._make_server` and swaps the Server's class."""
    assert inspect.iscoroutinefunction(web.AppRunner._make_server), (
        "aiohttp changed AppRunner._make_server: GatewayRunner can no longer serve "
        "connections with the edge's protocol handler"
    )
    source = inspect.getsource(web.Server.__call__)
    assert "RequestHandler(self, loop=self._loop, **self._kwargs)" in source, (
        "aiohttp changed how web.Server makes a protocol handler (_loop, _kwargs): "
        "edge._Server.__call__ must follow"
    )


def test_server_passes_runner_kwargs_to_the_handler() -> None:
    """The edge limits reach `_EdgeHandler` as keyword arguments of the runner."""
    signature = inspect.signature(RequestHandler.__init__)
    for name in ("keepalive_timeout", "max_headers", "max_line_size", "max_field_size"):
        assert name in signature.parameters, f"RequestHandler no longer takes {name}"


def test_the_parser_is_the_handlers_parser_attribute() -> None:
    """edge._Reading wraps `RequestHandler._parser` (set by BaseProtocol) and is fed
    every chunk through `_parser.feed_data(data) -> (messages, upgraded, tail)`."""
    assert "_parser" in BaseProtocol.__slots__, "aiohttp renamed BaseProtocol._parser"
    source = inspect.getsource(RequestHandler.data_received)
    assert "messages, upgraded, tail = self._parser.feed_data(data)" in source, (
        "aiohttp changed how RequestHandler feeds its parser: the head byte limit, the "
        "header timeout and the body deadline (edge._Reading) would no longer apply"
    )


def test_keepalive_timer_closes_a_connection_waiting_for_its_head() -> None:
    """server.idle_timeout_s is aiohttp's keep-alive timer, which also closes a
    connection whose head has not arrived whole (the handler still waits for it)."""
    source = inspect.getsource(RequestHandler._process_keepalive)
    assert "if self._waiter and not self._waiter.done():" in source, (
        "aiohttp changed its keep-alive timer: idle_timeout_s may no longer bound heads"
    )
    assert "self._keepalive_handle = loop.call_at(close_time" in inspect.getsource(
        RequestHandler.connection_made
    ), "aiohttp no longer starts the keep-alive timer when a connection opens"


def test_lingering_time_is_the_handlers_attribute() -> None:
    """edge._EdgeHandler.stop_lingering sets `RequestHandler._lingering_time` to 0."""
    assert "_lingering_time" in RequestHandler.__slots__
    assert "lingering_time = self._lingering_time" in inspect.getsource(RequestHandler.start)


def test_the_edge_module_names_each_private_use() -> None:
    doc = edge.__doc__ or ""
    for name in ("_make_server", "_kwargs", "_parser", "_lingering_time"):
        assert name in doc
