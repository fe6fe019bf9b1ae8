"""A bug behind the pipeline still answers in Cohere's shape and is logged for operators."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
import pytest
import structlog

from providers import registry
from providers.types import UpstreamCall, UpstreamResult
from tests.conftest import TEAM_KEY, gateway_config


@dataclass
class BrokenOptions:
    type: Literal["broken"] = "broken"  # options name their provider type (the config's `type`)


class BrokenProvider:
    """A backend whose adapter has a bug: it raises something other than ProviderError."""

    type = "broken"
    batch_relative = False

    def __init__(self, name: str, options: BrokenOptions) -> None:
        self.name = name

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def rerank(self, call: UpstreamCall) -> UpstreamResult:
        raise KeyError(call.query)  # a buggy adapter, with caller text in its message


async def test_unexpected_exception_is_a_json_500_with_the_request_id(
    start_gateway: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        registry.PROVIDER_TYPES, "broken", registry.ProviderType(BrokenOptions, BrokenProvider)
    )
    data = gateway_config({})
    data["providers"]["bad"] = {"type": "broken"}
    data["models"]["rerank-v3.5"] = {"deployments": [{"provider": "bad"}]}
    url = start_gateway(data)
    body = {"model": "rerank-v3.5", "query": "secret query words", "documents": ["a", "b"]}
    with structlog.testing.capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url + "/v2/rerank",
                json=body,
                headers={"Authorization": f"Bearer {TEAM_KEY}", "X-Request-Id": "trace-9"},
            ) as resp,
        ):
            status, answer, ctype = resp.status, await resp.json(), resp.content_type
    assert (status, ctype) == (500, "application/json")
    assert set(answer) == {"id", "message"} and answer["id"].endswith("-trace-9")
    assert answer["id"] in answer["message"]
    events = [e for e in logs if e["event"] == "internal_error"]
    assert len(events) == 1 and events[0]["request_id"] == answer["id"]
    assert events[0]["error"] == "KeyError" and "in rerank" in events[0]["traceback"]
    assert "secret query" not in repr(logs)
    access = [e for e in logs if e["event"] == "rerank"]
    assert access[0]["status"] == 500 and access[0]["error"] == "internal error (KeyError)"
