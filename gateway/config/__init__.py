"""The gateway's configuration: one YAML file, validated at start.

model.py holds the dataclasses, loader.py reads and validates a file (errors.py words the
problems, checks.py runs the cross-section checks), defaults.py is the embedded default,
schema.py the JSON Schema.
"""

from gateway.config.checks import is_loopback
from gateway.config.defaults import (
    COHERE_MODELS,
    LOCAL_MODEL,
    default_config,
    load_or_default,
)
from gateway.config.errors import ConfigError
from gateway.config.loader import load_config, parse_config
from gateway.config.model import Config, LimitsConfig, ModelConfig, ShadowConfig

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
