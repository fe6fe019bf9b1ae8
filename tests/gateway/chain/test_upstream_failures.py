"""What the caller sees when the upstream fails, and failover between deployments."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import gateway_config
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.calls import post
from tests.support.servers import ServerLoop, free_port

BODY = {"model": "rerank-v3.5", "query": "capital", "documents": ["Paris is a capital", "bananas"]}


@pytest.mark.parametrize(
    ("faults", "status", "message", "retry_after"),
    [
        (Faults(status=502), 503, "cohere-a answered 502", "1"),
        # An outage answer's Retry-After is 1 whatever the upstream said (docs/errors.md).
        (Faults(status=503, retry_after="4"), 503, "cohere-a answered 503", "1"),
        (Faults(status=429, retry_after="3"), 429, "cohere-a answered 429", "3"),
        (Faults(malformed=True), 502, "cohere-a sent a body that is not JSON", None),
        (Faults(reset=True), 503, "cannot reach cohere-a", "1"),
        (Faults(status=401), 502, "gateway configuration problem", None),
        (Faults(status=400), 400, "the upstream rejected the request", None),
    ],
)
async def test_upstream_failure_maps_to_cohere_error(
    fake_cohere: tuple[FakeCohere, str],
    start_gateway: Callable[..., str],
    faults: Faults,
    status: int,
    message: str,
    retry_after: str | None,
) -> None:
    fake, upstream = fake_cohere
    fake.faults = faults
    url = start_gateway(gateway_config({"cohere-a": upstream}))
    got, headers, body = await post(url, BODY)
    assert got == status
    assert message in body["message"]
    assert set(body) == {"id", "message"}
    assert headers.get("Retry-After") == retry_after


async def test_timeout_is_504_within_the_deadline(
    fake_cohere: tuple[FakeCohere, str], start_gateway: Callable[..., str]
) -> None:
    fake, upstream = fake_cohere
    fake.faults = Faults(hang=True)
    data = gateway_config({"cohere-a": upstream})
    data["providers"]["cohere-a"]["timeout_s"] = 0.2
    got, _, body = await post(start_gateway(data), BODY)
    assert got == 504
    assert "did not answer within 0.2 s" in body["message"]


async def test_failover_to_next_deployment_on_retryable_error(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    first, second = FakeCohere(), FakeCohere()
    first.faults = Faults(status=503)
    url = start_gateway(
        gateway_config({"first": servers.serve(first.app()), "second": servers.serve(second.app())})
    )
    got, headers, body = await post(url, BODY)
    assert got == 200
    assert headers["X-Rerank-Deployment"] == "second/rerank-v3.5"
    assert (len(first.calls), len(second.calls)) == (1, 1)
    assert body["results"][0]["index"] == 0


async def test_connection_refused_fails_over(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    healthy = FakeCohere()
    url = start_gateway(
        gateway_config(
            {"dead": f"http://127.0.0.1:{free_port()}", "healthy": servers.serve(healthy.app())}
        )
    )
    got, headers, _ = await post(url, BODY)
    assert got == 200 and headers["X-Rerank-Deployment"] == "healthy/rerank-v3.5"


async def test_caller_mistake_upstream_is_not_retried_elsewhere(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    first, second = FakeCohere(), FakeCohere()
    first.faults = Faults(status=400)
    url = start_gateway(
        gateway_config({"first": servers.serve(first.app()), "second": servers.serve(second.app())})
    )
    got, _, _ = await post(url, BODY)
    assert got == 400
    assert (len(first.calls), len(second.calls)) == (1, 0)


async def test_upstream_omitting_a_score_is_malformed(
    servers: ServerLoop, start_gateway: Callable[..., str]
) -> None:
    from aiohttp import web

    async def partial(request: web.Request) -> web.Response:
        return web.json_response({"results": [{"index": 0, "relevance_score": 0.5}]})

    app = web.Application()
    app.router.add_post("/v2/rerank", partial)
    url = start_gateway(gateway_config({"odd": servers.serve(app)}))
    got, _, body = await post(url, BODY)
    assert got == 502
    assert "scores for only 1 of 2 documents" in body["message"]
