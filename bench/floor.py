"""The framework floors: proxies measured beside the gateway.

- `floor`: forwards only. aiohttp's server reads the body and the gateway's own
  upstream client (`providers.http.HttpTransport`) sends those bytes on unchanged; the
  upstream's answer goes back as it came. No parsing, no auth, no cache, no metrics:
  whatever the gateway costs above this row is its own logic.
- `floor-json` (`--json`): the least any gateway that speaks Cohere's API itself must do
  on top: decode the caller's JSON, build the upstream's body from its fields, decode the
  upstream's results and write Cohere's answer (ranked, top_n, billed units) as new JSON.
  No validation beyond what decoding does, no auth, no cache, no metrics, no logs.

Run as `python -m bench.floor PORT UPSTREAM_URL [--json]`.
"""

from __future__ import annotations

import argparse
import socket
import uuid
from collections.abc import Awaitable, Callable

import orjson
import uvloop
from aiohttp import web

from providers.http import HttpTransport

_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer upstream-key"}


def build(upstream_url: str, rewrite: bool = False) -> web.Application:
    transport = HttpTransport("upstream")

    async def forward(request: web.Request) -> web.Response:
        answer = await transport.post(upstream_url, await request.read(), _HEADERS, 30.0)
        return web.Response(body=answer.body, status=answer.status, content_type="application/json")

    async def rerank(request: web.Request) -> web.Response:
        asked = orjson.loads(await request.read())
        documents = asked["documents"]
        body = {"model": asked["model"], "query": asked["query"], "documents": documents}
        answer = await transport.post(upstream_url, orjson.dumps(body), _HEADERS, 30.0)
        scores = [0.0] * len(documents)
        for result in orjson.loads(answer.body)["results"]:
            scores[result["index"]] = result["relevance_score"]
        order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
        top_n = asked.get("top_n")
        results = [{"index": i, "relevance_score": scores[i]} for i in order[:top_n]]
        meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
        payload = {"id": str(uuid.uuid4()), "results": results, "meta": meta}
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    async def close(app: web.Application) -> None:
        await transport.close()

    handler: Callable[[web.Request], Awaitable[web.Response]] = rerank if rewrite else forward
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v2/rerank", handler)
    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.floor")
    parser.add_argument("port", type=int)
    parser.add_argument("upstream_url")
    parser.add_argument("--json", action="store_true", help="decode and re-encode (floor-json)")
    args = parser.parse_args()
    uvloop.install()
    sock = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    web.run_app(build(args.upstream_url, args.json), sock=sock, access_log=None, print=None)


if __name__ == "__main__":
    main()
