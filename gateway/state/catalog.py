"""The models the gateway serves: provider instances and each model's deployments."""

from __future__ import annotations

from collections.abc import Collection

from gateway.config import Config
from gateway.errors import ApiError
from providers.registry import build_provider
from providers.types import Deployment, Provider


class Catalog:
    def __init__(self, config: Config) -> None:
        self.providers: dict[str, Provider] = {
            name: build_provider(name, pc.type, pc.options) for name, pc in config.providers.items()
        }
        self.deployments: dict[str, list[Deployment]] = {}
        self.tiers: dict[str, dict[str, str]] = {}
        for name, model in config.models.items():
            if model.tiers is not None:
                self.tiers[name] = dict(model.tiers)
                continue
            self.deployments[name] = [
                Deployment(
                    name=f"{d.provider}/{d.model or name}",
                    provider=self.providers[d.provider],
                    model=d.model or name,
                    weight=d.weight,
                    priority=d.priority,
                    max_in_flight=d.max_in_flight,
                )
                for d in model.deployments
            ]
        self.default_v1_model = config.server.v1_default_model

    def knows(self, name: str) -> bool:
        return name in self.deployments or name in self.tiers

    def require(self, name: str | None, visible: Collection[str] | None = None) -> str:
        """The configured model a request names, or Cohere's 404 / 400.

        `visible`: the models the caller may use, the only ones a 404 lists (None: all)."""
        if name is None:
            name = self.default_v1_model
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

    def batch_relative(self, model: str) -> bool:
        """True when some deployment's scores depend on the whole batch (not cacheable)."""
        return any(d.provider.batch_relative for d in self.deployments[model])

    async def start(self) -> None:
        for provider in self.providers.values():
            await provider.start()

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
