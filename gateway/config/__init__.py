"""The gateway's configuration: one YAML file, validated at start (see `loader`)."""

from gateway.config.loader import (
    COHERE_MODELS,
    LOCAL_MODEL,
    Config,
    LimitsConfig,
    ModelConfig,
    ShadowConfig,
    default_config,
    is_loopback,
    load_config,
    load_or_default,
    parse_config,
)
from gateway.config.reader import ConfigError

__all__ = [
    "COHERE_MODELS",
    "LOCAL_MODEL",
    "Config",
    "ConfigError",
    "LimitsConfig",
    "ModelConfig",
    "ShadowConfig",
    "default_config",
    "is_loopback",
    "load_config",
    "load_or_default",
    "parse_config",
]
