"""The embedded default config: what `rerank-gateway serve` runs without a config file."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

from gateway.config.loader import load_config, parse_config
from gateway.config.model import Config

# Cohere's hosted rerank models, served by the embedded default when COHERE_API_KEY is set.
COHERE_MODELS = (
    "rerank-v5.0-pro",
    "rerank-v5.0-fast",
    "rerank-v4.0-pro",
    "rerank-v4.0-fast",
    "rerank-v3.5",
    "rerank-english-v3.0",
    "rerank-multilingual-v3.0",
)
LOCAL_MODEL = "local-bm25"


def default_config_data(env: Mapping[str, str]) -> dict[str, Any]:
    """The embedded default: loopback, no auth, the offline ranker, Cohere if a key is set."""
    data: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 8080, "v1_default_model": LOCAL_MODEL},
        "auth": {"mode": "none"},
        "providers": {"local": {"type": "local"}},
        "models": {LOCAL_MODEL: {"deployments": [{"provider": "local"}]}},
        "cache": {"backend": "memory"},
    }
    if env.get("COHERE_API_KEY"):
        data["providers"]["cohere"] = {"type": "cohere", "api_key": "${COHERE_API_KEY}"}
        for model in COHERE_MODELS:
            data["models"][model] = {"deployments": [{"provider": "cohere"}]}
    return data


def load_or_default(path: str | None, sections: Collection[str] | None = None) -> Config:
    """The config file at `path`, or the embedded default when there is none."""
    return load_config(path, sections=sections) if path else default_config()


def default_config(env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    return parse_config(default_config_data(env), env)
