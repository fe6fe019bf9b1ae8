"""Who may do what: team manager keys stay inside their team; team and key model lists
answer 403 naming what the caller may use; API keys share their team's rate limits and
usage; a team that exists only through API keys gets a usage report too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.conftest import OTHER_TEAM_KEY, TEAM_KEY
from tests.fakes.cohere import FakeCohere
from tests.support.keys import (
    BODY,
    MANAGER_KEY,
    Replicas,
    call,
    replicas_config,
    rerank,
    start_replicas,
    with_manager,
)
from tests.support.servers import ServerLoop

V35 = {**BODY, "model": "rerank-v3.5"}


@pytest.mark.parametrize("via", ["config", "api"])
async def test_a_manager_key_manages_its_own_team_only(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
    via: str,
) -> None:
    pair = start_replicas(
        servers, with_manager(fake_cohere[1], key_prefix), key_prefix, redis_client, count=1
    )
    (url,) = pair.urls
    manager = MANAGER_KEY
    if via == "api":  # a manager key issued by the admin, scope manage only
        status, issued = await call(
            "POST", url + "/admin/keys", body={"team": "search", "scopes": ["manage"]}
        )
        assert status == 201
        manager = issued["key"]
        status, answer = await rerank(url, manager)
        assert status == 403 and "cannot rerank" in answer["message"]
    _, ads_key = await call("POST", url + "/admin/keys", body={"team": "ads"})

    status, own = await call("POST", url + "/admin/keys", manager, {"name": "svc"})
    assert status == 201 and own["team"] == "search"  # the team defaults to the manager's
    assert own["created_by"].startswith("manager of team search")
    assert (await rerank(url, own["key"]))[0] == 200
    status, answer = await call("POST", url + "/admin/keys", manager, {"team": "ads"})
    assert status == 403 and answer["message"] == (
        "a manager key of team 'search' may only manage the keys of its own team, not those "
        "of team 'ads'; ask an admin"
    )
    status, listing = await call("GET", url + "/admin/keys", manager)
    assert status == 200 and {k["team"] for k in listing["keys"]} == {"search"}
    assert ads_key["id"] not in {k["id"] for k in listing["keys"]}
    assert (await call("GET", url + "/admin/keys?team=ads", manager))[0] == 403
    # Another team's key is "not found" to a manager: not even its existence is told.
    for method, path in (("DELETE", ""), ("POST", "/rotate")):
        status, answer = await call(method, url + f"/admin/keys/{ads_key['id']}{path}", manager)
        assert status == 404 and "no API key with id" in answer["message"]
    assert (await rerank(url, ads_key["key"]))[0] == 200
    status, rotated = await call("POST", url + f"/admin/keys/{own['id']}/rotate", manager)
    assert status == 201 and rotated["team"] == "search"
    status, _ = await call("DELETE", url + f"/admin/keys/{rotated['id']}", manager)
    assert status == 200 and (await rerank(url, rotated["key"]))[0] == 401
    # Usage: its own team only (the default); every other admin route: admin only.
    status, report = await call("GET", url + "/admin/usage", manager)
    assert status == 200 and set(report["totals"]) == {"search"}
    assert (await call("GET", url + "/admin/usage?team=search", manager))[0] == 200
    status, answer = await call("GET", url + "/admin/usage?team=ads", manager)
    assert status == 403 and "only that team's usage" in answer["message"]
    for path in ("/admin/deployments", "/admin/openapi.json"):
        status, answer = await call("GET", url + path, manager)
        assert status == 403 and "this route needs the admin key" in answer["message"]
    # Team keys (config or API) are no admin keys.
    for key in (TEAM_KEY, own["key"]):
        status, answer = await call("GET", url + "/admin/keys", key)
        assert (status, answer["message"]) == (401, "invalid admin key")


async def test_a_model_outside_the_teams_list_is_403_naming_only_its_models(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    data = replicas_config(fake_cohere[1], key_prefix, search={"models": ["local-bm25"]})
    data["models"]["smart"] = {"tiers": {"pro": "rerank-v3.5", "fast": "local-bm25"}}
    data["teams"]["ads"]["models"] = ["smart"]  # an alias, not the models behind it
    (url,) = start_replicas(servers, data, key_prefix, redis_client, count=1).urls
    assert (await rerank(url, TEAM_KEY))[0] == 200
    status, answer = await rerank(url, TEAM_KEY, V35)
    assert (status, answer["message"]) == (
        403,
        "model 'rerank-v3.5' is not available to team 'search'; it may use: local-bm25",
    )
    # A model that does not exist: Cohere's 404, listing only what the team may see.
    status, answer = await rerank(url, TEAM_KEY, {**BODY, "model": "nope"})
    assert status == 404 and answer["message"].endswith("Models served here: local-bm25")
    assert (await rerank(url, OTHER_TEAM_KEY, {**BODY, "model": "smart"}))[0] == 200
    status, answer = await rerank(url, OTHER_TEAM_KEY, V35)
    assert status == 403 and answer["message"].endswith("it may use: smart")
    # An API key may narrow its team's list, never widen it.
    status, answer = await call(
        "POST", url + "/admin/keys", body={"team": "search", "models": ["rerank-v3.5"]}
    )
    assert status == 400 and answer["message"] == (
        "invalid request: model 'rerank-v3.5' is not one team 'search' may use; choose "
        "among: local-bm25"
    )


async def test_an_api_key_narrows_its_teams_models(keyed_replicas: Callable[..., Replicas]) -> None:
    (url,) = keyed_replicas(count=1).urls
    status, issued = await call(
        "POST", url + "/admin/keys", body={"team": "search", "models": ["local-bm25"]}
    )
    assert status == 201 and issued["models"] == ["local-bm25"]
    assert (await rerank(url, issued["key"]))[0] == 200
    status, answer = await rerank(url, issued["key"], V35)
    assert status == 403 and answer["message"] == (
        f"model 'rerank-v3.5' is not available to API key {issued['id']} of team 'search'; "
        "it may use: local-bm25"
    )
    assert (await rerank(url, TEAM_KEY, V35))[0] == 200  # the team itself may


async def test_api_keys_share_their_teams_rate_limit_and_usage(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
) -> None:
    data = replicas_config(
        fake_cohere[1], key_prefix, search={"rate_limit": {"requests_per_minute": 2}}
    )
    data["limits"] = {"limits_backend": "redis", "redis_prefix": key_prefix}
    pair = start_replicas(servers, data, key_prefix, redis_client)
    a, b = pair.urls
    _, issued = await call("POST", a + "/admin/keys", body={"team": "search"})
    _, newcomer = await call("POST", a + "/admin/keys", body={"team": "newcomers"})
    assert newcomer["warnings"] == [
        "team 'newcomers' is not in the config: it has no rate limit, budget or model list of "
        "its own; add teams.newcomers to set them"
    ]
    pair.wait_all()
    assert (await rerank(a, TEAM_KEY, V35))[0] == 200
    assert (await rerank(b, issued["key"], V35))[0] == 200
    status, answer = await rerank(b, issued["key"], V35)
    assert status == 429 and "team 'search' may use 2 requests per minute" in answer["message"]
    assert (await rerank(a, newcomer["key"], V35))[0] == 200
    status, report = await call("GET", b + "/admin/usage")
    assert status == 200 and report["totals"]["search"]["requests"] == 2
    assert report["totals"]["newcomers"]["requests"] == 1
    assert (await call("GET", b + "/admin/usage?team=newcomers"))[0] == 200


async def test_key_routes_check_their_bodies_and_need_redis(
    servers: ServerLoop,
    fake_cohere: tuple[FakeCohere, str],
    key_prefix: str,
    redis_client: redis.Redis,
    start_gateway: Any,
) -> None:
    (url,) = start_replicas(
        servers, replicas_config(fake_cohere[1], key_prefix), key_prefix, redis_client, count=1
    ).urls
    for body, message in (
        ({}, "team is required"),
        ({"team": "a b"}, "team must be 1-64 letters"),
        ({"team": "search", "scopes": ["root"]}, "unknown scope 'root'"),
        ({"team": "search", "scopes": "rerank"}, "scopes must be a list of strings"),
        ({"team": "search", "color": "red"}, "unknown field(s) color"),
        ({"team": "search", "models": []}, "models is empty"),
        ([1], "the body must be a JSON object"),
    ):
        status, answer = await call("POST", url + "/admin/keys", body=body)
        assert status == 400 and message in answer["message"], (body, answer)
    status, answer = await call("POST", url + "/admin/keys/zzz/rotate", body={"grace_s": "1h"})
    assert status == 400 and "grace_s must be a number of seconds" in answer["message"]
    status, answer = await call("GET", url + "/admin/keys", None)
    assert status == 401 and "no admin key supplied" in answer["message"]
    # Without state.redis_url there are no API keys (the config's keys still work).
    plain = start_gateway(replicas_config(fake_cohere[1], key_prefix) | {"state": {}})
    status, answer = await call("POST", plain + "/admin/keys", body={"team": "search"})
    assert status == 403 and "API keys are disabled" in answer["message"]


async def test_key_answers_match_the_admin_schema(keyed_replicas: Callable[..., Replicas]) -> None:
    import jsonschema

    (url,) = keyed_replicas(count=1).urls
    _, spec = await call("GET", url + "/admin/openapi.json")

    def check(name: str, document: Any) -> None:
        schema = {**spec, "$ref": f"#/components/schemas/{name}"}
        jsonschema.Draft202012Validator(schema).validate(document)

    body = {"team": "search", "name": "n", "expires_in_s": 60, "scopes": ["rerank", "manage"]}
    check("CreateKey", body)
    status, issued = await call("POST", url + "/admin/keys", body=body)
    assert status == 201
    check("IssuedKey", issued)
    status, rotated = await call("POST", url + f"/admin/keys/{issued['id']}/rotate", body={})
    check("IssuedKey", rotated)
    _, listing = await call("GET", url + "/admin/keys")
    check("KeyList", listing)
    assert {"/admin/keys", "/admin/keys/{id}", "/admin/keys/{id}/rotate"} <= set(spec["paths"])
