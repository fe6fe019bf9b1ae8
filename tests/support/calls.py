"""Calls to a running gateway: one rerank POST for every test that reads the answer as
JSON (raw bodies and the SDK have their own: tests/ops/test_leaks.py, the cohere client)."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.conftest import TEAM_KEY

DOCS = ["Paris is the capital of France", "bananas are yellow", "the capital city of Spain"]
BODY: dict[str, Any] = {"model": "rerank-v3.5", "query": "capital", "documents": DOCS}


async def post(
    url: str,
    body: Any = None,
    key: str = TEAM_KEY,
    path: str = "/v2/rerank",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """POST `body` (BODY when None) with `key` as the bearer (a header in `headers`
    overrides it): the status, the headers and the JSON answer."""
    sent = {"Authorization": f"Bearer {key}", **(headers or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + path, json=BODY if body is None else body, headers=sent) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()
