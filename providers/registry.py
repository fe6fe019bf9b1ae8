"""Provider types by config name: the options dataclass each reads and how to build it.

Adding a backend means one entry here, and a `type: Literal["<name>"] = "<name>"` field on
its options dataclass: the gateway's config loader reads each `providers.<name>` mapping as
the options dataclass whose `type` it names (a union discriminated on `type`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.azure import AzureOptions, AzureProvider
from providers.bedrock import BedrockOptions, BedrockProvider
from providers.cohere import CohereOptions, CohereProvider
from providers.local import LocalOptions, LocalProvider
from providers.oci import OciOptions, OciProvider
from providers.types import Provider


@dataclass(frozen=True)
class ProviderType:
    options: type
    build: Callable[[str, Any], Provider]


PROVIDER_TYPES: dict[str, ProviderType] = {
    "cohere": ProviderType(CohereOptions, CohereProvider),
    "azure": ProviderType(AzureOptions, AzureProvider),
    "bedrock": ProviderType(BedrockOptions, BedrockProvider),
    "oci": ProviderType(OciOptions, OciProvider),
    "local": ProviderType(LocalOptions, LocalProvider),
}


def build_provider(name: str, type_name: str, options: Any) -> Provider:
    return PROVIDER_TYPES[type_name].build(name, options)
