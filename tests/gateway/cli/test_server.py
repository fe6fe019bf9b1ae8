"""Graceful shutdown, config reload and worker processes, on a real `serve` process."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEAM_KEY, gateway_config
from tests.fakes.cohere import FakeCohere, Faults
from tests.support.processes import GatewayProcess, write_config
from tests.support.servers import ServerLoop, free_port

AUTH = {"Authorization": f"Bearer {TEAM_KEY}"}
BODY = {"model": "rerank-v3.5", "query": "capital", "documents": ["Paris is a capital", "bananas"]}


@pytest.fixture
def upstream(servers: ServerLoop) -> tuple[FakeCohere, str]:
    fake = FakeCohere()
    return fake, servers.serve(fake.app())


def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    tmp_path: Path, upstream: tuple[FakeCohere, str]
) -> None:
    fake, upstream_url = upstream
    release = threading.Event()
    fake.faults = Faults(hold=release)
    config = tmp_path / "gw.yaml"
    write_config(config, gateway_config({"cohere-a": upstream_url}, server={"drain_timeout_s": 20}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = GatewayProcess("--config", str(config), "--port", str(port))
    try:
        gw.wait_ready(url)
        result: dict[str, httpx.Response] = {}
        client = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(url + "/v2/rerank", json=BODY, headers=AUTH, timeout=30)
            )
        )
        client.start()
        assert fake.faults.arrived.wait(10), "the request never reached the upstream"
        gw.signal(signal.SIGTERM)
        assert gw.wait_event("draining")["in_flight"] == 1
        with pytest.raises(httpx.ConnectError):  # no new connections while draining
            httpx.get(url + "/healthz", timeout=2)
        release.set()
        client.join(10)
        assert result["r"].status_code == 200
        assert [r["index"] for r in result["r"].json()["results"]] == [0, 1]
        assert gw.proc.wait(20) == 0
        gw.wait_event("stopped")
    finally:
        release.set()
        gw.stop()


def test_sighup_reloads_and_a_bad_file_keeps_the_old_config(
    tmp_path: Path, upstream: tuple[FakeCohere, str]
) -> None:
    _, upstream_url = upstream
    config = tmp_path / "gw.yaml"
    first = gateway_config({"cohere-a": upstream_url})
    write_config(config, first)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = GatewayProcess("--config", str(config), "--port", str(port))
    try:
        gw.wait_ready(url)
        alias = {**BODY, "model": "rerank-new"}
        assert httpx.post(url + "/v2/rerank", json=alias, headers=AUTH).status_code == 404

        second = gateway_config({"cohere-a": upstream_url})
        second["models"]["rerank-new"] = {"deployments": [{"provider": "offline"}]}
        write_config(config, second)
        gw.signal(signal.SIGHUP)
        assert "rerank-new" in gw.wait_event("reloaded")["models"]
        resp = httpx.post(url + "/v2/rerank", json=alias, headers=AUTH)
        assert (
            resp.status_code == 200 and resp.headers["x-rerank-deployment"] == "offline/rerank-new"
        )

        config.write_text("server: {port: nope}\n")
        gw.signal(signal.SIGHUP)
        rejected = gw.wait_event("reload_rejected")
        assert "server.port: must be an integer (got the string 'nope')" in rejected["problems"]
        assert httpx.post(url + "/v2/rerank", json=alias, headers=AUTH).status_code == 200
    finally:
        assert gw.stop() == 0


def test_workers_share_one_port_and_one_set_of_metrics(
    tmp_path: Path, upstream: tuple[FakeCohere, str]
) -> None:
    fake, upstream_url = upstream
    config = tmp_path / "gw.yaml"
    write_config(config, gateway_config({"cohere-a": upstream_url}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gw = GatewayProcess("--config", str(config), "--port", str(port), "--workers", "2")
    try:
        gw.wait_ready(url)
        first = gw.wait_event("listening")
        gw.seen.remove(first)
        second = gw.wait_event("listening")
        assert first["pid"] != second["pid"]
        for _ in range(20):  # a fresh connection each time, so the kernel spreads them
            assert httpx.post(url + "/v2/rerank", json=BODY, headers=AUTH).status_code == 200
        served = {e["pid"] for e in gw.collect("rerank", 20)}
        assert served == {first["pid"], second["pid"]}  # both workers answered
        # Whichever worker answers /metrics, it reports all workers' requests.
        for _ in range(3):
            text = httpx.get(url + "/metrics").text
            assert (
                'rerank_requests_total{model="rerank-v3.5",status="200",team="search"} 20.0' in text
            )
        # Each worker has its own memory cache: one upstream call each, then hits.
        assert len(fake.calls) == 2
    finally:
        assert gw.stop() == 0
