"""Provider types by config name: the options dataclass each reads and how to build it.

Adding a backend means one entry here, and a `type: Literal["<name>"] = "<name>"` field on
its options dataclass: the gateway's config loader reads each `providers.<name>` mapping as
the options dataclass whose `type` it names (a union discriminated on `type`).

The types whose SDK is an optional extra (`rerank-gateway[bedrock]`, `[oci]`, `[vertex]`,
`[onnx]`) are imported on first use, so a gateway without them installs and starts light;
naming such a type without its extra raises `MissingExtra`, which the config loader
reports as a problem. Their options classes are light (`providers.extra_options`): the
config's schema needs them, but only building a provider of such a type imports its
module and SDK, so a process serving none of them never loads one (~80 MB of memory).
Whether an SDK is installed is asked of the import system (`find_spec`), not by
importing it.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

from providers import extra_options
from providers.azure import AzureOptions, AzureProvider
from providers.azure_semantic import AzureSemanticOptions, AzureSemanticProvider
from providers.cohere import CohereOptions, CohereProvider
from providers.infinity import InfinityOptions, InfinityProvider
from providers.jina import JinaOptions, JinaProvider
from providers.llamacpp import LlamaCppOptions, LlamaCppProvider
from providers.local import LocalOptions, LocalProvider
from providers.mixedbread import MixedbreadOptions, MixedbreadProvider
from providers.nim import NimOptions, NimProvider
from providers.openai_rerank import OpenAIRerankOptions, OpenAIRerankProvider
from providers.pinecone import PineconeOptions, PineconeProvider
from providers.tei import TeiOptions, TeiProvider
from providers.types import Provider
from providers.vllm import VllmOptions, VllmProvider
from providers.voyage import VoyageOptions, VoyageProvider


@dataclass(frozen=True)
class ProviderType:
    options: type
    build: Callable[[str, Any], Provider]


class MissingExtra(Exception):
    """A provider type's SDK is not installed; the message names the extra to install."""


# type name -> (module, options class, provider class, extra that installs its SDK, the
# modules that extra installs, in the order the provider's module imports them)
_LAZY: dict[str, tuple[str, str, str, str, tuple[str, ...]]] = {
    "bedrock": ("providers.bedrock", "BedrockOptions", "BedrockProvider", "bedrock", ("botocore",)),
    "oci": ("providers.oci", "OciOptions", "OciProvider", "oci", ("oci",)),
    "vertex": ("providers.vertex", "VertexOptions", "VertexProvider", "vertex", ("cryptography",)),
    "onnx": (
        "providers.onnx", "OnnxOptions", "OnnxProvider", "onnx",
        ("numpy", "onnxruntime", "tokenizers"),
    ),
}  # fmt: skip


def _missing(modules: tuple[str, ...]) -> str | None:
    """The first of `modules` that is not installed, or None."""
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # a parent package missing, or a broken entry
            return name
    return None


def _lazy_build(
    type_name: str, module_name: str, provider: str, extra: str
) -> Callable[[str, Any], Provider]:
    """Builds a provider of a lazy type, importing its module (and SDK) the first time."""

    def build(name: str, options: Any) -> Provider:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise MissingExtra(_missing_text(type_name, exc.name or "a module", extra)) from exc
        cls: Callable[[str, Any], Provider] = getattr(module, provider)
        return cls(name, options)

    return build


def _missing_text(type_name: str, module: str, extra: str) -> str:
    return (
        f"provider type {type_name} needs its SDK ({module} is not "
        f"installed): pip install 'rerank-gateway[{extra}]' (or [all])"
    )


class _Types(MutableMapping[str, ProviderType]):
    """Every type name is known up front; lazy ones are imported when first looked up."""

    def __init__(self, eager: dict[str, ProviderType]) -> None:
        self._loaded = dict(eager)
        # One order whatever was imported first: the config schema (a union over the types)
        # must come out the same in every process.
        self._order = [*eager, *(name for name in _LAZY if name not in eager)]

    def __getitem__(self, name: str) -> ProviderType:
        if name not in self._loaded and name in _LAZY:
            module_name, options, provider, extra, sdk = _LAZY[name]
            missing = _missing(sdk)
            if missing is not None:
                raise MissingExtra(_missing_text(name, missing, extra))
            self._loaded[name] = ProviderType(
                getattr(extra_options, options), _lazy_build(name, module_name, provider, extra)
            )
        return self._loaded[name]

    def __setitem__(self, name: str, value: ProviderType) -> None:
        self._loaded[name] = value
        if name not in self._order:
            self._order.append(name)

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]
        if name not in _LAZY:
            self._order.remove(name)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in _LAZY

    def __iter__(self) -> Iterator[str]:
        yield from self._order

    def __len__(self) -> int:
        return len(self._order)


PROVIDER_TYPES: MutableMapping[str, ProviderType] = _Types(
    {
        "cohere": ProviderType(CohereOptions, CohereProvider),
        "azure": ProviderType(AzureOptions, AzureProvider),
        "tei": ProviderType(TeiOptions, TeiProvider),
        "vllm": ProviderType(VllmOptions, VllmProvider),
        "infinity": ProviderType(InfinityOptions, InfinityProvider),
        "jina": ProviderType(JinaOptions, JinaProvider),
        "voyage": ProviderType(VoyageOptions, VoyageProvider),
        "nim": ProviderType(NimOptions, NimProvider),
        "azure_semantic": ProviderType(AzureSemanticOptions, AzureSemanticProvider),
        "pinecone": ProviderType(PineconeOptions, PineconeProvider),
        "mixedbread": ProviderType(MixedbreadOptions, MixedbreadProvider),
        "llamacpp": ProviderType(LlamaCppOptions, LlamaCppProvider),
        "openai_rerank": ProviderType(OpenAIRerankOptions, OpenAIRerankProvider),
        "local": ProviderType(LocalOptions, LocalProvider),
    }
)


def installed_types() -> dict[str, ProviderType]:
    """The types whose code imports here (a lazy type without its extra is left out)."""
    found = {}
    for name in list(PROVIDER_TYPES):
        try:
            found[name] = PROVIDER_TYPES[name]
        except MissingExtra:
            continue
    return found


def build_provider(name: str, type_name: str, options: Any) -> Provider:
    return PROVIDER_TYPES[type_name].build(name, options)
