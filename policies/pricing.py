"""Prices: dollars per 1,000 search units, per model and optionally per provider.

Money is counted in integer micro-dollars (1e-6 USD) wherever it is stored, so sums
across replicas are exact. The price of a call depends on the deployment that served
it; a reservation made before the call uses the model's dearest deployment, so it
never reserves too little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from annotated_types import Ge, Interval

from policies.billing import BillingRules
from providers.types import Deployment

MICROS_PER_USD = 1_000_000

# Public pay-as-you-go prices, USD per 1,000 searches (= search units). All are from
# third-party copies of the vendors' price pages (see README, "Pricing"); override them
# in config when your contract says otherwise. Keyed by Cohere model name and by the
# upstream model ids Bedrock and Azure use for the same models.
DEFAULT_USD_PER_1K_UNITS: dict[str, float] = {
    "rerank-v3.5": 2.00,
    "rerank-v4.0-fast": 2.00,
    "rerank-v4.0-pro": 2.50,
    "rerank-english-v3.0": 2.00,
    "rerank-multilingual-v3.0": 2.00,
    "cohere.rerank-v3-5:0": 2.00,  # Bedrock
    "amazon.rerank-v1:0": 1.00,  # Bedrock
    "Cohere-rerank-v3.5": 2.00,  # Azure
    "Cohere-rerank-v4.0-fast": 2.00,  # Azure
    "Cohere-rerank-v4.0-pro": 2.50,  # Azure
}
# The offline ranker and self-hosted servers cost nothing per call (price them in
# `pricing.models` for chargeback, or for NVIDIA's hosted NIM).
FREE_PROVIDER_TYPES = frozenset({"local", "tei", "vllm", "infinity", "nim"})


@dataclass
class ModelPrice:
    """`pricing.models.<model>`: the model's price, and per-provider exceptions."""

    usd_per_1k_units: Annotated[float, Ge(0.0)] | None = None
    providers: dict[str, Annotated[float, Ge(0.0)]] = field(default_factory=dict)


@dataclass
class PricingConfig:
    """The `pricing:` section: prices and the search-unit estimate's approximations."""

    default_usd_per_1k_units: Annotated[float, Ge(0.0)] = 2.00
    chunk_tokens: Annotated[int, Ge(1)] = 500
    tokens_per_char: Annotated[float, Interval(ge=0.01, le=4.0)] = 0.25
    models: dict[str, ModelPrice] = field(default_factory=dict)

    def rules(self) -> BillingRules:
        return BillingRules(chunk_tokens=self.chunk_tokens, tokens_per_char=self.tokens_per_char)


def cost_micros(units: int, usd_per_1k_units: float) -> int:
    """units x price / 1000 dollars, in micro-dollars."""
    return round(units * usd_per_1k_units * (MICROS_PER_USD / 1000))


class PriceTable:
    """The price of every (model, deployment), resolved once at startup.

    Order: `pricing.models.<m>.providers.<provider>`, `pricing.models.<m>.usd_per_1k_units`,
    free for the offline ranker, the public default for the model or its upstream id,
    `pricing.default_usd_per_1k_units`.
    """

    def __init__(self, config: PricingConfig, deployments: Mapping[str, Sequence[Deployment]]):
        self.prices: dict[tuple[str, str], float] = {}
        self.dearest: dict[str, float] = {}
        for model, deps in deployments.items():
            entry = config.models.get(model, ModelPrice())
            for dep in deps:
                self.prices[model, dep.name] = _price(config, entry, model, dep)
            self.dearest[model] = max((self.prices[model, d.name] for d in deps), default=0.0)
        self.default = config.default_usd_per_1k_units

    def usd_per_1k(self, model: str, deployment: str | None = None) -> float:
        if deployment is not None:
            price = self.prices.get((model, deployment))
            if price is not None:
                return price
        return self.dearest.get(model, self.default)

    def cost_micros(self, model: str, deployment: str | None, units: int) -> int:
        """What `units` cost on `deployment` (None: the model's dearest deployment)."""
        return cost_micros(units, self.usd_per_1k(model, deployment))


def _price(config: PricingConfig, entry: ModelPrice, model: str, dep: Deployment) -> float:
    if dep.provider.name in entry.providers:
        return entry.providers[dep.provider.name]
    if entry.usd_per_1k_units is not None:
        return entry.usd_per_1k_units
    if dep.provider.type in FREE_PROVIDER_TYPES:
        return 0.0
    for name in (model, dep.model):
        if name in DEFAULT_USD_PER_1K_UNITS:
            return DEFAULT_USD_PER_1K_UNITS[name]
    return config.default_usd_per_1k_units
