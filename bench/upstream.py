"""A fast fake Cohere upstream for the benchmark: parses the body, answers every score.

Run as `python -m bench.upstream PORT [--delay-ms MS]`. Scores are cheap and
deterministic so the upstream costs as little as possible and the gateway's own cost
shows; `--delay-ms` holds every answer that long (a real reranker's latency), which is
what makes pool sizes and listen backlogs matter.
"""

from __future__ import annotations

import argparse
import asyncio
import socket

import orjson
import uvloop
from aiohttp import web


def make_handler(delay_s: float):  # type: ignore[no-untyped-def]
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
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(body=orjson.dumps(payload), content_type="application/json")

    return rerank


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.upstream")
    parser.add_argument("port", type=int)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v2/rerank", make_handler(args.delay_ms / 1000.0))
    uvloop.install()
    # A deep backlog: the upstream must not be what resets a burst of connections.
    sock = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    web.run_app(app, sock=sock, access_log=None, print=None, backlog=4096)


if __name__ == "__main__":
    main()
