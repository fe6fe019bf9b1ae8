"""A fast fake Cohere upstream for the benchmark: parses the body, answers every score.

Run as `python -m bench.upstream PORT`. Scores are cheap and deterministic so the
upstream costs as little as possible and the gateway's own cost shows.
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web


async def rerank(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    docs = body["documents"]
    n = len(docs)
    results = [{"index": i, "relevance_score": round(1.0 - i / (n + 1), 6)} for i in range(n)]
    payload = {
        "id": "bench",
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def main() -> None:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v2/rerank", rerank)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
