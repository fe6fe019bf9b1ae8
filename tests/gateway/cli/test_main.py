"""The `rerank-gateway` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.http.auth import hash_key
from tests.gateway.config.test_config import EXAMPLE
from tests.support.servers import free_port

CLI = [sys.executable, "-m", "gateway"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_hash_key_prints_sha256() -> None:
    out = run("hash-key", "my-key")
    assert out.returncode == 0 and out.stdout.strip() == hash_key("my-key")


def test_hash_key_new_prints_a_key_and_its_digest() -> None:
    lines = dict(line.split(":", 1) for line in run("hash-key", "--new").stdout.splitlines())
    assert hash_key(lines["key"].strip()) == lines["key_sha256"].strip()


def test_check_config_ok_and_failing(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE)
    out = run("check-config", str(good), env={"COHERE_API_KEY": "k"})
    assert out.returncode == 0 and "ok (2 providers, 2 models, 1 teams)" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.replace("timeout_s: 10", "timeout_s: soon"))
    out = run("check-config", str(bad), env={"COHERE_API_KEY": "k"})
    assert out.returncode == 1
    assert "providers.cohere-prod.timeout_s: must be a number (got the string 'soon')" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_embedded_default_ranks_offline() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "COHERE_API_KEY"}
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        resp = httpx.post(
            url + "/v2/rerank",
            json={
                "model": "local-bm25",
                "query": "how do rockets reach orbit",
                "documents": [
                    "A recipe for apple pie",
                    "Rockets reach orbit by accelerating sideways",
                    "Orbit of the moon",
                ],
            },
        )
        assert resp.status_code == 200
        body = resp.json()
        assert [r["index"] for r in body["results"]][:2] == [1, 2]
        assert body["meta"]["billed_units"] == {"search_units": 0}
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["event"] == "rerank"]
    assert access and access[0]["status"] == 200 and access[0]["documents"] == 3
    assert "rockets" not in out.lower()


def test_serve_refuses_auth_none_on_public_address() -> None:
    out = run("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert out.returncode == 1
    assert "auth.mode none is only allowed on a loopback address" in out.stderr
