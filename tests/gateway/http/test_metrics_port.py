"""Metrics that do not leak: /metrics and the status page on a private listener, or
behind a bearer token on the public port."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from gateway.app import build_app, build_metrics_app
from gateway.config import ConfigError, parse_config
from gateway.http.auth import hash_key
from gateway.observe.metrics import MULTIPROC_ENV, Metrics
from tests.conftest import ADMIN_KEY, gateway_config
from tests.fakes.cohere import FakeCohere
from tests.support.calls import post
from tests.support.processes import GatewayProcess, write_config
from tests.support.routing import ADMIN, get
from tests.support.servers import ServerLoop, free_port


def apps(servers: ServerLoop, url: str, **server: object) -> tuple[str, str]:
    data = gateway_config({"a": url}, server={"metrics_port": 0, **server})
    app = build_app(parse_config(data, {}))
    return servers.serve(app), servers.serve(build_metrics_app(app))


async def test_with_a_metrics_port_the_public_port_has_no_metrics_and_no_status(
    servers: ServerLoop, fake_cohere: tuple[FakeCohere, str]
) -> None:
    public, private = apps(servers, fake_cohere[1])
    assert (await post(public))[0] == 200
    status, body = await get(public, "/metrics")
    assert status == 404 and body["message"].startswith("no route /metrics")
    assert (await get(public, "/admin/status", ADMIN))[0] == 404
    assert (await get(public, "/admin/status.json", ADMIN))[0] == 404
    status, text = await get(private, "/metrics")
    assert status == 200
    assert 'rerank_requests_total{model="rerank-v3.5",status="200",team="search"} 1.0' in text
    status, data = await get(private, "/admin/status.json", ADMIN)
    assert status == 200 and data["teams"]["search"]["requests_today"] == 1
    assert (await get(private, "/admin/status.json"))[0] == 401  # still the admin's
    assert (await get(private, "/v2/rerank"))[0] == 404  # and nothing else


async def test_a_metrics_token_guards_metrics_on_the_public_port(
    gateway_url: str, servers: ServerLoop, fake_cohere: tuple[FakeCohere, str]
) -> None:
    assert (await get(gateway_url, "/metrics"))[0] == 200  # no token, no port: as before
    data = gateway_config(
        {"a": fake_cohere[1]}, server={"metrics_token_sha256": hash_key("scrape-me")}
    )
    url = servers.serve(build_app(parse_config(data, {})))
    status, body = await get(url, "/metrics")
    assert status == 401 and "metrics token" in body["message"]
    assert (await get(url, "/metrics", {"Authorization": "Bearer wrong"}))[0] == 401
    assert (await get(url, "/metrics", ADMIN))[0] == 401  # the admin key is not the token
    status, text = await get(url, "/metrics", {"Authorization": "Bearer scrape-me"})
    assert status == 200 and "rerank_requests_total" in text


def test_metrics_token_must_be_a_digest() -> None:
    with pytest.raises(ConfigError, match="metrics_token_sha256 must be a SHA-256"):
        parse_config(gateway_config({"a": "http://x"}, server={"metrics_token_sha256": "x"}), {})


def test_the_server_opens_the_metrics_listener_on_loopback(
    tmp_path: Path, fake_cohere: tuple[FakeCohere, str]
) -> None:
    port, metrics_port = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(
        config, gateway_config({"a": fake_cohere[1]}, server={"metrics_port": metrics_port})
    )
    gw = GatewayProcess("--config", str(config), "--port", str(port), "--workers", "2")
    public, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    try:
        gw.wait_ready(public, timeout=60)  # two workers importing the SDKs on a busy machine
        listening = gw.wait_event("metrics_listening")
        assert (listening["host"], listening["port"]) == ("127.0.0.1", metrics_port)
        gw.wait_ready(private)
        assert httpx.get(public + "/metrics").status_code == 404
        assert httpx.get(private + "/metrics").status_code == 200
        page = httpx.get(
            private + "/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert page.status_code == 200 and "answered by worker pid" in page.text
    finally:
        assert gw.stop() == 0


def test_a_workers_metrics_file_still_being_created_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several workers, a worker that makes its file of a metric type leaves it empty
    for an instant (prometheus-client opens, then sizes it): a reader then must not fail
    (the status page and /metrics answered 500)."""
    written = MmapedDict(str(tmp_path / "counter_4241.db"))
    key = mmap_key("rerank_admin_sign_ins", "rerank_admin_sign_ins_total", ["outcome"], ["ok"], "")
    written.write_value(key, 2.0, 0)
    written.close()
    (tmp_path / "counter_4242.db").touch()  # another worker's, created, not yet sized
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    metrics = Metrics()
    assert metrics.samples("rerank_admin_sign_ins_total") == [({"outcome": "ok"}, 2.0)]
    assert b'rerank_admin_sign_ins_total{outcome="ok"} 2.0' in metrics.exposition()
