"""A loopback fake of Cohere Rerank on Azure AI Foundry.

Serverless endpoints serve `/v1/rerank` and `/v2/rerank`, Foundry resources serve
`/providers/cohere/v2/rerank`; all take the key as `Authorization: Bearer` or `api-key`.
Bodies are validated and ranked by the Cohere fake (`answer`), so the answers carry
`meta.billed_units`. Errors use Cohere's `{"message"}` envelope or, with
`envelope="azure"`, Azure's `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

import orjson
from aiohttp import web

from tests.fakes.cohere import FakeCohere

AZURE_KEY = "azure-endpoint-key"
FOUNDRY_PATH = "/providers/cohere/v2/rerank"


@dataclass
class FakeAzure(FakeCohere):
    api_key: str = AZURE_KEY
    envelope: Literal["cohere", "azure"] = "cohere"
    paths: list[str] = field(default_factory=list)
    search_units: int | None = None  # bill this instead of Cohere's ceil(documents / 100)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/rerank", self._handler(1))
        app.router.add_post("/v2/rerank", self._handler(2))
        app.router.add_post(FOUNDRY_PATH, self._handler(2))
        return app

    def authorized(self, request: web.Request) -> bool:
        return (
            request.headers.get("Authorization") == f"Bearer {self.api_key}"
            or request.headers.get("api-key") == self.api_key
        )

    async def rerank(self, request: web.Request, version: int) -> web.StreamResponse:
        self.paths.append(request.path)
        response = await super().rerank(request, version)
        if (
            self.search_units is not None
            and isinstance(response, web.Response)
            and response.status == 200
        ):
            assert isinstance(response.body, bytes)
            payload = orjson.loads(response.body)
            payload["meta"]["billed_units"]["search_units"] = self.search_units
            response.body = orjson.dumps(payload)
        return response

    def error(
        self, status: int, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        headers = {"apim-request-id": str(uuid.uuid4()), **(headers or {})}
        if self.envelope == "cohere":
            return super().error(status, message, headers)
        body = {"error": {"code": str(status), "message": message}}
        return web.Response(
            status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
        )
