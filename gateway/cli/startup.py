"""What a start says about itself: the port check, the summary line, restart-only settings.

A start that looks fine but is not (a port another gateway holds, a wrong Redis port,
missing credentials) costs more than one that refuses: so before any worker binds, the
port is checked without SO_REUSEPORT (only the gateway's own workers share it), and one
`starting` line says what this process will serve and with what.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from importlib import metadata
from typing import Any

from gateway.config import Config
from gateway.state import redis_client

# Read once at start; a SIGHUP reload cannot change them.
RESTART_SETTINGS = (
    "host",
    "port",
    "workers",
    "max_body_bytes",
    "idle_timeout_s",
    "header_timeout_s",
    "body_timeout_s",
    "max_header_bytes",
    "max_headers",
)
_SECRET_OPTIONS = (
    "api_key",
    "private_key",
    "private_key_file",
    "secret_access_key",
    "client_secret",  # azure_semantic with Entra ID
    "credentials_file",  # vertex: a service-account key
    "credentials_json",
)
_NO_CREDENTIALS = ("local", "onnx")  # in-process: nothing to authenticate to
_AMBIENT = {
    "bedrock": "ambient (AWS chain)",
    "oci": "ambient (OCI config or principal)",
    "vertex": "ambient (GOOGLE_APPLICATION_CREDENTIALS)",
}


def version() -> str:
    try:
        return metadata.version("rerank-gateway")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def port_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (in use, not an address here), or None.

    Bound without SO_REUSEPORT, so a listener of any other process, even one that set
    SO_REUSEPORT itself, makes it fail; SO_REUSEADDR lets a port in TIME_WAIT pass."""
    if port == 0:
        return None  # the system picks a free port
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve host {host!r} ({exc.strerror})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == 98:  # EADDRINUSE
                    return (
                        f"cannot listen on {host}:{port}: the address is already in use by "
                        "another process; stop it or choose another --port"
                    )
                return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def credential_status(config: Config) -> dict[str, str]:
    """Per provider: `type: credentials set|missing|none needed|ambient (...)`."""
    status = {}
    for name, provider in config.providers.items():
        options = provider.options
        fields = [f for f in _SECRET_OPTIONS if hasattr(options, f)]
        if provider.type in _NO_CREDENTIALS:
            state = "none needed"
        elif any(getattr(options, f) for f in fields):
            state = "credentials set"
        elif provider.type in _AMBIENT:
            state = _AMBIENT[provider.type]
        elif getattr(options, "auth", None) not in (None, "api_key"):
            state = f"ambient ({options.auth})"
        else:
            state = "credentials missing"
        status[name] = f"{provider.type}: {state}"
    return status


async def redis_status(config: Config, timeout_s: float = 1.0) -> str:
    """`none`, `ok (<where>)` or `unreachable (<where>: <error>)`."""
    where = redis_client.target(config.state)
    if where is None:
        return "none"
    client = redis_client.connect(config.state, timeout_s=timeout_s)
    assert client is not None
    try:
        async with asyncio.timeout(timeout_s * 2):
            await client.ping()
        return f"ok ({where.describe()})"
    except Exception as exc:  # any failure to answer is "unreachable", said in one line
        return f"unreachable ({where.describe()}: {exc.__class__.__name__})"
    finally:
        with contextlib.suppress(Exception):  # closing a client that never connected
            await client.aclose()


def summary(config: Config, version: str, host: str, port: int, workers: int) -> dict[str, Any]:
    """The fields of the one `starting` log line."""
    return {
        "version": version,
        "host": host,
        "port": port,
        "workers": workers,
        "auth": config.auth.mode,
        "teams": len(config.teams),
        "models": sorted(config.models),
        "providers": credential_status(config),
        "redis": asyncio.run(redis_status(config)),
        "cache": config.cache.backend,
        "limits": config.limits.limits_backend,
    }


def restart_needed(old: Config, new: Config) -> dict[str, str]:
    """server.* settings that differ between `old` and `new`: `old -> new` for each."""
    changed = {}
    for name in RESTART_SETTINGS:
        before, after = getattr(old.server, name), getattr(new.server, name)
        if before != after:
            changed[f"server.{name}"] = f"{before} -> {after}"
    return changed
