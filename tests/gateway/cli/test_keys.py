"""`rerank-gateway keys ...` as an operator runs it: against the real Redis of the config,
and through a running gateway's admin API; a gateway sharing that Redis honours the
changes within its refresh bound."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import redis
import yaml

from gateway.app import build_app
from gateway.config import parse_config
from tests.conftest import ADMIN_KEY
from tests.fakes.cohere import FakeCohere
from tests.support.keys import Replicas, call, cli, replicas_config, rerank
from tests.support.servers import ServerLoop


def answer(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_the_cli_manages_keys_in_redis_that_a_gateway_honours(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    data = replicas_config(fake_cohere[1], key_prefix)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    app = build_app(parse_config(data, {}))
    gateway = Replicas(servers, [app], [servers.serve(app)], key_prefix, redis_client, data)
    (url,) = gateway.urls
    conf = ("--config", str(path))

    created = answer(cli("create", "--team", "search", "--name", "batch", "--expires-in", "90d", "--json", *conf))
    assert created["team"] == "search" and created["expires"] is not None
    gateway.wait_all()
    assert (await rerank(url, created["key"]))[0] == 200

    out = cli("list", *conf)
    assert out.returncode == 0 and created["id"] in out.stdout and "batch" in out.stdout
    assert created["key"] not in out.stdout and "(expired)" not in out.stdout

    rotated = answer(cli("rotate", created["id"], "--grace", "0", "--json", *conf))
    assert rotated["rotated_from"] == created["id"] and rotated["name"] == "batch"
    gateway.wait_all()
    status, refused = await rerank(url, created["key"])
    assert status == 401 and "expired at" in refused["message"]
    assert (await rerank(url, rotated["key"]))[0] == 200

    out = cli("revoke", rotated["id"], *conf)
    assert out.returncode == 0 and out.stdout.strip() == f"revoked {rotated['id']} (team search)"
    audit = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [(e["event"], e["key_id"], e["actor"]) for e in audit] == [
        ("api_key_revoked", rotated["id"], "cli")
    ]
    assert audit[0]["via"].startswith("cli (os user ")
    gateway.wait_all()
    assert (await rerank(url, rotated["key"]))[0] == 401

    out = cli("revoke", "nosuchkey", *conf)
    assert out.returncode == 1 and "keys revoke: no API key with id 'nosuchkey'" in out.stderr
    assert "Traceback" not in out.stderr


async def test_the_cli_through_the_admin_api(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    url = servers.serve(build_app(parse_config(replicas_config(fake_cohere[1], key_prefix), {})))
    admin = {"RERANK_GATEWAY_ADMIN_KEY": ADMIN_KEY}
    created = answer(
        cli("create", "--team", "ads", "--model", "local-bm25", "--json", "--url", url, env=admin)
    )
    assert created["models"] == ["local-bm25"]
    assert (await rerank(url, created["key"]))[0] == 200
    rotated = answer(cli("rotate", created["id"], "--grace", "1h", "--json", "--url", url, env=admin))
    assert rotated["old_key"]["expires"] - rotated["created"] == 3600
    status, listing = await call("GET", url + "/admin/keys?team=ads")
    assert status == 200 and {k["id"] for k in listing["keys"]} == {created["id"], rotated["id"]}
    # Offboarding: every API key of a team at once; other teams keep theirs.
    keep = answer(cli("create", "--team", "search", "--json", "--url", url, env=admin))
    out = cli("revoke", "--team", "ads", "--url", url, env=admin)
    assert out.returncode == 0
    assert sorted(out.stdout.splitlines()) == sorted(
        f"revoked {k['id']} (team ads)" for k in (created, rotated)
    )
    assert [(await rerank(url, k["key"]))[0] for k in (created, rotated, keep)] == [401, 401, 200]

    out = cli("list", "--url", url, env={"RERANK_GATEWAY_ADMIN_KEY": "wrong"})
    assert out.returncode == 1
    assert out.stderr.strip() == "keys list: 401 from the gateway: invalid admin key"
