"""The start-up check that the state Redis will not evict what the gateway keeps there.

API keys, budget and rate-limit counters and usage live in `state.redis_url`. A Redis
whose `maxmemory-policy` is anything but `noeviction` may drop them under memory
pressure: a key would vanish, a budget would reset. The score cache may live on an
evicting Redis of its own (`cache.redis_url`). The policy is read from `INFO memory`,
which managed services that disable `CONFIG` still answer.
"""

from __future__ import annotations

from typing import Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.observe.logs import log

SAFE_POLICY = "noeviction"


class StartupRefused(Exception):
    """The gateway must not serve with this config (the message says why and what to do)."""


async def check_eviction(
    client: aioredis.Redis | RedisCluster, url: str, on_evicting: Literal["refuse", "warn"]
) -> str | None:
    """The state Redis's policy (None if it could not be read); refuse or warn if it evicts.

    A cluster answers per node; the first node that may evict decides."""
    try:
        answer = await client.info("memory")
    except (aioredis.RedisError, OSError, TimeoutError) as exc:
        log.warning(
            "redis_policy_unchecked",
            error=exc.__class__.__name__,
            effect="maxmemory-policy not checked; the gateway serves on and checks nothing later",
        )
        return None
    per_node = [v for v in answer.values() if isinstance(v, dict)] if answer else []
    infos = per_node if "maxmemory_policy" not in answer and per_node else [answer]
    info = next(
        (i for i in infos if i.get("maxmemory_policy", SAFE_POLICY) != SAFE_POLICY), infos[0]
    )
    policy = str(info.get("maxmemory_policy", SAFE_POLICY))
    if policy == SAFE_POLICY:
        return policy
    message = (
        f"the state Redis ({_where(url)}) has maxmemory-policy {policy} (maxmemory "
        f"{info.get('maxmemory_human', info.get('maxmemory'))}): it may evict API keys, "
        "budget and rate-limit counters and usage. Set `maxmemory-policy noeviction` on it, "
        "and put the score cache on a Redis of its own with cache.redis_url"
    )
    if on_evicting == "refuse":
        raise StartupRefused(message + " (or set state.on_evicting_redis: warn to start anyway)")
    log.warning("redis_may_evict", policy=policy, message=message)
    return policy


def _where(url: str) -> str:
    """The URL without credentials (they never reach a log)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
