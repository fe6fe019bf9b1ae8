"""The frame the self-hosted and hosted reranker fakes share (TEI, vLLM, Infinity, Jina,
Voyage, NIM): routes, a Bearer key check, JSON parsing, the `Faults` of the Cohere fake,
and a record of what each request sent. Each fake module gives its own `validate`
(the rules its server enforces), `answer` (its response shape) and `error` (its envelope).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.cohere import Faults, fake_score, inject

_WORD = re.compile(r"\w+")


def token_count(*texts: str) -> int:
    """The fakes' stand-in for a tokenizer: one token per word, at least one per text."""
    return sum(max(1, len(_WORD.findall(t))) for t in texts)


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


@dataclass
class StrictFake:
    api_key: str | None = None  # None: the server runs without a key
    paths: tuple[str, ...] = ()
    faults: Faults = field(default_factory=Faults)
    calls: list[dict[str, Any]] = field(default_factory=list)  # bodies that passed auth
    headers: list[dict[str, str]] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)  # path of every request
    arrivals: list[float] = field(default_factory=list)
    # Hold every request until this many are in at once: a client that sends them one
    # after the other never gets an answer (proves concurrency without timing anything).
    rendezvous: int = 0
    _waiting: int = 0
    _all_in: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _shutdown: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in self.paths:
            app.router.add_post(path, self.handle)
        app.on_shutdown.append(self._release_hangs)
        return app

    async def _release_hangs(self, app: web.Application) -> None:
        self._shutdown.set()

    def needs_key(self, path: str) -> bool:
        return self.api_key is not None

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requested.append(request.path)
        self.headers.append(dict(request.headers))
        if self.needs_key(request.path) and not self.authorized(request):
            return self.unauthorized()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return self.error(400, "request body is not valid JSON")
        self.calls.append(body)
        self.arrivals.append(time.monotonic())
        if self.rendezvous:
            await self._meet()
        if self.faults.active():
            injected = await inject(self.faults, request, self.error, self._shutdown)
            if injected is not None:
                return injected
        if not isinstance(body, dict):
            return self.error(422, "request body must be a JSON object")
        problem = self.validate(body)
        if problem is not None:
            return problem
        return self.answer(body)

    async def _meet(self) -> None:
        self._waiting += 1
        if self._waiting >= self.rendezvous:
            self._all_in.set()
        all_in = asyncio.ensure_future(self._all_in.wait())
        shutdown = asyncio.ensure_future(self._shutdown.wait())
        await asyncio.wait((all_in, shutdown), return_when=asyncio.FIRST_COMPLETED)
        all_in.cancel()
        shutdown.cancel()

    def unauthorized(self) -> web.Response:
        return self.error(401, "Unauthorized")

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        raise NotImplementedError

    def answer(self, body: dict[str, Any]) -> web.Response:
        raise NotImplementedError

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        raise NotImplementedError


def ranked(query: str, docs: list[str]) -> list[tuple[int, float]]:
    """(index, fake score) sorted by score, best first, as every server answers."""
    return sorted(
        ((i, fake_score(query, d)) for i, d in enumerate(docs)), key=lambda p: (-p[1], p[0])
    )


def unknown_fields(body: dict[str, Any], allowed: set[str]) -> list[str]:
    return sorted(k for k in body if k not in allowed)


def strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
