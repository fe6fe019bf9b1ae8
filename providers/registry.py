"""Provider types by config name: the options dataclass each reads and how to build it.

Adding a backend means one entry here; the gateway's config loader reads the options
dataclass from the provider's YAML mapping (everything but `type`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.azure import AzureOptions, AzureProvider
from providers.bedrock import BedrockOptions, BedrockProvider
from providers.cohere import CohereOptions, CohereProvider
from providers.infinity import InfinityOptions, InfinityProvider
from providers.jina import JinaOptions, JinaProvider
from providers.local import LocalOptions, LocalProvider
from providers.nim import NimOptions, NimProvider
from providers.oci import OciOptions, OciProvider
from providers.tei import TeiOptions, TeiProvider
from providers.types import Provider
from providers.vllm import VllmOptions, VllmProvider
from providers.voyage import VoyageOptions, VoyageProvider


@dataclass(frozen=True)
class ProviderType:
    options: type
    build: Callable[[str, Any], Provider]


PROVIDER_TYPES: dict[str, ProviderType] = {
    "cohere": ProviderType(CohereOptions, CohereProvider),
    "azure": ProviderType(AzureOptions, AzureProvider),
    "bedrock": ProviderType(BedrockOptions, BedrockProvider),
    "oci": ProviderType(OciOptions, OciProvider),
    "tei": ProviderType(TeiOptions, TeiProvider),
    "vllm": ProviderType(VllmOptions, VllmProvider),
    "infinity": ProviderType(InfinityOptions, InfinityProvider),
    "jina": ProviderType(JinaOptions, JinaProvider),
    "voyage": ProviderType(VoyageOptions, VoyageProvider),
    "nim": ProviderType(NimOptions, NimProvider),
    "local": ProviderType(LocalOptions, LocalProvider),
}


def build_provider(name: str, type_name: str, options: Any) -> Provider:
    return PROVIDER_TYPES[type_name].build(name, options)
