"""Warnings about a valid config that would not do what a multi-process deployment expects.

`check-config` prints them and `serve` logs them at start: they are not errors (one
process with in-memory limits is a fine setup), but with several worker processes or
replicas, limits kept in memory are enforced by each process on its own.
"""

from __future__ import annotations

from gateway.config.model import Config


def scale_warnings(config: Config, workers: int | None = None) -> list[str]:
    """What would be per process with `workers` processes (default: server.workers)."""
    workers = workers or config.server.workers
    if workers <= 1:
        return []
    warnings = []
    if config.limits.limits_backend == "memory":
        limited = sorted(n for n, t in config.teams.items() if t.rate_limit or t.budget)
        effect = (
            f"the rate limits and budgets of {', '.join(limited)} are enforced by each worker "
            f"on its own (up to {workers}x what is configured), and "
            if limited
            else ""
        )
        warnings.append(
            f"server.workers is {workers} with limits.limits_backend memory: {effect}usage "
            "reports show one worker's share; set state.redis_url (limits then live in Redis)"
        )
    if config.cache.backend == "memory":
        warnings.append(
            f"server.workers is {workers} with cache.backend memory: each worker caches on "
            "its own; set state.redis_url to share one cache"
        )
    return warnings
