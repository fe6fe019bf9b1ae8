"""The models the gateway serves: provider instances, each model's deployments, and what
is known about each (score scale, listwise or pointwise, relevant spans, context length:
`gateway.state.facts`, overridden by the config)."""

from __future__ import annotations

from collections.abc import Collection

from gateway.config import Config, ModelConfig
from gateway.errors import ApiError
from gateway.state.facts import known_facts
from gateway.state.redis_policy import StartupRefused
from providers.registry import build_provider
from providers.types import BM25, PLACEHOLDER, Deployment, Provider, ProviderStartError


class Catalog:
    def __init__(self, config: Config) -> None:
        self.providers: dict[str, Provider] = {
            name: build_provider(name, pc.type, pc.options) for name, pc in config.providers.items()
        }
        self.deployments: dict[str, list[Deployment]] = {}
        self.tiers: dict[str, dict[str, str]] = {}
        self._listwise: dict[str, bool] = {}
        # deployment name -> score scale; the fallbacks answer on scales of their own
        self._scales: dict[str, str | None] = {
            "fallback/passthrough": PLACEHOLDER,
            "fallback/local": BM25,
        }
        self.context_lengths: dict[str, int | None] = {}
        for name, model in config.models.items():
            if model.tiers is not None:
                self.tiers[name] = dict(model.tiers)
                continue
            self._add(name, model)
        self.default_v1_model = config.server.v1_default_model
        self.order = list(config.models)  # config order: the v1 default is the first usable

    def _add(self, name: str, model: ModelConfig) -> None:
        deployments = []
        listwise, context = False, model.context_length
        for d in model.deployments:
            provider = self.providers[d.provider]
            upstream = d.model or name
            facts = known_facts(provider, upstream)
            listwise = listwise or facts.listwise
            context = context or facts.context_length
            deployments.append(
                Deployment(
                    name=f"{d.provider}/{upstream}",
                    provider=provider,
                    model=upstream,
                    weight=d.weight,
                    priority=d.priority,
                    max_in_flight=d.max_in_flight,
                    relevant_spans=facts.relevant_spans
                    if d.relevant_spans is None
                    else d.relevant_spans,
                    score_scale=d.score_scale or facts.score_scale,
                )
            )
        self.deployments[name] = deployments
        self._scales.update((d.name, d.score_scale) for d in deployments)
        self._listwise[name] = listwise if model.scoring is None else model.scoring == "listwise"
        self.context_lengths[name] = context

    def knows(self, name: str) -> bool:
        return name in self.deployments or name in self.tiers

    def require(self, name: str | None, visible: Collection[str] | None = None) -> str:
        """The configured model a request names (the v1 default when it names none), or
        Cohere's 404 / 400.

        `visible`: the models the caller may use, the only ones a 404 lists (None: all)."""
        if name is None:
            name = self.v1_default(visible)
            if name is None:
                raise ApiError(
                    400, "invalid request: a model parameter is required for this endpoint."
                )
        if not self.knows(name):
            served = [*self.deployments, *self.tiers] if visible is None else visible
            available = ", ".join(sorted(served))
            raise ApiError(
                404,
                f"model '{name}' not found, make sure the correct model ID was used and that you "
                f"have access to the model. Models served here: {available}",
                # The name is the caller's free text, so it is not logged (nor counted).
                log_message="model not found (the name is not logged)",
            )
        return name

    def v1_default(self, visible: Collection[str] | None = None) -> str | None:
        """The model a /v1/rerank body without `model` gets: `server.v1_default_model`, else
        the first model in config order that the caller may use."""
        if self.default_v1_model is not None:
            return self.default_v1_model
        return next((m for m in self.order if visible is None or m in visible), None)

    def listwise(self, model: str) -> bool:
        """True when a document's score depends on the others in the call (listwise models,
        the offline BM25 ranker): never cached per document, split or coalesced."""
        return self._listwise[model]

    def concrete(self, model: str) -> list[str]:
        """The models with deployments behind `model` (an alias: its tiers' models)."""
        return list(self.tiers[model].values()) if model in self.tiers else [model]

    def spans_capable(self, model: str) -> bool:
        """Some deployment of `model` (a concrete one) returns relevant spans."""
        return any(d.relevant_spans for d in self.deployments[model])

    def score_scale(self, model: str) -> str | None:
        """The one scale every deployment behind `model` scores on; None when they differ
        or one is unknown."""
        scales = {d.score_scale for m in self.concrete(model) for d in self.deployments[m]}
        return scales.pop() if len(scales) == 1 else None

    def deployment_scale(self, deployment: str) -> str | None:
        """The scale of the deployment that answered (a fallback's too)."""
        return self._scales.get(deployment)

    async def start(self) -> None:
        for name, provider in self.providers.items():
            try:
                await provider.start()
            except ProviderStartError as exc:  # one clear line and exit 1, not a traceback
                raise StartupRefused(f"providers.{name}: {exc}") from None

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
