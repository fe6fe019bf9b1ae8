"""Prices: what one upstream call costs, in the unit the upstream bills.

A price has a kind and a figure: USD per 1,000 search units (Cohere v3.5/v4, Bedrock,
Azure, OCI), USD per million tokens (Rerank 5, Jina, Voyage, or a self-hosted model priced
for chargeback), USD per request (flat), or free. Money is counted in integer
micro-dollars (1e-6 USD) wherever it is stored, so sums across replicas are exact. The
price of a call depends on the deployment that served it; a reservation made before the
call uses the model's dearest deployment for the estimated usage, so it never reserves
too little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

from annotated_types import Ge, Interval

from policies.money.billing import BillingRules
from providers.types import Deployment

MICROS_PER_USD = 1_000_000

PriceKind = Literal["search_units", "tokens", "request", "free"]
SEARCH_UNITS: PriceKind = "search_units"
TOKENS: PriceKind = "tokens"
REQUEST: PriceKind = "request"
FREE: PriceKind = "free"
KINDS: tuple[PriceKind, ...] = (SEARCH_UNITS, TOKENS, REQUEST, FREE)


@dataclass(frozen=True, slots=True)
class Price:
    """One deployment's price: `usd` per 1,000 search units, per million tokens or per
    request, as `kind` says (ignored when free)."""

    kind: PriceKind
    usd: float = 0.0

    @property
    def paid(self) -> bool:
        return self.kind != FREE and self.usd > 0

    def cost_micros(self, usage: Usage) -> int:
        """What `usage` costs, in micro-dollars; at least 1 for a paid call that used anything."""
        if self.kind == SEARCH_UNITS:
            units, per = usage.search_units, 1_000
        elif self.kind == TOKENS:
            units, per = usage.tokens, 1_000_000
        elif self.kind == REQUEST:
            units, per = usage.calls, 1
        else:
            return 0
        micros = round(units * self.usd * MICROS_PER_USD / per)
        return max(micros, 1) if units > 0 and self.usd > 0 else micros

    def billed(self, usage: Usage) -> int:
        """The figure `usage` is billed by under this price (0 when free)."""
        return {
            SEARCH_UNITS: usage.search_units,
            TOKENS: usage.tokens,
            REQUEST: usage.calls,
            FREE: 0,
        }[self.kind]


@dataclass(frozen=True, slots=True)
class Usage:
    """What upstream calls used: search units, tokens and calls (each reported or estimated)."""

    search_units: int = 0
    tokens: int = 0
    calls: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.search_units + other.search_units,
            self.tokens + other.tokens,
            self.calls + other.calls,
        )


NOTHING = Usage()

# Public pay-as-you-go prices (see docs/pricing.md for sources). All come from third-party
# copies of the vendors' price pages; several are UNVERIFIED there and are configurable
# defaults only: override them in `pricing.models` when your contract says otherwise.
# Keyed by Cohere model name and by the upstream model ids Bedrock and Azure use.
DEFAULT_PRICES: dict[str, Price] = {
    "rerank-v3.5": Price(SEARCH_UNITS, 2.00),
    "rerank-v4.0-fast": Price(SEARCH_UNITS, 2.00),
    "rerank-v4.0-pro": Price(SEARCH_UNITS, 2.50),
    "rerank-english-v3.0": Price(SEARCH_UNITS, 2.00),
    "rerank-multilingual-v3.0": Price(SEARCH_UNITS, 2.00),
    "rerank-v5.0-fast": Price(TOKENS, 0.02),  # UNVERIFIED
    "rerank-v5.0-pro": Price(TOKENS, 0.05),  # UNVERIFIED
    "cohere.rerank-v3-5:0": Price(SEARCH_UNITS, 2.00),  # Bedrock; UNVERIFIED
    "amazon.rerank-v1:0": Price(SEARCH_UNITS, 1.00),  # Bedrock; UNVERIFIED
    "Cohere-rerank-v3.5": Price(SEARCH_UNITS, 2.00),  # Azure; UNVERIFIED
    "Cohere-rerank-v4.0-fast": Price(SEARCH_UNITS, 2.00),  # Azure; UNVERIFIED
    "Cohere-rerank-v4.0-pro": Price(SEARCH_UNITS, 2.50),  # Azure; UNVERIFIED
    "cohere-rerank-v5-fast": Price(TOKENS, 0.02),  # Azure; UNVERIFIED
    "cohere-rerank-v5-pro": Price(TOKENS, 0.05),  # Azure; UNVERIFIED
}
# The offline ranker, the in-process cross-encoder and self-hosted servers cost nothing
# per call (price them in `pricing.models` for chargeback, or for NVIDIA's hosted NIM).
FREE_PROVIDER_TYPES = frozenset({"local", "onnx", "tei", "vllm", "infinity", "nim", "llamacpp"})
# Hosted APIs that bill tokens: a model of theirs without a known default is priced at
# `pricing.default_usd_per_million_tokens`.
TOKEN_PROVIDER_TYPES = frozenset(
    {"jina", "voyage", "azure_semantic", "mixedbread", "openai_rerank"}
)
# Hosted APIs billed per query whose figure is known only as a common citation, not from
# the vendor (UNVERIFIED): Vertex AI ranking, $1.00 per 1,000 queries of up to 100
# records, counted as search units by the provider. Pinecone's rerank units fall through
# to `pricing.default_usd_per_1k_units` (no figure found).
TYPE_PRICES: dict[str, Price] = {"vertex": Price(SEARCH_UNITS, 1.00)}


@dataclass
class ModelPrice:
    """`pricing.models.<model>`: the model's price (at most one kind), and per-provider
    exceptions in the same kind (per 1,000 search units when the entry names none)."""

    usd_per_1k_units: Annotated[float, Ge(0.0)] | None = None
    usd_per_million_tokens: Annotated[float, Ge(0.0)] | None = None
    usd_per_request: Annotated[float, Ge(0.0)] | None = None
    free: bool = False
    providers: dict[str, Annotated[float, Ge(0.0)]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, price in self.providers.items():
            if price < 0:
                raise ValueError(f"providers.{name}: a price cannot be negative (got {price})")
        named = [
            name
            for name, value in (
                ("usd_per_1k_units", self.usd_per_1k_units),
                ("usd_per_million_tokens", self.usd_per_million_tokens),
                ("usd_per_request", self.usd_per_request),
                ("free", self.free or None),
            )
            if value is not None
        ]
        if len(named) > 1:
            raise ValueError(f"set one price kind, not {' and '.join(named)}")
        if self.free and self.providers:
            raise ValueError("providers: a free model has no per-provider prices")

    def price(self) -> Price | None:
        """The price this entry sets for every deployment, if it sets one."""
        if self.free:
            return Price(FREE)
        for kind, usd in (
            (SEARCH_UNITS, self.usd_per_1k_units),
            (TOKENS, self.usd_per_million_tokens),
            (REQUEST, self.usd_per_request),
        ):
            if usd is not None:
                return Price(kind, usd)
        return None

    def for_provider(self, provider: str) -> Price | None:
        if provider not in self.providers:
            return None
        own = self.price()
        return Price(own.kind if own else SEARCH_UNITS, self.providers[provider])


@dataclass
class PricingConfig:
    """The `pricing:` section: prices and the estimators' approximations."""

    default_usd_per_1k_units: Annotated[float, Ge(0.0)] = 2.00
    default_usd_per_million_tokens: Annotated[float, Ge(0.0)] = 0.05
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

    Order: `pricing.models.<m>.providers.<provider>`, the kind and figure `pricing.models.<m>`
    sets, free for the offline ranker, the in-process model and self-hosted servers, the
    public default for the model name or its upstream id, the provider type's default
    (Vertex), `pricing.default_usd_per_million_tokens` for token-billed hosted APIs (Jina,
    Voyage, Azure's semantic reranker, Mixedbread, OpenAI-style hosts),
    `pricing.default_usd_per_1k_units`.
    """

    def __init__(self, config: PricingConfig, deployments: Mapping[str, Sequence[Deployment]]):
        self.prices: dict[tuple[str, str], Price] = {}
        self.by_model: dict[str, list[Price]] = {}
        for model, deps in deployments.items():
            entry = config.models.get(model, ModelPrice())
            for dep in deps:
                self.prices[model, dep.name] = _price(config, entry, model, dep)
            self.by_model[model] = [self.prices[model, d.name] for d in deps]
        self.default = Price(SEARCH_UNITS, config.default_usd_per_1k_units)

    def price(self, model: str, deployment: str | None) -> Price:
        """The deployment's price (None or unknown: the model's first deployment's)."""
        if deployment is not None:
            found = self.prices.get((model, deployment))
            if found is not None:
                return found
        return next(iter(self.by_model.get(model, ())), self.default)

    def charge(self, model: str, deployment: str | None, usage: Usage) -> int:
        """What `usage` costs on `deployment` (None: the model's dearest for that usage)."""
        if deployment is not None and (model, deployment) in self.prices:
            return self.prices[model, deployment].cost_micros(usage)
        prices = self.by_model.get(model) or [self.default]
        return max(p.cost_micros(usage) for p in prices)

    def usd_per_1k(self, model: str, deployment: str | None = None) -> float:
        """The search-unit price (0.0 for a deployment billed otherwise or free)."""
        if deployment is None:
            prices = self.by_model.get(model) or [self.default]
        else:
            prices = [self.price(model, deployment)]
        return max((p.usd for p in prices if p.kind == SEARCH_UNITS), default=0.0)

    def cost_micros(self, model: str, deployment: str | None, units: int) -> int:
        """What `units` search units cost on `deployment` (None: the model's dearest)."""
        return self.charge(model, deployment, Usage(search_units=units))

    def billed_units(self, model: str, deployment: str | None, usage: Usage) -> dict[str, int]:
        """`meta.billed_units` of an answer: what it cost, in the unit its price bills.

        Search-unit and flat prices: `search_units`; token prices: `input_tokens` (Cohere's
        field for token billing on its other endpoints). A free or fully cached answer
        bills `search_units: 0`."""
        price = self.price(model, deployment)
        if not price.paid or usage.calls == 0:
            return {"search_units": 0}
        if price.kind == TOKENS:
            return {"input_tokens": max(1, usage.tokens)}
        return {"search_units": max(1, usage.search_units)}


def _price(config: PricingConfig, entry: ModelPrice, model: str, dep: Deployment) -> Price:
    own = entry.for_provider(dep.provider.name) or entry.price()
    if own is not None:
        return own
    if dep.provider.type in FREE_PROVIDER_TYPES:
        return Price(FREE)
    for name in (model, dep.model):
        if name in DEFAULT_PRICES:
            return DEFAULT_PRICES[name]
    if dep.provider.type in TYPE_PRICES:
        return TYPE_PRICES[dep.provider.type]
    if dep.provider.type in TOKEN_PROVIDER_TYPES:
        return Price(TOKENS, config.default_usd_per_million_tokens)
    return Price(SEARCH_UNITS, config.default_usd_per_1k_units)
