"""The framework floor: a proxy that only forwards, measured beside the gateway.

aiohttp's server reads the body and the gateway's own upstream client
(`providers.http.HttpTransport`) sends those bytes on unchanged; the upstream's answer
goes back as it came. No parsing, no auth, no cache, no metrics: whatever the gateway
costs above this row is its own logic. Run as `python -m bench.floor PORT UPSTREAM_URL`.
"""

from __future__ import annotations

import argparse
import socket

import uvloop
from aiohttp import web

from providers.http import HttpTransport


def build(upstream_url: str) -> web.Application:
    transport = HttpTransport("upstream")
    headers = {"Content-Type": "application/json", "Authorization": "Bearer upstream-key"}

    async def forward(request: web.Request) -> web.Response:
        answer = await transport.post(upstream_url, await request.read(), headers, 30.0)
        return web.Response(body=answer.body, status=answer.status, content_type="application/json")

    async def close(app: web.Application) -> None:
        await transport.close()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v2/rerank", forward)
    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.floor")
    parser.add_argument("port", type=int)
    parser.add_argument("upstream_url")
    args = parser.parse_args()
    uvloop.install()
    sock = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    web.run_app(build(args.upstream_url), sock=sock, access_log=None, print=None)


if __name__ == "__main__":
    main()
