"""Warnings about a valid config that would not do what its operator likely expects.

`check-config` prints them and `serve` logs them at start: they are not errors.
- Scale (`scale_warnings`): one process with in-memory limits is a fine setup, but with
  several worker processes or replicas, limits kept in memory are enforced by each
  process on its own.
- Plain HTTP (`plain_http_warnings`): an upstream reached over `http://` that is sent a
  credential (an API key, a signed request) shows it to anyone on the path. A
  self-hosted reranker on a private network may be a deliberate choice, so it is a
  warning; a loopback address is never warned about.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.config.checks import is_loopback
from gateway.config.model import Config

# Provider types that sign every request with cloud credentials or send an OAuth token
# (no `api_key` needed).
_SIGNED = {
    "bedrock": "SigV4-signed requests (AWS credentials)",
    "oci": "OCI-signed requests",
    "vertex": "OAuth access tokens (a service account's)",
    "azure_semantic": "Entra ID access tokens",
}


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


def plain_http_warnings(config: Config) -> list[str]:
    """Upstreams reached over plain http:// that are sent a credential, loopback excepted."""
    warnings = []
    for name, provider in config.providers.items():
        options = provider.options
        url = getattr(options, "endpoint_url", None) or getattr(options, "base_url", None)
        what = "its api_key" if getattr(options, "api_key", None) else _SIGNED.get(provider.type)
        if url and what and _exposed(url):
            warnings.append(_warning(f"providers.{name}", url, what))
    telemetry = config.telemetry
    if telemetry.otlp_endpoint and telemetry.headers and _exposed(telemetry.otlp_endpoint):
        warnings.append(
            _warning("telemetry.otlp_endpoint", telemetry.otlp_endpoint, "telemetry.headers")
        )
    return warnings


def _exposed(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and not is_loopback(parts.hostname or "")


def _warning(where: str, url: str, what: str) -> str:
    host = urlsplit(url).hostname
    return (
        f"{where} sends {what} over plain http:// to {host}: anyone on the network path can "
        "read it; use https:// (only loopback addresses are exempt from this warning)"
    )
